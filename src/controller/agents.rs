//! The agent-facing service: one bidirectional stream per gateway.
//!
//! A stream is accepted only from an agent certificate whose name equals the gateway named
//! in the Hello, for a gateway the current revision knows, and only one at a time. On
//! connect the agent is brought to the current revision unless it is already on it.

use super::tls::peer;
use super::Controller;
use crate::pki::Role;
use crate::proto::v1::agent_link_server::AgentLink;
use crate::proto::v1::{
    agent_message, AgentMessage, AgentReport, Baseline, ControllerMessage, DriftReport, FlowAudit,
};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub struct AgentService {
    pub ctl: Arc<Controller>,
}

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

type OutStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentLink for AgentService {
    type LinkStream = OutStream;

    async fn link(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<OutStream>, Status> {
        let ctl = &self.ctl;
        let who = peer(&req, ctl.settings.insecure)?;
        if !ctl.settings.insecure && who.role != Role::Agent {
            return Err(Status::permission_denied(format!(
                "'{}' has role {}, not agent",
                who.name,
                who.role.as_str()
            )));
        }
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10s"))??;
        let Some(AgentMessage {
            msg: Some(agent_message::Msg::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message must be a hello",
            ));
        };
        let gateway = hello.gateway;
        if gateway.is_empty() {
            return Err(Status::invalid_argument("the hello names no gateway"));
        }
        if !ctl.settings.insecure && gateway != who.name {
            let gateway = clip(&gateway);
            tracing::warn!(certificate = %who.name, claimed = %gateway, "agent refused: name differs from its certificate");
            return Err(Status::permission_denied(format!(
                "certificate is for '{}', not '{gateway}'",
                who.name
            )));
        }
        if !ctl.is_known(&gateway) {
            let gateway = clip(&gateway);
            tracing::warn!(%gateway, "agent refused: unknown gateway");
            return Err(Status::permission_denied(format!(
                "gateway '{gateway}' is not in the current revision"
            )));
        }
        let report = hello.report.unwrap_or_default();
        check_report(&report)?;
        let (tx, rx) = mpsc::channel(16);
        // Weak: the stream ends when the hub drops its sender (shutdown), not when we do.
        let errors = tx.downgrade();
        let session = ctl.hub.register(&gateway, report.clone(), tx)?;
        tracing::info!(%gateway, revision = report.applied_revision, in_sync = report.in_sync, "agent connected");
        ctl.event(&gateway, "connect", &format!("connected on revision {}", report.applied_revision), serde_json::json!({"report": {
            "applied_revision": report.applied_revision, "state_digest": report.state_digest, "in_sync": report.in_sync}}));

        let ctl2 = ctl.clone();
        let gw = gateway.clone();
        tokio::spawn(async move {
            let why = match read_loop(&ctl2, &gw, &mut inbound).await {
                Ok(why) => why,
                Err(status) => {
                    let why = status.message().to_string();
                    if let Some(tx) = errors.upgrade() {
                        let _ = tx.send(Err(status)).await;
                    }
                    why
                }
            };
            ctl2.hub.unregister(&gw, session);
            tracing::warn!(gateway = %gw, reason = %why, "agent disconnected");
            ctl2.event(
                &gw,
                "disconnect",
                &format!("stream closed: {why}"),
                serde_json::json!({}),
            );
        });
        let ctl3 = ctl.clone();
        tokio::spawn(async move { converge(&ctl3, &gateway).await });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Handles what the agent sends until the stream ends; returns why it ended, or the
/// status that ends it when the agent breaks the protocol.
async fn read_loop(
    ctl: &Arc<Controller>,
    gateway: &str,
    inbound: &mut Streaming<AgentMessage>,
) -> Result<String, Status> {
    loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok("closed by the agent".into()),
            // A message that does not decode or is too large ends the stream with its
            // status; for a broken connection the status goes nowhere, harmlessly.
            Err(e) => return Err(e),
        };
        match msg.msg {
            Some(agent_message::Msg::Report(r)) => {
                check_report(&r)?;
                if ctl.hub.update_report(gateway, r) {
                    // It enforces something else now: a late apply (the controller restarted
                    // while it was applying) must not leave it between revisions.
                    let (ctl, gateway) = (ctl.clone(), gateway.to_string());
                    tokio::spawn(async move { converge(&ctl, &gateway).await });
                }
            }
            Some(agent_message::Msg::Result(r)) => {
                let (id, rev) = (r.request_id, r.revision);
                if !ctl.hub.issued(id) {
                    return Err(Status::invalid_argument(format!(
                        "apply result for request {id}, which this controller never sent"
                    )));
                }
                if !ctl.hub.resolve(gateway, r) {
                    // A request that timed out, or one for another gateway or revision.
                    tracing::warn!(%gateway, request_id = id, revision = rev, "dropping an apply result no request waits for");
                }
            }
            Some(agent_message::Msg::Drift(d)) => drift(ctl, gateway, d),
            Some(agent_message::Msg::Audit(a)) => flow_audit(ctl, gateway, a),
            Some(agent_message::Msg::Baseline(b)) => baseline(ctl, gateway, b)?,
            Some(agent_message::Msg::Hello(_)) => {
                tracing::warn!(%gateway, "second hello on an established stream; closing it");
                return Err(Status::invalid_argument(
                    "a second hello on an established stream: one hello per stream",
                ));
            }
            None => {
                tracing::warn!(%gateway, "closing a stream that sent an empty message");
                return Err(Status::invalid_argument(
                    "empty agent message (no known message type set)",
                ));
            }
        }
    }
}

/// A name from the wire, cut for a status message or a log line.
fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let mut c: String = s.chars().take(MAX).collect();
    c.push_str(&format!("… ({} bytes)", s.len()));
    c
}

