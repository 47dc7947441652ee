//! Rolling a revision out: every gateway applies it, or every gateway goes back to the
//! previous revision (all-or-nothing), optionally starting with one canary gateway.

use super::store::{now_ms, ApplyRow, NewRevision, Revision, RevisionStatus};
use super::Controller;
use crate::compile::GatewayState;
use crate::proto::v1::Progress;
use chrono::NaiveDate;
use futures::future::join_all;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, OwnedMutexGuard};
use tonic::Status;

/// A requested change of topology.
#[derive(Debug, Clone)]
pub struct Change {
    /// apply | rollback | expiry
    pub kind: &'static str,
    /// Certificate name of who asked (or `controller`).
    pub actor: String,
    /// File name the topology came from, for diagnostics and history.
    pub source: String,
    pub topology: String,
    pub expect_revision: Option<u64>,
    pub canary: Option<String>,
}

/// A validated change holding the rollout lock, ready to run.
pub struct Rollout {
    _guard: OwnedMutexGuard<()>,
    change: Change,
    gateways: Vec<GatewayState>,
    compiled_on: NaiveDate,
    previous: Option<Arc<Revision>>,
}

pub type ProgressTx = mpsc::Sender<Result<Progress, Status>>;

/// The longest validation report sent in a status message: it travels percent-encoded in
/// an HTTP/2 trailer, and clients refuse header lists over 16 KiB. The rest is summarised;
/// `Validate` has every diagnostic.
const MAX_REPORT: usize = 4 * 1024;

/// Cuts a report at a line boundary to about `MAX_REPORT` bytes, saying how much is left.
fn bounded(report: &str) -> String {
    if report.len() <= MAX_REPORT {
        return report.to_string();
    }
    let mut out = String::new();
    let mut lines = report.lines();
    for l in lines.by_ref() {
        if out.len() + l.len() + 1 > MAX_REPORT {
            break;
        }
        out.push_str(l);
        out.push('\n');
    }
    let rest = lines.count() + 1;
    out.push_str(&format!(
        "... and {rest} more lines (see `tiernet validate`)\n"
    ));
    out
}

/// Compiles `topology` as of `today`; the validation report as an InvalidArgument status.
pub fn compile(
    source: &str,
    topology: &str,
    today: NaiveDate,
) -> Result<Vec<GatewayState>, Status> {
    let loaded = crate::topology::load::check(source, topology, today);
    let compiled = loaded.compile(today).map_err(|report| {
        Status::invalid_argument(format!(
            "topology does not validate:\n{}",
            bounded(&report.to_string())
        ))
    })?;
    if compiled.gateways.is_empty() {
        return Err(Status::invalid_argument("topology declares no gateways"));
    }
    Ok(compiled.gateways)
}

/// [`compile`] on the blocking pool: a large or hostile topology takes seconds to read,
/// and must not stall the agents' streams and keepalives meanwhile.
pub async fn compile_off_runtime(
    source: &str,
    topology: &str,
    today: NaiveDate,
) -> Result<Vec<GatewayState>, Status> {
    let (source, topology) = (source.to_string(), topology.to_string());
    tokio::task::spawn_blocking(move || compile(&source, &topology, today))
        .await
        .map_err(|e| Status::internal(format!("compiling the topology: {e}")))?
}

/// Validates a change and takes the rollout lock. Nothing is stored or sent yet: a bad
/// request changes nothing.
pub async fn prepare(ctl: &Controller, change: Change) -> Result<Rollout, Status> {
    let compiled_on = ctl.today();
    let gateways = compile_off_runtime(&change.source, &change.topology, compiled_on).await?;
    if let Some(c) = &change.canary {
        if !gateways.iter().any(|g| &g.gateway == c) {
            let shown: String = c.chars().take(80).collect();
            return Err(Status::invalid_argument(format!(
                "canary '{shown}'{} is not a gateway of this topology",
                if shown.len() < c.len() { "…" } else { "" }
            )));
        }
    }
    let guard = ctl.rollout_lock.clone().lock_owned().await;
    let previous = ctl.current();
    let current_id = previous.as_ref().map_or(0, |r| r.id);
    if let Some(expected) = change.expect_revision {
        if expected != current_id {
            return Err(Status::failed_precondition(format!(
                "the current revision is {current_id}, not {expected}: someone else applied since; review `tiernet plan` and retry"
            )));
        }
    }
    Ok(Rollout {
        _guard: guard,
        change,
        gateways,
        compiled_on,
        previous,
    })
}

