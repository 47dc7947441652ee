//! `lab up` and `lab down`, and opening a running lab for the commands in between.

use super::build::{self, Handles};
use super::plan::{self, LabPlan};
use super::probe::{self, Matrix};
use super::state::{LabDir, Meta};
use super::{agents, mgmt, rewrite};
use crate::compile::Compiled;
use crate::netns;
use crate::topology::load::{check, read_text};
use crate::topology::Topology;
use anyhow::{anyhow, bail, Context, Result};
use chrono::NaiveDate;
use std::path::Path;
use std::time::Instant;

/// A lab that is up: its state, the topology it runs, and its layout.
pub struct Lab {
    pub dir: LabDir,
    pub meta: Meta,
    pub topology: Topology,
    pub compiled: Compiled,
    pub plan: LabPlan,
}

pub(super) fn compile_text(
    path: &Path,
    text: &str,
    today: NaiveDate,
) -> Result<(Topology, Compiled)> {
    let loaded = check(&path.display().to_string(), text, today);
    let compiled = loaded
        .compile(today)
        .map_err(|report| anyhow!("{} does not compile:\n{report}", path.display()))?;
    let topology = loaded
        .topology
        .ok_or_else(|| anyhow!("{} has no topology", path.display()))?;
    Ok((topology, compiled))
}

impl Lab {
    pub fn open(name: &str) -> Result<Lab> {
        let dir = LabDir::new(name)?;
        let meta = dir.meta()?;
        let (path, text) = declared(&dir, &meta)?;
        let (topology, compiled) = compile_text(&path, &text, meta.today()?)?;
        let plan = plan::plan(name, &topology, &compiled)?;
        if let Some(missing) = plan.namespaces().into_iter().find(|ns| !netns::exists(ns)) {
            bail!("lab '{name}' is incomplete (namespace {missing} is gone); run `tiernet lab up` again");
        }
        let lab = Lab {
            dir,
            meta,
            topology,
            compiled,
            plan,
        };
        lab.warn_about_agents();
        Ok(lab)
    }

    /// Probes through a gateway mean little without its agent: say so up front.
    fn warn_about_agents(&self) {
        if !self.meta.agents {
            eprintln!(
                "note: lab {} runs without agents (--no-agent): gateways neither route nor filter",
                self.dir.name
            );
            return;
        }
        for gw in self
            .plan
            .gateways
            .iter()
            .filter(|g| !agents::running(&self.dir, &g.gateway))
        {
            eprintln!(
                "warning: the agent of {} is not running; its log:\n{}",
                gw.gateway,
                agents::log_tail(&self.dir.agent_log(&gw.gateway), 5)
            );
        }
    }

    /// Starts the listeners, probes every pair, stops the listeners.
    pub fn probe(&self) -> Result<Matrix> {
        let listeners = probe::start_listeners(&self.plan, &self.topology)?;
        let mut m = probe::matrix(&self.plan, &self.topology, &self.compiled);
        probe::run(&self.plan, &mut m)?;
        drop(listeners);
        Ok(m)
    }
}

/// What the lab must enforce now: with a controller, its current revision (read from its
/// store, so a revision applied with the plain CLI counts too); else the lab's topology.
fn declared(dir: &LabDir, meta: &Meta) -> Result<(std::path::PathBuf, String)> {
    if !meta.controller {
        return Ok((dir.topology(), read_text(&dir.topology())?));
    }
    let store = crate::controller::store::Store::open_read_only(&dir.controller_store())?;
    let current = store
        .current()?
        .ok_or_else(|| anyhow!("the lab's controller has no revision applied yet"))?;
    let path = std::path::PathBuf::from(format!("revision {} ({})", current.id, current.source));
    Ok((path, current.topology))
}

/// How `lab up` runs the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agents {
    /// Wiring only.
    None,
    /// Each agent compiles its part of the topology file.
    Standalone,
    /// A controller in a management namespace, agents dialling it over mutual TLS, and
    /// the topology applied as its first revision.
    Controller,
}

