//! The agent's life: restore the persisted state, apply the topology, then watch the
//! kernel and put back anything changed behind tiernet's back.

use super::controller_link::{self, DesiredState, LinkConfig, LinkHandle};
use super::drift::{now_ms, DriftEvent, FlapGuard};
use super::reconcile::Reconciler;
use super::state::{Persisted, StateDir};
use crate::compile::firewall::closed_state;
use crate::compile::GatewayState;
use crate::dataplane::monitor::{watch_netconf, watch_rtnetlink, KernelEvent};
use crate::dataplane::net::Net;
use crate::dataplane::nft::{watch_nft, NftSession};
use crate::plan::Action;
use anyhow::{anyhow, Context, Result};
use chrono::NaiveDate;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

/// How soon a failed revert is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Revert drift as soon as it is seen.
    Enforce,
    /// Only report drift.
    Observe,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: String,
    pub topology: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub mode: Mode,
    pub check_interval: Duration,
    /// Make the nftables table writable only by this agent's netlink socket.
    pub owner: bool,
    /// Apply once and exit (no watching).
    pub once: bool,
    /// Reverts of one object within 10 s after which it counts as flapping.
    pub flap_limit: usize,
    pub today: Option<NaiveDate>,
    /// Controller mode (instead of `topology`): desired states come over this link.
    pub controller: Option<LinkConfig>,
}

/// Compiles this gateway's part of a topology file.
fn compile_gateway(
    path: &std::path::Path,
    gateway: &str,
    today: NaiveDate,
) -> Result<GatewayState> {
    let loaded = crate::topology::load::load(path, today)?;
    let compiled = loaded
        .compile(today)
        .map_err(|report| anyhow!("topology does not validate:\n{report}"))?;
    compiled
        .gateway(gateway)
        .cloned()
        .ok_or_else(|| anyhow!("{} has no gateway '{gateway}'", path.display()))
}

struct Agent {
    cfg: Config,
    dir: StateDir,
    rec: Reconciler,
    flaps: FlapGuard,
    notices: Vec<String>,
    /// When a revert failed (e.g. a link was being recreated under us), check again then
    /// rather than waiting for the next event or the periodic check.
    retry_at: Option<tokio::time::Instant>,
    compiled_on: Option<NaiveDate>,
    /// The controller revision being enforced, if a controller sent it.
    revision: Option<u64>,
    link: Option<LinkHandle>,
}

impl Agent {
    fn today(&self) -> NaiveDate {
        self.cfg
            .today
            .unwrap_or_else(|| chrono::Local::now().date_naive())
    }

    /// Applies a new desired state; on failure puts the previous one back. Returns the
    /// number of changes made.
    async fn apply(
        &mut self,
        state: GatewayState,
        source: String,
        revision: Option<u64>,
    ) -> Result<usize> {
        let previous = self.rec.desired().clone();
        self.rec.set_desired(state.clone())?;
        match self.rec.converge(true).await {
            Ok(out) => {
                self.dir.save(&Persisted {
                    source: source.clone(),
                    revision,
                    state,
                })?;
                self.revision = revision;
                if let Some(link) = &self.link {
                    link.set_state(revision, self.rec.desired(), true);
                }
                tracing::info!(gateway = %self.cfg.gateway, %source, changes = out.executed.len(),
                    elapsed_ms = out.elapsed.as_secs_f64() * 1e3, "applied");
                Ok(out.executed.len())
            }
            Err(e) => {
                tracing::error!(gateway = %self.cfg.gateway, %source, error = %e, "apply failed; restoring the previous state");
                self.rec.set_desired(previous)?;
                if let Err(e2) = self.rec.converge(true).await {
                    tracing::error!(gateway = %self.cfg.gateway, error = %e2, "restoring the previous state failed too");
                }
                Err(e)
            }
        }
    }

    async fn load_topology(&mut self) -> Result<()> {
        let Some(path) = self.cfg.topology.clone() else {
            return Ok(());
        };
        let today = self.today();
        let state = compile_gateway(&path, &self.cfg.gateway, today);
        // The whole topology was parsed for this gateway's part: give that memory back.
        release_freed_memory();
        let state = state?;
        self.compiled_on = Some(today);
        if &state == self.rec.desired() {
            // Still converge: the persisted state may not be what the kernel holds.
            let out = self.rec.converge(true).await?;
            tracing::info!(gateway = %self.cfg.gateway, source = %path.display(), changes = out.executed.len(),
                elapsed_ms = out.elapsed.as_secs_f64() * 1e3, "converged");
            return Ok(());
        }
        let applied = self.apply(state, path.display().to_string(), None).await;
        release_freed_memory();
        applied.map(|_| ())
    }

