//! The lab's control plane: a management namespace holding `tiernet-controller` on a
//! bridge, one veth from it into every gateway namespace (`mgmt0`), a PKI made for the
//! lab, and the `tiernet` CLI run inside that namespace with the lab's admin certificate.
//! The management network is out of band: no tier host is on it, and a gateway forwards
//! nothing to or from it (its forward chain only passes declared flows).

use super::agents::{self, log_tail};
use super::build;
use super::plan::LabPlan;
use super::state::LabDir;
use crate::compile::Compiled;
use crate::netns;
use crate::pki::{self, Role};
use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use ipnet::IpNet;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A documentation prefix (RFC 5737), only ever inside the lab's namespaces.
const MGMT_NET: &str = "192.0.2.0/24";
const CONTROLLER_IP: &str = "192.0.2.1";
const CONTROLLER_PORT: u16 = 7443;
/// The certificate the lab's own CLI calls use.
pub const ADMIN: &str = "lab-admin";
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(10);

pub fn mgmt_ns(lab: &str) -> String {
    format!("{lab}-mgmt")
}

pub fn url() -> String {
    format!("https://{CONTROLLER_IP}:{CONTROLLER_PORT}")
}

fn mgmt_net() -> Result<IpNet> {
    MGMT_NET.parse().context("the management prefix")
}

/// The management network must not shadow anything the topology routes.
pub fn check_free(compiled: &Compiled) -> Result<()> {
    let mgmt = mgmt_net()?;
    let overlaps = |n: &IpNet| mgmt.contains(&n.network()) || n.contains(&mgmt.network());
    for g in &compiled.gateways {
        let used = g
            .links
            .iter()
            .flat_map(|l| l.addresses.iter())
            .chain(g.routes.iter().map(|r| &r.destination))
            .filter(|n| n.prefix_len() > 0);
        if let Some(n) = used.into_iter().find(|n| overlaps(n)) {
            bail!(
                "the lab's management network {MGMT_NET} overlaps {n} on {}; run this topology with --standalone",
                g.gateway
            );
        }
    }
    Ok(())
}

/// The management namespace, its bridge, and a veth into each gateway namespace.
pub async fn wire(dir: &LabDir, plan: &LabPlan) -> Result<()> {
    let ns = mgmt_ns(&dir.name);
    build::create_namespace(dir, &ns)?;
    let h = netns::rtnetlink_in(&ns)?;
    let mgmt = mgmt_net()?;
    super::nl::set_up(&h, "lo").await?;
    super::nl::add_bridge(&h, "mgmt").await?;
    super::nl::add_address(&h, "mgmt", format!("{CONTROLLER_IP}/24").parse()?).await?;
    super::nl::set_up(&h, "mgmt").await?;
    if plan.gateways.len() > 200 {
        bail!("the lab's management network holds at most 200 gateways");
    }
    for (i, gw) in plan.gateways.iter().enumerate() {
        let (port, peer) = (format!("m{i}"), format!("m{i}gw"));
        super::nl::add_veth(&h, &port, &peer).await?;
        super::nl::move_to(&h, &peer, &netns::open(&gw.ns)?, "mgmt0")
            .await
            .with_context(|| format!("management port of {}", gw.gateway))?;
        super::nl::set_controller(&h, &port, "mgmt").await?;
        super::nl::set_up(&h, &port).await?;
        let g = netns::rtnetlink_in(&gw.ns)?;
        let address = IpNet::new(mgmt.hosts().nth(9 + i).context("address")?, 24)?;
        super::nl::add_address(&g, "mgmt0", address).await?;
        super::nl::set_up(&g, "mgmt0").await?;
    }
    Ok(())
}

/// A CA, the controller's certificate (for the management address), one agent
/// certificate per gateway (its name is the gateway's) and the lab's admin.
pub fn make_pki(dir: &LabDir, plan: &LabPlan) -> Result<()> {
    let d = dir.pki();
    pki::init(&d, &[CONTROLLER_IP.to_string()])?;
    for gw in &plan.gateways {
        pki::issue(&d, Role::Agent, &gw.gateway, &[])?;
    }
    pki::issue(&d, Role::Admin, ADMIN, &[])?;
    Ok(())
}

