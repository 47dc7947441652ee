//! Rule 7: names are unique per kind. The index resolves a name to its first definition,
//! so a second one would silently be ignored by every reference to it.

use crate::diag::{Diagnostic, Pos};
use crate::topology::{Sp, Topology};
use std::collections::hash_map::{Entry, HashMap};

pub fn check(topo: &Topology, out: &mut Vec<Diagnostic>) {
    unique(out, "tier", topo.tiers.iter().map(|t| &t.name));
    unique(out, "gateway", topo.gateways.iter().map(|g| &g.name));
    unique(out, "transit link", topo.transit.iter().map(|t| &t.name));
    unique(out, "segment", topo.segments.iter().map(|s| &s.name));
    unique(out, "service", topo.services.iter().map(|s| &s.name));
    unique(out, "flow", topo.flows.iter().map(|f| &f.name));
}

fn unique<'t>(out: &mut Vec<Diagnostic>, kind: &str, names: impl Iterator<Item = &'t Sp<String>>) {
    let mut first: HashMap<&str, Pos> = HashMap::new();
    for name in names {
        match first.entry(name.v.as_str()) {
            Entry::Occupied(e) => out.push(Diagnostic::error(
                "duplicate-name",
                name.pos,
                format!(
                    "{kind} '{}' is defined twice (first at line {}); give each {kind} a unique name",
                    name.v,
                    e.get().line
                ),
            )),
            Entry::Vacant(e) => {
                e.insert(name.pos);
            }
        }
    }
}
