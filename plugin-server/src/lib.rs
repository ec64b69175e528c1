//! peerguard's product: the xDS extension server (`serve`: sources, registry, CA, snapshots,
//! xDS), the Envoy configuration it implies (`bootstrap`), and the in-process tools
//! (`cli`: compile, explain, test). The `peerguard` binary (package `peerguard`, `cli/`) is
//! a thin clap front over this crate and the tooling crates under `integration/`.

pub mod analyze;
pub mod bootstrap;
pub mod ca;
pub mod cli;
pub mod enforcement;
pub mod envoy_config;
pub mod istio_forms;
pub mod node;
pub mod ops;
pub mod registry;
pub mod serve;
pub mod snapshot;
pub mod source;
pub mod xds;
