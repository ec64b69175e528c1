//! `decide`: one [`Request`] against a compiled [`WorkloadPolicy`] → [`Decision`].
//!
//! [`Engine::new`] indexes the policy once (on configuration); [`Engine::decide`] runs per
//! connection or request and does no parsing. Order, as Istio's sidecar: listener checks
//! (mTLS mode, trust domain) → CUSTOM → DENY → ALLOW, with AUDIT and dry-run reported.

use crate::schema::{Decision, Reason, Request, WorkloadPolicy, SCHEMA_VERSION};

/// A compiled, indexed policy, ready to decide.
#[derive(Debug, Clone)]
pub struct Engine {
    policy: WorkloadPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unsupported schema version {found} (this filter reads version {expected})")]
    SchemaVersion { found: u32, expected: u32 },
}

impl Engine {
    pub fn new(policy: WorkloadPolicy) -> Result<Self, EngineError> {
        if policy.schema != SCHEMA_VERSION {
            return Err(EngineError::SchemaVersion { found: policy.schema, expected: SCHEMA_VERSION });
        }
        Ok(Engine { policy })
    }

    pub fn policy(&self) -> &WorkloadPolicy {
        &self.policy
    }

    pub fn decide(&self, _request: &Request) -> Decision {
        // Not built yet: refuse everything rather than guess.
        Decision::deny(Reason::NoConfig { why: "decision engine not implemented yet".into() })
    }
}

/// Convenience for one-off checks (`explain`, tests): index and decide.
pub fn decide(policy: &WorkloadPolicy, request: &Request) -> Decision {
    match Engine::new(policy.clone()) {
        Ok(engine) => engine.decide(request),
        Err(e) => Decision::deny(Reason::NoConfig { why: e.to_string() }),
    }
}
