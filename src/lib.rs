//! tiernet: compiles a four-tier segmentation topology into the exact state of Linux gateways.

pub mod agent;
pub mod cli;
pub mod compile;
pub mod controller;
pub mod dataplane;
pub mod diag;
pub mod graph;
pub mod lab;
pub mod logging;
pub mod netns;
pub mod nftables;
pub mod pki;
pub mod plan;
pub mod proto;
pub mod reach;
pub mod topology;
pub mod validate;
