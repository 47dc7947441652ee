//! The control-plane part of `lab demo`: revisions rolled out through the lab's
//! controller and checked with real packets — a changed topology, one a gateway cannot
//! apply (all-or-nothing), a rollback, and the controller killed and restarted while the
//! gateways keep enforcing.

use super::probe::{self, Matrix};
use super::state::LabDir;
use super::updown::Lab;
use super::{control, mgmt};
use crate::controller::store::Store;
use crate::topology::Topology;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long agents get to reconnect to a restarted controller.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// `text` without the flow at `index` (block-style YAML: the item's lines up to the next
/// line indented less than its first key).
pub fn without_flow(text: &str, topology: &Topology, index: usize) -> Option<String> {
    let flow = topology.flows.get(index)?;
    let first = usize::try_from(flow.pos.line).ok()?.checked_sub(1)?;
    let indent = usize::try_from(flow.pos.col).ok()?.checked_sub(1)?;
    let lines: Vec<&str> = text.lines().collect();
    let item = lines.get(first)?;
    // The item must start on its own `- ` line for the cut to be exact.
    if !item.get(..indent)?.trim_end().ends_with('-') {
        return None;
    }
    let end = (first + 1..lines.len())
        .find(|&i| {
            let l = lines[i];
            let body = l.trim_start();
            !body.is_empty() && !body.starts_with('#') && l.len() - body.len() < indent
        })
        .unwrap_or(lines.len());
    let kept: Vec<&str> = lines[..first]
        .iter()
        .chain(&lines[end..])
        .copied()
        .collect();
    Some(kept.join("\n") + "\n")
}

/// `text` with one port of `gateway` renamed to an interface its namespace lacks: a
/// revision that validates and compiles, but that gateway's agent cannot apply.
pub fn with_missing_port(text: &str, topology: &Topology, gateway: &str) -> Option<String> {
    let port = topology
        .segments
        .iter()
        .filter(|s| s.gateway.v == gateway)
        .find_map(|s| s.interface.as_ref())?;
    let line = usize::try_from(port.pos.line).ok()?.checked_sub(1)?;
    let col = usize::try_from(port.pos.col).ok()?.checked_sub(1)?;
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let l = lines.get_mut(line)?;
    if l.get(col..col + port.v.len())? != port.v {
        return None;
    }
    l.replace_range(col..col + port.v.len(), "tn-missing0");
    Some(lines.join("\n") + "\n")
}

