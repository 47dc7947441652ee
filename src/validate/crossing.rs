//! The tier rules for flows, judged per (from, to) pair by who opens the connection:
//! internet in (2), internet out (3), up (4), down (5) and approval (6).

use super::describe;
use super::flows::{End, Resolved};
use crate::diag::Diagnostic;
use crate::topology::{Endpoint, Index, TRANSFER_ROLE};

pub fn check(ix: &Index, flows: &[Resolved], out: &mut Vec<Diagnostic>) {
    for f in flows {
        for to in &f.to {
            for from in &f.from {
                pair(ix, f, from, to, out);
            }
        }
        approval(ix, f, out);
    }
}

fn pair(ix: &Index, f: &Resolved, from: &End, to: &End, out: &mut Vec<Diagnostic>) {
    let name = &f.flow.name.v;
    match (from.ep, to.ep) {
        (Endpoint::Internet, Endpoint::Internet) => out.push(Diagnostic::error(
            "internet-in",
            to.name.pos,
            format!("flow '{name}' leads from the internet to the internet; a flow must start or end inside the topology"),
        )),
        (Endpoint::Internet, dst) => internet_in(ix, name, dst, to, out),
        (src, Endpoint::Internet) => internet_out(ix, name, src, from, out),
        (src, dst) => {
            // A dangling tier reference is reported by `references`.
            let (Some(st), Some(dt)) = (ix.endpoint_tier(src), ix.endpoint_tier(dst)) else {
                return;
            };
            let (sc, dc) = (ix.policy(st).confidentiality, ix.policy(dt).confidentiality);
            if dc > sc {
                up(ix, name, (src, st), (dst, dt), to, out);
            } else if dc < sc {
                down(ix, name, (src, st), (dst, dt), to, out);
            }
        }
    }
}

/// Rule 2: the internet reaches only exposed services. A service exposed in a tier that
/// does not let the internet in is reported on the service itself (see `tiers`).
fn internet_in(ix: &Index, name: &str, dst: Endpoint, to: &End, out: &mut Vec<Diagnostic>) {
    let why = match dst {
        Endpoint::Service(s) if ix.topo.services[s].is_exposed() => return,
        Endpoint::Service(_) => "which is not exposed; only services with 'exposed: true' (in a tier with internet 'inbound' or 'both') may be reached from the internet",
        _ => "but the internet may reach only services with 'exposed: true', never a whole segment or tier",
    };
    out.push(Diagnostic::error(
        "internet-in",
        to.name.pos,
        format!(
            "flow '{name}' lets the internet reach {}, {why}",
            describe::endpoint(ix, dst)
        ),
    ));
}

/// Rule 3: only tiers with internet `outbound` or `both` open connections to the internet.
fn internet_out(ix: &Index, name: &str, src: Endpoint, from: &End, out: &mut Vec<Diagnostic>) {
    let Some(st) = ix.endpoint_tier(src) else {
        return;
    };
    let policy = ix.policy(st);
    if policy.internet.allows_outbound() {
        return;
    }
    let tier = &ix.topo.tiers[st].name.v;
    out.push(Diagnostic::error(
        "internet-out",
        from.name.pos,
        format!(
            "flow '{name}' lets {} reach the internet, but tier '{tier}' has internet '{}'; only tiers with internet 'outbound' or 'both' may open connections to the internet",
            describe::placed(ix, src, st),
            describe::internet(policy.internet)
        ),
    ));
}

/// Rule 4: up ends at a service, with one of the destination tier's inbound roles.
fn up(
    ix: &Index,
    name: &str,
    (src, st): (Endpoint, usize),
    (dst, dt): (Endpoint, usize),
    to: &End,
    out: &mut Vec<Diagnostic>,
) {
    let policy = ix.policy(dt);
    let roles = policy.inbound_roles.as_deref();
    let allowed = match dst {
        Endpoint::Service(s) => {
            let role = ix.topo.services[s].role();
            roles.is_none_or(|roles| role.is_some_and(|r| roles.iter().any(|x| x == r)))
        }
        _ => false,
    };
    if allowed {
        return;
    }
    let must = match roles {
        None => "a flow up must end at a service".to_string(),
        Some([]) => format!(
            "a flow up must end at a service with a role from the tier's inbound_roles, and tier '{}' lists none",
            ix.topo.tiers[policy.source].name.v
        ),
        Some(roles) => format!(
            "a flow up must end at a service with role {}",
            describe::or_list(roles)
        ),
    };
    out.push(Diagnostic::error(
        "up",
        to.name.pos,
        format!(
            "flow '{name}' lets {} reach {}; {must}",
            describe::placed(ix, src, st),
            describe::placed(ix, dst, dt)
        ),
    ));
}

/// Rule 5: down ends at an audited transfer service.
fn down(
    ix: &Index,
    name: &str,
    (src, st): (Endpoint, usize),
    (dst, dt): (Endpoint, usize),
    to: &End,
    out: &mut Vec<Diagnostic>,
) {
    if let Endpoint::Service(s) = dst {
        if ix.topo.services[s].role() == Some(TRANSFER_ROLE) {
            return;
        }
    }
    out.push(Diagnostic::error(
        "down",
        to.name.pos,
        format!(
            "flow '{name}' lets {} reach {}; a flow down must end at a service with role {TRANSFER_ROLE}",
            describe::placed(ix, src, st),
            describe::placed(ix, dst, dt)
        ),
    ));
}

/// Rule 6: a transfer between confidentialities, where either tier requires approval,
/// carries the approval reference. Reported once per transfer service of the flow.
fn approval(ix: &Index, f: &Resolved, out: &mut Vec<Diagnostic>) {
    if f.flow
        .approval
        .as_ref()
        .is_some_and(|a| !a.v.trim().is_empty())
    {
        return;
    }
    for to in &f.to {
        let Endpoint::Service(s) = to.ep else {
            continue;
        };
        if ix.topo.services[s].role() != Some(TRANSFER_ROLE) {
            continue;
        }
        let Some(dt) = ix.service_tier(s) else {
            continue;
        };
        let dp = ix.policy(dt);
        // The internet has no tier; its flows are judged by rule 2 alone.
        let needing = f.from.iter().find_map(|from| {
            let st = ix.endpoint_tier(from.ep)?;
            let sp = ix.policy(st);
            let approver = if dp.requires_approval {
                dt
            } else if sp.requires_approval {
                st
            } else {
                return None;
            };
            (sp.confidentiality != dp.confidentiality).then_some((from.ep, st, approver))
        });
        if let Some((src, st, approver)) = needing {
            out.push(Diagnostic::error(
                "approval",
                to.name.pos,
                format!(
                    "flow '{}' is a cross-tier transfer from {} to {}, and tier '{}' requires approval; add 'approval:' with the ethics review or application reference",
                    f.flow.name.v,
                    describe::placed(ix, src, st),
                    describe::placed(ix, to.ep, dt),
                    ix.topo.tiers[approver].name.v
                ),
            ));
        }
    }
}
