//! How messages name things, so every rule words them the same way.

use crate::topology::{Endpoint, Index, Internet};

/// `tier 'office'`, `segment 'dmz'`, `service 'edc'` or `the internet`.
pub fn endpoint(ix: &Index, e: Endpoint) -> String {
    match e {
        Endpoint::Internet => "the internet".to_string(),
        Endpoint::Tier(_) => format!("tier '{}'", ix.endpoint_name(e)),
        Endpoint::Segment(_) => format!("segment '{}'", ix.endpoint_name(e)),
        Endpoint::Service(_) => format!("service '{}'", ix.endpoint_name(e)),
    }
}

/// An endpoint with the tier it lies in and that tier's effective confidentiality:
/// `tier 'office' (level 2)`, `segment 'vdi' in tier 'research' (level 3)`.
pub fn placed(ix: &Index, e: Endpoint, tier: usize) -> String {
    let level = ix.policy(tier).confidentiality;
    match e {
        Endpoint::Tier(_) => format!("{} (level {level})", endpoint(ix, e)),
        _ => format!(
            "{} in tier '{}' (level {level})",
            endpoint(ix, e),
            ix.topo.tiers[tier].name.v
        ),
    }
}

pub fn internet(i: Internet) -> &'static str {
    match i {
        Internet::None => "none",
        Internet::Inbound => "inbound",
        Internet::Outbound => "outbound",
        Internet::Both => "both",
    }
}

/// `a`, `a or b`, `a, b or c`.
pub fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
