//! `cargo bench --bench agent` (root): the agent on a real kernel, in a throwaway namespace.
//! Prints, in one run: apply time of the reference gateway and of a generated 10,000-flow
//! gateway against `nft -f` of the same rendered ruleset (ratio), the idempotent re-apply,
//! and drift revert latency (p50/p99/max over 200 deleted routes, measured from the delete
//! to the kernel's notification of the route coming back).

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::RouteNetlinkMessage;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tiernet::topology::generate::{Params, Plan};

const TODAY: &str = "2026-11-26";
const DRIFTS: usize = 200;

fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("{args:?}"))?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A namespace holding the ports a gateway state names, removed on drop.
struct Ns(String);

impl Ns {
    fn new(name: &str, ports: &[String]) -> Result<Ns> {
        let _ = sh(&["ip", "netns", "del", name]);
        sh(&["ip", "netns", "add", name])?;
        let ns = Ns(name.to_string());
        for (i, p) in ports.iter().enumerate() {
            sh(&[
                "ip",
                "-n",
                name,
                "link",
                "add",
                p,
                "type",
                "veth",
                "peer",
                "name",
                &format!("peer{i}"),
            ])?;
            sh(&["ip", "-n", name, "link", "set", &format!("peer{i}"), "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.0]);
    }
}

fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/release/deps/agent-xxxx → target/release/tiernet-agent
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("tiernet-agent"))
        .unwrap_or_default()
}

fn agent(ns: &str, gateway: &str, topo: &Path, state: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(agent_bin());
    c.args(["--gateway", gateway, "--topology"])
        .arg(topo)
        .arg("--state-dir")
        .arg(state);
    c.args(["--today", TODAY]).args(extra);
    c
}

/// Runs the agent once; returns its own measure of the topology apply (ms) and the changes.
fn apply_once(ns: &str, gateway: &str, topo: &Path, state: &Path) -> Result<(f64, u64)> {
    let out = agent(ns, gateway, topo, state, &["--once"]).output()?;
    if !out.status.success() {
        bail!("agent failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let log = String::from_utf8_lossy(&out.stderr);
    for line in log.lines().rev() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let msg = v["fields"]["message"].as_str().unwrap_or_default();
        if msg == "applied" || msg == "converged" {
            return Ok((
                v["fields"]["elapsed_ms"].as_f64().unwrap_or(f64::NAN),
                v["fields"]["changes"].as_u64().unwrap_or(0),
            ));
        }
    }
    bail!("agent logged no apply:\n{log}")
}

/// Best of three `nft -f` loads of the rendered script, each in a fresh namespace.
fn nft_f(topo: &Path, gateway: &str) -> Result<f64> {
    let script = sh(&[
        "target/release/tiernet",
        "render",
        topo.to_str().unwrap_or_default(),
        "--gateway",
        gateway,
        "--today",
        TODAY,
    ])?;
    let file = std::env::temp_dir().join(format!("tnbench-{}.nft", std::process::id()));
    std::fs::write(&file, script)?;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let ns = Ns::new(&format!("tnbench-nft-{}", std::process::id()), &[])?;
        let t = Instant::now();
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns.0,
            "nft",
            "-f",
            file.to_str().unwrap_or_default(),
        ])?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

fn untagged(text: &str) -> Result<String> {
    let (topo, diags) = tiernet::topology::parse(text);
    if !diags.is_empty() {
        bail!("topology does not parse: {diags:?}");
    }
    Ok(tiernet::lab::rewrite::untag(text, &topo.context("no topology")?)?.0)
}

fn ports_of(topo: &Path, gateway: &str) -> Result<Vec<String>> {
    let today = NaiveDate::parse_from_str(TODAY, "%Y-%m-%d")?;
    let compiled = tiernet::topology::load::load(topo, today)?
        .compile(today)
        .map_err(anyhow::Error::msg)?;
    let gw = compiled.gateway(gateway).context("gateway")?;
    Ok(gw.links.iter().map(|l| l.name.clone()).collect())
}

fn apply_vs_nft(label: &str, text: &str, gateway: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let topo = dir.path().join("topology.yaml");
    std::fs::write(&topo, untagged(text)?)?;
    let ports = ports_of(&topo, gateway)?;
    let ns = Ns::new(&format!("tnbench-apply-{}", std::process::id()), &ports)?;
    let state = dir.path().join("state");
    let wall = Instant::now();
    let (first, changes) = apply_once(&ns.0, gateway, &topo, &state)?;
    let wall = wall.elapsed().as_secs_f64() * 1e3;
    let (again, again_changes) = apply_once(&ns.0, gateway, &topo, &state)?;
    let nft = nft_f(&topo, gateway)?;
    println!(
        "{label:<26} apply {first:8.1} ms ({changes} changes; process wall {wall:.0} ms) | nft -f {nft:8.1} ms | ratio {:.2} | re-apply {again:6.1} ms ({again_changes} changes)",
        first / nft
    );
    Ok(())
}

fn route_dst(m: &RouteMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v4)) => {
            Some(format!("{v4}/{}", m.header.destination_prefix_length))
        }
        _ => None,
    })
}

