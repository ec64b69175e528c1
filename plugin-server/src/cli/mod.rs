//! Human-facing subcommands.
pub mod explain;
pub mod test;
