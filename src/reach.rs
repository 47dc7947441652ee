//! `tiernet reach`: may this source open this connection to that destination? Answered
//! by walking the packet through the compiled gateways (routes, then each forward chain),
//! never from the YAML's flow list.

use crate::compile::ranges::{addr_value, Family};
use crate::compile::{Compiled, GatewayState, Zone};
use crate::nftables::eval::{eval, Outcome, Packet};
use crate::nftables::ir::{CtState, Hook, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::topology::{Endpoint, Index, PortSpec, Proto, Topology};
use ipnet::IpNet;
use serde::Serialize;
use std::net::IpAddr;

/// Stand-ins for a host on the internet (documentation ranges, never routed).
pub const INTERNET_V4: &str = "203.0.113.10";
pub const INTERNET_V6: &str = "2001:db8:ffff::10";

#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    pub gateway: String,
    pub iif: String,
    pub oif: String,
    pub accepted: bool,
    pub chain: String,
    pub rule: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub traffic: String,
    pub allowed: bool,
    /// What decided: the flow that accepted, or the rule or policy that dropped.
    pub reason: String,
    pub hops: Vec<Hop>,
}

fn on_link(gw: &GatewayState, addr: &IpAddr) -> Option<(String, u8)> {
    gw.links
        .iter()
        .flat_map(|l| l.addresses.iter().map(move |a| (l, a)))
        .filter(|(_, a)| a.trunc().contains(addr))
        .map(|(l, a)| (l.name.clone(), a.prefix_len()))
        .max_by_key(|(_, len)| *len)
}

/// The egress interface toward `dst` on `gw`, and the next gateway if it is a transit peer.
fn route(
    c: &Compiled,
    gw: &GatewayState,
    dst: &IpAddr,
) -> Option<(String, Option<(usize, String)>)> {
    if let Some((dev, _)) = on_link(gw, dst) {
        return Some((dev, None));
    }
    let best = gw
        .routes
        .iter()
        .filter(|r| r.destination.contains(dst))
        .max_by_key(|r| r.destination.prefix_len())?;
    let link = gw.link(&best.dev)?;
    let next = match &link.zone {
        Zone::Transit { peer, .. } => {
            let p = c.gateways.iter().position(|g| &g.gateway == peer)?;
            let (iif, _) = on_link(&c.gateways[p], &best.via)?;
            Some((p, iif))
        }
        _ => None,
    };
    Some((best.dev.clone(), next))
}

/// Where a packet from `src` to `dst` first meets a gateway: the link its subnet is on;
/// from the internet, the uplink that `dst`'s gateway routes `src` out of (replies leave
/// there, and the compiler enforces internet flows on that path); else any uplink.
fn ingress(c: &Compiled, src: &IpAddr, dst: &IpAddr) -> Option<(usize, String)> {
    let on_segment = c
        .gateways
        .iter()
        .enumerate()
        .find_map(|(i, g)| on_link(g, src).map(|(l, _)| (i, l)));
    on_segment
        .or_else(|| uplink_toward(c, src, dst))
        .or_else(|| {
            c.gateways.iter().enumerate().find_map(|(i, g)| {
                g.links
                    .iter()
                    .find(|l| l.zone == Zone::Uplink)
                    .map(|l| (i, l.name.clone()))
            })
        })
}

/// The uplink a packet from `dst`'s gateway to `src` leaves by, following the routes.
fn uplink_toward(c: &Compiled, src: &IpAddr, dst: &IpAddr) -> Option<(usize, String)> {
    let mut g = c.gateways.iter().position(|g| on_link(g, dst).is_some())?;
    for _ in 0..=c.gateways.len() {
        let (dev, next) = route(c, &c.gateways[g], src)?;
        match next {
            Some((peer, _)) => g = peer,
            None => {
                let uplink = c.gateways[g].link(&dev)?.zone == Zone::Uplink;
                return uplink.then_some((g, dev));
            }
        }
    }
    None
}

