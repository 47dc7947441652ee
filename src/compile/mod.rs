//! Topology → each gateway's exact desired state. Pure: no I/O, deterministic output.

pub mod firewall;
pub mod flows;
pub mod network;
pub mod ranges;

use crate::diag::{self, Diagnostic};
use crate::nftables::ir::Table;
use crate::topology::{Index, Topology};
use chrono::NaiveDate;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// tiernet's own route protocol number (`proto 201` in `ip route`): tiernet only ever
/// touches routes carrying it.
pub const ROUTE_PROTOCOL: u8 = 201;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum LinkKind {
    /// An 802.1Q interface tiernet creates on the trunk.
    Vlan { parent: String, id: u16 },
    /// An existing port tiernet only addresses and brings up.
    Port,
}

/// What a link connects to; used for anti-spoofing and for explaining decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Zone {
    Segment { segment: String, tier: String },
    Transit { transit: String, peer: String },
    Uplink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub name: String,
    pub kind: LinkKind,
    /// Interface addresses with the subnet's prefix length.
    pub addresses: Vec<IpNet>,
    pub zone: Zone,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Route {
    pub destination: IpNet,
    pub via: IpAddr,
    pub dev: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sysctl {
    /// Path under /proc/sys, `/`-separated (interface names may contain dots).
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayState {
    pub gateway: String,
    pub links: Vec<Link>,
    pub routes: Vec<Route>,
    pub sysctls: Vec<Sysctl>,
    pub table: Table,
}

impl GatewayState {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Compiled {
    pub topology: String,
    pub gateways: Vec<GatewayState>,
    /// Warnings of validation (expired flows and the like).
    #[serde(skip)]
    pub warnings: Vec<Diagnostic>,
}

impl Compiled {
    pub fn gateway(&self, name: &str) -> Option<&GatewayState> {
        self.gateways.iter().find(|g| g.gateway == name)
    }
}

/// Validates and compiles. Any validation error stops compilation: a topology that
/// breaks a tier rule never reaches a gateway.
pub fn compile(topo: &Topology, today: NaiveDate) -> Result<Compiled, Vec<Diagnostic>> {
    let mut diags = crate::validate::validate(topo, today);
    diag::sort(&mut diags);
    if diag::has_errors(&diags) {
        return Err(diags);
    }
    Ok(compile_validated(topo, today, diags))
}

/// Compiles a topology the caller has already validated for `today` without errors
/// (`warnings` are what that validation found), so large files are not validated twice.
pub fn compile_validated(topo: &Topology, today: NaiveDate, warnings: Vec<Diagnostic>) -> Compiled {
    let index = Index::new(topo);
    let net = network::Network::new(&index);
    let flows = flows::expand(&index, &net, today);
    let gateways = (0..topo.gateways.len())
        .map(|g| {
            let (links, routes, sysctls) = net.gateway_state(g);
            let table = firewall::table(&index, &net, &flows, g, &links, &routes);
            GatewayState {
                gateway: topo.gateways[g].name.v.clone(),
                links,
                routes,
                sysctls,
                table,
            }
        })
        .collect();
    Compiled {
        topology: topo.name.as_ref().map(|n| n.v.clone()).unwrap_or_default(),
        gateways,
        warnings,
    }
}
