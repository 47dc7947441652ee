//! Evaluates one packet against the IR the way the kernel walks a table, so that
//! `tiernet reach` answers from the compiled state rather than from the YAML.

use super::ir::*;
use crate::compile::ranges::Family;
use std::net::IpAddr;

/// The facts about a packet that tiernet's rules look at.
#[derive(Debug, Clone)]
pub struct Packet {
    pub iif: String,
    pub oif: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Destination port for TCP/UDP.
    pub dport: u16,
    /// An ICMP/ICMPv6 echo request.
    pub echo: bool,
    pub ct: CtState,
}

/// The verdict and the rule that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: bool,
    pub chain: String,
    /// The deciding rule's comment; None when the chain policy decided.
    pub comment: Option<String>,
}

fn family(a: &IpAddr) -> Family {
    Family::of(a)
}

fn field_value(f: Field, p: &Packet) -> Option<Value> {
    use crate::compile::ranges::AddrRange;
    let addr =
        |a: &IpAddr, want: Family| (family(a) == want).then(|| Value::Addr(AddrRange::host(a)));
    match f {
        Field::Iifname => Some(Value::Ifname(p.iif.clone())),
        Field::Oifname => Some(Value::Ifname(p.oif.clone())),
        Field::Saddr4 => addr(&p.src, Family::V4),
        Field::Daddr4 => addr(&p.dst, Family::V4),
        Field::Saddr6 => addr(&p.src, Family::V6),
        Field::Daddr6 => addr(&p.dst, Family::V6),
        Field::L4Proto => Some(Value::Proto(p.proto)),
        Field::Dport => {
            matches!(p.proto, PROTO_TCP | PROTO_UDP).then_some(Value::Ports(p.dport, p.dport))
        }
    }
}

/// Whether a packet value (a point) lies in an element's key part (a range).
fn within(point: &Value, part: &Value) -> bool {
    match (point, part) {
        (Value::Ifname(a), Value::Ifname(b)) => a == b,
        (Value::Addr(a), Value::Addr(b)) => b.family == a.family && b.lo <= a.lo && a.hi <= b.hi,
        (Value::Proto(a), Value::Proto(b)) => a == b,
        (Value::Ports(a, _), Value::Ports(lo, hi)) => lo <= a && a <= hi,
        _ => false,
    }
}

/// The element of `set` that holds the packet's key, if any. None for the outer Option:
/// the key cannot be built (e.g. an IPv4 field of an IPv6 packet), so the rule does not apply.
fn lookup<'t>(
    table: &'t Table,
    set: &str,
    key: &[Field],
    p: &Packet,
) -> Option<Option<&'t Element>> {
    let values: Option<Vec<Value>> = key.iter().map(|f| field_value(*f, p)).collect();
    let values = values?;
    let set = table.set(set)?;
    Some(set.elements.iter().find(|e| {
        e.key.len() == values.len() && values.iter().zip(&e.key).all(|(v, part)| within(v, part))
    }))
}

fn matches(table: &Table, m: &Match, p: &Packet) -> bool {
    match m {
        Match::CtState(states) => states.contains(&p.ct),
        Match::Iifname(n) => &p.iif == n,
        Match::L4Proto(ps) => ps.contains(&p.proto),
        Match::Icmp { v6, types } => {
            let is_family = (family(&p.src) == Family::V6) == *v6;
            let proto = if *v6 { PROTO_ICMPV6 } else { PROTO_ICMP };
            is_family && p.proto == proto && p.echo && types.contains(&IcmpKind::EchoRequest)
        }
        Match::Lookup { key, set, negate } => match lookup(table, set, key, p) {
            None => false,
            Some(found) => found.is_some() != *negate,
        },
    }
}

/// Result of running a chain: a final verdict, or fall-through.
fn run_chain(table: &Table, name: &str, p: &Packet, depth: usize) -> Option<Outcome> {
    let chain = table.chain(name)?;
    if depth > 16 {
        return None;
    }
    for rule in &chain.rules {
        if !rule.matches.iter().all(|m| matches(table, m, p)) {
            continue;
        }
        let decided = |accepted: bool| Outcome {
            accepted,
            chain: chain.name.clone(),
            comment: rule.comment.clone(),
        };
        match &rule.verdict {
            None => {}
            Some(Verdict::Accept) => return Some(decided(true)),
            Some(Verdict::Drop) => return Some(decided(false)),
            Some(Verdict::Jump(target)) => {
                if let Some(out) = run_chain(table, target, p, depth + 1) {
                    return Some(out);
                }
            }
            Some(Verdict::Vmap { key, map }) => {
                let Some(Some(element)) = lookup(table, map, key, p) else {
                    continue;
                };
                match &element.verdict {
                    Some(Verdict::Jump(target)) => {
                        if let Some(out) = run_chain(table, target, p, depth + 1) {
                            return Some(out);
                        }
                    }
                    Some(Verdict::Accept) => return Some(decided(true)),
                    Some(Verdict::Drop) => return Some(decided(false)),
                    _ => {}
                }
            }
        }
    }
    None
}

/// Runs the base chain of `hook`; its policy decides when no rule does.
pub fn eval(table: &Table, hook: Hook, p: &Packet) -> Outcome {
    let Some(base) = table
        .chains
        .iter()
        .find(|c| c.base.as_ref().is_some_and(|b| b.hook == hook))
    else {
        return Outcome {
            accepted: true,
            chain: String::new(),
            comment: Some("no tiernet chain on this hook".into()),
        };
    };
    run_chain(table, &base.name, p, 0).unwrap_or_else(|| Outcome {
        accepted: !base.base.as_ref().is_some_and(|b| b.policy_drop),
        chain: base.name.clone(),
        comment: None,
    })
}
