//! `tiernet-controller`: keeps topology revisions, rolls them out to the agents over gRPC
//! (mutual TLS), and records results, drift and the audit log in SQLite.

pub mod admin;
pub mod agents;
pub mod audit;
pub mod diff;
pub mod expiry;
pub mod hub;
pub mod rollout;
pub mod server;
pub mod status;
pub mod store;
pub mod tls;

use crate::proto::v1::Event;
use chrono::NaiveDate;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use store::{EventRow, Revision, Store};
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub struct Settings {
    pub insecure: bool,
    /// Fixed day for expiry decisions (tests); None: the local date.
    pub today: Option<NaiveDate>,
    /// How long one gateway may take to apply and answer.
    pub apply_timeout: Duration,
    /// How long a rollout waits for a gateway that is not connected.
    pub connect_grace: Duration,
}

pub struct Controller {
    pub store: Store,
    pub hub: hub::Hub,
    pub settings: Settings,
    /// One rollout at a time; held from the `--expect-revision` check to the outcome.
    pub rollout_lock: Arc<tokio::sync::Mutex<()>>,
    events: broadcast::Sender<Event>,
    /// The revision every gateway should be on (cached from the store).
    current: RwLock<Option<Arc<Revision>>>,
}

pub fn event_message(e: &EventRow) -> Event {
    Event {
        id: e.id,
        at_ms: e.at_ms,
        gateway: e.gateway.clone(),
        kind: e.kind.clone(),
        summary: e.summary.clone(),
        detail_json: e.detail.clone(),
    }
}

impl Controller {
    pub fn new(store: Store, settings: Settings) -> anyhow::Result<Controller> {
        let current = store.current()?.map(Arc::new);
        let ctl = Controller {
            store,
            hub: hub::Hub::default(),
            settings,
            rollout_lock: Arc::new(tokio::sync::Mutex::new(())),
            events: broadcast::channel(1024).0,
            current: RwLock::new(current),
        };
        ctl.recover()?;
        Ok(ctl)
    }

    /// Recovery from a controller that died during a rollout (SIGKILL, power loss).
    ///
    /// A revision is intent until it is recorded `applied`: it is stored `rolling-out`
    /// before the first gateway is sent anything, and marked applied only after every
    /// gateway answered. A revision still `rolling-out` at start was therefore never
    /// complete, and it is rolled back, always (never completed: the gateways that did not
    /// get it may be gone, and a rollout nobody is watching must not finish on its own):
    /// it is marked failed, the current revision stays the last applied one, and each
    /// gateway is put back as its agent reconnects and reports where it stands: a gateway
    /// of the current revision onto it, any other gateway of the interrupted revision onto
    /// its pre-controller state (revision 0, queued in the store). An audit record and an
    /// event say what was done.
    fn recover(&self) -> anyhow::Result<()> {
        let current = self.current();
        let back_to = current.as_ref().map_or(0, |c| c.id);
        for rev in self.store.unfinished()? {
            let names = rev.gateway_names();
            let to_baseline: Vec<String> = names
                .iter()
                .filter(|g| current.as_ref().is_none_or(|c| c.gateway(g).is_none()))
                .cloned()
                .collect();
            let mut message = format!(
                "controller stopped during the rollout; rolled back on restart: gateways return to revision {back_to} as they reconnect"
            );
            if back_to != 0 && !to_baseline.is_empty() {
                message.push_str(&format!(
                    " ({} to their pre-controller state, revision 0)",
                    to_baseline.join(", ")
                ));
            }
            self.store
                .fail_interrupted(rev.id, &message, &to_baseline)?;
            tracing::warn!(revision = rev.id, back_to, %message, "interrupted rollout rolled back");
            let detail = serde_json::json!({
                "outcome": "rolled-back",
                "reason": "controller stopped during the rollout",
                "interrupted": rev.id,
                "back_to": back_to,
                "gateways": names,
                "to_baseline": to_baseline,
            });
            self.store
                .audit_append("controller", "recovery", rev.id, &detail)?;
            self.event(
                "",
                "rollout",
                &format!(
                    "revision {} was interrupted by a controller stop; rolled back to revision {back_to}",
                    rev.id
                ),
                detail,
            );
        }
        Ok(())
    }

    /// What revision 0 means for `gateway`: the pre-controller state its agent sent, or
    /// else the fail-closed state.
    pub fn baseline(&self, gateway: &str) -> (crate::compile::GatewayState, &'static str) {
        match self.store.baseline(gateway) {
            Ok(Some(s)) if s.gateway == gateway => (s, "its pre-controller state"),
            Ok(_) => (
                crate::compile::firewall::closed_state(gateway),
                "its fail-closed state (no pre-controller state known)",
            ),
            Err(e) => {
                tracing::error!(gateway, error = %format!("{e:#}"), "baseline unreadable; using the closed state");
                (
                    crate::compile::firewall::closed_state(gateway),
                    "its fail-closed state (stored pre-controller state unreadable)",
                )
            }
        }
    }

    pub fn today(&self) -> NaiveDate {
        self.settings
            .today
            .unwrap_or_else(|| chrono::Local::now().date_naive())
    }

    pub fn current(&self) -> Option<Arc<Revision>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn current_id(&self) -> u64 {
        self.current().map_or(0, |r| r.id)
    }

    fn set_current(&self, rev: Revision) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(rev));
    }

    /// A gateway may hold a stream if the current revision (or a rollout in progress)
    /// names it, or if it must still be put back from a revision that did not complete. Before the first revision every agent the CA vouches for is accepted.
    pub fn is_known(&self, gateway: &str) -> bool {
        match self.current() {
            None => true,
            Some(r) => {
                r.gateway(gateway).is_some()
                    || self.hub.is_inflight(gateway)
                    || matches!(self.store.pending_revert(gateway), Ok(Some(_)))
            }
        }
    }

    /// Records an event and tells followers; a store failure is logged, never fatal.
    pub fn event(&self, gateway: &str, kind: &str, summary: &str, detail: serde_json::Value) {
        match self
            .store
            .add_event(gateway, kind, summary, &detail.to_string())
        {
            Ok(row) => {
                let _ = self.events.send(event_message(&row));
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), gateway, kind, "could not record an event")
            }
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}
