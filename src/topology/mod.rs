//! The topology file: model, parser with positions, and loading from disk.

pub mod model;
pub mod generate;
pub mod index;
pub mod load;
pub mod reader;

pub use model::*;
pub use index::{Endpoint, Index, Policy};
pub use reader::parse;