/// A report's digest is a SHA-256 in hex (or empty: no state).
fn check_report(r: &AgentReport) -> Result<(), Status> {
    let d = &r.state_digest;
    if d.is_empty() || (d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "report state_digest must be 64 hex digits, got {} bytes",
            d.len()
        )))
    }
}

/// Keeps the agent's pre-controller state for revision 0, if it is a valid state of this
/// gateway; anything else ends the stream and changes nothing.
fn baseline(ctl: &Controller, gateway: &str, b: Baseline) -> Result<(), Status> {
    match crate::proto::decode_state(&b.state_json, &b.state_digest) {
        Ok(s) if s.gateway == gateway => {}
        Ok(s) => {
            return Err(Status::invalid_argument(format!(
                "baseline state refused: it is for gateway '{}', not '{gateway}'",
                s.gateway
            )))
        }
        Err(e) => {
            return Err(Status::invalid_argument(format!(
                "baseline state refused: {e}"
            )))
        }
    }
    ctl.store.set_baseline(gateway, &b.state_json).map_err(|e| {
        tracing::error!(%gateway, error = %format!("{e:#}"), "could not store the agent's baseline");
        Status::internal(format!("controller store: {e:#}"))
    })
}

fn drift(ctl: &Controller, gateway: &str, d: DriftReport) {
    let reverted = d.action == "reverted";
    let what = if d.expected.is_empty() {
        d.notices.join("; ")
    } else {
        d.expected.join("; ")
    };
    ctl.hub.note_drift(
        gateway,
        (!reverted).then(|| format!("{}: {what}", d.action)),
    );
    let detail = serde_json::json!({
        "at_ms": d.at_ms, "cause": d.cause, "expected": d.expected, "notices": d.notices,
        "action": d.action, "latency_ms": d.latency_ms,
    });
    ctl.event(gateway, "drift", &format!("{}: {what}", d.action), detail);
}

