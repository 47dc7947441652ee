//! Links, addresses, routes and sysctls of each gateway, derived from segments and transit links.

use super::ranges::{addr_value, Family};
use super::{Link, LinkKind, Route, Sysctl, Zone};
use crate::topology::{Index, Segment};
use ipnet::IpNet;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;

/// Linux interface names are at most 15 bytes.
pub const IFNAME_MAX: usize = 15;

/// The transit graph between gateways and the interface names everything gets.
pub struct Network<'i, 't> {
    pub index: &'i Index<'t>,
    /// Per gateway: (transit link, peer gateway), in declaration order.
    adjacency: Vec<Vec<(usize, usize)>>,
}

/// The cost of a path through transit links: fewer hops first; among paths of equal
/// length, the one whose set of links, read as a binary number with link `t` worth 2^t,
/// is smaller. Two different paths never cost the same, so the shortest path between
/// two gateways is unique and its parts are the shortest paths between their ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PathCost {
    hops: usize,
    /// Bit `t` set when the path uses transit link `t`.
    links: Vec<u64>,
}

impl PathCost {
    fn plus(&self, t: usize) -> PathCost {
        let mut links = self.links.clone();
        if links.len() <= t / 64 {
            links.resize(t / 64 + 1, 0);
        }
        links[t / 64] |= 1 << (t % 64);
        PathCost {
            hops: self.hops + 1,
            links,
        }
    }

    /// The link set as a number: the most significant word first, shorter sets padded.
    fn words(&self, len: usize) -> impl Iterator<Item = u64> + '_ {
        (0..len)
            .rev()
            .map(|i| self.links.get(i).copied().unwrap_or(0))
    }
}

/// A gateway reached from a source: the path's cost and its first hop (transit link,
/// peer), None for the source itself.
type Reached = (PathCost, Option<(usize, usize)>);

impl Ord for PathCost {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let len = self.links.len().max(other.links.len());
        self.hops
            .cmp(&other.hops)
            .then_with(|| self.words(len).cmp(other.words(len)))
    }
}

impl PartialOrd for PathCost {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The interface name of a VLAN on a trunk: `eth1.310`, or `vlan310` where that is too long.
pub fn vlan_ifname(trunk: &str, vid: u32) -> String {
    let name = format!("{trunk}.{vid}");
    if name.len() <= IFNAME_MAX {
        name
    } else {
        format!("vlan{vid}")
    }
}

/// The `n`th host address of a subnet (1 = first host).
pub fn nth_host(net: &IpNet, n: u128) -> IpAddr {
    let family = Family::of(&net.addr());
    family.addr(addr_value(&net.network()).saturating_add(n))
}

/// The router address of a segment in `subnet`: the explicit one of that family if it
/// lies in the subnet, else the first host.
pub fn router_address(seg: &Segment, subnet: &IpNet) -> IpAddr {
    seg.router_addresses
        .iter()
        .map(|a| a.v)
        .find(|a| subnet.contains(a))
        .unwrap_or_else(|| nth_host(subnet, 1))
}

impl<'i, 't> Network<'i, 't> {
    pub fn new(index: &'i Index<'t>) -> Self {
        let topo = index.topo;
        let mut adjacency = vec![Vec::new(); topo.gateways.len()];
        for (t, link) in topo.transit.iter().enumerate() {
            let ends: Vec<usize> = link
                .gateways
                .iter()
                .filter_map(|g| index.gateways.get(g.v.as_str()).copied())
                .collect();
            if let [a, b] = ends[..] {
                adjacency[a].push((t, b));
                adjacency[b].push((t, a));
            }
        }
        Network { index, adjacency }
    }

    /// For every gateway, the cost of the shortest path from `from` and its first hop
    /// (transit link, peer). Shortest paths are made unique (see [`PathCost`]), so the
    /// path from A to B is the path from B to A reversed, and every gateway on it routes
    /// toward either end along it: replies come back the way requests went, through the
    /// same firewalls and anti-spoofing checks.
    fn shortest(&self, from: usize) -> Vec<Option<Reached>> {
        let n = self.adjacency.len();
        let mut best: Vec<Option<Reached>> = vec![None; n];
        let mut done = vec![false; n];
        best[from] = Some((PathCost::default(), None));
        let mut heap = BinaryHeap::from([Reverse((PathCost::default(), from))]);
        while let Some(Reverse((cost, g))) = heap.pop() {
            if std::mem::replace(&mut done[g], true) {
                continue;
            }
            let first = best[g].as_ref().and_then(|(_, f)| *f);
            for &(t, peer) in &self.adjacency[g] {
                if done[peer] {
                    continue;
                }
                let c = cost.plus(t);
                if best[peer].as_ref().is_none_or(|(old, _)| c < *old) {
                    best[peer] = Some((c.clone(), first.or(Some((t, peer)))));
                    heap.push(Reverse((c, peer)));
                }
            }
        }
        best
    }

