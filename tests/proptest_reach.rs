//! Random valid topologies (the generator's) validate cleanly and compile, and `reach`
//! over the compiled gateways allows exactly what the declared, unexpired flows allow.
//! The expectation comes from the generator's flow list, never from compiled state.

use chrono::NaiveDate;
use proptest::prelude::*;
use std::net::IpAddr;
use tiernet::compile::Compiled;
use tiernet::reach::{reach, INTERNET_V4, INTERNET_V6};
use tiernet::topology::generate::{GenFlow, Params, Plan};
use tiernet::topology::load::check;
use tiernet::topology::{Endpoint, PortSpec, Proto};

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 6, 1).expect("date")
}

/// Who opens the connection: the internet, or a host of a segment (maybe a service's).
#[derive(Debug, Clone, Copy)]
enum Src {
    Internet,
    Host {
        segment: usize,
        service: Option<usize>,
    },
}

/// Where to: a service, a client host of a segment, or the internet.
#[derive(Debug, Clone, Copy)]
enum Dst {
    Internet,
    Host {
        segment: usize,
        service: Option<usize>,
    },
}

fn from_covers(plan: &Plan, e: Endpoint, src: Src) -> bool {
    match (e, src) {
        (Endpoint::Internet, Src::Internet) => true,
        (Endpoint::Tier(t), Src::Host { segment, .. }) => plan.segments[segment].tier == t,
        (Endpoint::Segment(s), Src::Host { segment, .. }) => s == segment,
        (Endpoint::Service(v), Src::Host { service, .. }) => service == Some(v),
        _ => false,
    }
}

/// The traffic a flow lets through to endpoint `e` when `e` covers `dst`: None when it
/// does not cover it; Some(None) for any traffic; else the port list.
fn to_covers(plan: &Plan, flow: &GenFlow, e: Endpoint, dst: Dst) -> Option<Option<Vec<PortSpec>>> {
    let narrowed = || flow.ports.clone();
    match (e, dst) {
        (Endpoint::Internet, Dst::Internet) => Some(narrowed()),
        (Endpoint::Tier(t), Dst::Host { segment, .. }) if plan.segments[segment].tier == t => {
            Some(narrowed())
        }
        (Endpoint::Segment(s), Dst::Host { segment, .. }) if s == segment => Some(narrowed()),
        (Endpoint::Service(v), Dst::Host { service, .. }) if service == Some(v) => Some(Some(
            flow.ports
                .clone()
                .unwrap_or_else(|| plan.services[v].ports.clone()),
        )),
        _ => None,
    }
}

/// The oracle: does some active declared flow cover (src, dst, traffic)?
fn declared(plan: &Plan, src: Src, dst: Dst, traffic: PortSpec) -> Option<String> {
    plan.flows
        .iter()
        .filter(|f| f.active(today()))
        .filter(|f| f.from.iter().any(|e| from_covers(plan, *e, src)))
        .find(|f| {
            f.to.iter().any(|e| match to_covers(plan, f, *e, dst) {
                None => false,
                Some(None) => true,
                Some(Some(ports)) => ports.iter().any(|p| p.contains(&traffic)),
            })
        })
        .map(|f| f.name.clone())
}

fn addr_of_host(plan: &Plan, segment: usize, service: Option<usize>, v6: bool) -> IpAddr {
    match service {
        Some(v) => *plan.services[v]
            .addresses
            .iter()
            .find(|a| a.is_ipv6() == v6)
            .expect("family"),
        None => plan.client(segment, v6),
    }
}

fn internet(v6: bool) -> IpAddr {
    (if v6 { INTERNET_V6 } else { INTERNET_V4 })
        .parse()
        .expect("stand-in")
}

/// A host of segment `s`: its client address or one of its services, by `x`.
fn host_in(plan: &Plan, s: usize, x: u64) -> (usize, Option<usize>) {
    let services: Vec<usize> = (0..plan.services.len())
        .filter(|&v| plan.services[v].segment == s)
        .collect();
    if services.is_empty() || x % 2 == 0 {
        (s, None)
    } else {
        (s, Some(services[(x / 2) as usize % services.len()]))
    }
}

