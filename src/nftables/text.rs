//! Renders the IR as `nft -f` input, in the same notation `nft list ruleset` prints.

use super::ir::*;
use std::fmt::Write;

pub fn field_expr(f: Field) -> &'static str {
    match f {
        Field::Iifname => "iifname",
        Field::Oifname => "oifname",
        Field::Saddr4 => "ip saddr",
        Field::Daddr4 => "ip daddr",
        Field::Saddr6 => "ip6 saddr",
        Field::Daddr6 => "ip6 daddr",
        Field::L4Proto => "meta l4proto",
        Field::Dport => "th dport",
    }
}

pub fn field_type(f: Field) -> &'static str {
    match f {
        Field::Iifname | Field::Oifname => "ifname",
        Field::Saddr4 | Field::Daddr4 => "ipv4_addr",
        Field::Saddr6 | Field::Daddr6 => "ipv6_addr",
        Field::L4Proto => "inet_proto",
        Field::Dport => "inet_service",
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        PROTO_ICMP => "icmp".into(),
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_ICMPV6 => "ipv6-icmp".into(),
        other => other.to_string(),
    }
}

fn icmp_name(k: IcmpKind) -> &'static str {
    match k {
        IcmpKind::EchoRequest => "echo-request",
        IcmpKind::NeighborSolicit => "nd-neighbor-solicit",
        IcmpKind::NeighborAdvert => "nd-neighbor-advert",
        IcmpKind::RouterSolicit => "nd-router-solicit",
        IcmpKind::RouterAdvert => "nd-router-advert",
    }
}

fn ct_name(s: CtState) -> &'static str {
    match s {
        CtState::Invalid => "invalid",
        CtState::Established => "established",
        CtState::Related => "related",
        CtState::New => "new",
    }
}

/// A string safe inside nft's double quotes.
pub fn quoted(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect();
    format!("\"{clean}\"")
}

fn value(v: &Value) -> String {
    match v {
        Value::Ifname(n) => quoted(n),
        Value::Addr(r) => r.to_string(),
        Value::Proto(p) => proto_name(*p),
        Value::Ports(lo, hi) if lo == hi => lo.to_string(),
        Value::Ports(lo, hi) => format!("{lo}-{hi}"),
    }
}

fn key_expr(key: &[Field]) -> String {
    key.iter()
        .map(|f| field_expr(*f))
        .collect::<Vec<_>>()
        .join(" . ")
}

fn braced<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    match items {
        [one] => show(one),
        many => format!(
            "{{ {} }}",
            many.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn match_text(m: &Match) -> String {
    match m {
        Match::CtState(states) => format!(
            "ct state {}",
            states
                .iter()
                .map(|s| ct_name(*s))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Match::Iifname(n) => format!("iifname {}", quoted(n)),
        Match::L4Proto(ps) => format!("meta l4proto {}", braced(ps, |p| proto_name(*p))),
        Match::Icmp { v6, types } => format!(
            "{} type {}",
            if *v6 { "icmpv6" } else { "icmp" },
            braced(types, |t| icmp_name(*t).to_string())
        ),
        Match::Lookup { key, set, negate } => {
            format!(
                "{} {}@{set}",
                key_expr(key),
                if *negate { "!= " } else { "" }
            )
        }
    }
}

pub fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Vmap { key, map } => format!("{} vmap @{map}", key_expr(key)),
    }
}

pub fn rule_text(r: &Rule) -> String {
    let mut parts: Vec<String> = r.matches.iter().map(match_text).collect();
    if r.counter {
        parts.push("counter".into());
    }
    if let Some(log) = &r.log {
        parts.push(format!(
            "log prefix {} group {}",
            quoted(&log.prefix),
            log.group
        ));
    }
    if let Some(v) = &r.verdict {
        parts.push(verdict_text(v));
    }
    if let Some(c) = &r.comment {
        parts.push(format!("comment {}", quoted(c)));
    }
    parts.join(" ")
}

fn element_text(e: &Element) -> String {
    let key = e.key.iter().map(value).collect::<Vec<_>>().join(" . ");
    match &e.verdict {
        Some(v) => format!("{key} : {}", verdict_text(v)),
        None => key,
    }
}

/// The table alone: `table inet tiernet { ... }`.
pub fn render_table(t: &Table) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table inet {} {{", t.name);
    for s in &t.sets {
        let kind = if s.is_map { "map" } else { "set" };
        let types = s
            .key
            .iter()
            .map(|f| field_type(*f))
            .collect::<Vec<_>>()
            .join(" . ");
        let _ = writeln!(out, "\t{kind} {} {{", s.name);
        if s.is_map {
            let _ = writeln!(out, "\t\ttype {types} : verdict");
        } else {
            let _ = writeln!(out, "\t\ttype {types}");
        }
        let _ = writeln!(out, "\t\tflags interval");
        if !s.elements.is_empty() {
            let _ = writeln!(out, "\t\telements = {{");
            for e in &s.elements {
                let _ = writeln!(out, "\t\t\t{},", element_text(e));
            }
            let _ = writeln!(out, "\t\t}}");
        }
        let _ = writeln!(out, "\t}}");
    }
    for c in &t.chains {
        let _ = writeln!(out, "\tchain {} {{", c.name);
        if let Some(b) = &c.base {
            let hook = match b.hook {
                Hook::Forward => "forward",
                Hook::Input => "input",
            };
            let policy = if b.policy_drop { "drop" } else { "accept" };
            let _ = writeln!(
                out,
                "\t\ttype filter hook {hook} priority {}; policy {policy};",
                b.priority
            );
        }
        for r in &c.rules {
            let _ = writeln!(out, "\t\t{}", rule_text(r));
        }
        let _ = writeln!(out, "\t}}");
    }
    out.push_str("}\n");
    out
}

/// A script that replaces the whole table in one transaction, as `nft -f` applies it:
/// creating the table first makes the delete valid when it does not exist yet.
pub fn render_replace(t: &Table) -> String {
    format!(
        "table inet {name}\ndelete table inet {name}\n{}",
        render_table(t),
        name = t.name
    )
}
