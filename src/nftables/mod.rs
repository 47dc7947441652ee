//! The nftables ruleset tiernet owns: IR, text rendering, and packet evaluation for `reach`.

pub mod eval;
pub mod ir;
pub mod text;
