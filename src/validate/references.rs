//! Rule 7: every reference between objects resolves. Flow endpoints are resolved in
//! `flows`, where the resolution is kept for the tier rules.

use crate::diag::Diagnostic;
use crate::topology::{Index, Sp, Transit};
use std::collections::HashMap;

pub fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    let topo = ix.topo;
    for s in &topo.segments {
        let who = format!("segment '{}'", s.name.v);
        require(out, &who, "tier", &s.tier, &ix.tiers, "tiers");
        require(out, &who, "gateway", &s.gateway, &ix.gateways, "gateways");
    }
    for s in &topo.services {
        let who = format!("service '{}'", s.name.v);
        require(out, &who, "segment", &s.segment, &ix.segments, "segments");
    }
    for t in &topo.transit {
        transit_gateways(ix, t, out);
    }
    for tier in 0..topo.tiers.len() {
        same_policy_as(ix, tier, out);
    }
}

/// Reports `r` when no object of its kind carries that name.
fn require(
    out: &mut Vec<Diagnostic>,
    who: &str,
    kind: &str,
    r: &Sp<String>,
    known: &HashMap<&str, usize>,
    section: &str,
) {
    if known.contains_key(r.v.as_str()) {
        return;
    }
    let hint = crate::diag::closest(&r.v, known.keys().copied())
        .map(|c| format!(" (did you mean '{c}'?)"))
        .unwrap_or_default();
    out.push(Diagnostic::error(
        "reference",
        r.pos,
        format!(
            "{who} refers to {kind} '{}', which is not defined{hint}; define it under '{section}' or fix the name",
            r.v
        ),
    ));
}

/// A transit link joins exactly two different, defined gateways.
fn transit_gateways(ix: &Index, t: &Transit, out: &mut Vec<Diagnostic>) {
    let who = format!("transit link '{}'", t.name.v);
    match t.gateways.as_slice() {
        [a, b] if a.v == b.v => out.push(Diagnostic::error(
            "reference",
            b.pos,
            format!(
                "{who} names gateway '{}' twice; a transit link joins two different gateways",
                b.v
            ),
        )),
        [_, _] => {}
        other => {
            // Point at the first surplus gateway, or at the link when some are missing.
            let pos = other.get(2).or(other.first()).map_or(t.pos, |g| g.pos);
            out.push(Diagnostic::error(
                "reference",
                pos,
                format!(
                    "{who} names {} gateway{}; it needs exactly two: 'gateways: [A, B]'",
                    other.len(),
                    if other.len() == 1 { "" } else { "s" }
                ),
            ));
        }
    }
    for g in &t.gateways {
        require(out, &who, "gateway", g, &ix.gateways, "gateways");
    }
}

/// `same_policy_as` names another defined tier, and following it never comes back.
fn same_policy_as(ix: &Index, tier: usize, out: &mut Vec<Diagnostic>) {
    let t = &ix.topo.tiers[tier];
    let Some(target) = &t.same_policy_as else {
        return;
    };
    let who = format!("tier '{}'", t.name.v);
    let Some(&next) = ix.tiers.get(target.v.as_str()) else {
        require(out, &who, "tier", target, &ix.tiers, "tiers");
        return;
    };
    if next == tier {
        out.push(Diagnostic::error(
            "reference",
            target.pos,
            format!(
                "{who} takes its policy from itself (same_policy_as); name another tier or remove 'same_policy_as'"
            ),
        ));
        return;
    }
    // Walk the chain; each tier of a cycle reports its own link, a tier merely leading
    // into someone else's cycle does not.
    let mut cur = next;
    for _ in 0..ix.topo.tiers.len() {
        let Some(up) = &ix.topo.tiers[cur].same_policy_as else {
            return;
        };
        let Some(&n) = ix.tiers.get(up.v.as_str()) else {
            return;
        };
        if n == tier {
            out.push(Diagnostic::error(
                "reference",
                target.pos,
                format!(
                    "{who} takes its policy from '{}', which leads back to '{}' (a same_policy_as cycle); one tier of the chain must define the policy itself",
                    target.v, t.name.v
                ),
            ));
            return;
        }
        cur = n;
    }
}
