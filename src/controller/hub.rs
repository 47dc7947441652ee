//! The agents connected right now: one stream per gateway, what each last reported, and
//! the apply requests waiting for their results.

use crate::compile::GatewayState;
use crate::proto::v1::{controller_message, AgentReport, ApplyResult, ControllerMessage, Desired};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tonic::Status;

pub type Outbound = mpsc::Sender<Result<ControllerMessage, Status>>;

struct Conn {
    session: u64,
    tx: Outbound,
    report: AgentReport,
    last_seen_ms: u64,
    /// The last drift it reported and could not revert (cleared by an in-sync report).
    drift: Option<String>,
}

/// A copy of what is known about one connected agent.
#[derive(Debug, Clone)]
pub struct ConnView {
    pub report: AgentReport,
    pub last_seen_ms: u64,
    pub drift: Option<String>,
}

pub struct Hub {
    conns: Mutex<HashMap<String, Conn>>,
    /// request id → (gateway, revision, who waits for the result).
    pending: Mutex<HashMap<u64, Pending>>,
    /// Request ids start from the clock (in µs), so a result an agent queued for a
    /// controller that has since restarted cannot answer a new request with the same id.
    next_id: AtomicU64,
    /// The first id (exclusive): ids outside (first_id, next_id] were never issued here.
    first_id: u64,
    /// Gateways of a rollout in progress: accepted as known while it runs.
    inflight: Mutex<HashSet<String>>,
    /// Someone connected or left.
    changed: Notify,
}

struct Pending {
    gateway: String,
    revision: u64,
    tx: oneshot::Sender<ApplyResult>,
}

impl Default for Hub {
    fn default() -> Hub {
        let first_id = super::store::now_ms().saturating_mul(1000);
        Hub {
            conns: Mutex::default(),
            pending: Mutex::default(),
            next_id: AtomicU64::new(first_id),
            first_id,
            inflight: Mutex::default(),
            changed: Notify::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// Takes the gateway's one stream; refused if it already has one.
    pub fn register(
        &self,
        gateway: &str,
        report: AgentReport,
        tx: Outbound,
    ) -> Result<u64, Status> {
        let mut conns = lock(&self.conns);
        if conns.contains_key(gateway) {
            return Err(Status::already_exists(format!(
                "gateway '{gateway}' is already connected; one stream per gateway"
            )));
        }
        let session = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let last_seen_ms = super::store::now_ms();
        conns.insert(
            gateway.to_string(),
            Conn {
                session,
                tx,
                report,
                last_seen_ms,
                drift: None,
            },
        );
        drop(conns);
        self.changed.notify_waiters();
        Ok(session)
    }

    /// Forgets a stream (only the session that registered it, not a newer one), and fails
    /// the apply requests that were waiting on it.
    pub fn unregister(&self, gateway: &str, session: u64) {
        let mut conns = lock(&self.conns);
        if conns.get(gateway).is_some_and(|c| c.session == session) {
            conns.remove(gateway);
        }
        drop(conns);
        lock(&self.pending).retain(|_, p| p.gateway != gateway);
        self.changed.notify_waiters();
    }

    /// Ends every agent stream (controller shutdown).
    pub fn close_all(&self) {
        lock(&self.conns).clear();
        lock(&self.pending).clear();
        self.changed.notify_waiters();
    }

    /// Records a new report; true when the agent now enforces another state.
    pub fn update_report(&self, gateway: &str, report: AgentReport) -> bool {
        lock(&self.conns).get_mut(gateway).is_some_and(|c| {
            let moved = c.report.applied_revision != report.applied_revision
                || c.report.state_digest != report.state_digest;
            if report.in_sync {
                c.drift = None;
            }
            c.report = report;
            c.last_seen_ms = super::store::now_ms();
            moved
        })
    }

    pub fn note_drift(&self, gateway: &str, unreverted: Option<String>) {
        if let Some(c) = lock(&self.conns).get_mut(gateway) {
            c.last_seen_ms = super::store::now_ms();
            if let Some(what) = unreverted {
                c.report.in_sync = false;
                c.drift = Some(what);
            }
        }
    }

    pub fn view(&self, gateway: &str) -> Option<ConnView> {
        lock(&self.conns).get(gateway).map(|c| ConnView {
            report: c.report.clone(),
            last_seen_ms: c.last_seen_ms,
            drift: c.drift.clone(),
        })
    }

    pub fn connected(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.conns).keys().cloned().collect();
        v.sort();
        v
    }

    pub fn set_inflight(&self, names: &[String]) {
        *lock(&self.inflight) = names.iter().cloned().collect();
    }

    pub fn is_inflight(&self, gateway: &str) -> bool {
        lock(&self.inflight).contains(gateway)
    }

    /// Waits up to `grace` for `gateway` to connect.
    pub async fn wait_connected(&self, gateway: &str, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.changed.notified();
            if lock(&self.conns).contains_key(gateway) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Whether this controller run ever issued `request_id` (to anyone, for anything).
    pub fn issued(&self, request_id: u64) -> bool {
        request_id > self.first_id && request_id <= self.next_id.load(Ordering::Relaxed)
    }

    /// Completes the request an apply result answers; false (and dropped) when no request
    /// of this gateway for that revision waits for it: a result queued by the agent for a
    /// controller that restarted since, or a confused or hostile agent.
    pub fn resolve(&self, gateway: &str, result: ApplyResult) -> bool {
        let mut pending = lock(&self.pending);
        // Only the gateway a request went to may answer it, and for the revision sent.
        if pending
            .get(&result.request_id)
            .is_some_and(|p| p.gateway == gateway && p.revision == result.revision)
        {
            if let Some(p) = pending.remove(&result.request_id) {
                let _ = p.tx.send(result);
                return true;
            }
        }
        false
    }

    /// Sends `state` (which must be `gateway`'s own) as `revision` and waits for the result.
    pub async fn send_desired(
        &self,
        gateway: &str,
        revision: u64,
        state: &GatewayState,
        timeout: Duration,
    ) -> Result<ApplyResult, String> {
        if state.gateway != gateway {
            return Err(format!(
                "refusing to send gateway '{}' state to '{gateway}'",
                state.gateway
            ));
        }
        let tx = lock(&self.conns)
            .get(gateway)
            .map(|c| c.tx.clone())
            .ok_or("not connected")?;
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (otx, orx) = oneshot::channel();
        lock(&self.pending).insert(
            request_id,
            Pending {
                gateway: gateway.to_string(),
                revision,
                tx: otx,
            },
        );
        let (state_json, state_digest) = crate::proto::encode_state(state);
        let msg = ControllerMessage {
            msg: Some(controller_message::Msg::Desired(Desired {
                request_id,
                revision,
                state_json,
                state_digest,
            })),
        };
        let outcome = async {
            tx.send(Ok(msg))
                .await
                .map_err(|_| "stream closed".to_string())?;
            match tokio::time::timeout(timeout, orx).await {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(_)) => Err("disconnected before answering".to_string()),
                Err(_) => Err(format!("no result within {}s", timeout.as_secs_f64())),
            }
        }
        .await;
        lock(&self.pending).remove(&request_id);
        outcome
    }
}
