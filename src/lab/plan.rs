//! The lab's layout, derived from a compiled topology: which namespaces exist, which veth
//! pairs join them, and what the hosts (clients, services, the internet) look like.
//! Pure. The gateway side stays bare here: addresses, routes, sysctls and the firewall of
//! a gateway are its agent's job.

use crate::compile::ranges::Family;
use crate::compile::{Compiled, LinkKind, Zone};
use crate::reach::{address_of, INTERNET_V4, INTERNET_V6};
use crate::topology::Topology;
use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Linux interface names are at most 15 bytes.
const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum HostKind {
    /// A stand-in client in a segment (at the address `tiernet reach` picks for it).
    Client {
        segment: String,
    },
    Service {
        segment: String,
    },
    Internet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRoute {
    pub destination: IpNet,
    pub via: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// The segment name for a client, the service name, or `internet`.
    pub name: String,
    pub kind: HostKind,
    pub ns: String,
    pub routes: Vec<HostRoute>,
    /// Extra addresses on `lo` (the internet stand-ins).
    pub loopback: Vec<IpNet>,
    /// The source address of its probes, one per family: what `reach` reasons about.
    pub probe_addresses: Vec<IpAddr>,
}

impl Host {
    pub fn label(&self) -> String {
        match &self.kind {
            HostKind::Client { .. } => format!("{} client", self.name),
            _ => self.name.clone(),
        }
    }

    pub fn address(&self, family: Family) -> Option<IpAddr> {
        self.probe_addresses
            .iter()
            .copied()
            .find(|a| Family::of(a) == family)
    }
}

/// One end of a veth pair: its namespace, its final name, and what the lab sets on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct End {
    pub ns: String,
    pub ifname: String,
    /// The bridge it is enslaved to (in the switch namespace).
    pub bridge: Option<String>,
    /// Addresses the lab sets (host side only; gateway ports stay bare for the agent).
    pub addresses: Vec<IpNet>,
}

/// A veth pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wire {
    /// What it stands for, for messages (`gw-core seg110 - dmz`).
    pub what: String,
    pub a: End,
    pub b: End,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayNs {
    pub gateway: String,
    pub ns: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabPlan {
    pub lab: String,
    pub switch_ns: String,
    /// One bridge per segment, in the switch namespace: (bridge, segment).
    pub bridges: Vec<(String, String)>,
    pub gateways: Vec<GatewayNs>,
    pub hosts: Vec<Host>,
    pub wires: Vec<Wire>,
}

impl LabPlan {
    /// Every namespace of the lab, in creation order.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out = vec![self.switch_ns.clone()];
        out.extend(self.gateways.iter().map(|g| g.ns.clone()));
        out.extend(self.hosts.iter().map(|h| h.ns.clone()));
        out
    }

    pub fn gateway_ns(&self, gateway: &str) -> Option<&str> {
        self.gateways
            .iter()
            .find(|g| g.gateway == gateway)
            .map(|g| g.ns.as_str())
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The ends of all wires that lie in namespace `ns`.
    pub fn ends_in<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a End> + 'a {
        self.wires
            .iter()
            .flat_map(|w| [&w.a, &w.b])
            .filter(move |e| e.ns == ns)
    }
}

pub fn switch_ns(lab: &str) -> String {
    format!("{lab}-sw")
}
pub fn gateway_ns(lab: &str, gateway: &str) -> String {
    format!("{lab}-{gateway}")
}
pub fn client_ns(lab: &str, segment: &str) -> String {
    format!("{lab}-c-{segment}")
}
pub fn service_ns(lab: &str, service: &str) -> String {
    format!("{lab}-s-{service}")
}
pub fn internet_ns(lab: &str) -> String {
    format!("{lab}-inet")
}

fn with_prefix_of(addr: IpAddr, nets: &[IpNet]) -> Option<IpNet> {
    nets.iter()
        .find(|n| n.trunc().contains(&addr))
        .and_then(|n| IpNet::new(addr, n.prefix_len()).ok())
}

fn family_any(f: Family) -> IpNet {
    match f {
        Family::V4 => IpNet::V4(Default::default()),
        Family::V6 => IpNet::V6(Default::default()),
    }
}