fn progress(
    revision: u64,
    gateway: &str,
    phase: &str,
    detail: impl Into<String>,
    started: Instant,
) -> Progress {
    Progress {
        revision,
        gateway: gateway.to_string(),
        phase: phase.to_string(),
        detail: detail.into(),
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

async fn tell(tx: &ProgressTx, p: Progress) {
    // The rollout goes on if the client went away.
    let _ = tx.send(Ok(p)).await;
}

/// Sends one gateway its state for `revision` (waiting a grace period if it is not
/// connected) and returns the result as a stored row.
async fn push(ctl: &Controller, state: &GatewayState, revision: u64, phase: &str) -> ApplyRow {
    let gw = state.gateway.clone();
    let s = &ctl.settings;
    let outcome = if ctl.hub.wait_connected(&gw, s.connect_grace).await {
        ctl.hub
            .send_desired(&gw, revision, state, s.apply_timeout)
            .await
    } else {
        Err(format!(
            "unreachable: not connected within {}s",
            s.connect_grace.as_secs_f64()
        ))
    };
    let (ok, error, changes, elapsed_ms) = match outcome {
        Ok(r) => (r.ok, r.error, r.changes, r.elapsed_ms),
        Err(e) => (false, e, 0, 0.0),
    };
    ApplyRow {
        revision,
        gateway: gw,
        phase: phase.into(),
        ok,
        error,
        changes,
        elapsed_ms,
        at_ms: now_ms(),
    }
}

fn row_progress(row: &ApplyRow, ok_phase: &str, started: Instant) -> Progress {
    let (phase, detail) = if row.ok {
        (
            ok_phase,
            format!("{} changes in {:.0} ms", row.changes, row.elapsed_ms),
        )
    } else if row.error.starts_with("unreachable") {
        ("unreachable", row.error.clone())
    } else {
        ("failed", row.error.clone())
    };
    progress(row.revision, &row.gateway, phase, detail, started)
}

impl Rollout {
    pub fn gateways(&self) -> &[GatewayState] {
        &self.gateways
    }

    pub fn previous(&self) -> Option<&Arc<Revision>> {
        self.previous.as_ref()
    }

    /// Stores the revision, pushes it to every gateway and, if any fails, puts every
    /// gateway that took it back on the previous revision. Returns the new revision's id,
    /// or why it was rolled back.
    pub async fn run(self, ctl: Arc<Controller>, tx: ProgressTx) -> Result<u64, String> {
        let started = Instant::now();
        let parent = self.previous.as_ref().map_or(0, |r| r.id);
        let new = NewRevision {
            author: &self.change.actor,
            kind: self.change.kind,
            source: &self.change.source,
            parent,
            topology: &self.change.topology,
            gateways: &self.gateways,
            compiled_on: self.compiled_on,
        };
        let rev = ctl
            .store
            .insert_revision(&new)
            .map_err(|e| format!("storing the revision: {e:#}"))?;
        let names: Vec<String> = self.gateways.iter().map(|g| g.gateway.clone()).collect();
        ctl.hub.set_inflight(&names);
        tracing::info!(revision = rev, kind = self.change.kind, actor = %self.change.actor, gateways = names.len(), "rolling out");

        // Canary alone first; then everyone else at once.
        let (first, rest): (Vec<&GatewayState>, Vec<&GatewayState>) = self
            .gateways
            .iter()
            .partition(|g| self.change.canary.as_deref() == Some(g.gateway.as_str()));
        let batches = if first.is_empty() {
            vec![rest]
        } else {
            vec![first, rest]
        };
        let mut rows = Vec::new();
        let mut sent: Vec<&GatewayState> = Vec::new();
        for batch in batches {
            for g in &batch {
                tell(&tx, progress(rev, &g.gateway, "sending", "", started)).await;
            }
            let results = join_all(batch.iter().map(|g| push(&ctl, g, rev, "apply"))).await;
            for r in results {
                tell(&tx, row_progress(&r, "applied", started)).await;
                rows.push(r);
            }
            sent.extend(batch);
            if rows.iter().any(|r| !r.ok) {
                break;
            }
        }
        let failed: Vec<String> = rows
            .iter()
            .filter(|r| !r.ok)
            .map(|r| format!("{}: {}", r.gateway, r.error))
            .collect();
        let outcome = if failed.is_empty() {
            self.finish_applied(&ctl, rev, &rows, &tx, started).await
        } else {
            self.roll_back(&ctl, rev, &sent, rows, failed, &tx, started)
                .await
        };
        ctl.hub.set_inflight(&[]);
        outcome
    }

    async fn finish_applied(
        &self,
        ctl: &Controller,
        rev: u64,
        rows: &[ApplyRow],
        tx: &ProgressTx,
        started: Instant,
    ) -> Result<u64, String> {
        let store_err = |e: anyhow::Error| format!("recording revision {rev}: {e:#}");
        ctl.store.record_results(rows).map_err(store_err)?;
        ctl.store
            .set_status(rev, RevisionStatus::Applied, "")
            .map_err(store_err)?;
        let names: Vec<String> = rows.iter().map(|r| r.gateway.clone()).collect();
        ctl.store.clear_pending_reverts(&names).map_err(store_err)?;
        let stored = ctl
            .store
            .revision(rev)
            .map_err(store_err)?
            .ok_or("revision vanished")?;
        ctl.set_current(stored);
        let detail = serde_json::json!({
            "outcome": "applied",
            "source": self.change.source,
            "parent": self.previous.as_ref().map_or(0, |r| r.id),
            "gateways": rows.iter().map(|r| serde_json::json!({"gateway": r.gateway, "changes": r.changes})).collect::<Vec<_>>(),
            "diff": self.topology_diff(),
        });
        self.audit(ctl, rev, detail);
        let summary = format!(
            "revision {rev} applied on {} gateways ({})",
            rows.len(),
            self.change.kind
        );
        ctl.event(
            "",
            "rollout",
            &summary,
            serde_json::json!({"revision": rev, "outcome": "applied", "actor": self.change.actor}),
        );
        tracing::info!(
            revision = rev,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "revision applied everywhere"
        );
        tell(tx, progress(rev, "", "done", summary, started)).await;
        Ok(rev)
    }

    #[allow(clippy::too_many_arguments)]
    async fn roll_back(
        &self,
        ctl: &Controller,
        rev: u64,
        sent: &[&GatewayState],
        mut rows: Vec<ApplyRow>,
        failed: Vec<String>,
        tx: &ProgressTx,
        started: Instant,
    ) -> Result<u64, String> {
        let mut problems = Vec::new();
        // Every gateway that was sent the new revision goes back, the failed ones too (they
        // restored their own state; this puts the revision number back): onto the previous
        // revision, or, for a gateway the previous revision does not name (or when there is
        // none, the first revision failing), onto its pre-controller state as revision 0.
        let back: Vec<(u64, GatewayState, String)> = sent
            .iter()
            .map(|g| {
                match self
                    .previous
                    .as_ref()
                    .and_then(|p| p.gateway(&g.gateway).map(|s| (p.id, s)))
                {
                    Some((id, s)) => (id, s.clone(), format!("to revision {id}")),
                    None => {
                        let (s, what) = ctl.baseline(&g.gateway);
                        (0, s, format!("to revision 0, {what}"))
                    }
                }
            })
            .collect();
        for (id, g, what) in &back {
            tell(
                tx,
                progress(*id, &g.gateway, "reverting", what.clone(), started),
            )
            .await;
        }
        let pushes = back.iter().map(|(id, g, _)| push(ctl, g, *id, "revert"));
        for r in join_all(pushes).await {
            if !r.ok {
                problems.push(format!("{} could not go back: {}", r.gateway, r.error));
                if r.revision == 0 {
                    // Not covered by any applied revision: put back when it next reports.
                    if let Err(e) = ctl.store.add_pending_revert(
                        &r.gateway,
                        rev,
                        "its revert to revision 0 failed during a rollback",
                    ) {
                        tracing::error!(gateway = %r.gateway, error = %format!("{e:#}"), "could not queue a revert");
                    }
                }
            } else if r.revision == 0 {
                let _ = ctl
                    .store
                    .clear_pending_reverts(std::slice::from_ref(&r.gateway));
            }
            tell(tx, row_progress(&r, "reverted", started)).await;
            rows.push(r);
        }
        let to_prev = self.previous.as_ref().map_or(0, |p| p.id);
        let mut message = if to_prev == 0 {
            format!(
                "rolled back to revision 0 (each gateway's pre-controller state): {}",
                failed.join("; ")
            )
        } else {
            format!("rolled back to revision {to_prev}: {}", failed.join("; "))
        };
        if !problems.is_empty() {
            message.push_str(&format!(" ({})", problems.join("; ")));
        }
        if let Err(e) = ctl
            .store
            .record_results(&rows)
            .and_then(|_| ctl.store.set_status(rev, RevisionStatus::Failed, &message))
        {
            tracing::error!(revision = rev, error = %format!("{e:#}"), "could not record the failed rollout");
        }
        let detail = serde_json::json!({
            "outcome": "failed",
            "source": self.change.source,
            "parent": self.previous.as_ref().map_or(0, |r| r.id),
            "failures": failed,
            "problems": problems,
            "diff": self.topology_diff(),
        });
        self.audit(ctl, rev, detail);
        ctl.event(
            "",
            "rollout",
            &format!("revision {rev} failed and was rolled back"),
            serde_json::json!({"revision": rev, "outcome": "failed", "message": message}),
        );
        tracing::warn!(revision = rev, %message, "rollout failed");
        tell(
            tx,
            progress(rev, "", "rolled-back", message.clone(), started),
        )
        .await;
        Err(message)
    }

    fn topology_diff(&self) -> String {
        let old = self.previous.as_ref().map_or("", |r| r.topology.as_str());
        super::diff::unified(old, &self.change.topology, "previous", &self.change.source)
    }

    fn audit(&self, ctl: &Controller, rev: u64, detail: serde_json::Value) {
        if let Err(e) = ctl
            .store
            .audit_append(&self.change.actor, self.change.kind, rev, &detail)
        {
            tracing::error!(revision = rev, error = %format!("{e:#}"), "could not append to the audit log");
        }
    }
}
