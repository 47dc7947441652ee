//! One `tiernet-agent` per gateway, each started inside its gateway's namespace. The
//! agent programs the gateway side (addresses, routes, sysctls, nftables) and reverts
//! drift; the lab only starts it, waits for its `ready` file, and stops it.

use super::plan::LabPlan;
use super::state::LabDir;
use crate::netns;
use anyhow::{anyhow, bail, Context, Result};
use chrono::NaiveDate;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The agent binary and what its command line takes.
pub struct AgentBinary {
    pub path: PathBuf,
    takes_today: bool,
}

/// A tiernet binary next to the running executable (`env` overrides its path), checked
/// to take `flags` so a stale build fails with a clear message.
pub fn sibling(name: &str, env: &str, flags: &[&str]) -> Result<(PathBuf, String)> {
    let path = match std::env::var_os(env) {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe().context("finding the running executable")?;
            exe.parent()
                .map(|d| d.join(name))
                .ok_or_else(|| anyhow!("{} has no directory", exe.display()))?
        }
    };
    let out = Command::new(&path)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --help", path.display()))?;
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let missing: Vec<&str> = flags
        .iter()
        .copied()
        .filter(|f| !help.contains(f))
        .collect();
    if !out.status.success() || !missing.is_empty() {
        bail!(
            "{} does not take {} (is it built?)",
            path.display(),
            missing.join(", ")
        );
    }
    Ok((path, help))
}

/// `tiernet-agent` next to the running executable (TIERNET_AGENT overrides it).
pub fn find() -> Result<AgentBinary> {
    let (path, help) = sibling(
        "tiernet-agent",
        "TIERNET_AGENT",
        &["--gateway", "--topology", "--controller", "--state-dir"],
    )?;
    Ok(AgentBinary {
        takes_today: help.contains("--today"),
        path,
    })
}

/// Where an agent takes its desired state from.
pub enum Source<'a> {
    /// Compiles its own part of the lab's topology file.
    Standalone,
    /// From the lab's controller, over mutual TLS with its own certificate.
    Controller { url: &'a str },
}

/// Starts every gateway's agent in its namespace, with stdout and stderr in the lab's logs.
pub fn start(
    dir: &LabDir,
    plan: &LabPlan,
    bin: &AgentBinary,
    source: &Source,
    today: NaiveDate,
) -> Result<()> {
    for gw in &plan.gateways {
        let state = dir.agent_state(&gw.gateway);
        std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        let log_path = dir.agent_log(&gw.gateway);
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log2 = log.try_clone().context("duplicating the log file handle")?;
        let mut cmd = Command::new(&bin.path);
        cmd.arg("--gateway")
            .arg(&gw.gateway)
            .arg("--state-dir")
            .arg(&state)
            .args(["--mode", "enforce"]);
        match source {
            Source::Standalone => {
                cmd.arg("--topology").arg(dir.topology());
            }
            Source::Controller { url } => {
                let pki = dir.pki();
                cmd.arg("--controller")
                    .arg(url)
                    .arg("--ca")
                    .arg(pki.join("ca.pem"))
                    .arg("--cert")
                    .arg(pki.join(format!("{}.pem", gw.gateway)))
                    .arg("--key")
                    .arg(pki.join(format!("{}.key", gw.gateway)));
            }
        }
        if bin.takes_today {
            cmd.arg("--today").arg(today.to_string());
        }
        // Its own process group: a Ctrl-C at the terminal that started the lab must not
        // take the agents down behind `lab down`'s back.
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        let child = netns::spawn_in(&gw.ns, &mut cmd)
            .with_context(|| format!("starting the agent of {}", gw.gateway))?;
        let pid_path = dir.agent_pid(&gw.gateway);
        std::fs::write(&pid_path, child.id().to_string())
            .with_context(|| format!("writing {}", pid_path.display()))?;
    }
    Ok(())
}

/// The last `n` lines of a log, indented, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        format!("  ({} is empty)", path.display())
    } else {
        tail.iter().map(|l| format!("  {l}\n")).collect()
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` still runs (a zombie child of ours is reaped and counts as gone).
fn alive(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: plain syscall; ECHILD for processes that are not our children is fine.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether the agent of `gateway` is running, by its pid file.
pub fn running(dir: &LabDir, gateway: &str) -> bool {
    pid_running(&dir.agent_pid(gateway))
}

/// Waits until every agent has written `ready`; on a dead agent or the timeout, fails
/// with the tail of the agents' logs.
pub fn wait_ready(dir: &LabDir, plan: &LabPlan, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    let mut pending: Vec<&str> = plan.gateways.iter().map(|g| g.gateway.as_str()).collect();
    while !pending.is_empty() {
        pending.retain(|gw| !dir.agent_state(gw).join("ready").exists());
        for gw in &pending {
            if let Some(pid) = read_pid(&dir.agent_pid(gw)) {
                if !alive(pid) {
                    bail!(
                        "the agent of {gw} exited before it was ready; its log:\n{}",
                        log_tail(&dir.agent_log(gw), 20)
                    );
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        if start.elapsed() > timeout {
            let logs: String = pending
                .iter()
                .map(|gw| {
                    format!(
                        "agent of {gw} ({}):\n{}",
                        dir.agent_log(gw).display(),
                        log_tail(&dir.agent_log(gw), 20)
                    )
                })
                .collect();
            bail!(
                "agents not ready after {} s: {}\n{logs}",
                timeout.as_secs(),
                pending.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(start.elapsed())
}

/// Stops the process in `pid_path` (SIGTERM, then SIGKILL after 3 s) and removes the
/// file. The pid is signalled only while its command line still contains `marker` (a
/// path of this lab), so a reused pid is never hit. Returns whether it was running.
pub fn stop_process(pid_path: &Path, marker: &Path) -> Result<bool> {
    let mut stopped = false;
    if let Some(pid) = read_pid(pid_path) {
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&*marker.to_string_lossy()))
            .unwrap_or(false);
        if ours && alive(pid) {
            // SAFETY: plain syscalls on a pid checked just above.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(pid) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let deadline = Instant::now() + Duration::from_secs(2);
                while alive(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            stopped = true;
        }
    }
    if pid_path.exists() {
        std::fs::remove_file(pid_path)
            .with_context(|| format!("removing {}", pid_path.display()))?;
    }
    Ok(stopped)
}

/// Whether the process in `pid_path` runs.
pub fn pid_running(pid_path: &Path) -> bool {
    read_pid(pid_path).is_some_and(alive)
}

/// Stops every agent with a pid file in `dir`.
pub fn stop(dir: &LabDir) -> Result<usize> {
    let mut stopped = 0;
    for gw in dir.agent_gateways() {
        if stop_process(&dir.agent_pid(&gw), &dir.agent_state(&gw))? {
            stopped += 1;
        }
    }
    Ok(stopped)
}
