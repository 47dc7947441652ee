//! An agent with no dataplane: it holds the real controller link and answers every
//! desired state as applied (or as failed, when told to), touching no kernel. For
//! benchmarks and tests of the control plane.

use super::controller_link::{self, LinkConfig, LinkHandle};
use crate::compile::GatewayState;
use crate::proto::v1::AgentReport;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// What a no-op agent has seen, for assertions.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Revisions received, in order.
    pub received: Vec<u64>,
    /// The revision and state it "enforces".
    pub revision: Option<u64>,
    pub state: Option<GatewayState>,
}

pub struct NoopAgent {
    pub seen: Arc<Mutex<Seen>>,
    /// Revisions this agent refuses to apply (to test rollback).
    pub fail: Arc<Mutex<Vec<u64>>>,
    /// How long each apply takes before it answers (to land a controller crash mid-rollout).
    pub delay: Arc<Mutex<std::time::Duration>>,
    pub link: LinkHandle,
    task: JoinHandle<()>,
}

impl Drop for NoopAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NoopAgent {
    /// Connects with `cfg` as if it already enforced `start` (revision and state). A state
    /// on no revision is its baseline: what the controller's revision 0 puts back.
    pub fn start(cfg: LinkConfig, start: Seen) -> NoopAgent {
        let initial = AgentReport {
            applied_revision: start.revision.unwrap_or(0),
            state_digest: start
                .state
                .as_ref()
                .map(crate::proto::state_digest)
                .unwrap_or_default(),
            in_sync: true,
        };
        let (link, mut rx) = controller_link::spawn(cfg, initial);
        if let Some(s) = &start.state {
            link.set_state(start.revision, s, true);
        }
        let seen = Arc::new(Mutex::new(start));
        let fail = Arc::new(Mutex::new(Vec::new()));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let (seen2, fail2, link2, delay2) =
            (seen.clone(), fail.clone(), link.clone(), delay.clone());
        let task = tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                let t = Instant::now();
                let pause = *lock(&delay2);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                let refused = lock(&fail2).contains(&d.revision);
                let outcome = if refused {
                    Err(anyhow::anyhow!(
                        "cannot apply: port missing (no-op agent told to fail)"
                    ))
                } else {
                    let mut s = lock(&seen2);
                    s.received.push(d.revision);
                    s.revision = Some(d.revision);
                    s.state = Some(d.state.clone());
                    link2.set_state(Some(d.revision), &d.state, true);
                    Ok(0)
                };
                link2.applied(&d, &outcome, t.elapsed());
            }
        });
        NoopAgent {
            seen,
            fail,
            delay,
            link,
            task,
        }
    }

    pub fn seen(&self) -> Seen {
        lock(&self.seen).clone()
    }

    pub fn fail_on(&self, revision: u64) {
        lock(&self.fail).push(revision);
    }

    /// Every apply from now on takes `d` before it answers.
    pub fn set_delay(&self, d: Duration) {
        *lock(&self.delay) = d;
    }
}

/// A link configuration with fast reconnects, for tests and benchmarks.
pub fn link_config(
    url: &str,
    gateway: &str,
    tls: Option<crate::controller::tls::TlsFiles>,
) -> LinkConfig {
    LinkConfig {
        url: url.to_string(),
        gateway: gateway.to_string(),
        tls,
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    }
}
