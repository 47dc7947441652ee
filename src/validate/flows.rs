//! Flow endpoints resolved once (unknown and ambiguous names are `reference` errors), so
//! the port and tier rules judge only what resolved; and the `expires` warning.

use crate::diag::Diagnostic;
use crate::topology::{Endpoint, Flow, Index, Sp, INTERNET};
use chrono::NaiveDate;

/// One `from`/`to` element that named something.
pub struct End<'t> {
    pub ep: Endpoint,
    pub name: &'t Sp<String>,
}

/// A flow with the endpoints that resolved.
pub struct Resolved<'t> {
    pub flow: &'t Flow,
    pub from: Vec<End<'t>>,
    pub to: Vec<End<'t>>,
}

pub fn resolve<'t>(
    ix: &Index<'t>,
    today: NaiveDate,
    out: &mut Vec<Diagnostic>,
) -> Vec<Resolved<'t>> {
    ix.topo
        .flows
        .iter()
        .map(|flow| {
            if let Some(expires) = &flow.expires {
                // A flow is valid through its `expires` day.
                if expires.v < today {
                    out.push(Diagnostic::warning(
                        "expired",
                        expires.pos,
                        format!(
                            "flow '{}' expired on {} and is not compiled",
                            flow.name.v, expires.v
                        ),
                    ));
                }
            }
            Resolved {
                flow,
                from: ends(ix, flow, "from", &flow.from, out),
                to: ends(ix, flow, "to", &flow.to, out),
            }
        })
        .collect()
}

fn ends<'t>(
    ix: &Index<'t>,
    flow: &Flow,
    key: &str,
    names: &'t [Sp<String>],
    out: &mut Vec<Diagnostic>,
) -> Vec<End<'t>> {
    if names.is_empty() {
        out.push(Diagnostic::error(
            "reference",
            flow.pos,
            format!(
                "flow '{}' has an empty '{key}' list; name a tier, segment, service or 'internet'",
                flow.name.v
            ),
        ));
    }
    let mut resolved = Vec::with_capacity(names.len());
    for name in names {
        match ix.endpoint(&name.v) {
            Ok(ep) => resolved.push(End { ep, name }),
            Err(why) => {
                // A name that exists yet failed to resolve names more than one thing.
                let exists = name.v == INTERNET
                    || ix.tiers.contains_key(name.v.as_str())
                    || ix.segments.contains_key(name.v.as_str())
                    || ix.services.contains_key(name.v.as_str());
                let fix = if exists {
                    "rename one of them"
                } else {
                    "fix the name or define it"
                };
                out.push(Diagnostic::error(
                    "reference",
                    name.pos,
                    format!("flow '{}': {why}; {fix}", flow.name.v),
                ));
            }
        }
    }
    resolved
}
