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

/// The elementary intervals between the bounds of a set of ranges (of one family): every
/// range is a run of consecutive atoms, so the pieces of any two ranges are equal or
/// disjoint. Consecutive atoms are adjacent in address space (gaps are atoms too).
struct Atoms {
    bounds: Vec<u128>,
}

impl Atoms {
    fn new<'a>(ranges: impl Iterator<Item = &'a AddrRange>) -> Self {
        let mut atoms = Atoms { bounds: Vec::new() };
        atoms.refill(ranges);
        atoms
    }

    /// The atoms of other ranges, reusing the allocation.
    fn refill<'a>(&mut self, ranges: impl Iterator<Item = &'a AddrRange>) {
        self.bounds.clear();
        for r in ranges {
            self.bounds.push(r.lo);
            if let Some(next) = r.hi.checked_add(1) {
                self.bounds.push(next);
            }
        }
        self.bounds.sort_unstable();
        self.bounds.dedup();
    }

    /// The atoms that make up `r`, or the one "atom" of the internet side (None).
    fn of(&self, r: &Option<AddrRange>) -> impl Iterator<Item = Option<u32>> {
        let (atoms, internet) = match r {
            None => (0..0, true),
            Some(r) => {
                let first = self.bounds.partition_point(|b| *b < r.lo);
                let end = match r.hi.checked_add(1) {
                    Some(next) => self.bounds.partition_point(|b| *b < next),
                    None => self.bounds.len(),
                };
                (first as u32..end as u32, false)
            }
        };
        atoms.map(Some).chain(internet.then_some(None))
    }

    /// Atoms `first..=last` as an address range.
    fn range(&self, (first, last): (u32, u32)) -> (u128, u128) {
        let hi = self
            .bounds
            .get(last as usize + 1)
            .map_or(u128::MAX, |b| b - 1);
        (self.bounds[first as usize], hi)
    }
}

/// A map element before rendering: source and destination sides (None: the internet),
/// a port range (tcp/udp maps) and the flow chain it jumps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Piece<S, D> {
    src: Option<S>,
    dst: Option<D>,
    proto: u8,
    lo: u16,
    hi: u16,
    chain: usize,
}

/// An address run `first..=last` of atoms.
type Run = (u32, u32);
/// One disjoint map element, with address ranges on both sides.
type Cell = Piece<(u128, u128), (u128, u128)>;

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

/// An optional atom as one integer that orders as the Option does (None first).
fn atom_key(atom: Option<u32>) -> u64 {
    atom.map_or(0, |k| (1 << 32) | u64::from(k))
}

