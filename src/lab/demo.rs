//! `tiernet lab demo`: the lab from end to end for an audience — up, the truth table,
//! drift made behind the agents' back and reverted by them, the table again, down.

use super::nl;
use super::probe::{self, Matrix};
use super::table;
use super::updown::{self, Lab};
use crate::compile::{Route, Zone};
use crate::netns;
use anyhow::{anyhow, Context, Result};
use chrono::NaiveDate;
use ipnet::IpNet;
use rtnetlink::Handle;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the agent gets to put drift right before the demo calls it a failure.
const REVERT_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes the lab down when dropped, so the demo leaves nothing behind, even on failure.
struct DownGuard<'a>(&'a str);

impl Drop for DownGuard<'_> {
    fn drop(&mut self) {
        println!("\n== down");
        if let Err(e) = updown::down(self.0, true) {
            eprintln!("tiernet lab: taking the lab down failed: {e:#}");
        }
    }
}

fn section(title: &str) {
    println!("\n== {title}");
}

fn probe(lab: &Lab, tty: bool, full: bool) -> Result<Matrix> {
    let started = Instant::now();
    let m = lab.probe()?;
    if full {
        print!("{}", table::render(&lab.plan, &m, tty));
    } else {
        let s = table::render(&lab.plan, &m, tty);
        // The table once is enough; after that, the disagreements and the summary.
        let tail = s
            .split_once("\nmismatches:")
            .map(|(_, t)| format!("mismatches:{t}"));
        print!(
            "{}",
            tail.unwrap_or_else(|| format!("{}\n", probe::summary(&m)))
        );
    }
    println!("probed in {:.1} s", started.elapsed().as_secs_f64());
    Ok(m)
}

pub async fn demo(file: &Path, name: &str, today: NaiveDate, tty: bool) -> Result<bool> {
    let _down = DownGuard(name);
    section("up");
    let lab = updown::up(file, name, true, today).await?;

    section("probe: every host against every service port, real packets vs. the compiled topology");
    let first = probe(&lab, tty, true)?;

    section("drift: changes made behind the agents' back, from outside (plain netlink)");
    let mut reverted = true;
    if let Some((gw, route)) = pick_route(&lab) {
        reverted &= route_drift(&lab, &gw, &route).await?;
    }
    if let Some((gw, link, address)) = pick_address(&lab) {
        reverted &= address_drift(&lab, &gw, &link, address).await?;
    }

    section("probe again: the lab must still match the topology");
    let second = probe(&lab, tty, false)?;

    let ok = reverted
        && probe::summary(&first).mismatches == 0
        && probe::summary(&second).mismatches == 0;
    println!(
        "\ndemo: {}",
        if ok {
            "the gateways enforce exactly the topology, and drift was reverted"
        } else {
            "FAILED (see above)"
        }
    );
    Ok(ok)
}

/// A route to a segment behind another gateway (or else any route) that an agent owns.
fn pick_route(lab: &Lab) -> Option<(String, Route)> {
    let all = lab
        .compiled
        .gateways
        .iter()
        .flat_map(|g| g.routes.iter().map(move |r| (g.gateway.clone(), r.clone())));
    let all: Vec<(String, Route)> = all.collect();
    all.iter()
        .find(|(_, r)| r.destination.prefix_len() > 0)
        .or(all.first())
        .cloned()
}

/// The router address of the first segment of the first gateway.
fn pick_address(lab: &Lab) -> Option<(String, String, IpNet)> {
    lab.compiled.gateways.iter().find_map(|g| {
        let link = g
            .links
            .iter()
            .find(|l| matches!(l.zone, Zone::Segment { .. }))?;
        Some((
            g.gateway.clone(),
            link.name.clone(),
            *link.addresses.first()?,
        ))
    })
}

fn handle_for(lab: &Lab, gateway: &str) -> Result<Handle> {
    let ns = lab
        .plan
        .gateway_ns(gateway)
        .ok_or_else(|| anyhow!("no namespace for gateway {gateway}"))?;
    netns::rtnetlink_in(ns)
}

/// Polls every 5 ms until `present` holds; the time it took, or None at the timeout.
async fn wait_for<F, Fut>(present: F) -> Result<Option<Duration>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let started = Instant::now();
    while started.elapsed() < REVERT_TIMEOUT {
        if present().await? {
            return Ok(Some(started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(None)
}

fn report(what: &str, took: Option<Duration>) -> bool {
    match took {
        Some(t) => {
            println!("   reverted by the agent after {} ms", t.as_millis());
            true
        }
        None => {
            println!(
                "   NOT reverted within {} s: {what}",
                REVERT_TIMEOUT.as_secs()
            );
            false
        }
    }
}

async fn route_drift(lab: &Lab, gateway: &str, route: &Route) -> Result<bool> {
    let h = handle_for(lab, gateway)?;
    let oif = nl::index_of(&h, &route.dev).await?;
    let matches = |r: &nl::RouteEntry| {
        r.destination == route.destination && r.via == Some(route.via) && r.oif == Some(oif)
    };
    let found = nl::routes(&h).await?.into_iter().find(|r| matches(r));
    let entry = found.with_context(|| {
        format!(
            "{gateway} has no route {} via {} before the drift",
            route.destination, route.via
        )
    })?;
    println!(
        "-> on {gateway}: delete route {} via {} dev {}",
        route.destination, route.via, route.dev
    );
    nl::delete_route(&h, &entry).await?;
    let took = wait_for(|| {
        let h = h.clone();
        async move { Ok(nl::routes(&h).await?.iter().any(matches)) }
    })
    .await?;
    Ok(report("the route is still missing", took))
}

async fn address_drift(lab: &Lab, gateway: &str, link: &str, address: IpNet) -> Result<bool> {
    let h = handle_for(lab, gateway)?;
    println!(
        "-> on {gateway}: delete address {address} from {link} (the segment's router address)"
    );
    nl::delete_address(&h, link, address).await?;
    let took = wait_for(|| {
        let h = h.clone();
        async move { Ok(nl::addresses(&h, link).await?.contains(&address)) }
    })
    .await?;
    Ok(report("the address is still missing", took))
}