pub fn reach(c: &Compiled, src: IpAddr, dst: IpAddr, traffic: PortSpec) -> Answer {
    let (proto, echo) = match traffic.proto {
        Proto::Tcp => (PROTO_TCP, false),
        Proto::Udp => (PROTO_UDP, false),
        Proto::Icmp if dst.is_ipv6() => (PROTO_ICMPV6, true),
        Proto::Icmp => (PROTO_ICMP, true),
    };
    let mut answer = Answer {
        src,
        dst,
        traffic: traffic.to_string(),
        allowed: false,
        reason: String::new(),
        hops: Vec::new(),
    };
    if src.is_ipv4() != dst.is_ipv4() {
        answer.reason = "source and destination are of different address families".into();
        return answer;
    }
    let Some((mut g, mut iif)) = ingress(c, &src, &dst) else {
        answer.reason = "no gateway is attached to the source".into();
        return answer;
    };
    if on_link(&c.gateways[g], &dst).is_some_and(|(l, _)| l == iif) {
        answer.allowed = true;
        answer.reason = "same segment: the traffic does not cross a gateway".into();
        return answer;
    }
    let mut accepted_by: Option<Outcome> = None;
    for _ in 0..=c.gateways.len() {
        let gw = &c.gateways[g];
        let Some((oif, next)) = route(c, gw, &dst) else {
            answer.reason = format!("gateway '{}' has no route to {dst}", gw.gateway);
            return answer;
        };
        let packet = Packet {
            iif: iif.clone(),
            oif: oif.clone(),
            src,
            dst,
            proto,
            dport: traffic.lo,
            echo,
            ct: CtState::New,
        };
        let out = eval(&gw.table, Hook::Forward, &packet);
        answer.hops.push(Hop {
            gateway: gw.gateway.clone(),
            iif: iif.clone(),
            oif,
            accepted: out.accepted,
            chain: out.chain.clone(),
            rule: out.comment.clone(),
        });
        if !out.accepted {
            answer.reason = format!(
                "dropped on '{}' by {}",
                gw.gateway,
                out.comment
                    .map_or("the default-deny policy".to_string(), |c| format!(
                        "rule '{c}'"
                    ))
            );
            return answer;
        }
        accepted_by.get_or_insert(out);
        match next {
            Some((peer, peer_iif)) => {
                g = peer;
                iif = peer_iif;
            }
            None => {
                answer.allowed = true;
                answer.reason = accepted_by
                    .and_then(|o| o.comment)
                    .map_or("accepted".into(), |c| format!("flow '{c}'"));
                return answer;
            }
        }
    }
    answer.reason = "routing loop between gateways".into();
    answer
}

/// A concrete address for a name or an address given on the command line: a service's
/// first address, a free host of a segment (a client), a tier's first segment, or a
/// documentation address for the internet. `family` picks among dual-stack choices.
pub fn address_of(topo: &Topology, what: &str, family: Option<Family>) -> Result<IpAddr, String> {
    if let Ok(a) = what.parse::<IpAddr>() {
        return Ok(a);
    }
    let index = Index::new(topo);
    let pick = |nets: Vec<IpNet>| -> Option<IpNet> {
        nets.iter()
            .find(|n| family.is_none_or(|f| Family::of(&n.addr()) == f))
            .copied()
    };
    match index.endpoint(what)? {
        Endpoint::Internet => Ok(match family {
            Some(Family::V6) => INTERNET_V6,
            _ => INTERNET_V4,
        }
        .parse()
        .map_err(|_| "internal: bad internet stand-in".to_string())?),
        Endpoint::Service(v) => pick(topo.services[v].addresses.iter().map(|a| a.v).collect())
            .map(|n| n.addr())
            .ok_or_else(|| format!("service '{what}' has no address of that family")),
        e => {
            let segment = index
                .endpoint_segments(e)
                .into_iter()
                .next()
                .ok_or_else(|| format!("'{what}' has no segments"))?;
            let seg = &topo.segments[segment];
            let subnet = pick(seg.subnets.iter().map(|n| n.v).collect())
                .ok_or_else(|| format!("segment '{}' has no subnet of that family", seg.name.v))?;
            client_address(topo, segment, &subnet)
                .ok_or_else(|| format!("segment '{}' has no free host address", seg.name.v))
        }
    }
}

/// The highest host address of a subnet that no router or service uses.
fn client_address(topo: &Topology, segment: usize, subnet: &IpNet) -> Option<IpAddr> {
    let seg = &topo.segments[segment];
    let family = Family::of(&subnet.addr());
    let taken = |a: &IpAddr| {
        crate::compile::network::router_address(seg, subnet) == *a
            || topo
                .services
                .iter()
                .any(|s| s.addresses.iter().any(|n| n.v.contains(a)))
    };
    let lo = addr_value(&subnet.network());
    let hi = addr_value(&subnet.broadcast()).saturating_sub(u128::from(family == Family::V4));
    (lo + 1..=hi)
        .rev()
        .take(4096)
        .map(|v| family.addr(v))
        .find(|a| !taken(a))
}

/// Parses `tcp/443`, `udp/53` or `icmp` for a query (a single port).
pub fn parse_traffic(s: &str) -> Result<PortSpec, String> {
    let p = crate::topology::reader::parse_port(s)?;
    if p.lo != p.hi {
        return Err(format!("'{s}': give one port, not a range"));
    }
    Ok(p)
}
