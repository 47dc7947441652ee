//! `tiernet` subcommands of the control plane: talk to a controller (plan, apply, status,
//! events, history, diff, rollback), verify the audit log, and make certificates.

mod audit;
mod pki;
mod remote;
mod table;

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// How to reach the controller.
#[derive(Args, Clone)]
pub struct Conn {
    /// The controller: https://HOST:PORT (mutual TLS), or http://127.0.0.1:PORT for one
    /// started with --insecure.
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:7443")]
    pub controller: String,
    /// The site CA (`tiernet pki init`).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Your admin or viewer certificate and key (`tiernet pki issue`).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Format,
}

#[derive(Subcommand)]
pub enum ControlCommand {
    /// What applying FILE would change on each gateway, against the current revision.
    Plan {
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Roll FILE out to every gateway (all or nothing); live progress; non-zero on any failure.
    Apply {
        file: PathBuf,
        /// Refuse unless this is still the current revision (0: none yet).
        #[arg(long)]
        expect_revision: Option<u64>,
        /// Apply to this gateway first and stop there if it fails.
        #[arg(long)]
        canary: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Each gateway's state; non-zero when any is DRIFTED or UNREACHABLE.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Drift, apply, connection and audited-flow events.
    Events {
        /// Keep printing new events.
        #[arg(long)]
        follow: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revisions, newest first.
    History {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// What changed from revision FROM to revision TO.
    Diff {
        from: u64,
        to: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Roll an earlier revision's topology out again, as a new revision.
    Rollback {
        revision: u64,
        #[arg(long)]
        expect_revision: Option<u64>,
        #[arg(long)]
        canary: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// The controller's hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Certificates for the controller, agents and administrators.
    #[command(subcommand)]
    Pki(PkiCommand),
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check every record's hash and link; exit 1 at the first broken one.
    Verify {
        /// Read the controller's SQLite store directly (instead of asking the controller).
        #[arg(long)]
        store: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum PkiCommand {
    /// Create a CA and the controller's certificate in DIR.
    Init {
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Extra DNS names or addresses of the controller (localhost, 127.0.0.1, ::1 always).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Issue NAME.pem/NAME.key: an agent (NAME = its gateway), an admin or a viewer.
    Issue {
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        #[arg(long, value_enum)]
        role: crate::pki::Role,
        name: String,
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

/// Runs a control-plane subcommand to its exit code.
pub fn run(cmd: ControlCommand) -> ExitCode {
    match cmd {
        ControlCommand::Pki(p) => pki::run(p),
        other => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tiernet: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async {
                match other {
                    ControlCommand::Audit(AuditCommand::Verify { store, conn }) => {
                        audit::verify(store, &conn).await
                    }
                    other => remote::run(other).await,
                }
            })
        }
    }
}
