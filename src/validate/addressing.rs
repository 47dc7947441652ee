//! Addresses (rule 7): subnets never overlap; router and service addresses lie in their
//! segment's subnets, are usable host addresses, and never collide; transit links have
//! room for both gateways; an uplink's next hop is on the uplink's network.

use crate::diag::{Diagnostic, Pos};
use crate::topology::{Gateway, Index, Segment, Sp};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The usable host addresses of a subnet, as an inclusive numeric range. IPv4 leaves out
/// the network and broadcast addresses, IPv6 the subnet-router anycast (network)
/// address; point-to-point (/31, /127) and single-address (/32, /128) subnets use all.
fn host_range(net: &IpNet) -> (u128, u128) {
    let (lo, hi) = (num(net.network()), num(net.broadcast()));
    if net.max_prefix_len() - net.prefix_len() <= 1 {
        (lo, hi)
    } else if net.max_prefix_len() == 32 {
        (lo + 1, hi - 1)
    } else {
        (lo + 1, hi)
    }
}

/// The address `n` above the network address, numbered as the compiler does (a segment's
/// default router is host 1, a transit link's gateways hosts 1 and 2); None when that is
/// no usable host of the subnet.
fn nth_host(net: &IpNet, n: u128) -> Option<IpAddr> {
    let (lo, hi) = host_range(net);
    let a = num(net.network()).checked_add(n)?;
    if a < lo || a > hi {
        return None;
    }
    Some(match net {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(a).ok()?)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(a)),
    })
}

fn num(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Why `a` (inside `net`) is no host address, if it is not.
fn not_a_host(net: &IpNet, a: IpAddr) -> Option<&'static str> {
    let (lo, hi) = host_range(net);
    let n = num(a);
    if n < lo {
        Some("the network address")
    } else if n > hi {
        Some("the broadcast address")
    } else {
        None
    }
}

