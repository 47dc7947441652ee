//! Desired vs observed: the exact changes that bring a gateway to its desired state.
//! Pure; the dataplane executes the plan.

pub mod observed;

use crate::compile::{GatewayState, LinkKind, Route};
use ipnet::IpNet;
use observed::*;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// The nftables table differs or is missing: replace it whole, in one transaction.
    ReplaceTable,
    CreateVlan {
        name: String,
        parent: String,
        id: u16,
    },
    /// A VLAN on a trunk that is not (or no longer) what the topology says.
    DeleteLink {
        name: String,
    },
    /// Take a managed link out of a bridge it was enslaved to.
    Detach {
        name: String,
        master: String,
    },
    SetUp {
        name: String,
    },
    AddAddress {
        link: String,
        address: IpNet,
    },
    DeleteAddress {
        link: String,
        address: IpNet,
    },
    AddRoute {
        route: Route,
    },
    DeleteRoute {
        route: ObservedRoute,
    },
    SetSysctl {
        key: String,
        value: String,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::ReplaceTable => write!(f, "replace nftables table inet tiernet"),
            Action::CreateVlan { name, parent, id } => {
                write!(f, "create vlan {name} (id {id} on {parent})")
            }
            Action::DeleteLink { name } => write!(f, "delete link {name}"),
            Action::Detach { name, master } => write!(f, "detach {name} from {master}"),
            Action::SetUp { name } => write!(f, "set {name} up"),
            Action::AddAddress { link, address } => write!(f, "add address {address} on {link}"),
            Action::DeleteAddress { link, address } => {
                write!(f, "delete address {address} from {link}")
            }
            Action::AddRoute { route } => write!(
                f,
                "add route {} via {} dev {}",
                route.destination, route.via, route.dev
            ),
            Action::DeleteRoute { route } => write!(
                f,
                "delete route {}{}{} (proto {})",
                route.destination,
                route.via.map(|v| format!(" via {v}")).unwrap_or_default(),
                route
                    .dev
                    .as_ref()
                    .map(|d| format!(" dev {d}"))
                    .unwrap_or_default(),
                route.protocol
            ),
            Action::SetSysctl { key, value } => {
                write!(f, "set sysctl {} = {value}", key.replace('/', "."))
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// In execution order: table first (nothing forwards unfiltered), forwarding last.
    pub actions: Vec<Action>,
    /// What cannot be fixed by tiernet (a missing trunk or port) or is only reported
    /// (another table hooked on forward/input).
    pub problems: Vec<String>,
    pub notices: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

fn link_local(a: &IpNet) -> bool {
    match a {
        IpNet::V6(n) => n.addr().segments()[0] & 0xffc0 == 0xfe80,
        IpNet::V4(_) => false,
    }
}

/// The desired table in the same canonical form the observer produces.
pub type TableCanon = Vec<String>;

pub fn plan(desired: &GatewayState, desired_table: &TableCanon, observed: &Observed) -> Plan {
    let mut p = Plan::default();
    if observed.nft.table.as_ref() != Some(desired_table) || observed.nft.unowned {
        p.actions.push(Action::ReplaceTable);
    }
    for fc in &observed.nft.foreign_chains {
        p.notices.push(format!(
            "table {} {} has chain {} on the {} hook; tiernet's drops still hold",
            fc.family, fc.table, fc.chain, fc.hook
        ));
    }
    let managed: Vec<&str> = desired.links.iter().map(|l| l.name.as_str()).collect();
    let trunks: Vec<&str> = desired
        .links
        .iter()
        .filter_map(|l| match &l.kind {
            LinkKind::Vlan { parent, .. } => Some(parent.as_str()),
            LinkKind::Port => None,
        })
        .collect();
    // VLANs on our trunks that the topology does not declare (or declares differently).
    for ol in &observed.links {
        if let ObservedKind::Vlan { parent, id } = &ol.kind {
            let wanted = desired.links.iter().any(|l| {
                l.name == ol.name
                    && l.kind
                        == LinkKind::Vlan {
                            parent: parent.clone(),
                            id: *id,
                        }
            });
            if trunks.contains(&parent.as_str()) && !wanted {
                p.actions.push(Action::DeleteLink {
                    name: ol.name.clone(),
                });
            }
        }
    }
    let mut addresses = Vec::new();
    for l in &desired.links {
        let ol = observed.link(&l.name);
        let present = match (&l.kind, ol) {
            (LinkKind::Vlan { parent, id }, ol) => {
                let same = ol.is_some_and(|o| {
                    o.kind
                        == ObservedKind::Vlan {
                            parent: parent.clone(),
                            id: *id,
                        }
                });
                if !same {
                    if observed.link(parent).is_none() {
                        p.problems
                            .push(format!("trunk {parent} for {} does not exist", l.name));
                        continue;
                    }
                    p.actions.push(Action::CreateVlan {
                        name: l.name.clone(),
                        parent: parent.clone(),
                        id: *id,
                    });
                }
                same
            }
            (LinkKind::Port, Some(_)) => true,
            (LinkKind::Port, None) => {
                p.problems.push(format!("port {} does not exist", l.name));
                continue;
            }
        };
        let current = if present { ol } else { None };
        if let Some(master) = current.and_then(|o| o.master.clone()) {
            p.actions.push(Action::Detach {
                name: l.name.clone(),
                master,
            });
        }
        if !current.is_some_and(|o| o.up) {
            p.actions.push(Action::SetUp {
                name: l.name.clone(),
            });
        }
        let have: Vec<IpNet> = current.map(|o| o.addresses.clone()).unwrap_or_default();
        for a in &have {
            if !link_local(a) && !l.addresses.contains(a) {
                addresses.push(Action::DeleteAddress {
                    link: l.name.clone(),
                    address: *a,
                });
            }
        }
        for a in &l.addresses {
            if !have.contains(a) {
                addresses.push(Action::AddAddress {
                    link: l.name.clone(),
                    address: *a,
                });
            }
        }
    }
    p.actions.extend(addresses);
    route_actions(desired, observed, &managed, &mut p);
    for s in &desired.sysctls {
        let current = observed
            .sysctls
            .iter()
            .find(|(k, _)| k == &s.key)
            .and_then(|(_, v)| v.as_deref());
        if current != Some(s.value.as_str()) {
            p.actions.push(Action::SetSysctl {
                key: s.key.clone(),
                value: s.value.clone(),
            });
        }
    }
    p
}

fn route_actions(desired: &GatewayState, observed: &Observed, managed: &[&str], p: &mut Plan) {
    let ours = crate::compile::ROUTE_PROTOCOL;
    let subnets: Vec<IpNet> = desired
        .links
        .iter()
        .flat_map(|l| l.addresses.iter().map(|a| a.trunc()))
        .collect();
    let matches = |o: &ObservedRoute, r: &Route| {
        o.protocol == ours
            && o.destination == r.destination
            && o.via == Some(r.via)
            && o.dev.as_deref() == Some(r.dev.as_str())
    };
    for o in &observed.routes {
        let stale_ours = o.protocol == ours && !desired.routes.iter().any(|r| matches(o, r));
        // A hand-made route through one of our links, or into one of our subnets (as
        // specific or more than the connected route), can steer traffic around the policy.
        let foreign = o.protocol != ours
            && o.protocol != PROTO_KERNEL
            && (o.dev.as_deref().is_some_and(|d| managed.contains(&d))
                || subnets.iter().any(|s| s.contains(&o.destination)));
        if stale_ours || foreign {
            p.actions.push(Action::DeleteRoute { route: o.clone() });
        }
    }
    for r in &desired.routes {
        if !observed.routes.iter().any(|o| matches(o, r)) {
            p.actions.push(Action::AddRoute { route: r.clone() });
        }
    }
}

#[cfg(test)]
mod tests;
