//! `tiernet lab`: the whole topology in network namespaces on one machine — a namespace
//! per gateway running the real agent, a switch, a client per segment, a host per
//! service and one for the internet — and a probe that compares real packets with
//! what the compiled topology says.

/// `println!` that ignores a closed stdout (`| head`): the lab must never stop half-built
/// because nobody reads its progress.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` likewise.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

pub mod agents;
pub mod build;
pub mod control;
pub mod demo;
pub mod listeners;
pub mod mgmt;
pub mod nl;
pub mod observe;
pub mod plan;
pub mod probe;
pub mod revisions;
pub mod rewrite;
pub mod state;
pub mod table;
pub mod updown;

use chrono::NaiveDate;
use clap::Subcommand;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

pub const DEFAULT_NAME: &str = "tn";

#[derive(Subcommand, Debug, Clone)]
pub enum LabCommand {
    /// Build the lab from a topology: namespaces, veths and bridges, hosts, a controller
    /// on a management network and one agent per gateway (mutual TLS), and apply the
    /// topology as revision 1.
    Up {
        file: PathBuf,
        /// The lab's name (prefix of its namespaces).
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        /// Wiring only: start no agents, so gateways stay bare (no addresses, routes or firewall).
        #[arg(long)]
        no_agent: bool,
        /// No controller: each agent compiles its part of the topology file itself.
        #[arg(long, conflicts_with = "no_agent")]
        standalone: bool,
    },
    /// Roll a (changed) topology out through the lab's controller, as `tiernet apply` does;
    /// VLANs are rewritten to the lab's ports. Exit code as `tiernet apply`.
    Apply {
        file: PathBuf,
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        /// Apply to this gateway first and stop there if it fails.
        #[arg(long)]
        canary: Option<String>,
        /// Only show what would change on each gateway (`tiernet plan`).
        #[arg(long)]
        plan: bool,
    },
    /// Any `tiernet` control command against the lab's controller with the lab's admin
    /// certificate, e.g. `tiernet lab ctl -- status`, `... -- rollback 1`, `... -- history`.
    Ctl {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Start, stop or kill the lab's controller (gateways keep enforcing without it).
    Controller {
        action: control::ControllerAction,
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
    },
    /// Send real TCP, UDP and ICMP probes between all hosts and compare with the topology; exit 1 on any mismatch.
    Probe {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        /// A machine-readable list of every probed pair instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Remove the lab: agents, namespaces and state files. Safe to run when nothing is up.
    Down {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
    },
    /// Up, probe, drift injected behind the agents' back and shown reverted, probe again, down.
    Demo {
        file: PathBuf,
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs a lab command; exit 0 on success, 1 when probes disagree with the topology,
/// 2 when the lab could not be built or read; `apply` and `ctl` exit as the CLI did.
pub fn run(cmd: &LabCommand, today: NaiveDate) -> ExitCode {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("tiernet lab: needs root (it creates network namespaces)");
        return ExitCode::from(2);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tiernet lab: {e:#}");
            return ExitCode::from(2);
        }
    };
    let tty = std::io::stdout().is_terminal();
    let result = rt.block_on(async {
        match cmd {
            LabCommand::Up {
                file,
                name,
                no_agent,
                standalone,
            } => {
                let mode = match (no_agent, standalone) {
                    (true, _) => updown::Agents::None,
                    (_, true) => updown::Agents::Standalone,
                    _ => updown::Agents::Controller,
                };
                updown::up(file, name, mode, today).await.map(|_| 0)
            }
            LabCommand::Apply {
                file,
                name,
                canary,
                plan,
            } => control::apply(name, file, canary.as_deref(), *plan),
            LabCommand::Ctl { name, args } => control::ctl(name, args),
            LabCommand::Controller { action, name } => {
                control::controller(name, *action).map(|_| 0)
            }
            LabCommand::Down { name } => updown::down(name, true).map(|_| 0),
            LabCommand::Probe { name, json } => {
                let lab = updown::Lab::open(name)?;
                let started = std::time::Instant::now();
                let m = lab.probe()?;
                let text = if *json {
                    serde_json::to_string_pretty(&m.cells)? + "\n"
                } else {
                    format!(
                        "{}probed in {:.1} s\n",
                        table::render(&lab.plan, &m, tty),
                        started.elapsed().as_secs_f64()
                    )
                };
                // A closed pipe (`| head`) is not an error worth a panic.
                let _ = std::io::stdout().write_all(text.as_bytes());
                Ok(i32::from(probe::summary(&m).mismatches != 0))
            }
            LabCommand::Demo { file, name } => demo::demo(file, name, today, tty)
                .await
                .map(|ok| i32::from(!ok)),
        }
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
        Err(e) => {
            eprintln!("tiernet lab: {e:#}");
            ExitCode::from(2)
        }
    }
}
