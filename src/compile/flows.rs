//! Declared flows → grants: (source range, destination range, protocol/ports) triples,
//! each with the gateways its packets cross and the chain that accepts them.

use super::network::Network;
use super::ranges::{AddrRange, Family};
use crate::nftables::ir::{PROTO_TCP, PROTO_UDP};
use crate::topology::{Endpoint, Index, PortSpec, Proto, TRANSFER_ROLE};
use chrono::NaiveDate;

/// What a grant lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Traffic {
    /// TCP or UDP to destination ports `lo..=hi`.
    Ports { proto: u8, lo: u16, hi: u16 },
    /// ICMP / ICMPv6 echo requests.
    Echo,
    /// Every protocol (a flow to a segment, tier or the internet without `ports`).
    Any,
}

/// The per-flow chain a grant jumps to. A flow gets a separate audited chain for its
/// destinations that are transfer services, so only those connections are logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowChain {
    pub flow: usize,
    pub name: String,
    pub chain: String,
    pub audited: bool,
    pub approval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub chain: usize,
    pub family: Family,
    /// None: the internet (anything outside the topology's subnets).
    pub src: Option<AddrRange>,
    pub dst: Option<AddrRange>,
    pub traffic: Traffic,
    /// Gateways the packets cross, in order.
    pub gateways: Vec<usize>,
}

#[derive(Debug, Default)]
pub struct Expanded {
    pub chains: Vec<FlowChain>,
    pub grants: Vec<Grant>,
}

/// One side of a flow inside one segment (or the internet when `segment` is None).
struct Piece {
    segment: Option<usize>,
    ranges: Vec<AddrRange>,
    transfer: bool,
    ports: Option<Vec<PortSpec>>,
}

/// The transfer services of segment `s`, as destination pieces of their own: a flow to a
/// whole segment or tier still logs every connection that lands on a transfer point.
fn transfer_pieces(index: &Index, s: usize) -> Vec<Piece> {
    let topo = index.topo;
    topo.services
        .iter()
        .enumerate()
        .filter(move |(v, svc)| {
            svc.role() == Some(TRANSFER_ROLE) && index.service_segment(*v) == Some(s)
        })
        .map(move |(v, svc)| Piece {
            segment: index.service_segment(v),
            ranges: svc
                .addresses
                .iter()
                .map(|a| AddrRange::of_net(&a.v))
                .collect(),
            transfer: true,
            ports: None,
        })
        .collect()
}

fn pieces(index: &Index, e: Endpoint) -> Vec<Piece> {
    let topo = index.topo;
    let segment_piece = |s: usize| Piece {
        segment: Some(s),
        ranges: topo.segments[s]
            .subnets
            .iter()
            .map(|n| AddrRange::of_net(&n.v))
            .collect(),
        transfer: false,
        ports: None,
    };
    match e {
        Endpoint::Internet => vec![Piece {
            segment: None,
            ranges: Vec::new(),
            transfer: false,
            ports: None,
        }],
        Endpoint::Tier(_) | Endpoint::Segment(_) => index
            .endpoint_segments(e)
            .into_iter()
            .map(segment_piece)
            .collect(),
        Endpoint::Service(v) => {
            let svc = &topo.services[v];
            vec![Piece {
                segment: index.service_segment(v),
                ranges: svc
                    .addresses
                    .iter()
                    .map(|a| AddrRange::of_net(&a.v))
                    .collect(),
                transfer: svc.role() == Some(TRANSFER_ROLE),
                ports: Some(svc.ports.iter().map(|p| p.v).collect()),
            }]
        }
    }
}

fn traffic_of(p: &PortSpec) -> Traffic {
    match p.proto {
        Proto::Icmp => Traffic::Echo,
        Proto::Tcp => Traffic::Ports {
            proto: PROTO_TCP,
            lo: p.lo,
            hi: p.hi,
        },
        Proto::Udp => Traffic::Ports {
            proto: PROTO_UDP,
            lo: p.lo,
            hi: p.hi,
        },
    }
}

/// A chain name nft accepts unquoted: letters, digits, `_` and `-`.
fn chain_name(prefix: &str, flow: &str) -> String {
    let clean: String = flow
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    format!("{prefix}_{clean}")
}

/// Is the flow past its `expires` day?
pub fn expired(expires: Option<NaiveDate>, today: NaiveDate) -> bool {
    expires.is_some_and(|day| day < today)
}