/// Deletes a route the agent owns, times until the kernel announces it back.
fn drift_latency() -> Result<()> {
    let reference = std::fs::read_to_string("topologies/clinical-research.yaml")?;
    let dir = tempfile::tempdir()?;
    let topo = dir.path().join("topology.yaml");
    std::fs::write(&topo, untagged(&reference)?)?;
    let ports = ports_of(&topo, "gw-core")?;
    let ns = Ns::new(&format!("tnbench-drift-{}", std::process::id()), &ports)?;
    let state = dir.path().join("state");
    let mut child: Child = agent(
        &ns.0,
        "gw-core",
        &topo,
        &state,
        &["--no-owner", "--flap-limit", "100000"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?;
    let start = Instant::now();
    while !state.join("ready").exists() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            bail!("agent not ready");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let samples = tiernet::netns::run_in(&ns.0, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            let (mconn, _, mut events) =
                rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Ipv4Route])?;
            tokio::spawn(mconn);
            let target = "10.4.10.0/24";
            let mut samples = Vec::with_capacity(DRIFTS);
            for _ in 0..DRIFTS {
                let query = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build();
                let routes: Vec<RouteMessage> = handle
                    .route()
                    .get(query)
                    .execute()
                    .filter_map(|r| async { r.ok() })
                    .collect()
                    .await;
                let Some(route) = routes
                    .into_iter()
                    .find(|m| route_dst(m).as_deref() == Some(target))
                else {
                    bail!("route {target} missing before injection");
                };
                let t0 = Instant::now();
                handle.route().del(route).execute().await?;
                loop {
                    let next = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
                    let Ok(Some((msg, _))) = next else {
                        bail!("route not restored within 5 s")
                    };
                    if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) =
                        msg.payload
                    {
                        if route_dst(&m).as_deref() == Some(target) {
                            samples.push(t0.elapsed().as_secs_f64() * 1e3);
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(samples)
        })
    });
    let _ = child.kill();
    let _ = child.wait();
    let mut s = samples?;
    s.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        s[((s.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(s.len() - 1)]
    };
    println!(
        "drift revert (route deleted → restored, {} samples): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        s.len(),
        pct(0.50),
        pct(0.99),
        s[s.len() - 1]
    );
    Ok(())
}

fn main() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the agent bench creates network namespaces: run it as root");
    }
    sh(&["cargo", "build", "--release", "--bins", "--quiet"])?;
    let reference = std::fs::read_to_string("topologies/clinical-research.yaml")?;
    let today = NaiveDate::parse_from_str(TODAY, "%Y-%m-%d")?;
    let big = Plan::generate(&Params {
        seed: 7,
        gateways: 1,
        segments: 40,
        services: 400,
        flows: 10_000,
        dual_stack: false,
        tier_ref_percent: 2,
        today,
    });
    let gateway = big.gateways[0].clone();
    println!(
        "tiernet agent bench (kernel {})",
        sh(&["uname", "-r"])?.trim()
    );
    apply_vs_nft("reference gw-core", &reference, "gw-core")?;
    apply_vs_nft("generated 10,000 flows", &big.to_yaml(), &gateway)?;
    drift_latency()
}
