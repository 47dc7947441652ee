//! Ports (rule 7): a service offers at least one port, and a flow's `ports` only narrow
//! what its destination services offer (icmp aside, which every service answers).

use super::flows::Resolved;
use crate::diag::Diagnostic;
use crate::topology::{Endpoint, Index, Proto};

pub fn check(ix: &Index, flows: &[Resolved], out: &mut Vec<Diagnostic>) {
    for s in &ix.topo.services {
        if s.ports.is_empty() {
            out.push(Diagnostic::error(
                "ports",
                s.pos,
                format!(
                    "service '{}' lists no ports; list what it serves, e.g. [tcp/443]",
                    s.name.v
                ),
            ));
        }
    }
    for f in flows {
        let Some(ports) = &f.flow.ports else {
            continue;
        };
        if ports.is_empty() {
            out.push(Diagnostic::error(
                "ports",
                f.flow.pos,
                format!(
                    "flow '{}' lists no ports; list some, or drop 'ports' to allow all of the destination's",
                    f.flow.name.v
                ),
            ));
        }
        for to in &f.to {
            // Segments, tiers and the internet have no port list to stay within.
            let Endpoint::Service(s) = to.ep else {
                continue;
            };
            let svc = &ix.topo.services[s];
            for p in ports {
                if p.v.proto == Proto::Icmp || svc.ports.iter().any(|sp| sp.v.contains(&p.v)) {
                    continue;
                }
                let offered: Vec<String> = svc.ports.iter().map(|sp| sp.v.to_string()).collect();
                out.push(Diagnostic::error(
                    "ports",
                    p.pos,
                    format!(
                        "flow '{}' allows {}, which service '{}' does not offer (it offers {}); a flow's ports must be a subset of its service's",
                        f.flow.name.v,
                        p.v,
                        svc.name.v,
                        offered.join(", ")
                    ),
                ));
            }
        }
    }
}
