//! One gateway's nftables table: default deny, conntrack, anti-spoofing, and the declared
//! flows dispatched through interval verdict maps, so the rules a packet meets do not grow
//! with the number of flows.

use super::flows::{Expanded, Grant, Traffic};
use super::network::Network;
use super::ranges::{complement, normalize, AddrRange, Family};
use super::{Link, Route, Zone};
use crate::nftables::ir::*;
use crate::topology::Index;
use std::collections::{BTreeMap, HashSet};

/// Which side of a grant is the internet decides the map and its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    Internal,
    FromInternet,
    ToInternet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Echo,
    Ports,
    Any,
}

type Class = (Family, Direction, Kind);

fn map_name((family, dir, kind): Class) -> String {
    let d = match dir {
        Direction::Internal => "fwd",
        Direction::FromInternet => "in",
        Direction::ToInternet => "out",
    };
    let k = match kind {
        Kind::Echo => "echo",
        Kind::Ports => "ports",
        Kind::Any => "any",
    };
    format!("{d}_{}_{k}", family.suffix())
}

fn addr_fields(family: Family) -> (Field, Field) {
    match family {
        Family::V4 => (Field::Saddr4, Field::Daddr4),
        Family::V6 => (Field::Saddr6, Field::Daddr6),
    }
}

fn map_key((family, dir, kind): Class) -> Vec<Field> {
    let (s, d) = addr_fields(family);
    let mut key = match dir {
        Direction::Internal => vec![s, d],
        Direction::FromInternet => vec![d],
        Direction::ToInternet => vec![s],
    };
    if kind == Kind::Ports {
        key.extend([Field::L4Proto, Field::Dport]);
    }
    key
}

/// Every subnet of the topology: what "the internet" is not.
fn internal_ranges(index: &Index) -> Vec<AddrRange> {
    let topo = index.topo;
    let segs = topo.segments.iter().flat_map(|s| s.subnets.iter());
    let transit = topo.transit.iter().flat_map(|t| t.subnets.iter());
    normalize(
        segs.chain(transit)
            .map(|n| AddrRange::of_net(&n.v))
            .collect(),
    )
}

/// The sources that may arrive on each link: its own subnets, what is routed through it,
/// and the internet where the uplink or the default route lies behind it.
fn spoof_elements(
    links: &[Link],
    routes: &[Route],
    internal: &[AddrRange],
    family: Family,
) -> Vec<Element> {
    let mut elements = Vec::new();
    for link in links {
        let mut legit: Vec<AddrRange> = link
            .addresses
            .iter()
            .map(|a| AddrRange::of_net(&a.trunc()))
            .collect();
        let mut internet = link.zone == Zone::Uplink;
        for r in routes.iter().filter(|r| r.dev == link.name) {
            if r.destination.prefix_len() == 0 {
                internet = true;
            } else {
                legit.push(AddrRange::of_net(&r.destination));
            }
        }
        if internet {
            legit.extend(complement(family, internal));
        }
        legit.retain(|r| r.family == family);
        for r in normalize(legit) {
            elements.push(Element {
                key: vec![Value::Ifname(link.name.clone()), Value::Addr(r)],
                verdict: None,
            });
        }
    }
    elements
}

/// Splits every range at the bounds of every other, so any two resulting ranges are
/// equal or disjoint.
struct Atoms {
    bounds: Vec<u128>,
}

impl Atoms {
    fn new<'a>(ranges: impl Iterator<Item = &'a AddrRange>) -> Self {
        let mut bounds: Vec<u128> = Vec::new();
        for r in ranges {
            bounds.push(r.lo);
            if let Some(next) = r.hi.checked_add(1) {
                bounds.push(next);
            }
        }
        bounds.sort_unstable();
        bounds.dedup();
        Atoms { bounds }
    }

    fn split(&self, r: &AddrRange) -> Vec<AddrRange> {
        let start = self.bounds.partition_point(|b| *b < r.lo);
        let mut out = Vec::new();
        let mut lo = r.lo;
        for &b in &self.bounds[start..] {
            if b <= lo {
                continue;
            }
            if b > r.hi {
                break;
            }
            out.push(AddrRange {
                family: r.family,
                lo,
                hi: b - 1,
            });
            lo = b;
        }
        out.push(AddrRange {
            family: r.family,
            lo,
            hi: r.hi,
        });
        out
    }
}

