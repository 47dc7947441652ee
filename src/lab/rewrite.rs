//! Without 802.1Q in the kernel the lab cannot create VLAN interfaces, so it rewrites the
//! topology: every segment and transit link on a `vlan:` gets an untagged `interface:`
//! instead (`seg<vid>`, `tr<vid>`). The rewrite edits the YAML text in place, so comments
//! and every other field stay exactly as the administrator wrote them.

use crate::diag::Pos;
use crate::topology::Topology;
use anyhow::{bail, Result};

/// One `vlan: N` turned into `interface: NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untagged {
    /// `segment dmz` or `transit core-his`.
    pub what: String,
    pub vlan: u32,
    pub interface: String,
}

pub fn segment_port(vid: u32) -> String {
    format!("seg{vid}")
}

pub fn transit_port(vid: u32) -> String {
    format!("tr{vid}")
}

/// The topology text with every VLAN-tagged segment and transit link made untagged.
pub fn untag(text: &str, topo: &Topology) -> Result<(String, Vec<Untagged>)> {
    let mut edits: Vec<(Pos, Untagged)> = Vec::new();
    for seg in &topo.segments {
        // With `interface:` present the VLAN is unused already (the port wins).
        if let (Some(vlan), None) = (&seg.vlan, &seg.interface) {
            let u = Untagged {
                what: format!("segment {}", seg.name.v),
                vlan: vlan.v,
                interface: segment_port(vlan.v),
            };
            edits.push((vlan.pos, u));
        }
    }
    for link in &topo.transit {
        if let (Some(vlan), None) = (&link.vlan, &link.interface) {
            let u = Untagged {
                what: format!("transit {}", link.name.v),
                vlan: vlan.v,
                interface: transit_port(vlan.v),
            };
            edits.push((vlan.pos, u));
        }
    }
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    // Right to left within a line, so earlier columns stay valid.
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (pos, u) in &edits {
        let Some(line) = (pos.line as usize)
            .checked_sub(1)
            .and_then(|i| lines.get_mut(i))
        else {
            bail!(
                "{}: line {} of the vlan is outside the file",
                u.what,
                pos.line
            );
        };
        *line = replace_vlan(line, pos.col, &u.interface).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: cannot find `vlan: {}` at {pos} to rewrite",
                u.what,
                u.vlan
            )
        })?;
    }
    // Report in file order.
    edits.reverse();
    Ok((
        lines.join("\n"),
        edits.into_iter().map(|(_, u)| u).collect(),
    ))
}

/// Replaces `vlan: <value>` whose value starts at 1-based character column `col` with
/// `interface: <port>`.
fn replace_vlan(line: &str, col: u32, port: &str) -> Option<String> {
    let chars: Vec<char> = line.chars().collect();
    let start = (col as usize).checked_sub(1)?;
    let end = start
        + chars
            .get(start..)?
            .iter()
            .take_while(|c| !matches!(c, ',' | '}' | ' ' | '\t' | '#'))
            .count();
    if end == start {
        return None;
    }
    let before: String = chars[..start].iter().collect();
    let key = before.trim_end().strip_suffix(':')?.trim_end();
    let key = key
        .strip_suffix("vlan")
        .or_else(|| key.strip_suffix("\"vlan\""))
        .or_else(|| key.strip_suffix("'vlan'"))?;
    let rest: String = chars[end..].iter().collect();
    Some(format!("{key}interface: {port}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_and_flow_style() {
        assert_eq!(
            replace_vlan("    vlan: 110   # dmz", 11, "seg110").as_deref(),
            Some("    interface: seg110   # dmz")
        );
        assert_eq!(
            replace_vlan("  - {name: a, vlan: 900, subnet: x}", 21, "tr900").as_deref(),
            Some("  - {name: a, interface: tr900, subnet: x}")
        );
        assert_eq!(
            replace_vlan("    vlan: \"110\"", 11, "seg110").as_deref(),
            Some("    interface: seg110")
        );
        assert_eq!(replace_vlan("    name: 110", 11, "seg110"), None);
    }

    #[test]
    fn reference_topology_loses_every_vlan() {
        let text = include_str!("../../topologies/clinical-research.yaml");
        let (topo, _) = crate::topology::parse(text);
        let topo = topo.expect("reference parses");
        let (out, done) = untag(text, &topo).expect("rewrite");
        assert_eq!(
            done.len(),
            6,
            "five VLAN segments and one transit: {done:?}"
        );
        let (again, diags) = crate::topology::parse(&out);
        let again = again.expect("rewritten parses");
        assert!(diags.is_empty(), "{diags:?}");
        assert!(again
            .segments
            .iter()
            .all(|s| s.vlan.is_none() && s.interface.is_some()));
        assert!(again.transit.iter().all(|t| t.vlan.is_none()));
        let dmz = again
            .segments
            .iter()
            .find(|s| s.name.v == "dmz")
            .expect("dmz");
        assert_eq!(dmz.interface.as_ref().map(|i| i.v.as_str()), Some("seg110"));
        let biobank = again
            .segments
            .iter()
            .find(|s| s.name.v == "biobank")
            .expect("biobank");
        assert_eq!(
            biobank.interface.as_ref().map(|i| i.v.as_str()),
            Some("eth3")
        );
    }
}
