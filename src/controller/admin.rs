//! The admin-facing service the CLI uses. Read-only RPCs take role admin or viewer;
//! apply and rollback take admin. Bad input gets a status with the reason and changes
//! nothing.

use super::rollout::{self, Change};
use super::store::Revision as StoredRevision;
use super::tls::{peer, require};
use super::{diff, event_message, status, Controller};
use crate::proto::v1::admin_server::Admin;
use crate::proto::v1::*;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub struct AdminService {
    pub ctl: Arc<Controller>,
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn internal(e: anyhow::Error) -> Status {
    tracing::error!(error = %format!("{e:#}"), "store error");
    Status::internal(format!("controller store: {e:#}"))
}

/// [`diagnostics`] on the blocking pool (a large topology takes seconds to read).
async fn diagnostics_off_runtime(
    source: &str,
    topology: &str,
    today: chrono::NaiveDate,
) -> Result<(bool, Vec<Diagnostic>), Status> {
    let (source, topology) = (source.to_string(), topology.to_string());
    tokio::task::spawn_blocking(move || diagnostics(&source, &topology, today))
        .await
        .map_err(|e| Status::internal(format!("validating the topology: {e}")))
}

fn diagnostics(source: &str, topology: &str, today: chrono::NaiveDate) -> (bool, Vec<Diagnostic>) {
    let loaded = crate::topology::load::check(source, topology, today);
    let d = loaded
        .diagnostics
        .iter()
        .map(|d| Diagnostic {
            rendered: d.render(&loaded.path),
            error: d.is_error(),
        })
        .collect();
    (!loaded.has_errors(), d)
}

fn revision_message(r: &StoredRevision) -> Revision {
    Revision {
        id: r.id,
        created_ms: r.created_ms,
        author: r.author.clone(),
        kind: r.kind.clone(),
        status: r.status.clone(),
        source: r.source.clone(),
        parent: r.parent,
        message: r.message.clone(),
        gateways: r.gateway_names(),
    }
}

fn plans(
    old: &[crate::compile::GatewayState],
    new: &[crate::compile::GatewayState],
    ctl: &Controller,
) -> Vec<GatewayPlan> {
    let connected = ctl.hub.connected();
    diff::per_gateway(old, new)
        .into_iter()
        .map(|(gateway, changes)| GatewayPlan {
            connected: connected.contains(&gateway),
            gateway,
            changes,
            ..Default::default()
        })
        .collect()
}

pub const PLAN_IN_SYNC: &str = "IN_SYNC";
pub const PLAN_NOT_IN_SYNC: &str = "NOT_IN_SYNC";
pub const PLAN_DRIFTED: &str = "DRIFTED";
pub const PLAN_UNREACHABLE: &str = "UNREACHABLE";
pub const PLAN_UNKNOWN_REVISION: &str = "UNKNOWN_REVISION";

/// Per gateway, what applying `new` would change against what that gateway's agent
/// reports it enforces: the revision it reports (checked against the stored state by
/// digest), its pre-controller state for revision 0, or the current revision when it is
/// not connected or reports something the controller has no copy of (then said so).
fn plan_against_agents(
    ctl: &Controller,
    current: Option<&StoredRevision>,
    new: &[crate::compile::GatewayState],
) -> anyhow::Result<Vec<GatewayPlan>> {
    use crate::proto::state_digest;
    let current_id = current.map_or(0, |c| c.id);
    let mut names: Vec<String> = new.iter().map(|g| g.gateway.clone()).collect();
    for g in current.map(|c| c.gateway_names()).unwrap_or_default() {
        if !names.contains(&g) {
            names.push(g);
        }
    }
    let mut revisions: std::collections::HashMap<u64, Option<StoredRevision>> = Default::default();
    let mut out = Vec::new();
    for name in names {
        let on_current = current.and_then(|c| c.gateway(&name)).cloned();
        let fallback = |why: String| (current_id, on_current.clone(), why);
        let view = ctl.hub.view(&name);
        let (agent_state, reported, (against, base, note)) = match &view {
            None => (
                PLAN_UNREACHABLE,
                0,
                fallback(format!(
                    "agent not connected: planned against revision {current_id}, the one it should be on"
                )),
            ),
            Some(v) => {
                let r = &v.report;
                // What the reported revision's state for this gateway is, if known.
                let known: Option<crate::compile::GatewayState> = if r.applied_revision == 0 {
                    let (b, _) = ctl.baseline(&name);
                    Some(b)
                } else {
                    let rev = match revisions.get(&r.applied_revision) {
                        Some(x) => x.clone(),
                        None => {
                            let x = ctl.store.revision(r.applied_revision)?;
                            revisions.insert(r.applied_revision, x.clone());
                            x
                        }
                    };
                    rev.and_then(|x| x.gateway(&name).cloned())
                };
                let known = known.filter(|s| state_digest(s) == r.state_digest);
                match known {
                    None => (
                        PLAN_UNKNOWN_REVISION,
                        r.applied_revision,
                        fallback(format!(
                            "agent reports revision {} with a state the controller has no copy of: planned against revision {current_id}",
                            r.applied_revision
                        )),
                    ),
                    Some(state) => {
                        let what = if r.applied_revision == 0 {
                            "revision 0 (its pre-controller state)".to_string()
                        } else {
                            format!("revision {}", r.applied_revision)
                        };
                        let (agent_state, note) = if !r.in_sync {
                            (
                                PLAN_DRIFTED,
                                format!(
                                    "agent on {what} but reports drift it has not reverted ({}): the kernel may differ from this plan",
                                    v.drift.clone().unwrap_or_else(|| "not in sync".into())
                                ),
                            )
                        } else if r.applied_revision == current_id {
                            (PLAN_IN_SYNC, String::new())
                        } else {
                            (
                                PLAN_NOT_IN_SYNC,
                                format!(
                                    "agent on {what}, not on the current revision {current_id}: planned against what it enforces"
                                ),
                            )
                        };
                        (
                            agent_state,
                            r.applied_revision,
                            (r.applied_revision, Some(state), note),
                        )
                    }
                }
            }
        };
        let w = new.iter().find(|g| g.gateway == name);
        out.push(GatewayPlan {
            changes: diff::gateway_changes(base.as_ref(), w),
            connected: view.is_some(),
            gateway: name,
            against_revision: against,
            agent_state: agent_state.into(),
            reported_revision: reported,
            note,
        });
    }
    Ok(out)
}

/// The longest topology name (a file name, for diagnostics and history) accepted.
const MAX_NAME: usize = 1024;

/// A topology's name ends up in diagnostics, history and the audit log: bounded, one line.
fn check_name(name: &str) -> Result<(), Status> {
    if name.len() > MAX_NAME {
        return Err(Status::invalid_argument(format!(
            "topology name too long: {} bytes, at most {MAX_NAME}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "topology name contains control characters",
        ));
    }
    Ok(())
}

fn optional(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

impl AdminService {
    /// Starts a rollout in its own task (it finishes even if the client goes away) and
    /// streams its progress; a failed rollout ends the stream with ABORTED.
    async fn start(&self, change: Change) -> Result<Response<Boxed<Progress>>, Status> {
        let prepared = rollout::prepare(&self.ctl, change).await?;
        let (tx, rx) = mpsc::channel(256);
        let ctl = self.ctl.clone();
        tokio::spawn(async move {
            if let Err(why) = prepared.run(ctl, tx.clone()).await {
                let _ = tx.send(Err(Status::aborted(why))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn validate(
        &self,
        req: Request<TopologyRequest>,
    ) -> Result<Response<ValidateReply>, Status> {
        require(&peer(&req, self.ctl.settings.insecure)?, false)?;
        let r = req.into_inner();
        check_name(&r.name)?;
        let (valid, diagnostics) =
            diagnostics_off_runtime(&r.name, &r.topology, self.ctl.today()).await?;
        Ok(Response::new(ValidateReply { valid, diagnostics }))
    }

    async fn plan(&self, req: Request<TopologyRequest>) -> Result<Response<PlanReply>, Status> {
        require(&peer(&req, self.ctl.settings.insecure)?, false)?;
        let r = req.into_inner();
        check_name(&r.name)?;
        let today = self.ctl.today();
        let new = rollout::compile_off_runtime(&r.name, &r.topology, today).await?;
        let current = self.ctl.current();
        let (_, all) = diagnostics_off_runtime(&r.name, &r.topology, today).await?;
        Ok(Response::new(PlanReply {
            current_revision: current.as_ref().map_or(0, |c| c.id),
            gateways: plan_against_agents(&self.ctl, current.as_deref(), &new).map_err(internal)?,
            warnings: all.into_iter().filter(|d| !d.error).collect(),
        }))
    }

    type ApplyStream = Boxed<Progress>;

    async fn apply(
        &self,
        req: Request<ApplyRequest>,
    ) -> Result<Response<Self::ApplyStream>, Status> {
        let who = peer(&req, self.ctl.settings.insecure)?;
        require(&who, true)?;
        let r = req.into_inner();
        check_name(&r.name)?;
        if r.topology.trim().is_empty() {
            return Err(Status::invalid_argument("empty topology"));
        }
        let source = optional(r.name).unwrap_or_else(|| "topology.yaml".into());
        self.start(Change {
            kind: "apply",
            actor: who.name,
            source,
            topology: r.topology,
            expect_revision: r.expect_revision,
            canary: optional(r.canary),
        })
        .await
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        require(&peer(&req, self.ctl.settings.insecure)?, false)?;
        Ok(Response::new(StatusReply {
            current_revision: self.ctl.current_id(),
            gateways: status::gateways(&self.ctl),
            insecure: self.ctl.settings.insecure,
        }))
    }

    type EventsStream = Boxed<Event>;

    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        require(&peer(&req, self.ctl.settings.insecure)?, false)?;
        let r = req.into_inner();
        let limit = if r.limit == 0 {
            50
        } else {
            r.limit.min(10_000)
        };
        // Subscribe before reading the backlog so nothing falls between the two.
        let live = self.ctl.subscribe();
        let past = self.ctl.store.events(r.after, limit).map_err(internal)?;
        let last = past.last().map_or(r.after, |e| e.id);
        let past = tokio_stream::iter(
            past.iter()
                .map(|e| Ok(event_message(e)))
                .collect::<Vec<_>>(),
        );
        if !r.follow {
            return Ok(Response::new(Box::pin(past)));
        }
        let live =
            tokio_stream::wrappers::BroadcastStream::new(live).filter_map(move |e| match e {
                Ok(e) if e.id > last => Some(Ok(e)),
                Ok(_) => None,
                Err(lagged) => Some(Err(Status::data_loss(format!(
                    "follower too slow: {lagged}"
                )))),
            });
        Ok(Response::new(Box::pin(past.chain(live))))
    }

    async fn history(
        &self,
        req: Request<HistoryRequest>,
    ) -> Result<Response<HistoryReply>, Status> {
        require(&peer(&req, self.ctl.settings.insecure)?, false)?;
        let limit = match req.get_ref().limit {
            0 => 50,
            n => n.min(10_000),
        };
        let revisions = self.ctl.store.history(limit).map_err(internal)?;
        Ok(Response::new(HistoryReply {
            current_revision: self.ctl.current_id(),
            revisions: revisions.iter().map(revision_message).collect(),
        }))
    }

    async fn diff(&self, req: Request<DiffRequest>) -> Result<Response<DiffReply>, Status> {
        require(&peer(&req, self.ctl.settings.insecure)?, false)?;
        let r = req.into_inner();
        let load = |id: u64| -> Result<StoredRevision, Status> {
            self.ctl
                .store
                .revision(id)
                .map_err(internal)?
                .ok_or_else(|| Status::not_found(format!("no revision {id}")))
        };
        let (a, b) = (load(r.from)?, load(r.to)?);
        Ok(Response::new(DiffReply {
            topology_diff: diff::unified(
                &a.topology,
                &b.topology,
                &format!("revision {}", a.id),
                &format!("revision {}", b.id),
            ),
            gateways: plans(&a.gateways, &b.gateways, &self.ctl),
        }))
    }

    type RollbackStream = Boxed<Progress>;

    async fn rollback(
        &self,
        req: Request<RollbackRequest>,
    ) -> Result<Response<Self::RollbackStream>, Status> {
        let who = peer(&req, self.ctl.settings.insecure)?;
        require(&who, true)?;
        let r = req.into_inner();
        let target = self
            .ctl
            .store
            .revision(r.revision)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no revision {}", r.revision)))?;
        // The old topology is compiled again as of today: a flow that expired since stays gone.
        self.start(Change {
            kind: "rollback",
            actor: who.name,
            source: format!("rollback to revision {} ({})", target.id, target.source),
            topology: target.topology,
            expect_revision: r.expect_revision,
            canary: optional(r.canary),
        })
        .await
    }

    async fn audit(&self, req: Request<AuditRequest>) -> Result<Response<AuditReply>, Status> {
        require(&peer(&req, self.ctl.settings.insecure)?, false)?;
        let records = self
            .ctl
            .store
            .audit_records(req.get_ref().after)
            .map_err(internal)?;
        Ok(Response::new(AuditReply {
            records: records
                .into_iter()
                .map(|e| AuditRecord {
                    seq: e.seq,
                    at_ms: e.at_ms,
                    actor: e.actor,
                    kind: e.kind,
                    revision: e.revision,
                    detail_json: e.detail,
                    prev_hash: e.prev_hash,
                    hash: e.hash,
                })
                .collect(),
        }))
    }
}