    /// A state from the controller: apply it (or go back) and answer with the result.
    async fn apply_desired(&mut self, d: DesiredState) {
        let started = Instant::now();
        let outcome = self
            .apply(
                d.state.clone(),
                format!("controller revision {}", d.revision),
                Some(d.revision),
            )
            .await;
        if let Some(link) = &self.link {
            link.applied(&d, &outcome, started.elapsed());
        }
        release_freed_memory();
    }

    /// Re-observes after kernel events (or a periodic check) and reverts what differs.
    async fn check(&mut self, cause: Vec<String>, since: Instant) -> Result<()> {
        // A read that fails (the table deleted while it was dumped) is tried again soon:
        // the events that caused it are consumed, so nothing else would look before the
        // periodic check, while the drift (e.g. no table) stays.
        let plan = match self.rec.plan().await {
            Ok(plan) => plan,
            Err(e) => {
                self.retry_at = Some(tokio::time::Instant::now() + RETRY_AFTER_FAILURE);
                return Err(e);
            }
        };
        let new_notices = plan.notices != self.notices;
        self.notices = plan.notices.clone();
        if plan.actions.is_empty() && !new_notices {
            if let Some(link) = &self.link {
                link.set_in_sync(true);
            }
            return Ok(());
        }
        let expected: Vec<String> = plan.actions.iter().map(|a| a.to_string()).collect();
        let now = Instant::now();
        // A change another process keeps making is put back less often (backing off), but
        // only that change: the firewall and the forwarding sysctls are always put back,
        // and flapping one object never exempts the rest.
        let paused: Vec<bool> = plan
            .actions
            .iter()
            .zip(&expected)
            .map(|(a, k)| !always_reverted(a) && !self.flaps.allow(k, now))
            .collect();
        let backing_off: Vec<&String> = expected
            .iter()
            .zip(&paused)
            .filter_map(|(k, p)| p.then_some(k))
            .collect();
        let mut run = plan.clone();
        let mut keep = paused.iter().map(|p| !p);
        run.actions.retain(|_| keep.next().unwrap_or(true));
        if let Some(at) = self.flaps.next_resume() {
            self.retry_at = Some(tokio::time::Instant::from_std(at));
        }
        let enforce = self.cfg.mode == Mode::Enforce;
        let action = if plan.actions.is_empty() || !enforce {
            "reported".to_string()
        } else {
            let done = if run.actions.is_empty() {
                Ok(())
            } else {
                self.rec.execute(run, true, since).await.map(|_| ())
            };
            match done {
                Ok(()) if backing_off.is_empty() => "reverted".into(),
                Ok(()) => format!(
                    "partly reverted: backing off from {} change(s) another process keeps making: {}",
                    backing_off.len(),
                    backing_off
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Err(e) => {
                    self.retry_at = Some(tokio::time::Instant::now() + RETRY_AFTER_FAILURE);
                    format!("failed: {e:#}")
                }
            }
        };
        let event = DriftEvent {
            gateway: self.cfg.gateway.clone(),
            at_ms: now_ms(),
            cause,
            expected,
            notices: plan.notices.clone(),
            action,
            latency_ms: since.elapsed().as_secs_f64() * 1e3,
        };
        let line = serde_json::to_string(&event)?;
        tracing::warn!(target: "drift", gateway = %event.gateway, action = %event.action,
            latency_ms = event.latency_ms, changes = ?event.expected, notices = ?event.notices, cause = ?event.cause, "drift");
        self.dir.append_line("drift.jsonl", &line)?;
        if let Some(link) = &self.link {
            link.drift(&event);
            link.set_in_sync(event.action == "reverted" || plan.actions.is_empty());
        }
        Ok(())
    }
}

/// Hands memory freed after a parse or an apply back to the system. glibc keeps freed heap
/// for reuse, so a daemon that once parsed a large topology (its YAML node tree is many
/// times the file) or built a large netlink batch would otherwise hold that peak for good.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the heap to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What keeps the gateway closed is never left to another process, however often it
/// changes it: the nftables table and the sysctls (forwarding, rp_filter).
fn always_reverted(a: &Action) -> bool {
    matches!(a, Action::ReplaceTable | Action::SetSysctl { .. })
}

pub async fn run(cfg: Config) -> Result<()> {
    let dir = StateDir::new(&cfg.state_dir)?;
    let nft = NftSession::open(cfg.owner).context("opening the nftables session")?;
    let net = Net::connect()?;
    // Fail-static: the last applied state goes back first, before any topology is read.
    let persisted = match dir.load() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "persisted state unreadable; starting closed");
            None
        }
    };
    let (initial, source, revision) = match persisted {
        Some(p) if p.state.gateway == cfg.gateway => {
            (p.state, format!("persisted ({})", p.source), p.revision)
        }
        _ => (closed_state(&cfg.gateway), "closed".to_string(), None),
    };
    // Signals and kernel events are taken before the first converge: a SIGHUP sent as soon as
    // the agent is up (ready) must reload it, not kill it (the default action), and a change
    // made while it restores must not wait for the periodic check.
    let subscribed = if cfg.once {
        None
    } else {
        Some(Subscribed::new(&initial.table.name)?)
    };
    let rec = Reconciler::new(net, nft, initial)?;
    let mut agent = Agent {
        dir,
        rec,
        flaps: FlapGuard::new(
            Duration::from_secs(10),
            cfg.flap_limit,
            Duration::from_secs(30),
        ),
        notices: Vec::new(),
        retry_at: None,
        compiled_on: None,
        revision,
        link: None,
        cfg,
    };
    let started = Instant::now();
    let restored = agent.rec.converge(true).await;
    match &restored {
        Ok(out) => {
            tracing::info!(gateway = %agent.cfg.gateway, %source, changes = out.executed.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "restored")
        }
        Err(e) => {
            tracing::error!(gateway = %agent.cfg.gateway, %source, error = %e, "could not restore the persisted state")
        }
    }
    let mut desired_rx = None;
    if let Some(lc) = agent.cfg.controller.clone() {
        let (link, rx) = controller_link::spawn(lc, Default::default());
        link.set_state(agent.revision, agent.rec.desired(), restored.is_ok());
        // Audited flows' connections go to the controller's audit log.
        let audit = link.clone();
        if let Err(e) = super::nflog::watch(move |record| {
            audit.audit(record);
            true
        }) {
            tracing::warn!(error = %format!("{e:#}"), "flow audit records unavailable");
        }
        agent.link = Some(link);
        desired_rx = Some(rx);
    }
    if let Err(e) = agent.load_topology().await {
        tracing::error!(gateway = %agent.cfg.gateway, error = %format!("{e:#}"), "topology not applied; keeping the last good state");
        if agent.cfg.once {
            return Err(e);
        }
    }
    let ready = serde_json::json!({ "gateway": agent.cfg.gateway, "pid": std::process::id() });
    agent
        .dir
        .write_atomic("ready", ready.to_string().as_bytes())?;
    match subscribed {
        Some(subscribed) => watch(agent, desired_rx, subscribed).await,
        None => Ok(()),
    }
}

