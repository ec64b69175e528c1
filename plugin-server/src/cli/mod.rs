//! Human-facing subcommands.
pub mod compile;
pub mod describe;
pub mod explain;
pub mod output;
pub mod playground;
pub mod test;
pub mod workload;
