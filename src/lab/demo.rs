//! `tiernet lab demo`: the lab from end to end for an audience — up, the truth table,
//! drift made behind the agents' back and reverted by them, the table again, revisions
//! through the controller (see `revisions`), down.

use super::probe::{self, Matrix};
use super::table;
use super::updown::{self, Lab};
use super::{agents, nl};
use crate::compile::{Route, Zone};
use crate::netns;
use anyhow::{anyhow, bail, Context, Result};
use chrono::NaiveDate;
use ipnet::IpNet;
use rtnetlink::Handle;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long the agent gets to put drift right before the demo calls it a failure.
const REVERT_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes the lab down when dropped, so the demo leaves nothing behind, even on failure.
struct DownGuard<'a>(&'a str);

impl Drop for DownGuard<'_> {
    fn drop(&mut self) {
        say!("\n== down");
        if let Err(e) = updown::down(self.0, true) {
            eprintln!("tiernet lab: taking the lab down failed: {e:#}");
        }
    }
}

pub(super) fn section(title: &str) {
    say!("\n== {title}");
}

fn probe(lab: &Lab, tty: bool, full: bool) -> Result<Matrix> {
    let started = Instant::now();
    let m = lab.probe()?;
    if full {
        say_raw!("{}", table::render(&lab.plan, &m, tty));
    } else {
        let s = table::render(&lab.plan, &m, tty);
        // The table once is enough; after that, the disagreements and the summary.
        let tail = s
            .split_once("\nmismatches:")
            .map(|(_, t)| format!("mismatches:{t}"));
        say_raw!(
            "{}",
            tail.unwrap_or_else(|| format!("{}\n", probe::summary(&m)))
        );
    }
    say!("probed in {:.1} s", started.elapsed().as_secs_f64());
    Ok(m)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C or SIGTERM end the demo at the next step, so the guard still takes the lab down.
fn catch_interrupts() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub(super) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

pub async fn demo(file: &Path, name: &str, today: NaiveDate, tty: bool) -> Result<bool> {
    catch_interrupts();
    let _down = DownGuard(name);
    section("up");
    let lab = updown::up(file, name, updown::Agents::Controller, today).await?;
    check_interrupted()?;

    section("probe: every host against every service port, real packets vs. the compiled topology");
    let first = probe(&lab, tty, true)?;
    check_interrupted()?;

    section("drift: changes made behind the agents' back, from outside (plain netlink)");
    let mut reverted = true;
    for d in drifts(&lab) {
        check_interrupted()?;
        reverted &= d.show(&lab).await?;
    }
    check_interrupted()?;

    section("probe again: the lab must still match the topology");
    let second = probe(&lab, tty, false)?;
    check_interrupted()?;

    let revisions = if lab.meta.controller {
        super::revisions::story(&lab, &first).await?
    } else {
        true
    };

    let ok = reverted
        && revisions
        && probe::summary(&first).mismatches == 0
        && probe::summary(&second).mismatches == 0;
    say!(
        "\ndemo: {}",
        if ok {
            "the gateways enforce exactly each revision, all or nothing, and drift was reverted, with or without the controller"
        } else {
            "FAILED (see above)"
        }
    );
    Ok(ok)
}

enum Change {
    DeleteRoute(Route),
    DeleteAddress { link: String, address: IpNet },
    SetDown { link: String },
}

/// One change made to a gateway's kernel state behind its agent's back.
pub(super) struct Drift {
    gateway: String,
    change: Change,
}

/// A route to a segment behind another gateway, the router address of a segment, and a
/// segment port set down (on the last gateway, so a two-gateway lab shows both agents).
pub(super) fn drifts(lab: &Lab) -> Vec<Drift> {
    let gws = &lab.compiled.gateways;
    let mut out = Vec::new();
    let route = gws.iter().find_map(|g| {
        g.routes
            .iter()
            .find(|r| r.destination.prefix_len() > 0)
            .map(|r| (g, r))
    });
    if let Some((g, r)) = route {
        out.push(Drift {
            gateway: g.gateway.clone(),
            change: Change::DeleteRoute(r.clone()),
        });
    }
    let segment_link = |g: &crate::compile::GatewayState| {
        g.links
            .iter()
            .find(|l| matches!(l.zone, Zone::Segment { .. }))
            .cloned()
    };
    if let Some((g, link)) = gws.first().and_then(|g| Some((g, segment_link(g)?))) {
        if let Some(address) = link.addresses.first() {
            out.push(Drift {
                gateway: g.gateway.clone(),
                change: Change::DeleteAddress {
                    link: link.name.clone(),
                    address: *address,
                },
            });
        }
    }
    if let Some((g, link)) = gws.last().and_then(|g| Some((g, segment_link(g)?))) {
        out.push(Drift {
            gateway: g.gateway.clone(),
            change: Change::SetDown { link: link.name },
        });
    }
    out
}

impl Drift {
    fn describe(&self) -> String {
        match &self.change {
            Change::DeleteRoute(r) => {
                format!("delete route {} via {} dev {}", r.destination, r.via, r.dev)
            }
            Change::DeleteAddress { link, address } => {
                format!("delete address {address} from {link} (the segment's router address)")
            }
            Change::SetDown { link } => format!("set {link} down (its segment loses its router)"),
        }
    }

    async fn route_entry(h: &Handle, r: &Route) -> Result<Option<nl::RouteEntry>> {
        let oif = nl::index_of(h, &r.dev).await?;
        let found = nl::routes(h)
            .await?
            .into_iter()
            .find(|e| e.destination == r.destination && e.via == Some(r.via) && e.oif == Some(oif));
        Ok(found)
    }

    async fn inject(&self, h: &Handle) -> Result<()> {
        match &self.change {
            Change::DeleteRoute(r) => {
                let entry = Self::route_entry(h, r).await?.with_context(|| {
                    format!(
                        "{} has no route {} via {} before the drift",
                        self.gateway, r.destination, r.via
                    )
                })?;
                nl::delete_route(h, &entry).await
            }
            Change::DeleteAddress { link, address } => nl::delete_address(h, link, *address).await,
            Change::SetDown { link } => nl::set_down(h, link).await,
        }
    }

    async fn restored(&self, h: &Handle) -> Result<bool> {
        match &self.change {
            Change::DeleteRoute(r) => Ok(Self::route_entry(h, r).await?.is_some()),
            Change::DeleteAddress { link, address } => {
                Ok(nl::addresses(h, link).await?.contains(address))
            }
            Change::SetDown { link } => nl::is_up(h, link).await,
        }
    }

    /// Makes the change, waits for the agent to undo it, and says how long that took.
    pub(super) async fn show(&self, lab: &Lab) -> Result<bool> {
        let ns = lab
            .plan
            .gateway_ns(&self.gateway)
            .ok_or_else(|| anyhow!("no namespace for gateway {}", self.gateway))?;
        let h = netns::rtnetlink_in(ns)?;
        let log = lab.dir.agent_log(&self.gateway);
        let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        say!("-> on {}: {}", self.gateway, self.describe());
        self.inject(&h).await?;
        let started = Instant::now();
        while started.elapsed() < REVERT_TIMEOUT {
            check_interrupted()?;
            if self.restored(&h).await? {
                say!(
                    "   reverted by the agent after {} ms",
                    started.elapsed().as_millis()
                );
                if let Some(said) = agent_said(&log, offset).await {
                    say!("   the agent's log: {said}");
                }
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        say!(
            "   NOT reverted within {} s; the agent's log:\n{}",
            REVERT_TIMEOUT.as_secs(),
            agents::log_tail(&log, 5)
        );
        Ok(false)
    }
}

/// The agent's own account of a revert: the `changes` of the first drift line it logged
/// after `offset` (best effort; the agent logs JSON lines).
async fn agent_said(log: &Path, offset: u64) -> Option<String> {
    for _ in 0..50 {
        let text = std::fs::read(log).ok()?;
        let new = String::from_utf8_lossy(text.get(offset as usize..)?).into_owned();
        for line in new.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let fields = &v["fields"];
            if fields["message"] != "drift" {
                continue;
            }
            let changes = fields["changes"].as_str().unwrap_or_default();
            let list: Vec<String> =
                serde_json::from_str(changes).unwrap_or_else(|_| vec![changes.to_string()]);
            let action = fields["action"].as_str().unwrap_or("drift");
            return Some(format!("{action}: {}", list.join(", ")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
