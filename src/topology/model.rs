//! The topology file as written (format version 1), every node with its source position.
//! References are still names here; `validate` resolves them.

use crate::diag::Pos;
use chrono::NaiveDate;
use ipnet::IpNet;
use std::net::IpAddr;

/// A value together with the position of the YAML node it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sp<T> {
    pub v: T,
    pub pos: Pos,
}

impl<T> Sp<T> {
    pub fn new(v: T, pos: Pos) -> Self {
        Sp { v, pos }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub pos: Pos,
    pub version: Option<Sp<u32>>,
    pub name: Option<Sp<String>>,
    pub description: Option<String>,
    pub tiers: Vec<Tier>,
    pub gateways: Vec<Gateway>,
    pub transit: Vec<Transit>,
    pub segments: Vec<Segment>,
    pub services: Vec<Service>,
    pub flows: Vec<Flow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Internet {
    None,
    Inbound,
    Outbound,
    Both,
}

impl Internet {
    pub fn allows_inbound(self) -> bool {
        matches!(self, Internet::Inbound | Internet::Both)
    }
    pub fn allows_outbound(self) -> bool {
        matches!(self, Internet::Outbound | Internet::Both)
    }
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub pos: Pos,
    pub name: Sp<String>,
    pub level: Sp<u32>,
    pub description: Option<String>,
    pub internet: Option<Sp<Internet>>,
    pub inbound_roles: Option<Vec<Sp<String>>>,
    pub requires_approval: Option<Sp<bool>>,
    pub same_policy_as: Option<Sp<String>>,
    pub availability: Option<Sp<String>>,
}

#[derive(Debug, Clone)]
pub struct Uplink {
    pub pos: Pos,
    pub interface: Sp<String>,
    /// Interface addresses with their prefix length (`198.51.100.2/30`).
    pub addresses: Vec<Sp<IpNet>>,
    pub next_hops: Vec<Sp<IpAddr>>,
}

#[derive(Debug, Clone)]
pub struct Gateway {
    pub pos: Pos,
    pub name: Sp<String>,
    pub trunk: Option<Sp<String>>,
    pub uplink: Option<Uplink>,
}

#[derive(Debug, Clone)]
pub struct Transit {
    pub pos: Pos,
    pub name: Sp<String>,
    pub vlan: Option<Sp<u32>>,
    pub interface: Option<Sp<String>>,
    pub subnets: Vec<Sp<IpNet>>,
    pub gateways: Vec<Sp<String>>,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub pos: Pos,
    pub name: Sp<String>,
    pub tier: Sp<String>,
    pub description: Option<String>,
    pub vlan: Option<Sp<u32>>,
    pub interface: Option<Sp<String>>,
    pub subnets: Vec<Sp<IpNet>>,
    pub gateway: Sp<String>,
    pub router_addresses: Vec<Sp<IpAddr>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// `tcp/443`, `udp/3389`, `tcp/8000-8010` or `icmp` (echo, v4 and v6; ports 0-0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct PortSpec {
    pub proto: Proto,
    pub lo: u16,
    pub hi: u16,
}

impl PortSpec {
    pub fn icmp() -> Self {
        PortSpec {
            proto: Proto::Icmp,
            lo: 0,
            hi: 0,
        }
    }

    /// Whether `other` lies entirely within `self`.
    pub fn contains(&self, other: &PortSpec) -> bool {
        self.proto == other.proto && self.lo <= other.lo && other.hi <= self.hi
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.proto {
            Proto::Icmp => write!(f, "icmp"),
            p if self.lo == self.hi => write!(f, "{}/{}", p.name(), self.lo),
            p => write!(f, "{}/{}-{}", p.name(), self.lo, self.hi),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub pos: Pos,
    pub name: Sp<String>,
    pub segment: Sp<String>,
    pub description: Option<String>,
    /// Host addresses are stored as full-length prefixes.
    pub addresses: Vec<Sp<IpNet>>,
    pub ports: Vec<Sp<PortSpec>>,
    pub exposed: Option<Sp<bool>>,
    pub role: Option<Sp<String>>,
}

impl Service {
    pub fn is_exposed(&self) -> bool {
        self.exposed.as_ref().is_some_and(|e| e.v)
    }
    pub fn role(&self) -> Option<&str> {
        self.role.as_ref().map(|r| r.v.as_str())
    }
}

/// The role that marks an audited transfer point.
pub const TRANSFER_ROLE: &str = "transfer";
/// The endpoint name that stands for everything beyond the uplinks.
pub const INTERNET: &str = "internet";

#[derive(Debug, Clone)]
pub struct Flow {
    pub pos: Pos,
    pub name: Sp<String>,
    pub description: Option<String>,
    pub from: Vec<Sp<String>>,
    pub to: Vec<Sp<String>>,
    pub ports: Option<Vec<Sp<PortSpec>>>,
    pub approval: Option<Sp<String>>,
    pub expires: Option<Sp<NaiveDate>>,
}
