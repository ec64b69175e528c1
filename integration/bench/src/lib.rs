//! `peerguard bench` (hidden; `integration/bench/*.sh` run it): benchmarks with real Envoy
//! and the real server, printing figures and goal checks, never asserting them.
//!
//! - [`envoy`]: what peerguard costs in a real Envoy, against no filter, native RBAC and a
//!   no-op wasm filter;
//! - [`server`]: the xDS server's goals (write → enforced, fan-out, compile time).

pub mod envoy;
pub mod server;

pub use envoy::{run, Args};