    /// For every gateway, the first hop (transit link, peer) on the shortest path from `from`.
    pub fn first_hops(&self, from: usize) -> Vec<Option<(usize, usize)>> {
        self.shortest(from)
            .into_iter()
            .map(|b| b.and_then(|(_, first)| first))
            .collect()
    }

    /// The gateways a packet crosses from gateway `a` to gateway `b`, both included.
    pub fn path(&self, a: usize, b: usize) -> Option<Vec<usize>> {
        let mut path = vec![a];
        let mut cur = a;
        while cur != b {
            let (_, next) = self.first_hops(cur)[b]?;
            path.push(next);
            cur = next;
            if path.len() > self.adjacency.len() {
                return None;
            }
        }
        Some(path)
    }

    /// The gateways that have an uplink.
    pub fn uplink_gateways(&self) -> Vec<usize> {
        let topo = self.index.topo;
        (0..topo.gateways.len())
            .filter(|&g| topo.gateways[g].uplink.is_some())
            .collect()
    }

    /// The uplink gateway nearest to `g` (itself if it has one), by the same unique path
    /// costs as the routes, so internet traffic to and from `g` uses one uplink.
    pub fn nearest_uplink(&self, g: usize) -> Option<usize> {
        let costs = self.shortest(g);
        self.uplink_gateways()
            .into_iter()
            .filter_map(|u| costs[u].as_ref().map(|(c, _)| (c.clone(), u)))
            .min()
            .map(|(_, u)| u)
    }

    pub fn transit_ifname(&self, t: usize, g: usize) -> String {
        let topo = self.index.topo;
        let link = &topo.transit[t];
        match (&link.vlan, &link.interface) {
            (_, Some(port)) => port.v.clone(),
            (Some(vid), None) => {
                let trunk = topo.gateways[g]
                    .trunk
                    .as_ref()
                    .map_or("trunk", |t| t.v.as_str());
                vlan_ifname(trunk, vid.v)
            }
            (None, None) => format!("transit{t}"),
        }
    }

    pub fn segment_ifname(&self, s: usize) -> String {
        let topo = self.index.topo;
        let seg = &topo.segments[s];
        match (&seg.vlan, &seg.interface) {
            (_, Some(port)) => port.v.clone(),
            (Some(vid), None) => {
                let trunk = self
                    .index
                    .segment_gateway(s)
                    .and_then(|g| topo.gateways[g].trunk.as_ref())
                    .map_or("trunk", |t| t.v.as_str());
                vlan_ifname(trunk, vid.v)
            }
            (None, None) => format!("segment{s}"),
        }
    }

    /// The address of gateway `g` on transit link `t` in `subnet`: the first host for
    /// the first gateway listed, the second host for the other.
    pub fn transit_address(&self, t: usize, g: usize, subnet: &IpNet) -> IpAddr {
        let link = &self.index.topo.transit[t];
        let first = link
            .gateways
            .first()
            .and_then(|n| self.index.gateways.get(n.v.as_str()))
            .is_some_and(|&first| first == g);
        nth_host(subnet, if first { 1 } else { 2 })
    }

    pub fn segments_of(&self, g: usize) -> Vec<usize> {
        (0..self.index.topo.segments.len())
            .filter(|&s| self.index.segment_gateway(s) == Some(g))
            .collect()
    }

    fn links(&self, g: usize) -> Vec<Link> {
        let topo = self.index.topo;
        let mut links = Vec::new();
        for s in self.segments_of(g) {
            let seg = &topo.segments[s];
            let addresses = seg
                .subnets
                .iter()
                .map(|n| with_prefix(router_address(seg, &n.v), &n.v))
                .collect();
            links.push(Link {
                name: self.segment_ifname(s),
                kind: link_kind(
                    topo.gateways[g].trunk.as_ref().map(|t| t.v.as_str()),
                    seg.vlan.as_ref().map(|v| v.v),
                    seg.interface.is_some(),
                ),
                addresses,
                zone: Zone::Segment {
                    segment: seg.name.v.clone(),
                    tier: seg.tier.v.clone(),
                },
            });
        }
        for &(t, peer) in &self.adjacency[g] {
            let link = &topo.transit[t];
            links.push(Link {
                name: self.transit_ifname(t, g),
                kind: link_kind(
                    topo.gateways[g].trunk.as_ref().map(|t| t.v.as_str()),
                    link.vlan.as_ref().map(|v| v.v),
                    link.interface.is_some(),
                ),
                addresses: link
                    .subnets
                    .iter()
                    .map(|n| with_prefix(self.transit_address(t, g, &n.v), &n.v))
                    .collect(),
                zone: Zone::Transit {
                    transit: link.name.v.clone(),
                    peer: topo.gateways[peer].name.v.clone(),
                },
            });
        }
        if let Some(up) = &topo.gateways[g].uplink {
            links.push(Link {
                name: up.interface.v.clone(),
                kind: LinkKind::Port,
                addresses: up.addresses.iter().map(|a| a.v).collect(),
                zone: Zone::Uplink,
            });
        }
        links
    }