pub fn expand(index: &Index, net: &Network, today: NaiveDate) -> Expanded {
    let topo = index.topo;
    let mut out = Expanded::default();
    let mut paths = Paths::new(net, topo.gateways.len());
    for (fi, flow) in topo.flows.iter().enumerate() {
        if expired(flow.expires.as_ref().map(|e| e.v), today) {
            continue;
        }
        // This flow's chains are the ones pushed since here: searching only those keeps
        // expansion linear in the number of flows.
        let first_chain = out.chains.len();
        let chain_of = |audited: bool, out: &mut Expanded| -> usize {
            if let Some(i) = out.chains[first_chain..]
                .iter()
                .position(|c| c.audited == audited)
            {
                return first_chain + i;
            }
            out.chains.push(FlowChain {
                flow: fi,
                name: flow.name.v.clone(),
                chain: chain_name(if audited { "audit" } else { "flow" }, &flow.name.v),
                audited,
                approval: flow.approval.as_ref().map(|a| a.v.clone()),
            });
            out.chains.len() - 1
        };
        let flow_ports: Option<Vec<PortSpec>> = flow
            .ports
            .as_ref()
            .map(|ps| ps.iter().map(|p| p.v).collect());
        let resolve = |names: &[crate::topology::Sp<String>]| -> Vec<Piece> {
            names
                .iter()
                .filter_map(|n| index.endpoint(&n.v).ok())
                .flat_map(|e| pieces(index, e))
                .collect()
        };
        let sources = resolve(&flow.from);
        let mut destinations = resolve(&flow.to);
        // Overlapping the segment's own piece; the audited chain wins the overlap.
        let audited: Vec<Piece> = destinations
            .iter()
            .filter(|p| !p.transfer && p.ports.is_none())
            .filter_map(|p| p.segment)
            .flat_map(|s| transfer_pieces(index, s))
            .collect();
        destinations.extend(audited);
        for dst in &destinations {
            let traffic: Vec<Traffic> = match (&flow_ports, &dst.ports) {
                (Some(ps), _) | (None, Some(ps)) => ps.iter().map(traffic_of).collect(),
                (None, None) => vec![Traffic::Any],
            };
            let chain = chain_of(dst.transfer, &mut out);
            for src in &sources {
                let Some(gateways) = crossing(index, &mut paths, src.segment, dst.segment) else {
                    continue;
                };
                for family in [Family::V4, Family::V6] {
                    let side = |p: &Piece| -> Vec<Option<AddrRange>> {
                        match p.segment {
                            None => vec![None],
                            Some(_) => p
                                .ranges
                                .iter()
                                .filter(|r| r.family == family)
                                .map(|r| Some(*r))
                                .collect(),
                        }
                    };
                    // An internet-to-internet pair never reaches here; a side with no
                    // range of this family yields nothing.
                    let (srcs, dsts) = (side(src), side(dst));
                    if src.segment.is_none() && dsts.is_empty()
                        || dst.segment.is_none() && srcs.is_empty()
                    {
                        continue;
                    }
                    for s in &srcs {
                        for d in &dsts {
                            for t in &traffic {
                                out.grants.push(Grant {
                                    chain,
                                    family,
                                    src: *s,
                                    dst: *d,
                                    traffic: *t,
                                    gateways: gateways.clone(),
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Paths between gateways, each computed once per expansion: every pair of flow pieces
/// asks for one, and there are far more pairs than gateways.
struct Paths<'n, 'i, 't> {
    net: &'n Network<'i, 't>,
    /// [from][to]: None until asked.
    memo: Vec<Vec<Option<Option<Vec<usize>>>>>,
    uplink: Vec<Option<Option<usize>>>,
}

impl<'n, 'i, 't> Paths<'n, 'i, 't> {
    fn new(net: &'n Network<'i, 't>, gateways: usize) -> Self {
        Paths {
            net,
            memo: vec![vec![None; gateways]; gateways],
            uplink: vec![None; gateways],
        }
    }

    fn path(&mut self, a: usize, b: usize) -> Option<Vec<usize>> {
        let net = self.net;
        self.memo[a][b]
            .get_or_insert_with(|| net.path(a, b))
            .clone()
    }

    fn nearest_uplink(&mut self, g: usize) -> Option<usize> {
        let net = self.net;
        *self.uplink[g].get_or_insert_with(|| net.nearest_uplink(g))
    }
}

/// The gateways between two segments (None = internet). Traffic inside one segment, or
/// between two points of the internet, crosses no gateway.
fn crossing(
    index: &Index,
    paths: &mut Paths,
    src: Option<usize>,
    dst: Option<usize>,
) -> Option<Vec<usize>> {
    let gw = |s: usize| index.segment_gateway(s);
    match (src, dst) {
        (Some(a), Some(b)) if a == b => None,
        (Some(a), Some(b)) => paths.path(gw(a)?, gw(b)?),
        (None, Some(b)) => {
            let to = gw(b)?;
            let up = paths.nearest_uplink(to)?;
            paths.path(up, to)
        }
        (Some(a), None) => {
            let from = gw(a)?;
            let up = paths.nearest_uplink(from)?;
            paths.path(from, up)
        }
        (None, None) => None,
    }
}
