//! Istio resources as users write them (CRD specs mirrored from istio/api), and the parser
//! that reads them from YAML/JSON with errors naming file, object and field.

mod types;
pub use types::*;

pub mod kinds;
pub mod parse;
pub mod time;
