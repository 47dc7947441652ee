//! The topology file: model, parser with positions, and loading from disk.

pub mod generate;
pub mod index;
pub mod load;
pub mod model;
pub mod reader;

pub use index::{Endpoint, Index, Policy};
pub use model::*;
pub use reader::parse;