/// A host anywhere: any segment's client or any service.
fn any_host(plan: &Plan, x: u64) -> (usize, Option<usize>) {
    if !plan.services.is_empty() && x % 2 == 0 {
        let v = (x / 2) as usize % plan.services.len();
        (plan.services[v].segment, Some(v))
    } else {
        ((x / 2) as usize % plan.segments.len(), None)
    }
}

/// A host covered by endpoint `e` (None for the internet).
fn host_of(plan: &Plan, e: Endpoint, x: u64) -> Option<(usize, Option<usize>)> {
    match e {
        Endpoint::Internet => None,
        Endpoint::Tier(t) => {
            let segs: Vec<usize> = (0..plan.segments.len())
                .filter(|&s| plan.segments[s].tier == t)
                .collect();
            Some(host_in(plan, segs[x as usize % segs.len()], x >> 8))
        }
        Endpoint::Segment(s) => Some(host_in(plan, s, x)),
        Endpoint::Service(v) => Some((plan.services[v].segment, Some(v))),
    }
}

/// Turns raw random numbers into a probe of this plan: a third of them aimed at a
/// declared flow (so allowed pairs, expired flows and near misses come up often), the
/// rest anywhere.
fn probe(plan: &Plan, r: [u64; 4]) -> (Src, Dst, PortSpec) {
    let (src, dst) = if r[0] % 3 == 0 && !plan.flows.is_empty() {
        let f = &plan.flows[(r[0] / 3) as usize % plan.flows.len()];
        let from = f.from[r[1] as usize % f.from.len()];
        let to = f.to[(r[1] >> 8) as usize % f.to.len()];
        let src = match host_of(plan, from, r[1] >> 16) {
            None => Src::Internet,
            Some((segment, service)) => Src::Host { segment, service },
        };
        let dst = match host_of(plan, to, r[1] >> 32) {
            None => Dst::Internet,
            Some((segment, service)) => Dst::Host { segment, service },
        };
        (src, dst)
    } else {
        let src = if r[0] % 6 == 1 {
            Src::Internet
        } else {
            let (segment, service) = any_host(plan, r[0] / 6);
            Src::Host { segment, service }
        };
        let dst = if r[1] % 6 == 0 && !matches!(src, Src::Internet) {
            Dst::Internet
        } else {
            let (segment, service) = any_host(plan, r[1] / 6);
            Dst::Host { segment, service }
        };
        (src, dst)
    };
    // Mostly a port the destination offers, sometimes icmp or an arbitrary port.
    let traffic = match (r[2] % 5, dst) {
        (0, _) => PortSpec::icmp(),
        (1, _) => {
            let proto = if r[3] % 2 == 0 {
                Proto::Tcp
            } else {
                Proto::Udp
            };
            PortSpec {
                proto,
                lo: 1 + (r[3] % 65535) as u16,
                hi: 0,
            }
        }
        (
            _,
            Dst::Host {
                service: Some(v), ..
            },
        ) => {
            let offered = &plan.services[v].ports;
            let p = offered[r[3] as usize % offered.len()];
            PortSpec {
                lo: p.lo + (r[3] >> 8) as u16 % (p.hi - p.lo + 1),
                ..p
            }
        }
        _ => PortSpec {
            proto: Proto::Tcp,
            lo: 443,
            hi: 0,
        },
    };
    let traffic = PortSpec {
        hi: traffic.lo,
        ..traffic
    };
    (src, dst, traffic)
}

fn compiled(plan: &Plan) -> Result<Compiled, String> {
    let yaml = plan.to_yaml();
    let loaded = check("generated.yaml", &yaml, today());
    if loaded.has_errors() {
        return Err(format!(
            "generated topology is invalid:\n{}\n{yaml}",
            loaded.report()
        ));
    }
    loaded
        .compile(today())
        .map_err(|e| format!("does not compile: {e}\n{yaml}"))
}

