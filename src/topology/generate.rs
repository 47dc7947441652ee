//! A deterministic generator of valid topologies, for property tests and benchmarks.
//!
//! It builds a [`Plan`] (the topology as plain data, including the declared flows that
//! tests use as their oracle) and renders it as YAML text, so what it produces goes
//! through the real parser and validator. Every flow respects the spec's tier rules for
//! the four-tier policy shape of the reference topology:
//! buffer (1, internet in), office (2, internet out), research (3, inbound roles
//! thin-client/transfer, approval required) and hospital (same policy as research).

mod flows;
mod yaml;

use super::index::Endpoint;
use super::model::{PortSpec, Proto, TRANSFER_ROLE};
use chrono::NaiveDate;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Tier names, in `Endpoint::Tier` index order.
pub const TIERS: [&str; 4] = ["buffer", "office", "research", "hospital"];
/// Confidentiality class of each tier: research and hospital share one policy.
const CLASS: [usize; 4] = [0, 1, 2, 2];
const OFFICE: usize = 1;
const THIN_CLIENT: &str = "thin-client";
/// Services per segment, so addresses `.10` up stay clear of the client host.
pub const MAX_SERVICES_PER_SEGMENT: usize = 200;
/// Per trunk, segment VLANs count up from here and transit VLANs from `TRANSIT_VLAN`.
const SEGMENT_VLAN: usize = 100;
const TRANSIT_VLAN: usize = 4000;

#[derive(Debug, Clone)]
pub struct Params {
    pub seed: u64,
    /// Gateways in a chain of transit links; the uplink sits on one of them.
    pub gateways: usize,
    /// At least 4: one per tier comes first.
    pub segments: usize,
    pub services: usize,
    pub flows: usize,
    /// Segments, services, transit and uplink in IPv6 too.
    pub dual_stack: bool,
    /// Percent of flow endpoints that name a whole tier (expensive: every segment of it).
    pub tier_ref_percent: u32,
    /// Decides which generated `expires` days lie in the past.
    pub today: NaiveDate,
}

impl Params {
    pub fn small(seed: u64, today: NaiveDate) -> Self {
        Params {
            seed,
            gateways: 3,
            segments: 12,
            services: 30,
            flows: 40,
            dual_stack: false,
            tier_ref_percent: 10,
            today,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenSegment {
    pub name: String,
    pub tier: usize,
    pub gateway: usize,
    pub subnets: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct GenService {
    pub name: String,
    pub segment: usize,
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<PortSpec>,
    pub role: Option<&'static str>,
    pub exposed: bool,
}

#[derive(Debug, Clone)]
pub struct GenFlow {
    pub name: String,
    /// Indices as the parsed topology numbers them (declaration order).
    pub from: Vec<Endpoint>,
    pub to: Vec<Endpoint>,
    pub ports: Option<Vec<PortSpec>>,
    pub approval: Option<String>,
    pub expires: Option<NaiveDate>,
}

impl GenFlow {
    /// Whether the flow is compiled on `today` (valid through its `expires` day).
    pub fn active(&self, today: NaiveDate) -> bool {
        self.expires.is_none_or(|d| d >= today)
    }
}

/// A generated topology as data: the declared intent tests compare against.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub gateways: Vec<String>,
    /// The gateway with the uplink.
    pub uplink: usize,
    pub dual_stack: bool,
    pub segments: Vec<GenSegment>,
    pub services: Vec<GenService>,
    pub flows: Vec<GenFlow>,
}

/// xorshift64*: small, fast, and enough for test data (not for anything secret).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn percent(&mut self, p: u32) -> bool {
        self.below(100) < p as usize
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())])
    }
}

fn tcp(lo: u16, hi: u16) -> PortSpec {
    PortSpec {
        proto: Proto::Tcp,
        lo,
        hi,
    }
}

fn udp(lo: u16, hi: u16) -> PortSpec {
    PortSpec {
        proto: Proto::Udp,
        lo,
        hi,
    }
}

/// Well-known ports, pairwise disjoint; random extra ports come from 10000 up.
fn port_pool() -> [PortSpec; 10] {
    [
        tcp(22, 22),
        tcp(25, 25),
        tcp(80, 80),
        tcp(443, 443),
        tcp(3389, 3389),
        udp(3389, 3389),
        tcp(5432, 5432),
        udp(53, 53),
        tcp(8000, 8010),
        udp(5000, 5100),
    ]
}

fn overlaps(a: &PortSpec, b: &PortSpec) -> bool {
    a.proto == b.proto && a.lo <= b.hi && b.lo <= a.hi
}

fn segment_v4(i: usize) -> IpNet {
    assert!(
        i < 255 * 256,
        "too many segments for 10.0.0.0/8 below 10.255/16"
    );
    IpNet::new(
        IpAddr::V4(Ipv4Addr::new(10, (i / 256) as u8, (i % 256) as u8, 0)),
        24,
    )
    .expect("valid /24")
}

