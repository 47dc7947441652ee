//! The tier rules of the topology spec (rules 1-7), every violation reported in one run.
//!
//! Each submodule checks one concern and appends its findings; nothing stops at the first
//! error. A check skips what another finding already explains (a dangling reference is
//! reported once, by `references`, not again by every rule that would have followed it).

mod addressing;
mod attachment;
mod crossing;
mod describe;
mod flows;
mod interfaces;
mod names;
mod ports;
mod references;
mod tiers;

use crate::diag::{self, Diagnostic};
use crate::topology::{Index, Topology};
use chrono::NaiveDate;

/// Checks a parsed topology. `today` decides which flows have expired.
/// The diagnostics come sorted by position, so a report reads top to bottom.
pub fn validate(topo: &Topology, today: NaiveDate) -> Vec<Diagnostic> {
    let ix = Index::new(topo);
    let mut out = Vec::new();
    names::check(topo, &mut out);
    interfaces::check(topo, &mut out);
    references::check(&ix, &mut out);
    tiers::check(&ix, &mut out);
    attachment::check(&ix, &mut out);
    addressing::check(&ix, &mut out);
    let flows = flows::resolve(&ix, today, &mut out);
    ports::check(&ix, &flows, &mut out);
    crossing::check(&ix, &flows, &mut out);
    diag::sort(&mut out);
    out
}
