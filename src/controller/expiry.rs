//! Expired flows leave the gateways when their day ends: once a day the controller
//! compiles the current topology again and, if that changes any gateway, rolls the result
//! out as a new revision (author `controller`, kind `expiry`).

use super::rollout::{self, Change};
use super::Controller;
use chrono::NaiveDate;
use std::sync::Arc;
use std::time::Duration;

/// Whether compiling the current revision as of `today` gives gateways other states.
pub fn changes_on(ctl: &Controller, today: NaiveDate) -> Option<Change> {
    let current = ctl.current()?;
    if current.compiled_on >= today {
        return None;
    }
    let recompiled = rollout::compile(&current.source, &current.topology, today).ok()?;
    if recompiled == current.gateways {
        return None;
    }
    Some(Change {
        kind: "expiry",
        actor: "controller".into(),
        source: current.source.clone(),
        topology: current.topology.clone(),
        expect_revision: Some(current.id),
        canary: None,
    })
}

/// Checks every `every` whether the day changed; runs for the controller's life.
pub async fn run(ctl: Arc<Controller>, every: Duration) {
    let mut checked: Option<NaiveDate> = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let today = ctl.today();
        if checked == Some(today) {
            continue;
        }
        let Some(change) = changes_on(&ctl, today) else {
            checked = Some(today);
            continue;
        };
        tracing::info!(%today, "flows expired: rolling out a new revision without them");
        let prepared = match rollout::prepare(&ctl, change).await {
            Ok(p) => p,
            Err(e) => {
                // Someone applied in between; look again at the next tick.
                tracing::info!(reason = %e.message(), "expiry rollout not started");
                continue;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        match prepared.run(ctl.clone(), tx).await {
            Ok(rev) => {
                tracing::info!(revision = rev, "expired flows removed");
                checked = Some(today);
            }
            // Retried at the next tick (an unreachable gateway may be back by then).
            Err(why) => tracing::warn!(%why, "expiry rollout failed"),
        }
    }
}
