//! The agent's link to the controller: one bidirectional gRPC stream, redialled with
//! exponential backoff. The daemon never waits on it: while the controller is away the
//! gateway keeps enforcing its last state (fail-static) and what the agent reports is
//! queued, up to a bound, for the next connection.

use super::drift::DriftEvent;
use crate::compile::GatewayState;
use crate::controller::tls::{connect, TlsFiles};
use crate::proto::v1::agent_link_client::AgentLinkClient;
use crate::proto::v1::{
    agent_message, controller_message, AgentMessage, AgentReport, ApplyResult, Baseline,
    DriftReport, FlowAudit, Hello,
};
use anyhow::{anyhow, Result};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `https://HOST:PORT` (or `http://` with `tls: None`, loopback labs only).
    pub url: String,
    pub gateway: String,
    pub tls: Option<TlsFiles>,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// A state the controller wants this gateway in.
#[derive(Debug, Clone)]
pub struct DesiredState {
    pub request_id: u64,
    /// 0: the state this agent held before its first controller revision (its baseline,
    /// which it sent the controller, or the fail-closed state); applying it as revision 0
    /// makes the agent report revision 0 again.
    pub revision: u64,
    pub state: GatewayState,
    /// The connection it came on: its result goes back on that one or nowhere (request ids
    /// mean nothing to another connection, or to a controller that restarted).
    pub session: u64,
}

/// What the daemon uses to talk back; cheap to clone, never blocks.
#[derive(Clone)]
pub struct LinkHandle {
    /// Messages for the controller, each with the session it belongs to (0: any).
    out: mpsc::UnboundedSender<(u64, agent_message::Msg)>,
    report: watch::Sender<AgentReport>,
    /// The last state enforced on no controller revision (revision none or 0): what the
    /// controller's revision 0 stands for. Sent on every connection, JSON and digest.
    baseline: Arc<Mutex<Option<(String, String)>>>,
}

/// The largest desired state accepted from the controller (a big gateway's JSON).
const MAX_STATE_MESSAGE: usize = 64 << 20;

/// Reports kept while disconnected; the oldest go first past this.
const QUEUE_LIMIT: usize = 1000;

impl LinkHandle {
    /// The state the agent now enforces, and whether the kernel matches it. A state on no
    /// controller revision (none or 0) becomes the baseline the controller is told about.
    pub fn set_state(&self, revision: Option<u64>, state: &GatewayState, in_sync: bool) {
        let (json, digest) = crate::proto::encode_state(state);
        if revision.unwrap_or(0) == 0 {
            *self.baseline.lock().unwrap_or_else(|p| p.into_inner()) = Some((json, digest.clone()));
        }
        let next = AgentReport {
            applied_revision: revision.unwrap_or(0),
            state_digest: digest,
            in_sync,
        };
        self.report.send_if_modified(|r| {
            let changed = *r != next;
            *r = next;
            changed
        });
    }

    pub fn set_in_sync(&self, in_sync: bool) {
        self.report.send_if_modified(|r| {
            let changed = r.in_sync != in_sync;
            r.in_sync = in_sync;
            changed
        });
    }

    pub fn applied(&self, d: &DesiredState, outcome: &Result<usize>, elapsed: Duration) {
        let (ok, error, changes) = match outcome {
            Ok(n) => (true, String::new(), u32::try_from(*n).unwrap_or(u32::MAX)),
            Err(e) => (false, format!("{e:#}"), 0),
        };
        let r = ApplyResult {
            request_id: d.request_id,
            revision: d.revision,
            ok,
            error,
            changes,
            elapsed_ms: elapsed.as_secs_f64() * 1e3,
        };
        let _ = self.out.send((d.session, agent_message::Msg::Result(r)));
    }

    pub fn drift(&self, e: &DriftEvent) {
        let d = DriftReport {
            at_ms: u64::try_from(e.at_ms).unwrap_or(u64::MAX),
            cause: e.cause.clone(),
            expected: e.expected.clone(),
            notices: e.notices.clone(),
            action: e.action.clone(),
            latency_ms: e.latency_ms,
        };
        let _ = self.out.send((0, agent_message::Msg::Drift(d)));
    }

    pub fn audit(&self, a: FlowAudit) {
        let _ = self.out.send((0, agent_message::Msg::Audit(a)));
    }
}

/// Starts the link task; desired states arrive on the returned receiver.
pub fn spawn(cfg: LinkConfig, initial: AgentReport) -> (LinkHandle, mpsc::Receiver<DesiredState>) {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (report_tx, report_rx) = watch::channel(initial);
    let (desired_tx, desired_rx) = mpsc::channel(4);
    let baseline = Arc::new(Mutex::new(None));
    tokio::spawn(run(cfg, out_rx, report_rx, desired_tx, baseline.clone()));
    (
        LinkHandle {
            out: out_tx,
            report: report_tx,
            baseline,
        },
        desired_rx,
    )
}

