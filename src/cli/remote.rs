//! The subcommands that ask the controller, and how their answers are printed.
//! Exit codes: 0 success, 1 the operation failed or found a problem, 2 the controller or
//! a file could not be reached.

use super::table::{render, when};
use super::{Conn, ControlCommand, Format};
use crate::controller::tls::{connect, TlsFiles};
use crate::proto::v1::admin_client::AdminClient;
use crate::proto::v1::*;
use std::path::Path;
use std::process::ExitCode;
use tonic::transport::Channel;
use tonic::Streaming;

pub async fn client(conn: &Conn) -> Result<AdminClient<Channel>, ExitCode> {
    let plaintext = conn.controller.starts_with("http://");
    let tls = TlsFiles::from_args(
        conn.ca.clone(),
        conn.cert.clone(),
        conn.key.clone(),
        plaintext,
    )
    .map_err(|e| {
        eprintln!("tiernet: {e}");
        ExitCode::from(2)
    })?;
    let channel = connect(&conn.controller, tls.as_ref()).await.map_err(|e| {
        eprintln!("tiernet: {e:#}");
        ExitCode::from(2)
    })?;
    Ok(AdminClient::new(channel).max_decoding_message_size(64 << 20))
}

pub fn rpc_failed(s: tonic::Status) -> ExitCode {
    eprintln!("tiernet: {:?}: {}", s.code(), s.message());
    match s.code() {
        tonic::Code::Unavailable => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

fn read_topology(file: &Path) -> Result<(String, String), ExitCode> {
    let text = crate::topology::load::read_text(file).map_err(|e| {
        eprintln!("tiernet: {e}");
        ExitCode::from(2)
    })?;
    Ok((file.display().to_string(), text))
}

fn json_line<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

pub async fn run(cmd: ControlCommand) -> ExitCode {
    match go(cmd).await {
        Ok(code) | Err(code) => code,
    }
}

async fn go(cmd: ControlCommand) -> Result<ExitCode, ExitCode> {
    match cmd {
        ControlCommand::Plan { file, conn } => {
            let (name, topology) = read_topology(&file)?;
            let reply = client(&conn)
                .await?
                .plan(TopologyRequest { name, topology })
                .await
                .map_err(rpc_failed)?
                .into_inner();
            if conn.output == Format::Json {
                json_line(&reply);
            } else {
                for w in &reply.warnings {
                    eprintln!("{}", w.rendered);
                }
                println!(
                    "current revision {}; each gateway planned against what its agent reports:",
                    reply.current_revision
                );
                let rows: Vec<Vec<String>> = reply
                    .gateways
                    .iter()
                    .map(|g| {
                        vec![
                            g.gateway.clone(),
                            g.agent_state.clone(),
                            if g.connected {
                                g.reported_revision.to_string()
                            } else {
                                "-".into()
                            },
                            g.against_revision.to_string(),
                            g.changes.len().to_string(),
                            g.note.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    render(
                        &["GATEWAY", "AGENT", "REPORTED", "AGAINST", "CHANGES", "NOTE"],
                        &rows
                    )
                );
                print_plans(&reply.gateways);
            }
            Ok(ExitCode::SUCCESS)
        }
        ControlCommand::Apply {
            file,
            expect_revision,
            canary,
            conn,
        } => {
            let (name, topology) = read_topology(&file)?;
            let req = ApplyRequest {
                name,
                topology,
                expect_revision,
                canary: canary.unwrap_or_default(),
            };
            let stream = client(&conn)
                .await?
                .apply(req)
                .await
                .map_err(rpc_failed)?
                .into_inner();
            follow_progress(stream, conn.output).await
        }
        ControlCommand::Rollback {
            revision,
            expect_revision,
            canary,
            conn,
        } => {
            let req = RollbackRequest {
                revision,
                expect_revision,
                canary: canary.unwrap_or_default(),
            };
            let stream = client(&conn)
                .await?
                .rollback(req)
                .await
                .map_err(rpc_failed)?
                .into_inner();
            follow_progress(stream, conn.output).await
        }
        ControlCommand::Status { conn } => {
            let reply = client(&conn)
                .await?
                .status(StatusRequest {})
                .await
                .map_err(rpc_failed)?
                .into_inner();
            if conn.output == Format::Json {
                json_line(&reply);
            } else {
                if reply.insecure {
                    println!("WARNING: the controller runs without TLS (--insecure)");
                }
                println!("current revision: {}", reply.current_revision);
                let rows: Vec<Vec<String>> = reply
                    .gateways
                    .iter()
                    .map(|g| {
                        vec![
                            g.gateway.clone(),
                            g.state.clone(),
                            g.applied_revision.to_string(),
                            when(g.last_seen_ms),
                            g.detail.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    render(
                        &["GATEWAY", "STATE", "REVISION", "LAST SEEN", "DETAIL"],
                        &rows
                    )
                );
            }
            let unhealthy = reply
                .gateways
                .iter()
                .any(|g| g.state == "DRIFTED" || g.state == "UNREACHABLE");
            Ok(if unhealthy {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        ControlCommand::Events {
            follow,
            limit,
            conn,
        } => {
            let mut stream = client(&conn)
                .await?
                .events(EventsRequest {
                    after: 0,
                    limit,
                    follow,
                })
                .await
                .map_err(rpc_failed)?
                .into_inner();
            if conn.output == Format::Text {
                println!(
                    "{}",
                    render(&["ID", "TIME", "GATEWAY", "KIND", "SUMMARY"], &[]).trim_end()
                );
            }
            while let Some(e) = stream.message().await.map_err(rpc_failed)? {
                if conn.output == Format::Json {
                    json_line(&e);
                } else {
                    let gw = if e.gateway.is_empty() {
                        "-"
                    } else {
                        e.gateway.as_str()
                    };
                    println!(
                        "{}  {}  {gw}  {}  {}",
                        e.id,
                        when(e.at_ms),
                        e.kind,
                        e.summary
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ControlCommand::History { limit, conn } => {
            let reply = client(&conn)
                .await?
                .history(HistoryRequest { limit })
                .await
                .map_err(rpc_failed)?
                .into_inner();
            if conn.output == Format::Json {
                json_line(&reply);
            } else {
                let rows: Vec<Vec<String>> = reply
                    .revisions
                    .iter()
                    .map(|r| {
                        let mark = if r.id == reply.current_revision {
                            "*"
                        } else {
                            ""
                        };
                        vec![
                            format!("{}{mark}", r.id),
                            when(r.created_ms),
                            r.author.clone(),
                            r.kind.clone(),
                            r.status.clone(),
                            r.source.clone(),
                            r.message.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    render(
                        &["REV", "CREATED", "AUTHOR", "KIND", "STATUS", "SOURCE", "MESSAGE"],
                        &rows
                    )
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ControlCommand::Diff { from, to, conn } => {
            let reply = client(&conn)
                .await?
                .diff(DiffRequest { from, to })
                .await
                .map_err(rpc_failed)?
                .into_inner();
            if conn.output == Format::Json {
                json_line(&reply);
            } else {
                print!("{}", reply.topology_diff);
                print_plans(&reply.gateways);
            }
            Ok(ExitCode::SUCCESS)
        }
        ControlCommand::Audit(_) | ControlCommand::Pki(_) => Ok(ExitCode::from(2)),
    }
}

fn print_plans(plans: &[GatewayPlan]) {
    for g in plans {
        let conn = if g.connected {
            "connected"
        } else {
            "NOT CONNECTED"
        };
        let against = if g.agent_state.is_empty() {
            String::new()
        } else {
            format!(", against revision {}", g.against_revision)
        };
        if g.changes.is_empty() {
            println!("{} ({conn}{against}): no change", g.gateway);
            continue;
        }
        println!(
            "{} ({conn}{against}): {} changes",
            g.gateway,
            g.changes.len()
        );
        for c in &g.changes {
            println!("  {c}");
        }
    }
}

/// Prints progress as it comes; non-zero unless the rollout completed.
async fn follow_progress(
    mut stream: Streaming<Progress>,
    output: Format,
) -> Result<ExitCode, ExitCode> {
    let mut done = false;
    loop {
        match stream.message().await {
            Ok(Some(p)) => {
                done |= p.phase == "done";
                if output == Format::Json {
                    json_line(&p);
                } else if p.gateway.is_empty() {
                    println!("revision {}: {}: {}", p.revision, p.phase, p.detail);
                } else {
                    println!(
                        "  {:<16} {:<12} {} ({:.0} ms)",
                        p.gateway, p.phase, p.detail, p.elapsed_ms
                    );
                }
            }
            Ok(None) => break,
            Err(s) => return Err(rpc_failed(s)),
        }
    }
    Ok(if done {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
