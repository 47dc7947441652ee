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
pub mod demo;
pub mod listeners;
pub mod nl;
pub mod observe;
pub mod plan;
pub mod probe;
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
    /// Build the lab from a topology: namespaces, veths and bridges, hosts, and one agent per gateway.
    Up {
        file: PathBuf,
        /// The lab's name (prefix of its namespaces).
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        /// Wiring only: start no agents, so gateways stay bare (no addresses, routes or firewall).
        #[arg(long)]
        no_agent: bool,
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
/// 2 when the lab could not be built or read.
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
            } => updown::up(file, name, !no_agent, today).await.map(|_| true),
            LabCommand::Down { name } => updown::down(name, true).map(|_| true),
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
                Ok(probe::summary(&m).mismatches == 0)
            }
            LabCommand::Demo { file, name } => demo::demo(file, name, today, tty).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tiernet lab: {e:#}");
            ExitCode::from(2)
        }
    }
}
