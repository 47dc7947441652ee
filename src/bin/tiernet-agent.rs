//! `tiernet-agent`: runs on a gateway, applies its compiled state and rejects drift.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tiernet::agent::controller_link::LinkConfig;
use tiernet::agent::daemon::{run, Config, Mode};
use tiernet::controller::tls::TlsFiles;

#[derive(Parser)]
#[command(
    name = "tiernet-agent",
    version,
    about = "Programs one gateway and reverts drift from kernel events"
)]
struct Args {
    /// This gateway's name in the topology (and, with a controller, its certificate name).
    #[arg(long)]
    gateway: String,
    /// Standalone mode: compile this gateway's part of a local topology (reloaded on SIGHUP).
    #[arg(long, conflicts_with = "controller")]
    topology: Option<PathBuf>,
    /// Controller mode: take desired states from the controller at this URL (https://HOST:PORT).
    #[arg(long, value_name = "URL", conflicts_with = "once")]
    controller: Option<String>,
    /// CA that signed the controller's certificate (controller mode).
    #[arg(long, requires = "controller")]
    ca: Option<PathBuf>,
    /// This agent's certificate (its name must be the gateway name) and key.
    #[arg(long, requires = "controller")]
    cert: Option<PathBuf>,
    #[arg(long, requires = "controller")]
    key: Option<PathBuf>,
    /// Plaintext to a loopback controller (labs and tests only).
    #[arg(long, requires = "controller")]
    insecure: bool,
    /// Where the last applied state is kept and restored from at start.
    #[arg(long, default_value = "/var/lib/tiernet/agent")]
    state_dir: PathBuf,
    #[arg(long, value_enum, default_value = "enforce")]
    mode: Mode,
    /// Seconds between full checks that back up kernel events.
    #[arg(long, default_value_t = 30)]
    check_interval: u64,
    /// Do not set the nftables owner flag (lets other processes alter the table; for tests of revert).
    #[arg(long)]
    no_owner: bool,
    /// Reverts of the same object within 10 s before it counts as flapping (another process
    /// fighting tiernet) and is only reported for 30 s.
    #[arg(long, default_value_t = 5)]
    flap_limit: usize,
    /// Apply once and exit.
    #[arg(long)]
    once: bool,
    /// The day that decides which flows have expired (default: today).
    #[arg(long, value_name = "YYYY-MM-DD")]
    today: Option<chrono::NaiveDate>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tiernet::logging::init(true, args.insecure);
    let controller = match args.controller {
        Some(url) => match TlsFiles::from_args(args.ca, args.cert, args.key, args.insecure) {
            Ok(tls) => Some(LinkConfig {
                url,
                gateway: args.gateway.clone(),
                tls,
                min_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(10),
            }),
            Err(e) => {
                eprintln!("tiernet-agent: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let cfg = Config {
        gateway: args.gateway,
        topology: args.topology,
        state_dir: args.state_dir,
        mode: args.mode,
        check_interval: Duration::from_secs(args.check_interval.max(1)),
        owner: !args.no_owner,
        once: args.once,
        flap_limit: args.flap_limit.max(1),
        today: args.today,
        controller,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tiernet-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "agent stopped");
            ExitCode::FAILURE
        }
    }
}
