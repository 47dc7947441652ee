//! `tiernet`: the network administrator's command line.

use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use tiernet::compile::ranges::Family;
use tiernet::topology::load::{load, Loaded};

#[derive(Parser)]
#[command(
    name = "tiernet",
    version,
    about = "Network segmentation by security tier: validate, compile and inspect topologies"
)]
struct Cli {
    /// The day that decides which flows have expired (default: today).
    #[arg(long, global = true, value_name = "YYYY-MM-DD")]
    today: Option<NaiveDate>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum RenderFormat {
    Nft,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Control plane: plan, apply, status, events, history, diff, rollback, audit, pki.
    #[command(flatten)]
    Control(tiernet::cli::ControlCommand),
    /// Check a topology against the format and the tier rules; exit 0 valid, 1 invalid, 2 unreadable.
    Validate {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Print one gateway's compiled state: the nftables script (for `nft -f`) or everything as JSON.
    Render {
        file: PathBuf,
        #[arg(long)]
        gateway: String,
        #[arg(long, value_enum, default_value = "nft")]
        format: RenderFormat,
    },
    /// May FROM open a connection to TO? Answered from the compiled gateways.
    Reach {
        file: PathBuf,
        /// An address, or the name of a service, segment, tier or `internet`.
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// tcp/N, udp/N or icmp. Default: each port of a service destination, else tcp/443.
        #[arg(long)]
        port: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Graphviz DOT of tiers, segments, services and flows (audited and approval flows marked).
    Graph { file: PathBuf },
    /// A namespace lab of a topology on this machine: up, probe, down, demo (needs root).
    #[command(subcommand)]
    Lab(tiernet::lab::LabCommand),
}

fn today(cli: &Cli) -> NaiveDate {
    cli.today
        .unwrap_or_else(|| chrono::Local::now().date_naive())
}

fn load_or_exit(file: &std::path::Path, today: NaiveDate) -> Result<Loaded, ExitCode> {
    load(file, today).map_err(|e| {
        eprintln!("tiernet: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Control(cmd) = cli.command {
        return tiernet::cli::run(cmd);
    }
    let today = today(&cli);
    match run(&cli, today) {
        Ok(code) | Err(code) => code,
    }
}

fn run(cli: &Cli, today: NaiveDate) -> Result<ExitCode, ExitCode> {
    match &cli.command {
        // Owned arguments: these run to an exit code of their own.
        Command::Control(_) => Ok(ExitCode::SUCCESS),
        Command::Validate { file, output } => {
            let loaded = load_or_exit(file, today)?;
            if *output == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&loaded.diagnostics).unwrap_or_default()
                );
            } else {
                eprint!("{}", loaded.report());
            }
            if loaded.has_errors() {
                let n = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
                eprintln!(
                    "{}: invalid ({n} error{})",
                    file.display(),
                    if n == 1 { "" } else { "s" }
                );
                return Err(ExitCode::from(1));
            }
            if *output == Output::Text {
                eprintln!("{}: valid", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Render {
            file,
            gateway,
            format,
        } => {
            let compiled = compiled(file, today)?;
            let Some(state) = compiled.gateway(gateway) else {
                let names: Vec<&str> = compiled
                    .gateways
                    .iter()
                    .map(|g| g.gateway.as_str())
                    .collect();
                eprintln!(
                    "tiernet: no gateway '{gateway}' in {} (gateways: {})",
                    file.display(),
                    names.join(", ")
                );
                return Err(ExitCode::from(2));
            };
            match format {
                RenderFormat::Nft => {
                    print!("{}", tiernet::nftables::text::render_replace(&state.table))
                }
                RenderFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(state).unwrap_or_default()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reach {
            file,
            from,
            to,
            port,
            output,
        } => {
            let loaded = load_or_exit(file, today)?;
            let compiled = loaded.compile(today).map_err(|report| {
                eprint!("{report}");
                ExitCode::from(1)
            })?;
            let topo = loaded.topology.as_ref().ok_or(ExitCode::from(1))?;
            let usage = |msg: String| {
                eprintln!("tiernet reach: {msg}");
                ExitCode::from(2)
            };
            let dst = tiernet::reach::address_of(topo, to, None).map_err(usage)?;
            let src =
                tiernet::reach::address_of(topo, from, Some(Family::of(&dst))).map_err(usage)?;
            let traffic = match port {
                Some(p) => vec![tiernet::reach::parse_traffic(p).map_err(usage)?],
                None => default_traffic(topo, to),
            };
            let answers: Vec<_> = traffic
                .iter()
                .map(|t| tiernet::reach::reach(&compiled, src, dst, *t))
                .collect();
            if *output == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&answers).unwrap_or_default()
                );
            } else {
                for a in &answers {
                    let verdict = if a.allowed { "allow" } else { "deny" };
                    println!(
                        "{verdict} {from} ({}) -> {to} ({}) {}: {}",
                        a.src, a.dst, a.traffic, a.reason
                    );
                    for h in &a.hops {
                        let v = if h.accepted { "accept" } else { "drop" };
                        println!(
                            "  {} {} -> {}: {v} in chain {} ({})",
                            h.gateway,
                            h.iif,
                            h.oif,
                            h.chain,
                            h.rule.as_deref().unwrap_or("policy")
                        );
                    }
                }
            }
            // Exit 0 only when everything asked is allowed, so scripts can assert reachability.
            if answers.iter().all(|a| a.allowed) {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(ExitCode::from(1))
            }
        }
        Command::Lab(cmd) => Ok(tiernet::lab::run(cmd, today)),
        Command::Graph { file } => {
            let loaded = load_or_exit(file, today)?;
            if loaded.has_errors() {
                eprint!("{}", loaded.report());
                return Err(ExitCode::from(1));
            }
            let topo = loaded.topology.as_ref().ok_or(ExitCode::from(1))?;
            print!("{}", tiernet::graph::dot(topo));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn compiled(
    file: &std::path::Path,
    today: NaiveDate,
) -> Result<tiernet::compile::Compiled, ExitCode> {
    let loaded = load_or_exit(file, today)?;
    loaded.compile(today).map_err(|report| {
        eprint!("{report}");
        ExitCode::from(1)
    })
}

/// Without `--port`: every port of a service destination, else tcp/443.
fn default_traffic(
    topo: &tiernet::topology::Topology,
    to: &str,
) -> Vec<tiernet::topology::PortSpec> {
    let index = tiernet::topology::Index::new(topo);
    match index.endpoint(to) {
        Ok(tiernet::topology::Endpoint::Service(v)) => topo.services[v]
            .ports
            .iter()
            .map(|p| tiernet::topology::PortSpec { hi: p.v.lo, ..p.v })
            .collect(),
        _ => vec![tiernet::topology::PortSpec {
            proto: tiernet::topology::Proto::Tcp,
            lo: 443,
            hi: 443,
        }],
    }
}
