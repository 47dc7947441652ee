//! The only code that talks to the kernel: apply a plan, observe the state, watch for changes.

pub mod monitor;
pub mod net;
pub mod nft;
pub mod sysctl;
