//! The tiers themselves: levels, `same_policy_as` tiers not redefining the policy they
//! inherit, and exposed services only where the tier lets the internet in (rule 2).

use super::describe;
use crate::diag::{Diagnostic, Pos};
use crate::topology::{Index, Tier};

pub fn check(ix: &Index, out: &mut Vec<Diagnostic>) {
    for t in &ix.topo.tiers {
        if t.level.v < 1 {
            out.push(Diagnostic::error(
                "tier-level",
                t.level.pos,
                format!(
                    "tier '{}' has level {}; levels start at 1 (the least confidential tier)",
                    t.name.v, t.level.v
                ),
            ));
        }
        inherited_policy(t, out);
    }
    exposed_services(ix, out);
}

/// A tier with `same_policy_as` takes the whole policy from its target; setting a policy
/// field as well would leave the reader unsure which one applies.
fn inherited_policy(t: &Tier, out: &mut Vec<Diagnostic>) {
    let Some(target) = &t.same_policy_as else {
        return;
    };
    let set: [(&str, Option<Pos>); 3] = [
        ("internet", t.internet.as_ref().map(|i| i.pos)),
        (
            "inbound_roles",
            t.inbound_roles
                .as_ref()
                .map(|r| r.first().map_or(t.pos, |x| x.pos)),
        ),
        (
            "requires_approval",
            t.requires_approval.as_ref().map(|r| r.pos),
        ),
    ];
    for (field, pos) in set {
        if let Some(pos) = pos {
            out.push(Diagnostic::error(
                "same-policy",
                pos,
                format!(
                    "tier '{}' takes its policy from '{}' (same_policy_as) and must not set '{field}'",
                    t.name.v, target.v
                ),
            ));
        }
    }
}

/// Rule 2 from the service's side: `exposed: true` is a promise the tier must allow.
fn exposed_services(ix: &Index, out: &mut Vec<Diagnostic>) {
    for (i, s) in ix.topo.services.iter().enumerate() {
        let Some(exposed) = s.exposed.as_ref().filter(|e| e.v) else {
            continue;
        };
        let Some(tier) = ix.service_tier(i) else {
            continue;
        };
        let policy = ix.policy(tier);
        if policy.internet.allows_inbound() {
            continue;
        }
        let t = &ix.topo.tiers[tier];
        let owner = &ix.topo.tiers[policy.source];
        out.push(Diagnostic::error(
            "internet-in",
            exposed.pos,
            format!(
                "service '{}' is exposed, but its tier '{}' has internet '{}'; set 'internet: inbound' (or 'both') on tier '{}', or remove 'exposed'",
                s.name.v,
                t.name.v,
                describe::internet(policy.internet),
                owner.name.v
            ),
        ));
    }
}