/// An audited flow's new connection, as NFLOG saw it on the gateway: into the audit log.
fn flow_audit(ctl: &Controller, gateway: &str, a: FlowAudit) {
    let detail = serde_json::json!({
        "gateway": gateway, "at_ms": a.at_ms, "flow": a.flow, "source": a.source,
        "destination": a.destination, "protocol": a.protocol, "port": a.port,
    });
    let revision = ctl
        .hub
        .view(gateway)
        .map_or(0, |c| c.report.applied_revision);
    if let Err(e) = ctl.store.audit_append(gateway, "flow", revision, &detail) {
        tracing::error!(%gateway, error = %format!("{e:#}"), "could not append a flow record to the audit log");
    }
    let summary = format!(
        "{} {} -> {} {}/{}",
        a.flow, a.source, a.destination, a.protocol, a.port
    );
    ctl.event(gateway, "flow-audit", &summary, detail);
}

/// Brings an agent where it belongs unless it is already there: onto the current revision
/// when that names its gateway; else, when the store holds a pending revert for it (it took
/// a revision that never completed) and it reports a controller revision, back onto its
/// pre-controller state (revision 0). Runs when an agent connects and whenever its report
/// says it enforces another state; never during a rollout (which sends what it needs).
pub async fn converge(ctl: &Controller, gateway: &str) {
    let _guard = ctl.rollout_lock.lock().await;
    let Some(conn) = ctl.hub.view(gateway) else {
        return;
    };
    let current = ctl.current();
    let (revision, state, what) = match current.as_ref().and_then(|c| c.gateway(gateway)) {
        Some(state) => {
            let id = current.as_ref().map_or(0, |c| c.id);
            if conn.report.applied_revision == id
                && conn.report.state_digest == crate::proto::state_digest(state)
            {
                tracing::info!(%gateway, revision = id, "agent already on the current revision");
                return;
            }
            (id, state.clone(), format!("revision {id}"))
        }
        None => {
            match ctl.store.pending_revert(gateway) {
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(%gateway, error = %format!("{e:#}"), "reading pending reverts");
                    return;
                }
            }
            if conn.report.applied_revision == 0 {
                // On no controller revision: already what revision 0 would restore.
                return;
            }
            let (state, what) = ctl.baseline(gateway);
            (0, state, format!("revision 0 ({what})"))
        }
    };
    tracing::info!(%gateway, from = conn.report.applied_revision, to = revision, "bringing a (re)connected agent where it belongs");
    let started = std::time::Instant::now();
    let outcome = ctl
        .hub
        .send_desired(gateway, revision, &state, ctl.settings.apply_timeout)
        .await;
    let (ok, error, changes, elapsed_ms) = match &outcome {
        Ok(r) => (r.ok, r.error.clone(), r.changes, r.elapsed_ms),
        Err(e) => (false, e.clone(), 0, started.elapsed().as_secs_f64() * 1e3),
    };
    let summary = if ok {
        format!(
            "{what} applied on reconnect, from revision {} ({changes} changes)",
            conn.report.applied_revision
        )
    } else {
        format!("{what} not applied on reconnect: {error}")
    };
    if ok && revision == 0 {
        if let Err(e) = ctl.store.clear_pending_reverts(&[gateway.to_string()]) {
            tracing::error!(%gateway, error = %format!("{e:#}"), "clearing a pending revert");
        }
    }
    let row = super::store::ApplyRow {
        revision,
        gateway: gateway.to_string(),
        phase: "reconnect".into(),
        ok,
        error,
        changes,
        elapsed_ms,
        at_ms: super::store::now_ms(),
    };
    if let Err(e) = ctl.store.record_results(&[row]) {
        tracing::error!(%gateway, error = %format!("{e:#}"), "recording a reconnect apply");
    }
    ctl.event(
        gateway,
        "apply",
        &summary,
        serde_json::json!({"revision": revision, "phase": "reconnect", "from": conn.report.applied_revision, "ok": ok}),
    );
}
