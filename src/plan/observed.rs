//! What the kernel actually holds, in the terms the planner compares against.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ObservedKind {
    Vlan {
        parent: String,
        id: u16,
    },
    Bridge,
    /// Any other kind (veth, physical device, ...), by its kernel kind name if it has one.
    Other {
        kind: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedLink {
    pub name: String,
    pub index: u32,
    pub kind: ObservedKind,
    pub up: bool,
    /// The bridge (or bond) this link is enslaved to.
    pub master: Option<String>,
    pub addresses: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObservedRoute {
    pub destination: IpNet,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    pub protocol: u8,
}

/// A base chain of another table on a hook tiernet filters: it can only drop more, since
/// a packet must be accepted by every base chain, but an admin should know about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignChain {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub hook: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedNft {
    /// Canonical form of our table as the kernel holds it; None when it is absent.
    pub table: Option<Vec<String>>,
    pub foreign_chains: Vec<ForeignChain>,
    /// The table should be owned by the agent's socket but is not (left over from an
    /// agent that stopped): replacing it takes it back.
    #[serde(default)]
    pub unowned: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub links: Vec<ObservedLink>,
    /// Routes of the main table (all protocols; the planner picks what concerns it).
    pub routes: Vec<ObservedRoute>,
    /// Values of the sysctls the desired state names; None where the key does not exist.
    pub sysctls: Vec<(String, Option<String>)>,
    pub nft: ObservedNft,
}

impl Observed {
    pub fn link(&self, name: &str) -> Option<&ObservedLink> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// Kernel route protocol numbers the planner distinguishes.
pub const PROTO_KERNEL: u8 = 2;
