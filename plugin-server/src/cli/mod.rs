//! Human-facing subcommands.
pub mod certs;
pub mod compile;
pub mod explain;
pub mod output;
pub mod playground;
pub mod test;
pub mod workload;
