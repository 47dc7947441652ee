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
        let unfinished = store.fail_unfinished()?;
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                "revisions left rolling out by a previous run are marked failed"
            );
        }
        let current = store.current()?.map(Arc::new);
        Ok(Controller {
            store,
            hub: hub::Hub::default(),
            settings,
            rollout_lock: Arc::new(tokio::sync::Mutex::new(())),
            events: broadcast::channel(1024).0,
            current: RwLock::new(current),
        })
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
    /// names it. Before the first revision every agent the CA vouches for is accepted.
    pub fn is_known(&self, gateway: &str) -> bool {
        match self.current() {
            None => true,
            Some(r) => r.gateway(gateway).is_some() || self.hub.is_inflight(gateway),
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