/// Kernel events and the signals the daemon answers, subscribed to from the start.
struct Subscribed {
    events: mpsc::UnboundedReceiver<KernelEvent>,
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Subscribed {
    fn new(table: &str) -> Result<Subscribed> {
        let (tx, events) = mpsc::unbounded_channel::<KernelEvent>();
        watch_rtnetlink(tx.clone())?;
        watch_netconf(tx.clone())?;
        watch_nft(table, tx)?;
        Ok(Subscribed {
            events,
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// The next state from the controller; never, without one.
async fn next_desired(rx: &mut Option<mpsc::Receiver<DesiredState>>) -> Option<DesiredState> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn watch(
    mut agent: Agent,
    mut desired_rx: Option<mpsc::Receiver<DesiredState>>,
    subscribed: Subscribed,
) -> Result<()> {
    let Subscribed {
        events: mut rx,
        mut hup,
        mut term,
        mut int,
    } = subscribed;
    let mut tick = tokio::time::interval(agent.cfg.check_interval);
    tick.tick().await;
    tracing::info!(gateway = %agent.cfg.gateway, mode = ?agent.cfg.mode, "watching for drift");
    loop {
        let retry_at = agent.retry_at;
        tokio::select! {
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                agent.retry_at = None;
                if let Err(e) = agent.check(vec!["retry after a failed revert".into()], Instant::now()).await {
                    tracing::error!(error = %format!("{e:#}"), "drift check failed");
                }
            }
            Some(first) = rx.recv() => {
                // Debounce: a burst (a flush, a deleted link taking its routes) is one check.
                tokio::time::sleep(Duration::from_millis(2)).await;
                let mut cause = vec![first.what];
                while let Ok(more) = rx.try_recv() {
                    cause.push(more.what);
                }
                cause.retain(|c| !c.ends_with("(own)"));
                if cause.is_empty() {
                    continue;
                }
                cause.dedup();
                if let Err(e) = agent.check(cause, first.at).await {
                    tracing::error!(error = %format!("{e:#}"), "drift check failed");
                }
            }
            _ = tick.tick() => {
                if agent.cfg.topology.is_some() && agent.compiled_on != Some(agent.today()) {
                    // A new day: flows may have expired.
                    if let Err(e) = agent.load_topology().await {
                        tracing::error!(error = %format!("{e:#}"), "daily recompile failed; keeping the last good state");
                    }
                }
                if let Err(e) = agent.check(vec!["periodic check".into()], Instant::now()).await {
                    tracing::error!(error = %format!("{e:#}"), "periodic check failed");
                }
            }
            Some(d) = next_desired(&mut desired_rx) => agent.apply_desired(d).await,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the topology");
                if let Err(e) = agent.load_topology().await {
                    tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the last good state");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(gateway = %agent.cfg.gateway, "stopping; the kernel keeps enforcing the last state");
    Ok(())
}
