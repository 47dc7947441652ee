//! Bringing the kernel to a desired state: observe, plan, execute, read back.

use crate::compile::GatewayState;
use crate::dataplane::net::Net;
use crate::dataplane::nft::NftSession;
use crate::dataplane::sysctl;
use crate::plan::observed::Observed;
use crate::plan::{plan, Action, Plan};
use anyhow::{anyhow, Result};
use std::time::{Duration, Instant};

/// What one reconciliation found and did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub plan: Plan,
    /// Actions carried out (empty in observe mode or when nothing differed).
    pub executed: Vec<Action>,
    pub elapsed: Duration,
}

pub struct Reconciler {
    pub net: Net,
    pub nft: NftSession,
    desired: GatewayState,
    canon: Vec<String>,
}

impl Reconciler {
    pub fn new(net: Net, nft: NftSession, desired: GatewayState) -> Result<Reconciler> {
        let canon = NftSession::canonical(&desired.table)?;
        Ok(Reconciler {
            net,
            nft,
            desired,
            canon,
        })
    }

    pub fn desired(&self) -> &GatewayState {
        &self.desired
    }

    /// Switches to a new desired state (the caller converges and rolls back on failure).
    pub fn set_desired(&mut self, desired: GatewayState) -> Result<()> {
        self.canon = NftSession::canonical(&desired.table)?;
        self.desired = desired;
        Ok(())
    }

    pub async fn observe(&mut self) -> Result<Observed> {
        let links = self.net.links().await?;
        let routes = self.net.routes().await?;
        let sysctls = self
            .desired
            .sysctls
            .iter()
            .map(|s| (s.key.clone(), sysctl::read(&s.key)))
            .collect();
        let nft = self.nft.observe(&self.desired.table.name)?;
        Ok(Observed {
            links,
            routes,
            sysctls,
            nft,
        })
    }

    pub async fn plan(&mut self) -> Result<Plan> {
        let observed = self.observe().await?;
        Ok(plan(&self.desired, &self.canon, &observed))
    }

    /// Plans and, when `enforce`, executes. A plan with problems (a missing trunk or port)
    /// executes nothing: a gateway is never left half-programmed by a state it cannot hold.
    pub async fn converge(&mut self, enforce: bool) -> Result<Outcome> {
        let start = Instant::now();
        let plan = self.plan().await?;
        self.execute(plan, enforce, start).await
    }

    /// Executes a plan made by [`Reconciler::plan`], then reads the state back.
    pub async fn execute(&mut self, plan: Plan, enforce: bool, start: Instant) -> Result<Outcome> {
        if !plan.problems.is_empty() {
            return Err(anyhow!("cannot apply: {}", plan.problems.join("; ")));
        }
        let mut executed = Vec::new();
        if enforce {
            for action in &plan.actions {
                match action {
                    Action::ReplaceTable => {
                        self.nft.replace(&self.desired.table)?;
                    }
                    other => self.net.execute(other).await?,
                }
                executed.push(action.clone());
            }
            if !executed.is_empty() {
                let left = self.plan().await?;
                if !left.actions.is_empty() {
                    let rest: Vec<String> = left.actions.iter().map(|a| a.to_string()).collect();
                    return Err(anyhow!(
                        "state did not converge; still differs: {}",
                        rest.join("; ")
                    ));
                }
            }
        }
        Ok(Outcome {
            plan,
            executed,
            elapsed: start.elapsed(),
        })
    }
}