fn split_side(atoms: &Atoms, r: &Option<AddrRange>) -> Vec<Option<AddrRange>> {
    match r {
        None => vec![None],
        Some(r) => atoms.split(r).into_iter().map(Some).collect(),
    }
}

/// One disjoint map element before rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cell {
    src: Option<(u128, u128)>,
    dst: Option<(u128, u128)>,
    proto: u8,
    lo: u16,
    hi: u16,
    chain: usize,
}

/// Port ranges of one protocol, made disjoint; where flows overlap, the piece goes to
/// the first chain in `rank` order (audited chains first, so overlaps are still logged).
fn disjoint_ports(
    mut ranges: Vec<(u16, u16, usize)>,
    rank: &dyn Fn(usize) -> (bool, usize),
) -> Vec<(u16, u16, usize)> {
    let mut bounds: Vec<u32> = ranges
        .iter()
        .flat_map(|&(lo, hi, _)| [lo as u32, hi as u32 + 1])
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    ranges.sort_by_key(|&(_, _, c)| rank(c));
    let mut out: Vec<(u16, u16, usize)> = Vec::new();
    for w in bounds.windows(2) {
        let (lo, hi) = (w[0], w[1] - 1);
        if let Some(&(_, _, c)) = ranges
            .iter()
            .find(|&&(a, b, _)| a as u32 <= lo && hi <= b as u32)
        {
            match out.last_mut() {
                Some(last) if last.2 == c && last.1 as u32 + 1 == lo => last.1 = hi as u16,
                _ => out.push((lo as u16, hi as u16, c)),
            }
        }
    }
    out
}

