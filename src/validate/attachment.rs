//! How segments and transit links attach to their gateways (rule 7): a VLAN on the
//! gateway's trunk or an untagged port of their own, VLAN IDs 1-4094 and unique per
//! trunk, no port used twice. Also warns about gateways that route nothing.

use crate::diag::{Diagnostic, Pos};
use crate::topology::{Index, Sp};
use std::collections::HashMap;

/// Something that needs a layer-2 attachment on one or more gateways.
struct Link<'t> {
    /// `segment 'dmz'` or `transit link 'core-his'`.
    who: String,
    pos: Pos,
    vlan: Option<&'t Sp<u32>>,
    interface: Option<&'t Sp<String>>,
    gateways: Vec<usize>,
}

const VLAN_IDS: std::ops::RangeInclusive<u32> = 1..=4094;

pub fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    let links = links(ix);
    // (gateway, VLAN ID or port) → who took it first, and where.
    let mut vlans: HashMap<(usize, u32), (&str, Pos)> = HashMap::new();
    let mut ports: HashMap<(usize, &str), (&str, Pos)> = HashMap::new();
    for link in &links {
        one_attachment(link, out);
        if let Some(vlan) = link.vlan {
            if !VLAN_IDS.contains(&vlan.v) {
                out.push(Diagnostic::error(
                    "vlan-range",
                    vlan.pos,
                    format!(
                        "vlan {} of {} is outside 1-4094; pick a VLAN ID from 1 to 4094",
                        vlan.v, link.who
                    ),
                ));
            }
        }
        for &g in &link.gateways {
            if let Some(vlan) = link.vlan {
                trunk_vlan(ix, link, vlan, g, &mut vlans, out);
            }
            if let Some(iface) = link.interface {
                own_port(ix, link, iface, g, &mut ports, out);
            }
        }
    }
    for g in &ix.topo.gateways {
        if let (Some(trunk), Some(uplink)) = (&g.trunk, &g.uplink) {
            if trunk.v == uplink.interface.v {
                out.push(Diagnostic::error(
                    "attachment",
                    uplink.interface.pos,
                    format!(
                        "gateway '{}' uses interface '{}' as both its trunk and its uplink; the uplink needs a port of its own",
                        g.name.v, trunk.v
                    ),
                ));
            }
        }
    }
    unused_gateways(ix, &links, out);
}

fn links<'t>(ix: &Index<'t>) -> Vec<Link<'t>> {
    let topo = ix.topo;
    let segments = topo.segments.iter().enumerate().map(|(i, s)| Link {
        who: format!("segment '{}'", s.name.v),
        pos: s.pos,
        vlan: s.vlan.as_ref(),
        interface: s.interface.as_ref(),
        gateways: ix.segment_gateway(i).into_iter().collect(),
    });
    let transit = topo.transit.iter().map(|t| {
        let mut gateways: Vec<usize> = t
            .gateways
            .iter()
            .filter_map(|g| ix.gateways.get(g.v.as_str()).copied())
            .collect();
        // A link naming one gateway twice is a `reference` error; attach it once.
        gateways.sort_unstable();
        gateways.dedup();
        Link {
            who: format!("transit link '{}'", t.name.v),
            pos: t.pos,
            vlan: t.vlan.as_ref(),
            interface: t.interface.as_ref(),
            gateways,
        }
    });
    // In file order, so a conflict is reported at the later of the two.
    let mut links: Vec<Link> = segments.chain(transit).collect();
    links.sort_by_key(|l| l.pos);
    links
}

fn one_attachment(link: &Link, out: &mut Vec<Diagnostic>) {
    let base = format!(
        "{} needs either 'vlan' (on the gateway's trunk) or 'interface' (an untagged port)",
        link.who
    );
    match (link.vlan, link.interface) {
        (Some(v), Some(i)) => out.push(Diagnostic::error(
            "attachment",
            v.pos.max(i.pos),
            format!("{base}, not both"),
        )),
        (None, None) => out.push(Diagnostic::error("attachment", link.pos, base)),
        _ => {}
    }
}

/// A VLAN needs the gateway's trunk, and an ID not already taken on it.
fn trunk_vlan<'t>(
    ix: &Index<'t>,
    link: &'t Link<'t>,
    vlan: &Sp<u32>,
    g: usize,
    taken: &mut HashMap<(usize, u32), (&'t str, Pos)>,
    out: &mut Vec<Diagnostic>,
) {
    let gw = &ix.topo.gateways[g];
    let Some(trunk) = &gw.trunk else {
        out.push(Diagnostic::error(
            "attachment",
            vlan.pos,
            format!(
                "{} has vlan {} but gateway '{}' has no 'trunk'; add 'trunk:' to the gateway or attach by 'interface'",
                link.who, vlan.v, gw.name.v
            ),
        ));
        return;
    };
    if !VLAN_IDS.contains(&vlan.v) {
        return; // reported as vlan-range
    }
    match taken.get(&(g, vlan.v)) {
        Some((first, at)) => out.push(Diagnostic::error(
            "vlan-conflict",
            vlan.pos,
            format!(
                "vlan {} of {} is already used on trunk '{}' of gateway '{}' by {first} (line {}); VLAN IDs must be unique per trunk",
                vlan.v, link.who, trunk.v, gw.name.v, at.line
            ),
        )),
        None => {
            taken.insert((g, vlan.v), (&link.who, vlan.pos));
        }
    }
}

/// An untagged port belongs to one segment or link, and is neither the trunk nor the uplink.
fn own_port<'t>(
    ix: &Index<'t>,
    link: &'t Link<'t>,
    iface: &'t Sp<String>,
    g: usize,
    taken: &mut HashMap<(usize, &'t str), (&'t str, Pos)>,
    out: &mut Vec<Diagnostic>,
) {
    let gw = &ix.topo.gateways[g];
    let role = if gw.trunk.as_ref().is_some_and(|t| t.v == iface.v) {
        Some("the trunk")
    } else if gw.uplink.as_ref().is_some_and(|u| u.interface.v == iface.v) {
        Some("the uplink")
    } else {
        None
    };
    if let Some(role) = role {
        out.push(Diagnostic::error(
            "attachment",
            iface.pos,
            format!(
                "{} uses interface '{}', which is {role} of gateway '{}'; give it a port of its own (or a 'vlan' on the trunk)",
                link.who, iface.v, gw.name.v
            ),
        ));
        return;
    }
    match taken.get(&(g, iface.v.as_str())) {
        Some((first, at)) => out.push(Diagnostic::error(
            "vlan-conflict",
            iface.pos,
            format!(
                "interface '{}' of {} is already used on gateway '{}' by {first} (line {}); an untagged port carries one segment",
                iface.v, link.who, gw.name.v, at.line
            ),
        )),
        None => {
            taken.insert((g, iface.v.as_str()), (&link.who, iface.pos));
        }
    }
}

fn unused_gateways(ix: &Index, links: &[Link], out: &mut Vec<Diagnostic>) {
    for (g, gw) in ix.topo.gateways.iter().enumerate() {
        if !links.iter().any(|l| l.gateways.contains(&g)) {
            out.push(Diagnostic::warning(
                "unused",
                gw.name.pos,
                format!(
                    "gateway '{}' routes no segment and no transit link; attach segments to it or remove it",
                    gw.name.v
                ),
            ));
        }
    }
}
