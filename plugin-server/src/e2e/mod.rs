//! The end-to-end backend of `peerguard test --envoy`: scenarios through a real Envoy.

use peerguard_filter::scenario::Scenario;
use peerguard_filter::WorkloadPolicy;

/// What happened to one request end to end.
#[derive(Debug, Clone)]
pub struct Observed {
    pub allowed: bool,
    /// e.g. `HTTP 403 RBAC: access denied`, `TLS handshake failed: ...`, `upstream reached`.
    pub detail: String,
}

/// Runs every request of every scenario through real Envoy. Result: per scenario, per
/// request (in file order), what was observed. Not built yet.
#[allow(dead_code)]
pub fn run(_scenarios: &[(Scenario, WorkloadPolicy)]) -> anyhow::Result<Vec<Vec<Observed>>> {
    anyhow::bail!("`peerguard test --envoy` is not implemented yet")
}