/// A host in a segment: its addresses on `eth0` and a default route per family
/// via the segment's router address (the gateway link's address in that subnet).
fn segment_host(
    name: String,
    kind: HostKind,
    ns: String,
    routers: &[IpNet],
    addresses: Vec<IpAddr>,
    probe_addresses: Vec<IpAddr>,
) -> Result<(Host, Vec<IpNet>)> {
    let mut on_eth0 = Vec::new();
    let mut routes = Vec::new();
    for a in &addresses {
        let net = with_prefix_of(*a, routers)
            .ok_or_else(|| anyhow!("{name}: address {a} lies in none of its segment's subnets"))?;
        on_eth0.push(net);
        let router = routers
            .iter()
            .find(|r| r.trunc().contains(a))
            .map(|r| r.addr());
        let family = Family::of(a);
        if let Some(via) = router {
            if !routes
                .iter()
                .any(|r: &HostRoute| Family::of(&r.via) == family)
            {
                routes.push(HostRoute {
                    destination: family_any(family),
                    via,
                });
            }
        }
    }
    Ok((
        Host {
            name,
            kind,
            ns,
            routes,
            loopback: Vec::new(),
            probe_addresses,
        },
        on_eth0,
    ))
}

/// The lab for `topo` (already untagged where the kernel has no 802.1Q) as `compiled`.
pub fn plan(lab: &str, topo: &Topology, compiled: &Compiled) -> Result<LabPlan> {
    let sw = switch_ns(lab);
    let mut p = LabPlan {
        lab: lab.to_string(),
        switch_ns: sw.clone(),
        bridges: Vec::new(),
        gateways: Vec::new(),
        hosts: Vec::new(),
        wires: Vec::new(),
    };
    // Switch-side veth names: b<segment index>-<n>, unique and short.
    let mut bridge_ports: Vec<usize> = vec![0; topo.segments.len()];
    let mut sw_end = |s: usize| -> Result<End> {
        bridge_ports[s] += 1;
        let ifname = format!("b{s}-{}", bridge_ports[s]);
        if ifname.len() > IFNAME_MAX {
            bail!("too many segments for short interface names");
        }
        Ok(End {
            ns: sw.clone(),
            ifname,
            bridge: Some(format!("br{s}")),
            addresses: Vec::new(),
        })
    };
    let seg_index = |name: &str| topo.segments.iter().position(|s| s.name.v == name);
    for (s, seg) in topo.segments.iter().enumerate() {
        p.bridges.push((format!("br{s}"), seg.name.v.clone()));
    }

    // Gateways: segment ports to the bridges, transit links straight to the peer, uplinks to the internet host.
    let inet = internet_ns(lab);
    let mut inet_addresses: Vec<IpNet> = Vec::new();
    for (gi, gw) in compiled.gateways.iter().enumerate() {
        let ns = gateway_ns(lab, &gw.gateway);
        p.gateways.push(GatewayNs {
            gateway: gw.gateway.clone(),
            ns: ns.clone(),
        });
        let mut names = BTreeSet::new();
        for link in &gw.links {
            if !names.insert(link.name.as_str()) {
                bail!(
                    "gateway {}: two links are both named {}",
                    gw.gateway,
                    link.name
                );
            }
            if link.name.len() > IFNAME_MAX {
                bail!(
                    "gateway {}: interface name {} is longer than {IFNAME_MAX} bytes",
                    gw.gateway,
                    link.name
                );
            }
            if let LinkKind::Vlan { parent, id } = &link.kind {
                bail!(
                    "gateway {}: {} is VLAN {id} on {parent}; the lab wires untagged ports only",
                    gw.gateway,
                    link.name
                );
            }
            let gw_end = End {
                ns: ns.clone(),
                ifname: link.name.clone(),
                bridge: None,
                addresses: Vec::new(),
            };
            match &link.zone {
                Zone::Segment { segment, .. } => {
                    let s = seg_index(segment).ok_or_else(|| {
                        anyhow!("link {} names unknown segment {segment}", link.name)
                    })?;
                    p.wires.push(Wire {
                        what: format!("{} {} - segment {segment}", gw.gateway, link.name),
                        a: gw_end,
                        b: sw_end(s)?,
                    });
                }
                Zone::Transit { transit, peer } => {
                    // One wire per transit link, added from the gateway that comes first.
                    let pi = compiled
                        .gateways
                        .iter()
                        .position(|g| &g.gateway == peer)
                        .ok_or_else(|| anyhow!("transit {transit}: unknown peer {peer}"))?;
                    if pi < gi {
                        continue;
                    }
                    let peer_link = compiled.gateways[pi]
                        .links
                        .iter()
                        .find(
                            |l| matches!(&l.zone, Zone::Transit { transit: t, .. } if t == transit),
                        )
                        .ok_or_else(|| anyhow!("transit {transit}: {peer} has no link for it"))?;
                    let b = End {
                        ns: gateway_ns(lab, peer),
                        ifname: peer_link.name.clone(),
                        bridge: None,
                        addresses: Vec::new(),
                    };
                    p.wires.push(Wire {
                        what: format!("transit {transit} ({} - {peer})", gw.gateway),
                        a: gw_end,
                        b,
                    });
                }
                Zone::Uplink => {
                    let up = topo
                        .gateways
                        .iter()
                        .find(|g| g.name.v == gw.gateway)
                        .and_then(|g| g.uplink.as_ref());
                    let hops: Vec<IpAddr> = up
                        .map(|u| u.next_hops.iter().map(|h| h.v).collect())
                        .unwrap_or_default();
                    let addresses: Vec<IpNet> = hops
                        .iter()
                        .map(|h| {
                            with_prefix_of(*h, &link.addresses).unwrap_or_else(|| IpNet::from(*h))
                        })
                        .collect();
                    inet_addresses.extend(addresses.iter().copied());
                    let b = End {
                        ns: inet.clone(),
                        ifname: format!("up{gi}"),
                        bridge: None,
                        addresses,
                    };
                    p.wires.push(Wire {
                        what: format!("{} uplink {} - internet", gw.gateway, link.name),
                        a: gw_end,
                        b,
                    });
                }
            }
        }
    }

    // Router addresses of each segment, from the compiled gateway links.
    let routers = |segment: &str| -> Vec<IpNet> {
        compiled
            .gateways
            .iter()
            .flat_map(|g| &g.links)
            .filter(|l| matches!(&l.zone, Zone::Segment { segment: s, .. } if s == segment))
            .flat_map(|l| l.addresses.iter().copied())
            .collect()
    };
    // The address families of `nets`, each once, in order of appearance.
    let families = |nets: &[IpNet]| -> Vec<Family> {
        let mut f: Vec<Family> = Vec::new();
        for family in nets.iter().map(|n| Family::of(&n.addr())) {
            if !f.contains(&family) {
                f.push(family);
            }
        }
        f
    };

    for (s, seg) in topo.segments.iter().enumerate() {
        let name = &seg.name.v;
        let subnets: Vec<IpNet> = seg.subnets.iter().map(|n| n.v).collect();
        let mut addrs = Vec::new();
        for f in families(&subnets) {
            addrs.push(
                address_of(topo, name, Some(f))
                    .map_err(|e| anyhow!("client of segment {name}: {e}"))?,
            );
        }
        let (host, on_eth0) = segment_host(
            name.clone(),
            HostKind::Client {
                segment: name.clone(),
            },
            client_ns(lab, name),
            &routers(name),
            addrs.clone(),
            addrs,
        )?;
        p.wires.push(Wire {
            what: format!("{} - segment {name}", host.label()),
            a: host_end(&host, on_eth0),
            b: sw_end(s)?,
        });
        p.hosts.push(host);
    }
    for svc in &topo.services {
        let name = &svc.name.v;
        let segment = &svc.segment.v;
        let s = seg_index(segment)
            .ok_or_else(|| anyhow!("service {name}: unknown segment {segment}"))?;
        let addrs: Vec<IpAddr> = svc.addresses.iter().map(|a| a.v.addr()).collect();
        let mut probe = Vec::new();
        for f in families(&svc.addresses.iter().map(|a| a.v).collect::<Vec<_>>()) {
            probe
                .push(address_of(topo, name, Some(f)).map_err(|e| anyhow!("service {name}: {e}"))?);
        }
        let (host, on_eth0) = segment_host(
            name.clone(),
            HostKind::Service {
                segment: segment.clone(),
            },
            service_ns(lab, name),
            &routers(segment),
            addrs,
            probe,
        )
        .with_context(|| format!("service {name}"))?;
        p.wires.push(Wire {
            what: format!("service {name} - segment {segment}"),
            a: host_end(&host, on_eth0),
            b: sw_end(s)?,
        });
        p.hosts.push(host);
    }
    p.hosts.push(internet_host(lab, compiled, &inet_addresses)?);

    let mut seen = BTreeSet::new();
    for ns in p.namespaces() {
        if !seen.insert(ns.clone()) {
            bail!("two parts of the lab would share the namespace {ns}; rename a gateway, segment or service");
        }
    }
    Ok(p)
}