/// A host prefix reads as its address; anything wider as the prefix.
fn show(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

fn list(nets: &[Sp<IpNet>]) -> String {
    let v: Vec<String> = nets.iter().map(|n| n.v.to_string()).collect();
    v.join(", ")
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

pub fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    no_overlap(ix, out);
    let mut services: Vec<Vec<usize>> = vec![Vec::new(); ix.topo.segments.len()];
    for i in 0..ix.topo.services.len() {
        if let Some(seg) = ix.service_segment(i) {
            services[seg].push(i);
        }
    }
    for (s, services) in ix.topo.segments.iter().zip(&services) {
        segment(ix, s, services, out);
    }
    for t in &ix.topo.transit {
        let who = format!("transit link '{}'", t.name.v);
        if t.subnets.is_empty() {
            out.push(no_subnet(&who, t.pos));
        }
        for net in &t.subnets {
            if nth_host(&net.v, 2).is_none() {
                out.push(Diagnostic::error(
                    "address",
                    net.pos,
                    format!(
                        "subnet {} of {who} has room for fewer than 2 host addresses; a transit link needs one per gateway (e.g. a /30)",
                        net.v
                    ),
                ));
            }
        }
    }
    for g in &ix.topo.gateways {
        uplink(g, out);
    }
    uplinks_distinct(ix, out);
}

fn no_subnet(who: &str, pos: Pos) -> Diagnostic {
    Diagnostic::error(
        "address",
        pos,
        format!("{who} has no subnet; give it a 'subnet' (or 'subnets')"),
    )
}

/// Segments, transit links and uplink networks share one address plan. Uplinks may share
/// a network with each other: two gateways can sit on the same upstream LAN.
fn no_overlap(ix: &Index, out: &mut Vec<Diagnostic>) {
    struct Net {
        net: IpNet,
        pos: Pos,
        who: String,
        uplink: bool,
    }
    let topo = ix.topo;
    let mut nets = Vec::new();
    for s in &topo.segments {
        for n in &s.subnets {
            let who = format!("segment '{}'", s.name.v);
            nets.push(Net {
                net: n.v,
                pos: n.pos,
                who,
                uplink: false,
            });
        }
    }
    for t in &topo.transit {
        for n in &t.subnets {
            let who = format!("transit link '{}'", t.name.v);
            nets.push(Net {
                net: n.v,
                pos: n.pos,
                who,
                uplink: false,
            });
        }
    }
    for g in &topo.gateways {
        for a in g.uplink.iter().flat_map(|u| &u.addresses) {
            let who = format!("the uplink of gateway '{}'", g.name.v);
            nets.push(Net {
                net: a.v.trunc(),
                pos: a.pos,
                who,
                uplink: true,
            });
        }
    }
    // Prefixes are either nested or disjoint, so a sweep in address order (wider first)
    // keeps the prefixes still open as a chain of containers: each one met overlaps exactly
    // the open ones. That stays near-linear for topologies of thousands of segments.
    let mut order: Vec<usize> = (0..nets.len()).collect();
    order.sort_by_key(|&i| {
        let n = &nets[i].net;
        (n.max_prefix_len(), num(n.network()), n.prefix_len())
    });
    // Each subnet is reported once, at the later of a pair, naming its earliest partner.
    let mut partner: Vec<Option<usize>> = vec![None; nets.len()];
    let mut open: Vec<usize> = Vec::new();
    for &i in &order {
        let n = &nets[i].net;
        while let Some(&top) = open.last() {
            let t = &nets[top].net;
            if t.max_prefix_len() == n.max_prefix_len() && num(t.broadcast()) >= num(n.network()) {
                break;
            }
            open.pop();
        }
        for &j in &open {
            if nets[i].uplink && nets[j].uplink {
                continue;
            }
            let (early, late) = if nets[j].pos < nets[i].pos {
                (j, i)
            } else {
                (i, j)
            };
            if partner[late].is_none_or(|p| nets[early].pos < nets[p].pos) {
                partner[late] = Some(early);
            }
        }
        open.push(i);
    }
    for (b, a) in nets.iter().zip(&partner) {
        let Some(a) = a.map(|a| &nets[a]) else {
            continue;
        };
        out.push(Diagnostic::error(
            "overlap",
            b.pos,
            format!(
                "subnet {} of {} overlaps {} of {} (line {}); give each its own address range",
                b.net, b.who, a.net, a.who, a.pos.line
            ),
        ));
    }
}

/// An address that something on the segment uses, to find collisions.
struct Taken {
    net: IpNet,
    /// `the router address of segment 'dmz' (the first host of 10.1.10.0/24)`, ...
    what: String,
}

/// A segment's router addresses and the addresses of its `services`.
fn segment(ix: &Index, s: &Segment, services: &[usize], out: &mut Vec<Diagnostic>) {
    let who = format!("segment '{}'", s.name.v);
    if s.subnets.is_empty() {
        out.push(no_subnet(&who, s.pos));
        return;
    }
    let mut taken = routers(s, &who, out);
    for svc in services.iter().map(|&i| &ix.topo.services[i]) {
        let owner = format!("service '{}'", svc.name.v);
        if svc.addresses.is_empty() {
            out.push(Diagnostic::error(
                "address",
                svc.pos,
                format!("{owner} has no address; give it an 'address' (or 'addresses')"),
            ));
        }
        for a in &svc.addresses {
            let Some(net) = s.subnets.iter().find(|n| n.v.contains(&a.v)) else {
                out.push(Diagnostic::error(
                    "address",
                    a.pos,
                    format!(
                        "address {} of {owner} lies outside {who} ({}); use an address of the segment's subnet, or put the service in the segment it belongs to",
                        show(&a.v),
                        list(&s.subnets)
                    ),
                ));
                continue;
            };
            if a.v.prefix_len() == a.v.max_prefix_len() {
                if let Some(why) = not_a_host(&net.v, a.v.addr()) {
                    out.push(Diagnostic::error(
                        "address",
                        a.pos,
                        format!(
                            "address {} of {owner} is {why} of {}; use a host address",
                            show(&a.v),
                            net.v
                        ),
                    ));
                    continue;
                }
            }
            if let Some(t) = taken.iter().find(|t| overlaps(&t.net, &a.v)) {
                out.push(Diagnostic::error(
                    "address",
                    a.pos,
                    format!(
                        "address {} of {owner} collides with {}; give each service addresses of its own, apart from the router's",
                        show(&a.v),
                        t.what
                    ),
                ));
                continue;
            }
            taken.push(Taken {
                net: a.v,
                what: format!("{} of {owner} (line {})", show(&a.v), a.pos.line),
            });
        }
    }
}

/// The segment's router addresses: the explicit ones, each in a subnet of its own, and
/// the first host of every subnet without one.
fn routers(s: &Segment, who: &str, out: &mut Vec<Diagnostic>) -> Vec<Taken> {
    let mut explicit: Vec<Option<&Sp<IpAddr>>> = vec![None; s.subnets.len()];
    for r in &s.router_addresses {
        let Some(i) = s.subnets.iter().position(|n| n.v.contains(&r.v)) else {
            out.push(Diagnostic::error(
                "address",
                r.pos,
                format!(
                    "router address {} of {who} lies outside its subnets ({}); use a host address of the segment's subnet",
                    r.v,
                    list(&s.subnets)
                ),
            ));
            continue;
        };
        let net = &s.subnets[i].v;
        if let Some(why) = not_a_host(net, r.v) {
            out.push(Diagnostic::error(
                "address",
                r.pos,
                format!(
                    "router address {} of {who} is {why} of {net}; use a host address",
                    r.v
                ),
            ));
            continue;
        }
        match explicit[i] {
            Some(first) => out.push(Diagnostic::error(
                "address",
                r.pos,
                format!(
                    "{who} has a second router address {} in {net} (first at line {}); give at most one per subnet",
                    r.v, first.pos.line
                ),
            )),
            None => explicit[i] = Some(r),
        }
    }
    let mut taken = Vec::new();
    for (net, r) in s.subnets.iter().zip(explicit) {
        let (addr, why) = match r {
            Some(r) => (r.v, format!("line {}", r.pos.line)),
            None => match nth_host(&net.v, 1) {
                Some(a) => (a, format!("the first host of {}", net.v)),
                None => {
                    out.push(Diagnostic::error(
                        "address",
                        net.pos,
                        format!(
                            "subnet {} of {who} has no first host for the router address; use a larger subnet or set 'router_address'",
                            net.v
                        ),
                    ));
                    continue;
                }
            },
        };
        taken.push(Taken {
            net: IpNet::from(addr),
            what: format!("the router address {addr} of {who} ({why})"),
        });
    }
    taken
}

/// Uplink addresses are host addresses; each next hop is a neighbour on one of them.
fn uplink(g: &Gateway, out: &mut Vec<Diagnostic>) {
    let Some(u) = &g.uplink else {
        return;
    };
    let who = format!("gateway '{}'", g.name.v);
    for a in &u.addresses {
        if let Some(why) = not_a_host(&a.v.trunc(), a.v.addr()) {
            out.push(Diagnostic::error(
                "address",
                a.pos,
                format!(
                    "uplink address {} of {who} is {why} of {}; use a host address",
                    a.v,
                    a.v.trunc()
                ),
            ));
        }
    }
    for hop in &u.next_hops {
        let on_link = u.addresses.iter().find(|a| a.v.trunc().contains(&hop.v));
        let problem = match on_link {
            None => Some(format!(
                "lies outside the uplink's network ({})",
                u.addresses
                    .iter()
                    .map(|a| a.v.trunc().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(a) if a.v.addr() == hop.v => Some("is the uplink's own address".to_string()),
            Some(a) => {
                not_a_host(&a.v.trunc(), hop.v).map(|why| format!("is {why} of {}", a.v.trunc()))
            }
        };
        if let Some(problem) = problem {
            out.push(Diagnostic::error(
                "address",
                hop.pos,
                format!(
                    "next hop {} of {who} {problem}; the next hop is the upstream router on the uplink's network",
                    hop.v
                ),
            ));
        }
    }
}

/// Gateways sharing an upstream network still need addresses of their own there.
fn uplinks_distinct(ix: &Index, out: &mut Vec<Diagnostic>) {
    let mut seen: Vec<(IpAddr, &str, Pos)> = Vec::new();
    for g in &ix.topo.gateways {
        for a in g.uplink.iter().flat_map(|u| &u.addresses) {
            if let Some((_, first, at)) = seen.iter().find(|(x, _, _)| *x == a.v.addr()) {
                out.push(Diagnostic::error(
                    "address",
                    a.pos,
                    format!(
                        "uplink address {} of gateway '{}' is already the uplink address of gateway '{first}' (line {}); give each gateway its own",
                        a.v.addr(),
                        g.name.v,
                        at.line
                    ),
                ));
            } else {
                seen.push((a.v.addr(), &g.name.v, a.pos));
            }
        }
    }
}