/// Merges items whose run (per `run`) sits right after another's with the same `rest`:
/// the maximal runs of each `rest`, whatever order the items came in.
fn merge_runs<T: Copy, K: Ord>(
    mut items: Vec<T>,
    rest: impl Fn(&T) -> K,
    run: impl Fn(&T) -> Option<Run>,
    set: impl Fn(&mut T, Run),
) -> Vec<T> {
    items.sort_unstable_by(|a, b| rest(a).cmp(&rest(b)).then_with(|| run(a).cmp(&run(b))));
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for c in items {
        if let Some(last) = out.last_mut() {
            if let (Some((first, end)), Some((next, hi))) = (run(last), run(&c)) {
                // Consecutive atoms are adjacent addresses.
                if end + 1 == next && rest(last) == rest(&c) {
                    set(last, (first, hi));
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
    let mut by_class: BTreeMap<Class, Vec<&Grant>> = BTreeMap::new();
    for gr in flows.grants.iter().filter(|gr| gr.gateways.contains(&g)) {
        by_class.entry(grant_class(gr)).or_default().push(gr);
    }
    let rank = |c: usize| (!flows.chains[c].audited, flows.chains[c].flow);
    by_class
        .into_iter()
        .map(|(class, grants)| (class, map_cells(&grants, class.2, &rank)))
        .collect()
}

/// The cells of one map: disjoint, each point going to the first chain in `rank` order
/// of the grants that cover it, and merged into maximal runs, first along the source
/// side, then along the destination side.
///
/// Destinations are split into atoms at the bounds of this map's destination ranges;
/// then, per destination atom, sources are split only at the bounds of the grants that
/// reach that atom. Splitting more finely would give the same maximal runs, only slower.
fn map_cells(grants: &[&Grant], kind: Kind, rank: &dyn Fn(usize) -> (bool, usize)) -> Vec<Cell> {
    let dst_atoms = Atoms::new(grants.iter().filter_map(|gr| gr.dst.as_ref()));
    // Every grant under each destination atom it covers, in grant order.
    let mut by_dst: Vec<(Option<u32>, u32)> = Vec::new();
    for (i, gr) in grants.iter().enumerate() {
        by_dst.extend(dst_atoms.of(&gr.dst).map(|d| (d, i as u32)));
    }
    by_dst.sort_unstable_by_key(|&(d, i)| (u128::from(atom_key(d)) << 32) | u128::from(i));
    let mut merged_src: Vec<Piece<(u128, u128), Run>> = Vec::new();
    // Buffers reused across columns: most columns hold a handful of grants.
    let mut src_atoms = Atoms::new(std::iter::empty());
    let mut slots: Vec<(Option<u32>, Traffic, usize)> = Vec::new();
    let mut cells: Vec<Piece<Run, Run>> = Vec::new();
    for column in by_dst.chunk_by(|a, b| a.0 == b.0) {
        let dst = column[0].0.map(|k| (k, k));
        let grant = |&(_, i): &(Option<u32>, u32)| grants[i as usize];
        if let [only] = column {
            // One grant: its source range is one run, its traffic one cell.
            let gr = grant(only);
            let (proto, lo, hi) = match gr.traffic {
                Traffic::Ports { proto, lo, hi } => (proto, lo, hi),
                _ => (0, 0, 0),
            };
            let src = gr.src.map(|r| (r.lo, r.hi));
            merged_src.push(Piece {
                src,
                dst,
                proto,
                lo,
                hi,
                chain: gr.chain,
            });
            continue;
        }
        src_atoms.refill(column.iter().filter_map(|c| grant(c).src.as_ref()));
        slots.clear();
        for c in column {
            let gr = grant(c);
            slots.extend(src_atoms.of(&gr.src).map(|s| (s, gr.traffic, gr.chain)));
        }
        // Stable, so each slot lists its grants in grant order.
        slots.sort_by_key(|p| atom_key(p.0));
        cells.clear();
        for slot in slots.chunk_by(|a, b| a.0 == b.0) {
            let src = slot[0].0.map(|k| (k, k));
            let mut cell = |proto: u8, lo: u16, hi: u16, chain: usize| {
                cells.push(Piece {
                    src,
                    dst,
                    proto,
                    lo,
                    hi,
                    chain,
                });
            };
            match (kind, slot) {
                (Kind::Ports, [(_, Traffic::Ports { proto, lo, hi }, chain)]) => {
                    cell(*proto, *lo, *hi, *chain)
                }
                (Kind::Ports, _) => {
                    let mut by_proto: BTreeMap<u8, Vec<(u16, u16, usize)>> = BTreeMap::new();
                    for &(_, t, chain) in slot {
                        if let Traffic::Ports { proto, lo, hi } = t {
                            by_proto.entry(proto).or_default().push((lo, hi, chain));
                        }
                    }
                    for (proto, ranges) in by_proto {
                        for (lo, hi, chain) in disjoint_ports(ranges, rank) {
                            cell(proto, lo, hi, chain);
                        }
                    }
                }
                _ => {
                    if let Some(&(_, _, chain)) = slot.iter().min_by_key(|p| rank(p.2)) {
                        cell(0, 0, 0, chain);
                    }
                }
            }
        }
        let runs = merge_runs(
            std::mem::take(&mut cells),
            |c| (c.proto, c.lo, c.hi, c.chain),
            |c| c.src,
            |c, r| c.src = Some(r),
        );
        merged_src.extend(runs.into_iter().map(|c| Piece {
            src: c.src.map(|run| src_atoms.range(run)),
            dst: c.dst,
            proto: c.proto,
            lo: c.lo,
            hi: c.hi,
            chain: c.chain,
        }));
    }
    let merged = merge_runs(
        merged_src,
        |c| (c.src, c.proto, c.lo, c.hi, c.chain),
        |c| c.dst,
        |c, r| c.dst = Some(r),
    );
    let mut out: Vec<Cell> = merged
        .into_iter()
        .map(|c| Piece {
            src: c.src,
            dst: c.dst.map(|run| dst_atoms.range(run)),
            proto: c.proto,
            lo: c.lo,
            hi: c.hi,
            chain: c.chain,
        })
        .collect();
    out.sort_unstable();
    out
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
            default_deny("default deny"),
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
    forward.push(default_deny("default deny"));
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
/// The last rule of every base chain: an explicit, counted drop. The chains' policy is
/// drop too, but while the kernel commits a replace it hooks the new base chains with
/// their rules in place before it sets their policy (accept until then): a packet that
/// falls through must meet a rule, not the policy.
fn default_deny(comment: &str) -> Rule {
    Rule::new(vec![], Some(Verdict::Drop))
        .counted()
        .comment(comment)
}

pub fn closed_state(gateway: &str) -> super::GatewayState {
    let forward = Chain {
        name: "forward".into(),
        base: Some(BaseChain {
            hook: Hook::Forward,
            priority: 0,
            policy_drop: true,
        }),
        rules: vec![default_deny("closed: no valid state yet")],
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