    fn routes(&self, g: usize) -> Vec<Route> {
        let topo = self.index.topo;
        let hops = self.first_hops(g);
        let mut routes = Vec::new();
        // Routes toward gateway `h` through the first hop of the path to it.
        let mut via = |h: usize, destination: IpNet| {
            let Some((t, peer)) = hops[h] else { return };
            let family = Family::of(&destination.addr());
            if let Some(subnet) = topo.transit[t]
                .subnets
                .iter()
                .find(|n| Family::of(&n.v.addr()) == family)
            {
                routes.push(Route {
                    destination,
                    via: self.transit_address(t, peer, &subnet.v),
                    dev: self.transit_ifname(t, g),
                });
            }
        };
        for (s, seg) in topo.segments.iter().enumerate() {
            if let Some(h) = self.index.segment_gateway(s).filter(|&h| h != g) {
                for n in &seg.subnets {
                    via(h, n.v);
                }
            }
        }
        for (t, link) in topo.transit.iter().enumerate() {
            if self.adjacency[g].iter().any(|&(lt, _)| lt == t) {
                continue;
            }
            // Toward the nearer end of a transit link this gateway is not on.
            let ends = link
                .gateways
                .iter()
                .filter_map(|n| self.index.gateways.get(n.v.as_str()).copied());
            if let Some(h) = ends.min_by_key(|&h| self.path(g, h).map_or(usize::MAX, |p| p.len())) {
                for n in &link.subnets {
                    via(h, n.v);
                }
            }
        }
        match &topo.gateways[g].uplink {
            Some(up) => {
                for hop in &up.next_hops {
                    let destination = match hop.v {
                        IpAddr::V4(_) => IpNet::V4(Default::default()),
                        IpAddr::V6(_) => IpNet::V6(Default::default()),
                    };
                    routes.push(Route {
                        destination,
                        via: hop.v,
                        dev: up.interface.v.clone(),
                    });
                }
            }
            None => {
                if let Some(h) = self.nearest_uplink(g) {
                    let families: Vec<Family> = topo.gateways[h]
                        .uplink
                        .iter()
                        .flat_map(|u| u.next_hops.iter().map(|n| Family::of(&n.v)))
                        .collect();
                    for family in families {
                        let destination = match family {
                            Family::V4 => IpNet::V4(Default::default()),
                            Family::V6 => IpNet::V6(Default::default()),
                        };
                        via(h, destination);
                    }
                }
            }
        }
        routes.sort();
        routes.dedup();
        routes
    }

    fn sysctls(&self, links: &[Link]) -> Vec<Sysctl> {
        let mut out = vec![
            Sysctl {
                key: "net/ipv4/ip_forward".into(),
                value: "1".into(),
            },
            Sysctl {
                key: "net/ipv6/conf/all/forwarding".into(),
                value: "1".into(),
            },
        ];
        for link in links
            .iter()
            .filter(|l| matches!(l.zone, Zone::Segment { .. }))
        {
            out.push(Sysctl {
                key: format!("net/ipv4/conf/{}/rp_filter", link.name),
                value: "1".into(),
            });
        }
        out
    }

    /// Links, routes and sysctls of gateway `g`.
    pub fn gateway_state(&self, g: usize) -> (Vec<Link>, Vec<Route>, Vec<Sysctl>) {
        let links = self.links(g);
        let routes = self.routes(g);
        let sysctls = self.sysctls(&links);
        (links, routes, sysctls)
    }
}

fn link_kind(trunk: Option<&str>, vlan: Option<u32>, untagged: bool) -> LinkKind {
    match (vlan, trunk, untagged) {
        (Some(id), Some(trunk), false) => LinkKind::Vlan {
            parent: trunk.to_string(),
            id: id as u16,
        },
        _ => LinkKind::Port,
    }
}

fn with_prefix(addr: IpAddr, subnet: &IpNet) -> IpNet {
    IpNet::new(addr, subnet.prefix_len()).unwrap_or(*subnet)
}
