//! Human-facing subcommands.
pub mod compile;
pub mod explain;
pub mod manifests;
pub mod output;
pub mod playground;
pub mod test;
pub mod workload;