/// Merges cells that differ only in one address side and sit next to each other there.
fn merge_adjacent(mut cells: Vec<Cell>, on_src: bool) -> Vec<Cell> {
    let side = |c: &Cell| if on_src { c.src } else { c.dst };
    let rest = |c: &Cell| {
        (
            if on_src { c.dst } else { c.src },
            c.proto,
            c.lo,
            c.hi,
            c.chain,
        )
    };
    cells.sort_by_key(|c| (rest(c), side(c)));
    let mut out: Vec<Cell> = Vec::with_capacity(cells.len());
    for c in cells {
        if let Some(last) = out.last_mut() {
            if let (Some((_, lhi)), Some((clo, chi))) = (side(last), side(&c)) {
                if rest(last) == rest(&c) && lhi.checked_add(1) == Some(clo) {
                    let merged = side(last).map(|(llo, _)| (llo, chi));
                    if on_src {
                        last.src = merged;
                    } else {
                        last.dst = merged;
                    }
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

fn grant_class(g: &Grant) -> Class {
    let dir = match (g.src.is_none(), g.dst.is_none()) {
        (true, _) => Direction::FromInternet,
        (_, true) => Direction::ToInternet,
        _ => Direction::Internal,
    };
    let kind = match g.traffic {
        Traffic::Echo => Kind::Echo,
        Traffic::Ports { .. } => Kind::Ports,
        Traffic::Any => Kind::Any,
    };
    (g.family, dir, kind)
}

/// The disjoint elements of every verdict map of gateway `g`.
fn dispatch_cells(flows: &Expanded, g: usize) -> BTreeMap<Class, Vec<Cell>> {
    let here: Vec<&Grant> = flows
        .grants
        .iter()
        .filter(|gr| gr.gateways.contains(&g))
        .collect();
    let atoms = Atoms::new(
        here.iter()
            .flat_map(|gr| gr.src.iter().chain(gr.dst.iter())),
    );
    let rank = |c: usize| (!flows.chains[c].audited, flows.chains[c].flow);
    // (class, src atom, dst atom) → what each chain lets through there.
    type Slot = (Class, Option<(u128, u128)>, Option<(u128, u128)>);
    let mut slots: BTreeMap<Slot, Vec<(Traffic, usize)>> = BTreeMap::new();
    for gr in &here {
        let class = grant_class(gr);
        for s in split_side(&atoms, &gr.src) {
            for d in split_side(&atoms, &gr.dst) {
                let key = (class, s.map(|r| (r.lo, r.hi)), d.map(|r| (r.lo, r.hi)));
                slots.entry(key).or_default().push((gr.traffic, gr.chain));
            }
        }
    }
    let mut cells: BTreeMap<Class, Vec<Cell>> = BTreeMap::new();
    for ((class, src, dst), grants) in slots {
        let cell = |proto: u8, lo: u16, hi: u16, chain: usize| Cell {
            src,
            dst,
            proto,
            lo,
            hi,
            chain,
        };
        let out = cells.entry(class).or_default();
        if class.2 == Kind::Ports {
            let mut by_proto: BTreeMap<u8, Vec<(u16, u16, usize)>> = BTreeMap::new();
            for (t, chain) in grants {
                if let Traffic::Ports { proto, lo, hi } = t {
                    by_proto.entry(proto).or_default().push((lo, hi, chain));
                }
            }
            for (proto, ranges) in by_proto {
                for (lo, hi, chain) in disjoint_ports(ranges, &rank) {
                    out.push(cell(proto, lo, hi, chain));
                }
            }
        } else if let Some(&(_, chain)) = grants.iter().min_by_key(|(_, c)| rank(*c)) {
            out.push(cell(0, 0, 0, chain));
        }
    }
    for list in cells.values_mut() {
        let merged = merge_adjacent(std::mem::take(list), true);
        *list = merge_adjacent(merged, false);
        list.sort();
    }
    cells
}

fn cell_element(class: Class, c: &Cell, chains: &[String]) -> Element {
    let family = class.0;
    let addr = |r: (u128, u128)| {
        Value::Addr(AddrRange {
            family,
            lo: r.0,
            hi: r.1,
        })
    };
    let mut key: Vec<Value> = c.src.into_iter().chain(c.dst).map(addr).collect();
    if class.2 == Kind::Ports {
        key.push(Value::Proto(c.proto));
        key.push(Value::Ports(c.lo, c.hi));
    }
    Element {
        key,
        verdict: Some(Verdict::Jump(chains[c.chain].clone())),
    }
}

fn dispatch_rule((family, dir, kind): Class, map: String, internal: &str) -> Rule {
    let (s, d) = addr_fields(family);
    let mut matches = Vec::new();
    match dir {
        Direction::Internal => {}
        Direction::FromInternet => matches.push(Match::Lookup {
            key: vec![s],
            set: internal.to_string(),
            negate: true,
        }),
        Direction::ToInternet => matches.push(Match::Lookup {
            key: vec![d],
            set: internal.to_string(),
            negate: true,
        }),
    }
    match kind {
        Kind::Echo => matches.push(Match::Icmp {
            v6: family == Family::V6,
            types: vec![IcmpKind::EchoRequest],
        }),
        Kind::Ports => matches.push(Match::L4Proto(vec![PROTO_TCP, PROTO_UDP])),
        Kind::Any => {}
    }
    let key = map_key((family, dir, kind));
    Rule::new(matches, Some(Verdict::Vmap { key, map }))
}

pub fn input_chain() -> Chain {
    let nd = vec![
        IcmpKind::EchoRequest,
        IcmpKind::NeighborSolicit,
        IcmpKind::NeighborAdvert,
        IcmpKind::RouterSolicit,
        IcmpKind::RouterAdvert,
    ];
    Chain {
        name: "input".into(),
        base: Some(BaseChain {
            hook: Hook::Input,
            priority: 0,
            policy_drop: true,
        }),
        rules: vec![
            Rule::new(
                vec![Match::CtState(vec![CtState::Established, CtState::Related])],
                Some(Verdict::Accept),
            ),
            Rule::new(
                vec![Match::CtState(vec![CtState::Invalid])],
                Some(Verdict::Drop),
            ),
            Rule::new(vec![Match::Iifname("lo".into())], Some(Verdict::Accept)),
            Rule::new(
                vec![Match::Icmp {
                    v6: false,
                    types: vec![IcmpKind::EchoRequest],
                }],
                Some(Verdict::Accept),
            )
            .counted(),
            Rule::new(
                vec![Match::Icmp {
                    v6: true,
                    types: nd,
                }],
                Some(Verdict::Accept),
            )
            .counted(),
            Rule::new(vec![], None).counted().comment("default deny"),
        ],
    }
}

fn flow_chain(chain: &super::flows::FlowChain) -> Chain {
    let mut rule = Rule::new(vec![], Some(Verdict::Accept)).counted();
    rule.comment = Some(match &chain.approval {
        Some(a) => format!("{} approval={a}", chain.name),
        None => chain.name.clone(),
    });
    if chain.audited {
        let mut prefix = format!("tiernet audit flow={} ", chain.name);
        prefix.truncate(120);
        rule.log = Some(Log {
            prefix,
            group: AUDIT_NFLOG_GROUP,
        });
    }
    Chain {
        name: chain.chain.clone(),
        base: None,
        rules: vec![rule],
    }
}

/// The whole table of gateway `g`.
pub fn table(
    index: &Index,
    _net: &Network,
    flows: &Expanded,
    g: usize,
    links: &[Link],
    routes: &[Route],
) -> Table {
    let internal = internal_ranges(index);
    let chain_names: Vec<String> = flows.chains.iter().map(|c| c.chain.clone()).collect();
    let mut sets = Vec::new();
    let mut forward = vec![
        Rule::new(
            vec![Match::CtState(vec![CtState::Established, CtState::Related])],
            Some(Verdict::Accept),
        ),
        Rule::new(
            vec![Match::CtState(vec![CtState::Invalid])],
            Some(Verdict::Drop),
        )
        .counted()
        .comment("invalid"),
    ];
    for family in [Family::V4, Family::V6] {
        let name = format!("spoof_{}", family.suffix());
        let elements = spoof_elements(links, routes, &internal, family);
        let key = vec![Field::Iifname, addr_fields(family).0];
        forward.push(
            Rule::new(
                vec![Match::Lookup {
                    key: key.clone(),
                    set: name.clone(),
                    negate: true,
                }],
                Some(Verdict::Drop),
            )
            .counted()
            .comment("anti-spoofing"),
        );
        sets.push(Set {
            name,
            key,
            is_map: false,
            elements,
        });
    }
    let cells = dispatch_cells(flows, g);
    let mut used_chains: HashSet<usize> = HashSet::new();
    let mut internal_sets_needed: HashSet<Family> = HashSet::new();
    for (class, list) in &cells {
        let name = map_name(*class);
        let internal_set = format!("internal_{}", class.0.suffix());
        if class.1 != Direction::Internal {
            internal_sets_needed.insert(class.0);
        }
        forward.push(dispatch_rule(*class, name.clone(), &internal_set));
        used_chains.extend(list.iter().map(|c| c.chain));
        sets.push(Set {
            name,
            key: map_key(*class),
            is_map: true,
            elements: list
                .iter()
                .map(|c| cell_element(*class, c, &chain_names))
                .collect(),
        });
    }
    for family in [Family::V4, Family::V6] {
        if internal_sets_needed.contains(&family) {
            sets.insert(
                0,
                Set {
                    name: format!("internal_{}", family.suffix()),
                    key: vec![addr_fields(family).0],
                    is_map: false,
                    elements: internal
                        .iter()
                        .filter(|r| r.family == family)
                        .map(|r| Element {
                            key: vec![Value::Addr(*r)],
                            verdict: None,
                        })
                        .collect(),
                },
            );
        }
    }
    forward.push(Rule::new(vec![], None).counted().comment("default deny"));
    let mut chains = vec![
        Chain {
            name: "forward".into(),
            base: Some(BaseChain {
                hook: Hook::Forward,
                priority: 0,
                policy_drop: true,
            }),
            rules: forward,
        },
        input_chain(),
    ];
    let mut used: Vec<usize> = used_chains.into_iter().collect();
    used.sort_unstable();
    chains.extend(used.into_iter().map(|c| flow_chain(&flows.chains[c])));
    Table {
        name: TABLE_NAME.into(),
        sets,
        chains,
    }
}

/// The state an agent holds when it has nothing valid to apply yet: no links or routes
/// touched, nothing forwarded, the gateway itself reachable only by ping (fail closed).
pub fn closed_state(gateway: &str) -> super::GatewayState {
    let forward = Chain {
        name: "forward".into(),
        base: Some(BaseChain {
            hook: Hook::Forward,
            priority: 0,
            policy_drop: true,
        }),
        rules: vec![Rule::new(vec![], None)
            .counted()
            .comment("closed: no valid state yet")],
    };
    super::GatewayState {
        gateway: gateway.to_string(),
        links: Vec::new(),
        routes: Vec::new(),
        sysctls: Vec::new(),
        table: Table {
            name: TABLE_NAME.into(),
            sets: Vec::new(),
            chains: vec![forward, input_chain()],
        },
    }
}