fn params() -> impl Strategy<Value = Params> {
    (
        any::<u64>(),
        1usize..=3,
        4usize..=20,
        1usize..=40,
        1usize..=40,
        any::<bool>(),
        0u32..=20,
    )
        .prop_map(
            |(seed, gateways, segments, services, flows, dual_stack, tier_ref_percent)| Params {
                seed,
                gateways,
                segments,
                services,
                flows,
                dual_stack,
                tier_ref_percent,
                today: today(),
            },
        )
}

/// How many probes reach allowed and denied; an Err describes the first disagreement
/// with the declared flows.
fn check_probes(
    plan: &Plan,
    c: &Compiled,
    probes: &[[u64; 4]],
    v6: bool,
) -> Result<(usize, usize), String> {
    let (mut allowed, mut denied) = (0, 0);
    for r in probes {
        let (src, dst, traffic) = probe(plan, *r);
        let src_addr = match src {
            Src::Internet => internet(v6),
            Src::Host { segment, service } => addr_of_host(plan, segment, service, v6),
        };
        let dst_addr = match dst {
            Dst::Internet => internet(v6),
            Dst::Host { segment, service } => addr_of_host(plan, segment, service, v6),
        };
        let answer = reach(c, src_addr, dst_addr, traffic);
        let same_segment = matches!((src, dst), (Src::Host { segment: a, .. }, Dst::Host { segment: b, .. }) if a == b);
        // Inside one segment no gateway is crossed, so nothing can stop it.
        let expected = same_segment || declared(plan, src, dst, traffic).is_some();
        if answer.allowed != expected {
            return Err(format!(
                "{src:?} ({src_addr}) -> {dst:?} ({dst_addr}) {traffic}: reach says '{}' (allowed: {}), \
                 declared flow: {:?}\n{}",
                answer.reason,
                answer.allowed,
                declared(plan, src, dst, traffic),
                plan.to_yaml()
            ));
        }
        if !same_segment {
            if expected {
                allowed += 1;
            } else {
                denied += 1;
            }
        }
    }
    Ok((allowed, denied))
}

proptest! {
    // No regression files: the generator's seed reproduces a failure.
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reach_allows_exactly_the_declared_flows(
        params in params(),
        probes in prop::collection::vec(any::<[u64; 4]>(), 60),
        v6_roll in any::<bool>(),
    ) {
        let plan = Plan::generate(&params);
        let c = compiled(&plan).map_err(TestCaseError::fail)?;
        check_probes(&plan, &c, &probes, params.dual_stack && v6_roll).map_err(TestCaseError::fail)?;
    }
}

/// Guards the property against going vacuous: the probes must hit both outcomes often.
#[test]
fn probes_meet_both_allowed_and_denied_pairs() {
    let (mut allowed, mut denied) = (0, 0);
    for seed in 0..100u64 {
        let plan = Plan::generate(&Params {
            dual_stack: seed % 2 == 1,
            ..Params::small(seed, today())
        });
        let c = compiled(&plan).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let probes: Vec<[u64; 4]> = (0..100u64)
            .map(|i| {
                let x = (seed << 32 | i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                [x, x.rotate_left(17), x.rotate_left(31), x.rotate_left(47)]
            })
            .collect();
        let (a, d) = check_probes(&plan, &c, &probes, seed % 2 == 1)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        allowed += a;
        denied += d;
    }
    eprintln!("probes: {allowed} allowed, {denied} denied");
    assert!(
        allowed >= 1500 && denied >= 2000,
        "{allowed} allowed, {denied} denied"
    );
}

#[test]
fn generated_topologies_are_deterministic() {
    let p = Params::small(7, today());
    assert_eq!(Plan::generate(&p).to_yaml(), Plan::generate(&p).to_yaml());
    let q = Params { seed: 8, ..p };
    assert_ne!(
        Plan::generate(&q).to_yaml(),
        Plan::generate(&Params::small(7, today())).to_yaml()
    );
}

#[test]
fn many_seeds_validate_without_errors() {
    for seed in 0..200 {
        let p = Params {
            dual_stack: seed % 2 == 0,
            gateways: 1 + (seed % 4) as usize,
            ..Params::small(seed, today())
        };
        compiled(&Plan::generate(&p)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}
