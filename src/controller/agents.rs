//! The agent-facing service: one bidirectional stream per gateway.
//!
//! A stream is accepted only from an agent certificate whose name equals the gateway named
//! in the Hello, for a gateway the current revision knows, and only one at a time. On
//! connect the agent is brought to the current revision unless it is already on it.

use super::tls::peer;
use super::Controller;
use crate::pki::Role;
use crate::proto::v1::agent_link_server::AgentLink;
use crate::proto::v1::{agent_message, AgentMessage, ControllerMessage, DriftReport, FlowAudit};
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
        if !ctl.settings.insecure && gateway != who.name {
            tracing::warn!(certificate = %who.name, claimed = %gateway, "agent refused: name differs from its certificate");
            return Err(Status::permission_denied(format!(
                "certificate is for '{}', not '{gateway}'",
                who.name
            )));
        }
        if !ctl.is_known(&gateway) {
            tracing::warn!(%gateway, "agent refused: unknown gateway");
            return Err(Status::permission_denied(format!(
                "gateway '{gateway}' is not in the current revision"
            )));
        }
        let report = hello.report.unwrap_or_default();
        let (tx, rx) = mpsc::channel(16);
        let session = ctl.hub.register(&gateway, report.clone(), tx)?;
        tracing::info!(%gateway, revision = report.applied_revision, in_sync = report.in_sync, "agent connected");
        ctl.event(&gateway, "connect", &format!("connected on revision {}", report.applied_revision), serde_json::json!({"report": {
            "applied_revision": report.applied_revision, "state_digest": report.state_digest, "in_sync": report.in_sync}}));

        let ctl2 = ctl.clone();
        let gw = gateway.clone();
        tokio::spawn(async move {
            let why = read_loop(&ctl2, &gw, &mut inbound).await;
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
        tokio::spawn(async move { converge_on_connect(&ctl3, &gateway).await });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Handles what the agent sends until the stream ends; returns why it ended.
async fn read_loop(
    ctl: &Controller,
    gateway: &str,
    inbound: &mut Streaming<AgentMessage>,
) -> String {
    loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return "closed by the agent".into(),
            Err(e) => return e.message().to_string(),
        };
        match msg.msg {
            Some(agent_message::Msg::Report(r)) => ctl.hub.update_report(gateway, r),
            Some(agent_message::Msg::Result(r)) => ctl.hub.resolve(gateway, r),
            Some(agent_message::Msg::Drift(d)) => drift(ctl, gateway, d),
            Some(agent_message::Msg::Audit(a)) => flow_audit(ctl, gateway, a),
            Some(agent_message::Msg::Hello(_)) | None => {
                tracing::warn!(%gateway, "ignoring an unexpected message on an established stream");
            }
        }
    }
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

/// Brings a (re)connected agent to the current revision, unless it is already there.
async fn converge_on_connect(ctl: &Controller, gateway: &str) {
    // Not while a rollout runs: it sends this gateway what it needs itself.
    let _guard = ctl.rollout_lock.lock().await;
    let Some(current) = ctl.current() else { return };
    let Some(state) = current.gateway(gateway) else {
        return;
    };
    let Some(conn) = ctl.hub.view(gateway) else {
        return;
    };
    if conn.report.applied_revision == current.id
        && conn.report.state_digest == crate::proto::state_digest(state)
    {
        tracing::info!(%gateway, revision = current.id, "agent already on the current revision");
        return;
    }
    tracing::info!(%gateway, from = conn.report.applied_revision, to = current.id, "bringing a reconnected agent to the current revision");
    let summary = match ctl
        .hub
        .send_desired(gateway, current.id, state, ctl.settings.apply_timeout)
        .await
    {
        Ok(r) if r.ok => format!(
            "revision {} applied on reconnect ({} changes)",
            current.id, r.changes
        ),
        Ok(r) => format!("revision {} failed on reconnect: {}", current.id, r.error),
        Err(e) => format!("revision {} not applied on reconnect: {e}", current.id),
    };
    ctl.event(
        gateway,
        "apply",
        &summary,
        serde_json::json!({"revision": current.id, "phase": "reconnect"}),
    );
}