fn write(dir: &LabDir, name: &str, text: &str) -> Result<PathBuf> {
    let d = dir.root.join("demo");
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let path = d.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The lab's controller status as JSON (the CLI's `status --output json`).
fn status(dir: &LabDir) -> Result<serde_json::Value> {
    let out = mgmt::capture_cli(dir, &["status", "--output", "json"])?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "tiernet status printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Each gateway's applied revision, and whether all are IN_SYNC with the current one.
fn standing(v: &serde_json::Value) -> (Vec<(String, u64)>, bool) {
    let gws = v["gateways"].as_array().cloned().unwrap_or_default();
    let revisions = gws
        .iter()
        .map(|g| {
            (
                g["gateway"].as_str().unwrap_or("?").to_string(),
                g["applied_revision"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let green = !gws.is_empty() && gws.iter().all(|g| g["state"] == "IN_SYNC");
    (revisions, green)
}

fn revisions(dir: &LabDir) -> Result<usize> {
    Ok(Store::open_read_only(&dir.controller_store())?
        .history(10_000)?
        .len())
}

/// Cells whose expected verdict differs between two probes of the same lab.
fn changed(a: &Matrix, b: &Matrix) -> Vec<String> {
    a.cells
        .iter()
        .zip(&b.cells)
        .filter(|(x, y)| x.expected != y.expected)
        .map(|(x, y)| {
            format!(
                "{} -> {} {}: {} -> {}",
                x.source,
                x.destination,
                x.port,
                verdict(x.expected),
                verdict(y.expected)
            )
        })
        .collect()
}

fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "allow"
    } else {
        "deny"
    }
}

/// Probes the lab against its controller's current revision; prints the summary.
fn probe_now(name: &str) -> Result<(Lab, Matrix)> {
    let lab = Lab::open(name)?;
    let started = Instant::now();
    let m = lab.probe()?;
    say!(
        "{} (probed in {:.1} s)",
        probe::summary(&m),
        started.elapsed().as_secs_f64()
    );
    Ok((lab, m))
}

fn check(ok: &mut bool, cond: bool, what: &str) {
    say!("   {} {what}", if cond { "ok:" } else { "FAILED:" });
    *ok &= cond;
}

/// Runs the control-plane steps on a lab that is up with its first revision applied and
/// probed (`first`). Returns whether every step held.
pub async fn story(lab: &Lab, first: &Matrix) -> Result<bool> {
    let name = lab.dir.name.as_str();
    let dir = &lab.dir;
    let text = std::fs::read_to_string(dir.topology())
        .with_context(|| format!("reading {}", dir.topology().display()))?;
    let mut ok = true;

    super::demo::section(
        "revision 2: a flow removed, rolled out by the controller to every gateway",
    );
    let index = lab
        .topology
        .flows
        .iter()
        .position(|f| {
            let named = format!("'{}'", f.name.v);
            first
                .cells
                .iter()
                .any(|c| c.expected && c.reason.contains(&named))
        })
        .ok_or_else(|| anyhow!("no flow of the topology decides a probe"))?;
    let flow = &lab.topology.flows[index].name.v;
    let changed_text = without_flow(&text, &lab.topology, index)
        .ok_or_else(|| anyhow!("cannot cut flow '{flow}' out of the topology text"))?;
    let file = write(dir, &format!("without-{flow}.yaml"), &changed_text)?;
    say!(
        "-> tiernet apply {} (flow '{flow}' removed)",
        file.display()
    );
    let code = apply(name, &file)?;
    check(&mut ok, code == 0, "applied on every gateway");
    let (_, second) = probe_now(name)?;
    let diff = changed(first, &second);
    for d in &diff {
        say!("   probe changed: {d}");
    }
    check(
        &mut ok,
        !diff.is_empty() && probe::summary(&second).mismatches == 0,
        "the probe table changed as declared",
    );
    super::demo::check_interrupted()?;

    let last = lab
        .plan
        .gateways
        .last()
        .map(|g| g.gateway.clone())
        .ok_or_else(|| anyhow!("the lab has no gateway"))?;
    super::demo::section(&format!(
        "revision 3: {last} cannot apply it (a port it lacks) — all or nothing"
    ));
    let before = status(dir)?;
    let current = before["current_revision"].as_u64().unwrap_or(0);
    match with_missing_port(&changed_text, &lab.topology, &last) {
        Some(broken) => {
            let file = write(dir, "missing-port.yaml", &broken)?;
            say!("-> tiernet apply {}", file.display());
            let code = apply(name, &file)?;
            check(&mut ok, code != 0, "the rollout failed and was reported");
            let (revs, green) = standing(&status(dir)?);
            say!("   gateways now on: {revs:?}");
            check(
                &mut ok,
                green && revs.iter().all(|(_, r)| *r == current),
                &format!("every gateway is back on revision {current}"),
            );
            let (_, m) = probe_now(name)?;
            check(
                &mut ok,
                probe::summary(&m).mismatches == 0 && changed(&second, &m).is_empty(),
                "the probe table is revision 2's",
            );
        }
        None => say!("   (skipped: no port of {last} found in the topology text)"),
    }
    super::demo::check_interrupted()?;

    super::demo::section("rollback to revision 1");
    say!("-> tiernet rollback 1");
    let code = control::ctl(name, &["rollback".into(), "1".into()])?;
    check(&mut ok, code == 0, "rolled back on every gateway");
    let (lab_now, back) = probe_now(name)?;
    check(
        &mut ok,
        probe::summary(&back).mismatches == 0 && changed(first, &back).is_empty(),
        "the probe table is revision 1's again",
    );
    super::demo::check_interrupted()?;

    super::demo::section("the controller killed: gateways keep enforcing and reverting drift");
    let count = revisions(dir)?;
    mgmt::kill_controller(dir)?;
    say!("-> controller killed (SIGKILL)");
    let (_, m) = probe_now(name)?;
    check(
        &mut ok,
        probe::summary(&m).mismatches == 0 && changed(&back, &m).is_empty(),
        "the probe table is unchanged",
    );
    if let Some(d) = super::demo::drifts(&lab_now).into_iter().next() {
        let reverted = d.show(&lab_now).await?;
        check(&mut ok, reverted, "drift reverted without a controller");
    }
    super::demo::check_interrupted()?;

    super::demo::section("the controller restarted: agents reconnect, no re-apply");
    mgmt::start_controller(dir, lab.meta.today()?)?;
    let started = Instant::now();
    let green = loop {
        let (_, green) = standing(&status(dir).unwrap_or_default());
        if green || started.elapsed() > RECONNECT_TIMEOUT {
            break green;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    say!("   status after {:.1} s:", started.elapsed().as_secs_f64());
    control::ctl(name, &["status".into()])?;
    check(&mut ok, green, "every gateway IN_SYNC");
    check(
        &mut ok,
        revisions(dir)? == count,
        "no new revision (nothing re-applied)",
    );
    Ok(ok)
}

fn apply(name: &str, file: &Path) -> Result<i32> {
    let code = tokio::task::block_in_place(|| control::apply(name, file, None, false))?;
    if code == 2 {
        bail!("tiernet apply could not run (exit 2)");
    }
    Ok(code)
}