/// Builds the lab `name` from `file` (removing a stale one first); with `agents`, starts
/// one agent per gateway and waits until each has applied its state. A failed `up`
/// removes what it built.
pub async fn up(file: &Path, name: &str, mode: Agents, today: NaiveDate) -> Result<Lab> {
    let dir = LabDir::new(name)?;
    // Everything that can fail without touching the kernel, first.
    let text = read_text(file)?;
    let (topology, compiled) = compile_text(file, &text, today)?;
    let agent = match mode {
        Agents::None => None,
        _ => Some(agents::find()?),
    };
    if mode == Agents::Controller {
        mgmt::check_free(&compiled)?;
    }
    if dir.exists() || plan_namespaces_exist(name) {
        say!("lab {name}: removing the previous lab of that name first");
        down(name, false)?;
    }
    let started = Instant::now();
    let source = Source {
        file,
        text,
        topology,
    };
    match build_lab(&source, &dir, agent.as_ref(), mode, today).await {
        Ok(lab) => {
            say!("lab {name} is up in {:.1} s. Next: tiernet lab probe --name {name}; tiernet lab down --name {name}", started.elapsed().as_secs_f64());
            Ok(lab)
        }
        Err(e) => {
            eprintln!("lab {name}: up failed, removing what was built");
            if let Err(d) = down(name, false) {
                eprintln!("lab {name}: cleaning up failed too: {d:#}");
            }
            Err(e)
        }
    }
}

/// Leftovers of a lab whose state directory is gone: its switch namespace is the tell.
fn plan_namespaces_exist(name: &str) -> bool {
    netns::exists(&plan::switch_ns(name))
}

/// The topology file given to `lab up`, read and validated.
struct Source<'a> {
    file: &'a Path,
    text: String,
    topology: Topology,
}

async fn build_lab(
    source: &Source<'_>,
    dir: &LabDir,
    agent: Option<&agents::AgentBinary>,
    mode: Agents,
    today: NaiveDate,
) -> Result<Lab> {
    let name = dir.name.as_str();
    let (file, topology) = (source.file, &source.topology);
    say!(
        "lab {name}: {} ({})",
        file.display(),
        topology.name.as_ref().map_or("unnamed", |n| n.v.as_str())
    );
    dir.create()?;

    // The switch namespace first: the 802.1Q check runs in it while it is still empty.
    let sw = plan::switch_ns(name);
    build::create_namespace(dir, &sw)?;
    let vlans = build::has_8021q(&netns::rtnetlink_in(&sw)?).await?;
    let (text, untagged) = rewrite::untag(&source.text, topology)?;
    if !untagged.is_empty() {
        if vlans {
            say!("  802.1Q is available, but the lab wires one veth per segment (VLAN trunks are not modelled in the lab):");
        } else {
            say!("  no 802.1Q in this kernel: one veth per segment instead of VLANs on a trunk:");
        }
        for u in &untagged {
            say!(
                "    {:<28} vlan {:<5} -> port {}",
                u.what,
                u.vlan,
                u.interface
            );
        }
    }
    std::fs::write(dir.topology(), &text)
        .with_context(|| format!("writing {}", dir.topology().display()))?;
    let (topology, compiled) =
        compile_text(&dir.topology(), &text, today).context("the lab's rewritten topology")?;
    say!(
        "  lab topology: {} (validated and compiled)",
        dir.topology().display()
    );
    let meta = Meta {
        source: file.display().to_string(),
        today: today.to_string(),
        untagged: !untagged.is_empty(),
        agents: agent.is_some(),
        controller: mode == Agents::Controller,
    };
    dir.write_meta(&meta)?;

    let plan = plan::plan(name, &topology, &compiled)?;
    let t = Instant::now();
    build::create_namespaces(&plan, dir)?;
    let handles = Handles::open(&plan.namespaces())?;
    build::wire(&plan, &handles).await?;
    say!(
        "  {} namespaces, {} bridges, {} veth pairs wired in {:.2} s",
        plan.namespaces().len(),
        plan.bridges.len(),
        plan.wires.len(),
        t.elapsed().as_secs_f64()
    );
    print_hosts(&plan);

    if let (Some(bin), Agents::Controller) = (agent, mode) {
        start_controlled(dir, &plan, bin, today).await?;
    } else if let Some(bin) = agent {
        agents::start(dir, &plan, bin, &agents::Source::Standalone, today)?;
        let waited = agents::wait_ready(dir, &plan, agents::READY_TIMEOUT)?;
        let names: Vec<&str> = plan.gateways.iter().map(|g| g.gateway.as_str()).collect();
        say!(
            "  agents ready in {:.2} s: {} (logs in {})",
            waited.as_secs_f64(),
            names.join(", "),
            dir.root.join("logs").display()
        );
    } else {
        say!("  no agents (--no-agent): gateways have their ports but no addresses, routes or firewall");
    }
    Ok(Lab {
        dir: LabDir::new(name)?,
        meta,
        topology,
        compiled,
        plan,
    })
}