/// Starts the controller in the management namespace and waits until it listens.
pub fn start_controller(dir: &LabDir, today: NaiveDate) -> Result<()> {
    let (bin, _) = agents::sibling(
        "tiernet-controller",
        "TIERNET_CONTROLLER",
        &["--listen", "--store", "--ready-file"],
    )?;
    let ready = dir.controller_addr();
    let _ = std::fs::remove_file(&ready);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.controller_log())
        .with_context(|| format!("opening {}", dir.controller_log().display()))?;
    let log2 = log.try_clone().context("duplicating the log file handle")?;
    let pki = dir.pki();
    let mut cmd = Command::new(&bin);
    cmd.arg("--listen")
        .arg(format!("{CONTROLLER_IP}:{CONTROLLER_PORT}"))
        .arg("--store")
        .arg(dir.controller_store())
        .arg("--ca")
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(pki.join("controller.pem"))
        .arg("--key")
        .arg(pki.join("controller.key"))
        .arg("--today")
        .arg(today.to_string())
        .arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    let child =
        netns::spawn_in(&mgmt_ns(&dir.name), &mut cmd).context("starting the controller")?;
    std::fs::write(dir.controller_pid(), child.id().to_string())
        .with_context(|| format!("writing {}", dir.controller_pid().display()))?;
    let started = Instant::now();
    while !ready.exists() {
        if !agents::pid_running(&dir.controller_pid()) {
            bail!(
                "the controller exited before it listened; its log:\n{}",
                log_tail(&dir.controller_log(), 20)
            );
        }
        if started.elapsed() > CONTROLLER_TIMEOUT {
            bail!(
                "the controller did not listen within {} s; its log:\n{}",
                CONTROLLER_TIMEOUT.as_secs(),
                log_tail(&dir.controller_log(), 20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Stops the controller (SIGTERM, then SIGKILL); false when none was running.
pub fn stop_controller(dir: &LabDir) -> Result<bool> {
    agents::stop_process(&dir.controller_pid(), &dir.controller_store())
}

/// Kills the controller at once, as a crash would.
pub fn kill_controller(dir: &LabDir) -> Result<()> {
    let text = std::fs::read_to_string(dir.controller_pid())
        .with_context(|| format!("reading {}", dir.controller_pid().display()))?;
    let pid: i32 = text.trim().parse().context("the controller's pid")?;
    // SAFETY: plain syscall; the pid file is ours and the process a child of the lab.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        bail!("killing the controller (pid {pid}) failed");
    }
    let started = Instant::now();
    while agents::pid_running(&dir.controller_pid()) && started.elapsed() < CONTROLLER_TIMEOUT {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

pub fn controller_running(dir: &LabDir) -> bool {
    agents::pid_running(&dir.controller_pid())
}

/// `tiernet ARGS --controller URL --ca --cert --key` with the lab's admin certificate,
/// to be run inside the management namespace.
pub fn cli(dir: &LabDir, args: &[OsString]) -> Result<Command> {
    // `tiernet lab` runs as the `tiernet` binary itself.
    let bin = std::env::current_exe().context("finding the running executable")?;
    let pki = dir.pki();
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .arg("--controller")
        .arg(url())
        .arg("--ca")
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(pki.join(format!("{ADMIN}.pem")))
        .arg("--key")
        .arg(pki.join(format!("{ADMIN}.key")));
    Ok(cmd)
}

/// Runs the CLI in the management namespace with this terminal; returns its exit code.
pub fn run_cli(dir: &LabDir, args: &[OsString]) -> Result<i32> {
    let mut cmd = cli(dir, args)?;
    let mut child = netns::spawn_in(&mgmt_ns(&dir.name), &mut cmd)?;
    let status = child.wait().context("waiting for tiernet")?;
    Ok(status.code().unwrap_or(2))
}

/// Runs the CLI in the management namespace and captures what it prints.
pub fn capture_cli(dir: &LabDir, args: &[&str]) -> Result<Output> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let mut cmd = cli(dir, &args)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = netns::spawn_in(&mgmt_ns(&dir.name), &mut cmd)?;
    child.wait_with_output().context("waiting for tiernet")
}
