//! tiernet: compiles a four-tier segmentation topology into the exact state of Linux gateways.

pub mod compile;
pub mod diag;
pub mod graph;
pub mod nftables;
pub mod reach;
pub mod topology;
pub mod validate;
