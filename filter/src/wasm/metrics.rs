//! Counters, defined once per configuration (never per request). Envoy exposes them with a
//! `wasmcustom.` prefix (see manifests/envoy/README.md for the exact names).

use super::host;
use crate::schema::{Decision, PolicyRef, Reason, ShadowResult, WorkloadPolicy};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType};
use std::cell::RefCell;
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
    /// Allow counts not yet added to Envoy's counters, by metric id. An increment is a
    /// hostcall that measurably costs (tens of µs per request at two counters per allowed
    /// request), so the allow path counts here and [`Metrics::flush`] adds the sums on the
    /// root's tick (≤ 1 s late; up to that much is lost if the VM stops). Denials, audit and
    /// dry-run outcomes are rare and counted at once.
    pending: RefCell<HashMap<u32, u64>>,
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

impl Metrics {
    fn later(&self, id: Option<u32>) {
        if let Some(id) = id {
            *self.pending.borrow_mut().entry(id).or_insert(0) += 1;
        }
    }

    /// Adds the pending allow counts to Envoy's counters.
    pub fn flush(&self) {
        let mut pending = self.pending.borrow_mut();
        for (id, n) in pending.drain() {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
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
        if d.allowed {
            self.later(self.allowed);
        } else {
            inc(self.denied);
        }
        match &d.reason {
            Reason::PlaintextRefused => inc(self.plaintext_refused),
            Reason::Denied { matched } | Reason::CustomDenied { matched, .. } => {
                inc(self.policy_denied.get(&matched.policy).copied())
            }
            Reason::Allowed { matched } => {
                self.later(self.policy_allowed.get(&matched.policy).copied())
            }
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