fn host_end(host: &Host, addresses: Vec<IpNet>) -> End {
    End {
        ns: host.ns.clone(),
        ifname: "eth0".into(),
        bridge: None,
        addresses,
    }
}

/// The internet host: the uplinks' next hops, the stand-in addresses on `lo`, and a route
/// to every internal subnet via the uplink address of the gateway where `reach` lets
/// internet traffic in (the first gateway with an uplink of that family).
fn internet_host(lab: &str, compiled: &Compiled, uplink_side: &[IpNet]) -> Result<Host> {
    let v4: IpAddr = INTERNET_V4.parse().context("internet stand-in v4")?;
    let v6: IpAddr = INTERNET_V6.parse().context("internet stand-in v6")?;
    let mut routes = Vec::new();
    let internal: BTreeSet<IpNet> = compiled
        .gateways
        .iter()
        .flat_map(|g| &g.links)
        .filter(|l| l.zone != Zone::Uplink)
        .flat_map(|l| l.addresses.iter().map(|a| a.trunc()))
        .collect();
    for net in internal {
        let family = Family::of(&net.addr());
        let via = compiled
            .gateways
            .iter()
            .flat_map(|g| g.links.iter().filter(|l| l.zone == Zone::Uplink))
            .flat_map(|l| l.addresses.iter())
            .find(|a| {
                Family::of(&a.addr()) == family
                    && uplink_side.iter().any(|u| u.trunc().contains(&a.addr()))
            });
        if let Some(via) = via {
            routes.push(HostRoute {
                destination: net,
                via: via.addr(),
            });
        }
    }
    Ok(Host {
        name: crate::topology::INTERNET.to_string(),
        kind: HostKind::Internet,
        ns: internet_ns(lab),
        routes,
        loopback: vec![IpNet::from(v4), IpNet::from(v6)],
        probe_addresses: vec![v4, v6],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn reference() -> (Topology, Compiled) {
        let text = include_str!("../../topologies/clinical-research.yaml");
        let (topo, _) = crate::topology::parse(text);
        let topo = topo.expect("parses");
        let (untagged, _) = super::super::rewrite::untag(text, &topo).expect("untag");
        let (topo, _) = crate::topology::parse(&untagged);
        let topo = topo.expect("parses");
        let day = NaiveDate::from_ymd_opt(2026, 6, 1).expect("date");
        let compiled = crate::compile::compile(&topo, day).expect("compiles");
        (topo, compiled)
    }

    #[test]
    fn reference_layout() {
        let (topo, compiled) = reference();
        let p = plan("tn", &topo, &compiled).expect("plan");
        let ns = p.namespaces();
        assert!(ns.contains(&"tn-gw-core".to_string()) && ns.contains(&"tn-gw-his".to_string()));
        assert!(
            ns.contains(&"tn-c-office-lan".to_string()) && ns.contains(&"tn-s-ehr".to_string())
        );
        assert!(ns.contains(&"tn-inet".to_string()) && ns.contains(&"tn-sw".to_string()));
        // 6 gateway ports + 6 clients + 9 services + 1 transit + 1 uplink.
        assert_eq!(p.wires.len(), 23);
        for w in &p.wires {
            assert!(
                w.a.ifname.len() <= IFNAME_MAX && w.b.ifname.len() <= IFNAME_MAX,
                "{w:?}"
            );
        }
        let transit = p
            .wires
            .iter()
            .find(|w| w.what.starts_with("transit"))
            .expect("transit wire");
        assert_eq!(
            (transit.a.ns.as_str(), transit.a.ifname.as_str()),
            ("tn-gw-core", "tr900")
        );
        assert_eq!(
            (transit.b.ns.as_str(), transit.b.ifname.as_str()),
            ("tn-gw-his", "tr900")
        );

        let ehr = p.host("ehr").expect("ehr");
        assert_eq!(
            ehr.routes,
            vec![HostRoute {
                destination: "0.0.0.0/0".parse().unwrap(),
                via: "10.4.10.1".parse().unwrap()
            }]
        );
        let biobank = p.host("biobank-lims").expect("lims");
        assert_eq!(
            biobank.routes[0].via,
            "10.3.30.254".parse::<IpAddr>().unwrap()
        );
        let wire = p
            .wires
            .iter()
            .find(|w| w.a.ns == "tn-s-ehr")
            .expect("ehr wire");
        assert_eq!(
            wire.a.addresses,
            vec!["10.4.10.10/24".parse::<IpNet>().unwrap()]
        );

        let inet = p.host("internet").expect("internet");
        assert!(inet
            .routes
            .iter()
            .all(|r| r.via == "198.51.100.2".parse::<IpAddr>().unwrap()));
        assert!(inet
            .routes
            .iter()
            .any(|r| r.destination == "10.4.10.0/24".parse::<IpNet>().unwrap()));
        let up = p
            .wires
            .iter()
            .find(|w| w.b.ns == "tn-inet")
            .expect("uplink");
        assert_eq!(
            (up.a.ifname.as_str(), up.b.addresses.clone()),
            ("eth0", vec!["198.51.100.1/30".parse().unwrap()])
        );
    }
}
