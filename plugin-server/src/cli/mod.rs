//! Human-facing subcommands.
pub mod explain;
pub mod output;
pub mod test;
