//! tiernet: compiles a four-tier segmentation topology into the exact state of Linux gateways.

pub mod agent;
pub mod compile;
pub mod dataplane;
pub mod diag;
pub mod graph;
pub mod lab;
pub mod netns;
pub mod nftables;
pub mod plan;
pub mod reach;
pub mod topology;
pub mod validate;