fn segment_v6(i: usize) -> IpNet {
    IpNet::new(
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, i as u16, 0, 0, 0, 0, 0)),
        64,
    )
    .expect("valid /64")
}

/// Host `n` of a subnet (`.n` in IPv4, `::n` in IPv6).
fn host(net: &IpNet, n: u8) -> IpAddr {
    match net {
        IpNet::V4(v) => IpAddr::V4(Ipv4Addr::from(u32::from(v.network()) + u32::from(n))),
        IpNet::V6(v) => IpAddr::V6(Ipv6Addr::from(u128::from(v.network()) + u128::from(n))),
    }
}

/// Host 250: an address no router or service of a generated segment uses.
pub const CLIENT_HOST: u8 = 250;

impl Plan {
    pub fn generate(p: &Params) -> Plan {
        assert!(
            p.gateways >= 1 && p.segments >= TIERS.len(),
            "need a gateway and a segment per tier"
        );
        let mut rng = Rng::new(p.seed);
        let gateways: Vec<String> = (0..p.gateways).map(|g| format!("gw{g}")).collect();
        let segments = segments(&mut rng, p);
        let services = services(&mut rng, p, &segments);
        let mut plan = Plan {
            name: format!("generated-{}", p.seed),
            uplink: rng.below(p.gateways),
            gateways,
            dual_stack: p.dual_stack,
            segments,
            services,
            flows: Vec::new(),
        };
        plan.flows = flows::generate(rng, &plan, p);
        plan
    }

    pub fn tier_of_service(&self, v: usize) -> usize {
        self.segments[self.services[v].segment].tier
    }

    /// A client address in segment `s` of the family of `ipv6`.
    pub fn client(&self, s: usize, ipv6: bool) -> IpAddr {
        let net = self.segments[s]
            .subnets
            .iter()
            .find(|n| matches!(n, IpNet::V6(_)) == ipv6)
            .expect("subnet of the family");
        host(net, CLIENT_HOST)
    }
}

fn segments(rng: &mut Rng, p: &Params) -> Vec<GenSegment> {
    (0..p.segments)
        .map(|i| {
            // The first segments cover every tier, so every flow pattern has somewhere to go.
            let tier = if i < TIERS.len() {
                i
            } else {
                rng.below(TIERS.len())
            };
            let mut subnets = vec![segment_v4(i)];
            if p.dual_stack {
                subnets.push(segment_v6(i));
            }
            GenSegment {
                name: format!("seg{i}"),
                tier,
                gateway: rng.below(p.gateways),
                subnets,
            }
        })
        .collect()
}

fn services(rng: &mut Rng, p: &Params, segments: &[GenSegment]) -> Vec<GenService> {
    let mut used = vec![0usize; segments.len()];
    assert!(
        p.services <= segments.len() * MAX_SERVICES_PER_SEGMENT,
        "too many services for the segments"
    );
    (0..p.services)
        .map(|i| {
            let mut s = rng.below(segments.len());
            while used[s] >= MAX_SERVICES_PER_SEGMENT {
                s = (s + 1) % segments.len();
            }
            let n = 10 + used[s] as u8;
            used[s] += 1;
            let tier = segments[s].tier;
            let roll = rng.below(100);
            let (role, exposed) = match CLASS[tier] {
                0 if roll < 35 => (None, true),
                0 if roll < 60 => (Some(TRANSFER_ROLE), false),
                1 if roll < 25 => (Some(TRANSFER_ROLE), false),
                2 if roll < 30 => (Some(THIN_CLIENT), false),
                2 if roll < 55 => (Some(TRANSFER_ROLE), false),
                _ => (None, false),
            };
            GenService {
                name: format!("svc{i}"),
                segment: s,
                addresses: segments[s].subnets.iter().map(|net| host(net, n)).collect(),
                ports: service_ports(rng),
                role,
                exposed,
            }
        })
        .collect()
}

/// One to three pairwise disjoint port specs.
fn service_ports(rng: &mut Rng) -> Vec<PortSpec> {
    let pool = port_pool();
    let mut ports: Vec<PortSpec> = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let p = if rng.percent(70) {
            pool[rng.below(pool.len())]
        } else {
            let lo = 10000 + rng.below(50000) as u16;
            let hi = if rng.percent(30) {
                lo + rng.below(20) as u16
            } else {
                lo
            };
            if rng.percent(50) {
                tcp(lo, hi)
            } else {
                udp(lo, hi)
            }
        };
        if !ports.iter().any(|q| overlaps(q, &p)) {
            ports.push(p);
        }
    }
    ports.sort();
    ports
}
