//! `tiernet-agent`: keeps one gateway in its desired state.

pub mod controller_link;
pub mod daemon;
pub mod drift;
pub mod nflog;
pub mod noop;
pub mod reconcile;
pub mod state;
