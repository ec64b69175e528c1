//! Counters, defined once per configuration (never per request). Envoy exposes them with a
//! `wasmcustom.` prefix (see manifests/envoy/README.md for the exact names).

use super::host;
use crate::schema::{Decision, PolicyRef, Reason, ShadowResult, WorkloadPolicy};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType};
use std::collections::HashMap;

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    plaintext_refused: Option<u32>,
    dry_run_denied: Option<u32>,
    dry_run_allowed: Option<u32>,
    audit: Option<u32>,
    policy_denied: HashMap<PolicyRef, u32>,
    policy_allowed: HashMap<PolicyRef, u32>,
}

fn define(name: &str) -> Option<u32> {
    match hostcalls::define_metric(MetricType::Counter, name) {
        Ok(id) => Some(id),
        Err(s) => {
            host::log(
                LogLevel::Warn,
                &format!("peerguard: cannot define metric {name}: {s:?}"),
            );
            None
        }
    }
}

fn inc(id: Option<u32>) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

impl Metrics {
    /// The fixed counters. Called on VM start; defining the same name again returns the
    /// same Envoy counter, so calling it for every root context is harmless.
    pub fn base() -> Self {
        Metrics {
            allowed: define("peerguard_allowed"),
            denied: define("peerguard_denied"),
            plaintext_refused: define("peerguard_plaintext_refused"),
            dry_run_denied: define("peerguard_dry_run_denied"),
            dry_run_allowed: define("peerguard_dry_run_allowed"),
            audit: define("peerguard_audit"),
            ..Metrics::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.allowed.is_none() && self.denied.is_none()
    }

    /// Per-policy counters for the policies of a new configuration.
    pub fn define_policies(&mut self, policy: &WorkloadPolicy) {
        for p in &policy.policies {
            let r = &p.policy;
            if !self.policy_denied.contains_key(r) {
                if let Some(id) = define(&format!(
                    "peerguard_policy_denied.{}.{}",
                    r.namespace, r.name
                )) {
                    self.policy_denied.insert(r.clone(), id);
                }
            }
            if !self.policy_allowed.contains_key(r) {
                if let Some(id) = define(&format!(
                    "peerguard_policy_allowed.{}.{}",
                    r.namespace, r.name
                )) {
                    self.policy_allowed.insert(r.clone(), id);
                }
            }
        }
    }

    /// A request denied before the engine ran (no configuration, unreadable attributes).
    pub fn record_denied(&self) {
        inc(self.denied);
    }

    pub fn record(&self, d: &Decision) {
        inc(if d.allowed { self.allowed } else { self.denied });
        match &d.reason {
            Reason::PlaintextRefused => inc(self.plaintext_refused),
            Reason::Denied { matched } | Reason::CustomDenied { matched, .. } => {
                inc(self.policy_denied.get(&matched.policy).copied())
            }
            Reason::Allowed { matched } => inc(self.policy_allowed.get(&matched.policy).copied()),
            _ => {}
        }
        if d.audit.is_some() {
            inc(self.audit);
        }
        for shadow in [d.dry_run.deny, d.dry_run.allow].into_iter().flatten() {
            inc(match shadow {
                ShadowResult::Denied => self.dry_run_denied,
                ShadowResult::Allowed => self.dry_run_allowed,
            });
        }
    }
}
