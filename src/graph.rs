//! `tiernet graph`: Graphviz DOT of tiers (clusters), segments, services and flows.

use crate::topology::{Endpoint, Index, Topology, TRANSFER_ROLE};
use std::fmt::Write;

fn id(kind: &str, name: &str) -> String {
    format!("\"{kind}:{}\"", name.replace('"', "'"))
}

fn endpoint_id(index: &Index, e: Endpoint) -> String {
    match e {
        Endpoint::Internet => id("internet", "internet"),
        Endpoint::Tier(t) => id("tier", &index.topo.tiers[t].name.v),
        Endpoint::Segment(s) => id("segment", &index.topo.segments[s].name.v),
        Endpoint::Service(s) => id("service", &index.topo.services[s].name.v),
    }
}

pub fn dot(topo: &Topology) -> String {
    let index = Index::new(topo);
    let mut out = String::new();
    let title = topo.name.as_ref().map_or("topology", |n| n.v.as_str());
    let _ = writeln!(out, "digraph {} {{", id("topology", title));
    let _ = writeln!(out, "  compound=true; rankdir=LR; node [fontname=\"Helvetica\"]; edge [fontname=\"Helvetica\"];");
    let _ = writeln!(
        out,
        "  {} [shape=cloud, label=\"internet\"];",
        id("internet", "internet")
    );
    let mut tiers: Vec<usize> = (0..topo.tiers.len()).collect();
    tiers.sort_by_key(|&t| topo.tiers[t].level.v);
    for t in tiers {
        let tier = &topo.tiers[t];
        let p = index.policy(t);
        let _ = writeln!(out, "  subgraph \"cluster_{}\" {{", tier.name.v);
        let _ = writeln!(
            out,
            "    label=\"tier {} (level {}, confidentiality {}, internet {:?})\"; style=rounded;",
            tier.name.v, tier.level.v, p.confidentiality, p.internet
        );
        let _ = writeln!(
            out,
            "    {} [shape=point, style=invis];",
            id("tier", &tier.name.v)
        );
        for s in index.endpoint_segments(Endpoint::Tier(t)) {
            let seg = &topo.segments[s];
            let nets: Vec<String> = seg.subnets.iter().map(|n| n.v.to_string()).collect();
            let vlan = seg
                .vlan
                .as_ref()
                .map(|v| format!(" vlan {}", v.v))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    {} [shape=box, label=\"{}\\n{}{}\\nvia {}\"];",
                id("segment", &seg.name.v),
                seg.name.v,
                nets.join(", "),
                vlan,
                seg.gateway.v
            );
            for (v, svc) in topo.services.iter().enumerate() {
                if index.service_segment(v) != Some(s) {
                    continue;
                }
                let ports: Vec<String> = svc.ports.iter().map(|p| p.v.to_string()).collect();
                let role = svc
                    .role()
                    .map(|r| format!("\\nrole {r}"))
                    .unwrap_or_default();
                let shape = if svc.role() == Some(TRANSFER_ROLE) {
                    "doubleoctagon"
                } else {
                    "ellipse"
                };
                let _ = writeln!(
                    out,
                    "    {} [shape={shape}, label=\"{}\\n{}{}\"];",
                    id("service", &svc.name.v),
                    svc.name.v,
                    ports.join(" "),
                    role
                );
                let _ = writeln!(
                    out,
                    "    {} -> {} [style=dotted, arrowhead=none];",
                    id("segment", &seg.name.v),
                    id("service", &svc.name.v)
                );
            }
        }
        let _ = writeln!(out, "  }}");
    }
    for flow in &topo.flows {
        let audited = flow.to.iter().any(|n| {
            matches!(index.endpoint(&n.v), Ok(Endpoint::Service(v)) if topo.services[v].role() == Some(TRANSFER_ROLE))
        });
        let mut label = flow.name.v.clone();
        if let Some(p) = &flow.ports {
            let ps: Vec<String> = p.iter().map(|x| x.v.to_string()).collect();
            let _ = write!(label, "\\n{}", ps.join(" "));
        }
        if let Some(a) = &flow.approval {
            let _ = write!(label, "\\napproval {}", a.v);
        }
        if let Some(e) = &flow.expires {
            let _ = write!(label, "\\nexpires {}", e.v);
        }
        if audited {
            label.push_str("\\n[audited]");
        }
        let style = match (audited, flow.approval.is_some()) {
            (_, true) => "color=red, penwidth=2, style=bold",
            (true, false) => "color=orange, penwidth=2",
            _ => "color=black",
        };
        for from in &flow.from {
            for to in &flow.to {
                let (Ok(a), Ok(b)) = (index.endpoint(&from.v), index.endpoint(&to.v)) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "  {} -> {} [label=\"{label}\", {style}];",
                    endpoint_id(&index, a),
                    endpoint_id(&index, b)
                );
            }
        }
    }
    out.push_str("}\n");
    out
}
