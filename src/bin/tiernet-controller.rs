//! `tiernet-controller`: the control plane. Keeps topology revisions in SQLite and rolls
//! them out to the gateways' agents over gRPC with mutual TLS.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tiernet::controller::server::{serve, ServeConfig};
use tiernet::controller::tls::TlsFiles;
use tiernet::controller::Settings;

#[derive(Parser)]
#[command(
    name = "tiernet-controller",
    version,
    about = "tiernet control plane: revisions, all-or-nothing rollout, status and drift over gRPC with mutual TLS"
)]
struct Args {
    /// Address to serve agents and admins on.
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// The SQLite file holding revisions, results, events and the audit log.
    #[arg(long, default_value = "/var/lib/tiernet/controller.db")]
    store: PathBuf,
    /// CA that signs agent and admin certificates.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The controller's certificate and key (from `tiernet pki init`).
    #[arg(long)]
    cert: Option<PathBuf>,
    #[arg(long)]
    key: Option<PathBuf>,
    /// Plaintext, no client authentication; only on a loopback address (labs, tests).
    #[arg(long)]
    insecure: bool,
    /// Seconds one gateway may take to apply a revision and answer.
    #[arg(long, default_value_t = 30)]
    apply_timeout: u64,
    /// Seconds a rollout waits for a gateway that is not connected.
    #[arg(long, default_value_t = 10)]
    connect_grace: u64,
    /// Seconds between checks for flows whose day has ended.
    #[arg(long, default_value_t = 60)]
    expiry_check: u64,
    /// The day that decides which flows have expired (default: today).
    #[arg(long, value_name = "YYYY-MM-DD")]
    today: Option<chrono::NaiveDate>,
    /// Write the bound address here once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tiernet::logging::init(false, args.insecure);
    let tls = match TlsFiles::from_args(args.ca, args.cert, args.key, args.insecure) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tiernet-controller: {e}");
            return ExitCode::from(2);
        }
    };
    if tls.is_none() {
        tracing::warn!(listen = %args.listen, "running WITHOUT TLS: no client authentication, every caller is admin");
    }
    let cfg = ServeConfig {
        listen: args.listen,
        store: args.store,
        tls,
        settings: Settings {
            insecure: args.insecure,
            today: args.today,
            apply_timeout: Duration::from_secs(args.apply_timeout.max(1)),
            connect_grace: Duration::from_secs(args.connect_grace),
        },
        ready_file: args.ready_file,
        expiry_check: Duration::from_secs(args.expiry_check.max(1)),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tiernet-controller: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match runtime.block_on(serve(cfg, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "controller stopped");
            ExitCode::FAILURE
        }
    }
}