/// The management network, PKI and controller; the agents, closed until the controller
/// sends them their state; then the topology applied as revision 1 through the CLI.
async fn start_controlled(
    dir: &LabDir,
    plan: &LabPlan,
    bin: &agents::AgentBinary,
    today: NaiveDate,
) -> Result<()> {
    let t = Instant::now();
    mgmt::wire(dir, plan).await?;
    mgmt::make_pki(dir, plan)?;
    mgmt::start_controller(dir, today)?;
    say!(
        "  controller {} in {} (mutual TLS, CA and certificates in {}) up in {:.2} s",
        mgmt::url(),
        mgmt::mgmt_ns(&dir.name),
        dir.pki().display(),
        t.elapsed().as_secs_f64()
    );
    let url = mgmt::url();
    agents::start(
        dir,
        plan,
        bin,
        &agents::Source::Controller { url: &url },
        today,
    )?;
    let waited = agents::wait_ready(dir, plan, agents::READY_TIMEOUT)?;
    say!(
        "  agents started closed in {:.2} s, dialling the controller (logs in {})",
        waited.as_secs_f64(),
        dir.root.join("logs").display()
    );
    say!("  tiernet apply (revision 1):");
    let topology = dir.topology().into_os_string();
    let code = tokio::task::block_in_place(|| mgmt::run_cli(dir, &["apply".into(), topology]))?;
    if code != 0 {
        bail!(
            "applying the topology through the controller failed (exit {code}); its log:\n{}",
            agents::log_tail(&dir.controller_log(), 20)
        );
    }
    Ok(())
}

fn print_hosts(plan: &LabPlan) {
    say!("  hosts (ip netns exec NAMESPACE ...):");
    for host in &plan.hosts {
        let addrs: Vec<String> = plan
            .ends_in(&host.ns)
            .flat_map(|e| e.addresses.iter().map(|a| a.to_string()))
            .collect();
        let via: Vec<String> = host
            .routes
            .iter()
            .filter(|r| r.destination.prefix_len() == 0)
            .map(|r| r.via.to_string())
            .collect();
        let via = if via.is_empty() {
            String::new()
        } else {
            format!(" via {}", via.join(", "))
        };
        say!(
            "    {:<28} {:<28} {}{via}",
            host.label(),
            host.ns,
            addrs.join(", ")
        );
    }
}

/// Removes the lab `name`: stops its agents, deletes its namespaces and state. Idempotent.
pub fn down(name: &str, verbose: bool) -> Result<()> {
    let started = Instant::now();
    let dir = LabDir::new(name)?;
    let mut namespaces = dir.recorded_namespaces();
    if namespaces.is_empty() && plan_namespaces_exist(name) {
        namespaces.push(plan::switch_ns(name));
    }
    if !dir.exists() && namespaces.is_empty() {
        if verbose {
            say!("lab {name} is not up: nothing to remove");
        }
        return Ok(());
    }
    let stopped = agents::stop(&dir)?;
    mgmt::stop_controller(&dir)?;
    let mut removed = 0;
    for ns in &namespaces {
        if netns::exists(ns) {
            netns::delete(ns)?;
            removed += 1;
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir.root)
            .with_context(|| format!("removing {}", dir.root.display()))?;
    }
    if verbose {
        say!(
            "lab {name} is down: {stopped} agents stopped, {removed} namespaces removed in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