struct Pipes {
    out: mpsc::UnboundedReceiver<(u64, agent_message::Msg)>,
    report: watch::Receiver<AgentReport>,
    desired: mpsc::Sender<DesiredState>,
    queue: VecDeque<agent_message::Msg>,
    baseline: Arc<Mutex<Option<(String, String)>>>,
}

impl Pipes {
    /// Keeps a message for the next connection, unless it belongs to a session (an apply
    /// result), which no later connection can use.
    fn keep(&mut self, (session, m): (u64, agent_message::Msg)) {
        if session != 0 {
            return;
        }
        if self.queue.len() >= QUEUE_LIMIT {
            self.queue.pop_front();
        }
        self.queue.push_back(m);
    }
}

async fn run(
    cfg: LinkConfig,
    out: mpsc::UnboundedReceiver<(u64, agent_message::Msg)>,
    report: watch::Receiver<AgentReport>,
    desired: mpsc::Sender<DesiredState>,
    baseline: Arc<Mutex<Option<(String, String)>>>,
) {
    let mut p = Pipes {
        out,
        report,
        desired,
        queue: VecDeque::new(),
        baseline,
    };
    let mut backoff = cfg.min_backoff;
    let mut number = 0;
    loop {
        let started = Instant::now();
        number += 1;
        match session(&cfg, &mut p, number).await {
            Ok(()) => {
                tracing::warn!(gateway = %cfg.gateway, "controller closed the stream; enforcing the last state")
            }
            Err(e) => {
                tracing::warn!(gateway = %cfg.gateway, error = %format!("{e:#}"), retry_ms = backoff.as_millis() as u64,
                "controller unreachable; enforcing the last state")
            }
        }
        if p.desired.is_closed() {
            return;
        }
        // A session that lasted was a working connection: start the backoff over.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = cfg.min_backoff;
        }
        let wake = tokio::time::sleep(backoff);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = &mut wake => break,
                m = p.out.recv() => match m {
                    Some(m) => p.keep(m),
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(cfg.max_backoff);
    }
}

fn msg(m: agent_message::Msg) -> AgentMessage {
    AgentMessage { msg: Some(m) }
}

/// One connection, until it breaks.
async fn session(cfg: &LinkConfig, p: &mut Pipes, number: u64) -> Result<()> {
    let channel = connect(&cfg.url, cfg.tls.as_ref()).await?;
    let client = AgentLinkClient::new(channel);
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    let hello = Hello {
        gateway: cfg.gateway.clone(),
        report: Some(p.report.borrow_and_update().clone()),
    };
    tx.send(msg(agent_message::Msg::Hello(hello))).await?;
    let mut inbound = client
        .max_decoding_message_size(MAX_STATE_MESSAGE)
        .link(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow!("refused: {}: {}", s.code(), s.message()))?
        .into_inner();
    tracing::info!(gateway = %cfg.gateway, url = %cfg.url, "connected to the controller");
    let baseline = p.baseline.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some((state_json, state_digest)) = baseline {
        tx.send(msg(agent_message::Msg::Baseline(Baseline {
            state_json,
            state_digest,
        })))
        .await?;
    }
    // What was kept while away goes first.
    while let Some(m) = p.queue.pop_front() {
        tx.send(msg(m)).await?;
    }
    loop {
        tokio::select! {
            m = inbound.message() => {
                let Some(m) = m.map_err(|s| anyhow!("{}: {}", s.code(), s.message()))? else { return Ok(()) };
                let Some(controller_message::Msg::Desired(d)) = m.msg else { continue };
                match crate::proto::decode_state(&d.state_json, &d.state_digest) {
                    Ok(state) if state.gateway == cfg.gateway => {
                        p.desired.send(DesiredState { request_id: d.request_id, revision: d.revision, state, session: number }).await?;
                    }
                    Ok(state) => refuse(&tx, &d, format!("state is for gateway '{}', this is '{}'", state.gateway, cfg.gateway)).await?,
                    Err(e) => refuse(&tx, &d, e).await?,
                }
            }
            m = p.out.recv() => {
                let Some((session, m)) = m else { return Ok(()) };
                if session != 0 && session != number {
                    tracing::info!(gateway = %cfg.gateway, "dropping an apply result for an earlier connection");
                    continue;
                }
                if let Err(e) = tx.send(msg(m)).await {
                    if let Some(m) = e.0.msg { p.keep((session, m)) }
                    return Err(anyhow!("stream closed"));
                }
            }
            changed = p.report.changed() => {
                if changed.is_err() { return Ok(()) }
                let r = p.report.borrow_and_update().clone();
                tx.send(msg(agent_message::Msg::Report(r))).await?;
            }
        }
    }
}

async fn refuse(
    tx: &mpsc::Sender<AgentMessage>,
    d: &crate::proto::v1::Desired,
    error: String,
) -> Result<()> {
    tracing::error!(revision = d.revision, %error, "refusing a desired state");
    let r = ApplyResult {
        request_id: d.request_id,
        revision: d.revision,
        ok: false,
        error,
        changes: 0,
        elapsed_ms: 0.0,
    };
    tx.send(msg(agent_message::Msg::Result(r))).await?;
    Ok(())
}
