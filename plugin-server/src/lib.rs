//! peerguard's server-side crate: the xDS extension server and the tools around it. The
//! `peerguard` binary (`main.rs`) is a thin clap front; every subcommand lives here so that
//! tests and benchmarks drive the same code.

pub mod bench;
pub mod bootstrap;
pub mod ca;
pub mod cli;
pub mod demo;
pub mod e2e;
pub mod node;
pub mod ops;
pub mod registry;
pub mod sandbox;
pub mod serve;
pub mod snapshot;
pub mod source;
pub mod xds;
