//! tiernet: compiles a four-tier segmentation topology into the exact state of Linux gateways.

pub mod diag;
pub mod topology;
pub mod validate;
