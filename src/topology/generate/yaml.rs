//! A [`Plan`] as topology YAML text, so generated topologies go through the real parser.

use super::{Plan, SEGMENT_VLAN, TIERS, TRANSIT_VLAN};
use crate::topology::index::Endpoint;
use std::fmt::Write;

impl Plan {
    /// The topology as YAML text.
    pub fn to_yaml(&self) -> String {
        let mut y = String::with_capacity(
            256 * (self.segments.len() + self.services.len() + self.flows.len()),
        );
        self.write_head(&mut y);
        self.write_network(&mut y);
        self.write_services(&mut y);
        self.write_flows(&mut y);
        y
    }

    fn write_head(&self, y: &mut String) {
        let _ = writeln!(y, "version: 1\nname: {}\n\ntiers:", self.name);
        y.push_str(
            "  - name: buffer\n    level: 1\n    internet: inbound\n\
             \x20 - name: office\n    level: 2\n    internet: outbound\n\
             \x20 - name: research\n    level: 3\n    inbound_roles: [thin-client, transfer]\n    requires_approval: true\n\
             \x20 - name: hospital\n    level: 4\n    same_policy_as: research\n    availability: critical\n",
        );
        y.push_str("\ngateways:\n");
        for (g, name) in self.gateways.iter().enumerate() {
            let _ = writeln!(y, "  - name: {name}\n    trunk: eth1");
            if g == self.uplink {
                let (addrs, hops) = if self.dual_stack {
                    (
                        "[198.51.100.2/30, \"2001:db8:100::2/64\"]",
                        "[198.51.100.1, \"2001:db8:100::1\"]",
                    )
                } else {
                    ("[198.51.100.2/30]", "[198.51.100.1]")
                };
                let _ = writeln!(y, "    uplink:\n      interface: eth0\n      addresses: {addrs}\n      next_hops: {hops}");
            }
        }
    }

    fn write_network(&self, y: &mut String) {
        if self.gateways.len() > 1 {
            y.push_str("\ntransit:\n");
            for t in 0..self.gateways.len() - 1 {
                let v4 = format!("10.255.{}.{}/30", t / 64, (t % 64) * 4);
                let subnets = if self.dual_stack {
                    format!("[{v4}, \"fd00:ffff:{t:x}::/64\"]")
                } else {
                    format!("[{v4}]")
                };
                let _ = writeln!(
                    y,
                    "  - name: tr{t}\n    vlan: {}\n    subnets: {subnets}\n    gateways: [gw{t}, gw{}]",
                    TRANSIT_VLAN + t,
                    t + 1
                );
            }
        }
        y.push_str("\nsegments:\n");
        let mut vlans = vec![SEGMENT_VLAN; self.gateways.len()];
        for s in &self.segments {
            let vlan = vlans[s.gateway];
            vlans[s.gateway] += 1;
            assert!(
                vlan < TRANSIT_VLAN,
                "too many segments on gateway {}",
                s.gateway
            );
            let _ = writeln!(
                y,
                "  - name: {}\n    tier: {}\n    vlan: {vlan}\n    subnets: {}\n    gateway: {}",
                s.name,
                TIERS[s.tier],
                quoted_list(&s.subnets),
                self.gateways[s.gateway]
            );
        }
    }

    fn write_services(&self, y: &mut String) {
        y.push_str("\nservices:\n");
        for v in &self.services {
            let ports: Vec<String> = v.ports.iter().map(|p| p.to_string()).collect();
            let _ = writeln!(
                y,
                "  - name: {}\n    segment: {}\n    addresses: {}\n    ports: [{}]",
                v.name,
                self.segments[v.segment].name,
                quoted_list(&v.addresses),
                ports.join(", ")
            );
            if let Some(role) = v.role {
                let _ = writeln!(y, "    role: {role}");
            }
            if v.exposed {
                y.push_str("    exposed: true\n");
            }
        }
    }

    fn write_flows(&self, y: &mut String) {
        y.push_str("\nflows:\n");
        for f in &self.flows {
            let _ = writeln!(
                y,
                "  - name: {}\n    from: [{}]\n    to: [{}]",
                f.name,
                self.names(&f.from),
                self.names(&f.to)
            );
            if let Some(ports) = &f.ports {
                let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
                let _ = writeln!(y, "    ports: [{}]", ports.join(", "));
            }
            if let Some(a) = &f.approval {
                let _ = writeln!(y, "    approval: {a}");
            }
            if let Some(d) = f.expires {
                let _ = writeln!(y, "    expires: {d}");
            }
        }
    }

    pub fn endpoint_name(&self, e: Endpoint) -> &str {
        match e {
            Endpoint::Internet => crate::topology::INTERNET,
            Endpoint::Tier(t) => TIERS[t],
            Endpoint::Segment(s) => &self.segments[s].name,
            Endpoint::Service(v) => &self.services[v].name,
        }
    }

    fn names(&self, es: &[Endpoint]) -> String {
        es.iter()
            .map(|e| self.endpoint_name(*e))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Quoted, so IPv6 colons never confuse a YAML reader.
fn quoted_list<T: std::fmt::Display>(items: &[T]) -> String {
    let q: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", q.join(", "))
}
