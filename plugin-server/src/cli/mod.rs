//! Human-facing subcommands.
pub mod compile;
pub mod explain;
pub mod output;
pub mod playground;
pub mod readiness;
pub mod test;
pub mod workload;
