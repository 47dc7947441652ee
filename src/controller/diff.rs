//! What differs between two topologies and between two compiled gateway states, as
//! lines an administrator reads (`tiernet plan`, `tiernet diff`, the audit log).

use crate::compile::GatewayState;
use similar::{ChangeTag, TextDiff};

/// Unified diff of two texts (empty when equal).
pub fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

/// One line per object of a gateway state, so that a line diff is an object diff.
fn lines(state: &GatewayState) -> Vec<String> {
    let mut out = Vec::new();
    for l in &state.links {
        let addrs: Vec<String> = l.addresses.iter().map(|a| a.to_string()).collect();
        let kind = match &l.kind {
            crate::compile::LinkKind::Vlan { parent, id } => format!("vlan {id} on {parent}"),
            crate::compile::LinkKind::Port => "port".into(),
        };
        out.push(format!("link {} ({kind}) {}", l.name, addrs.join(" ")));
    }
    for r in &state.routes {
        out.push(format!(
            "route {} via {} dev {}",
            r.destination, r.via, r.dev
        ));
    }
    for s in &state.sysctls {
        out.push(format!("sysctl {} = {}", s.key.replace('/', "."), s.value));
    }
    for l in crate::nftables::text::render_table(&state.table).lines() {
        let l = l.trim();
        if !l.is_empty() && l != "}" {
            out.push(format!("nft {l}"));
        }
    }
    out
}

/// `+ line` / `- line` for what `new` adds to or removes from `old` (a gateway absent on
/// one side is all additions or all removals).
pub fn gateway_changes(old: Option<&GatewayState>, new: Option<&GatewayState>) -> Vec<String> {
    let a = old.map(lines).unwrap_or_default().join("\n");
    let b = new.map(lines).unwrap_or_default().join("\n");
    let a = if a.is_empty() { a } else { a + "\n" };
    let b = if b.is_empty() { b } else { b + "\n" };
    TextDiff::from_lines(&a, &b)
        .iter_all_changes()
        .filter_map(|c| match c.tag() {
            ChangeTag::Delete => Some(format!("- {}", c.value().trim_end())),
            ChangeTag::Insert => Some(format!("+ {}", c.value().trim_end())),
            ChangeTag::Equal => None,
        })
        .collect()
}

/// Every gateway named on either side, in order, with its changes.
pub fn per_gateway<'a>(
    old: &'a [GatewayState],
    new: &'a [GatewayState],
) -> Vec<(String, Vec<String>)> {
    let mut names: Vec<String> = new.iter().map(|g| g.gateway.clone()).collect();
    for g in old {
        if !names.contains(&g.gateway) {
            names.push(g.gateway.clone());
        }
    }
    names
        .into_iter()
        .map(|n| {
            let o = old.iter().find(|g| g.gateway == n);
            let w = new.iter().find(|g| g.gateway == n);
            let changes = gateway_changes(o, w);
            (n, changes)
        })
        .collect()
}
