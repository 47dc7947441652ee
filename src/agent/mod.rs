//! `tiernet-agent`: keeps one gateway in its desired state.

pub mod daemon;
pub mod drift;
pub mod reconcile;
pub mod state;
