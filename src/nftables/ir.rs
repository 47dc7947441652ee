//! The nftables table tiernet owns, as plain data. The compiler builds it; the text
//! renderer, the reach evaluator and the netlink encoder all read this one vocabulary.

use crate::compile::ranges::AddrRange;
use serde::{Deserialize, Serialize};

pub const TABLE_NAME: &str = "tiernet";
/// NFLOG group that audited flows log their new connections to.
pub const AUDIT_NFLOG_GROUP: u16 = 2711;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub name: String,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

/// A field of the packet, as used in matches and set keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Iifname,
    Oifname,
    Saddr4,
    Daddr4,
    Saddr6,
    Daddr6,
    L4Proto,
    /// Transport destination port (tcp/udp).
    Dport,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Ifname(String),
    Addr(AddrRange),
    Proto(u8),
    Ports(u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    pub name: String,
    pub key: Vec<Field>,
    /// For verdict maps, each element carries a verdict.
    pub is_map: bool,
    pub elements: Vec<Element>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Element {
    /// One value per key field; every set is an interval set, a point is a one-wide range.
    pub key: Vec<Value>,
    pub verdict: Option<Verdict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    Forward,
    Input,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseChain {
    pub hook: Hook,
    pub priority: i32,
    pub policy_drop: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    Invalid,
    Established,
    Related,
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IcmpKind {
    EchoRequest,
    NeighborSolicit,
    NeighborAdvert,
    RouterSolicit,
    RouterAdvert,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    CtState(Vec<CtState>),
    Iifname(String),
    /// The packet's transport protocol is one of these.
    L4Proto(Vec<u8>),
    /// ICMP (v4) or ICMPv6 message types.
    Icmp {
        v6: bool,
        types: Vec<IcmpKind>,
    },
    /// Set membership of a (possibly concatenated) key.
    Lookup {
        key: Vec<Field>,
        set: String,
        negate: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Drop,
    Jump(String),
    /// Looks `key` up in a verdict map; no verdict when the key is absent.
    Vmap {
        key: Vec<Field>,
        map: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    pub prefix: String,
    pub group: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub counter: bool,
    pub log: Option<Log>,
    /// None: the rule only counts (or logs) and evaluation goes on.
    pub verdict: Option<Verdict>,
    pub comment: Option<String>,
}

impl Rule {
    pub fn new(matches: Vec<Match>, verdict: Option<Verdict>) -> Self {
        Rule {
            matches,
            counter: false,
            log: None,
            verdict,
            comment: None,
        }
    }

    pub fn counted(mut self) -> Self {
        self.counter = true;
        self
    }

    pub fn comment(mut self, text: impl Into<String>) -> Self {
        self.comment = Some(text.into());
        self
    }
}

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// Total set/map elements: the size that drives load time.
    pub fn element_count(&self) -> usize {
        self.sets.iter().map(|s| s.elements.len()).sum()
    }
}
