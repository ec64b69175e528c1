//! Counters, defined once per configuration (never per request). Envoy exposes them with a
//! `wasmcustom.` prefix (see manifests/envoy/README.md for the exact names).

use super::seam::{Host, Level};
use crate::decide::ruleset::FnvHasher;
use crate::readiness::{self, Series};
use crate::schema::{Decision, PolicyRef, Reason, ShadowResult, WorkloadPolicy};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

/// Keys here are policy names from the configuration and metric ids: SipHash's flooding
/// resistance buys nothing, and an allowed request hashes twice.
type Fnv = BuildHasherDefault<FnvHasher>;

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    plaintext_refused: Option<u32>,
    dry_run_denied: Option<u32>,
    dry_run_allowed: Option<u32>,
    audit: Option<u32>,
    dry_run_refused: Option<u32>,
    /// STRICT-readiness counters (`crate::readiness`), defined on first sight, bounded.
    connections: RefCell<Connections>,
    /// Per-policy counters: one map for both (at 10,000 policies each key is a copy of a
    /// policy's namespace and name, kept by every VM).
    policies: HashMap<PolicyRef, PolicyCounters, Fnv>,
    /// Allow counts not yet added to Envoy's counters, by metric id. An increment is a
    /// hostcall that measurably costs (tens of µs per request at two counters per allowed
    /// request), so the allow path counts here and [`Metrics::flush`] adds the sums on the
    /// root's tick (≤ 1 s late; up to that much is lost if the VM stops). Denials, audit and
    /// dry-run outcomes are rare and counted at once.
    pending: RefCell<HashMap<u32, u64, Fnv>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct PolicyCounters {
    denied: Option<u32>,
    allowed: Option<u32>,
}

fn define(host: &impl Host, name: &str) -> Option<u32> {
    match host.define_counter(name) {
        Ok(id) => Some(id),
        Err(s) => {
            host.log(
                Level::Warn,
                &format!("peerguard: cannot define metric {name}: {s}"),
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
    pub fn flush(&self, host: &impl Host) {
        let mut pending = self.pending.borrow_mut();
        for (id, n) in pending.drain() {
            host.increment(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

fn inc(host: &impl Host, id: Option<u32>) {
    if let Some(id) = id {
        host.increment(id, 1);
    }
}

impl Metrics {
    /// The fixed counters. Called on VM start; defining the same name again returns the
    /// same Envoy counter, so calling it for every root context is harmless.
    pub fn base(host: &impl Host) -> Self {
        Metrics {
            allowed: define(host, "peerguard_allowed"),
            denied: define(host, "peerguard_denied"),
            plaintext_refused: define(host, "peerguard_plaintext_refused"),
            dry_run_denied: define(host, "peerguard_dry_run_denied"),
            dry_run_allowed: define(host, "peerguard_dry_run_allowed"),
            audit: define(host, "peerguard_audit"),
            dry_run_refused: define(host, readiness::DRY_RUN_REFUSED),
            ..Metrics::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.allowed.is_none() && self.denied.is_none()
    }

    /// Per-policy counters for the policies of a new configuration (a counter whose
    /// definition failed is tried again on the next one).
    pub fn define_policies(&mut self, host: &impl Host, policy: &WorkloadPolicy) {
        for p in &policy.policies {
            let r = &p.policy;
            let mut c = self.policies.get(r).copied().unwrap_or_default();
            if c.denied.is_some() && c.allowed.is_some() {
                continue;
            }
            if c.denied.is_none() {
                c.denied = define(
                    host,
                    &format!("peerguard_policy_denied.{}.{}", r.namespace, r.name),
                );
            }
            if c.allowed.is_none() {
                c.allowed = define(
                    host,
                    &format!("peerguard_policy_allowed.{}.{}", r.namespace, r.name),
                );
            }
            self.policies.insert(r.clone(), c);
        }
    }

    /// A request denied before the engine ran (no configuration, unreadable attributes).
    pub fn record_denied(&self, host: &impl Host) {
        inc(host, self.denied);
    }

    pub fn record(&self, host: &impl Host, d: &Decision) {
        if d.allowed {
            self.later(self.allowed);
        } else {
            inc(host, self.denied);
        }
        match &d.reason {
            Reason::PlaintextRefused => inc(host, self.plaintext_refused),
            Reason::Denied { matched } | Reason::CustomDenied { matched, .. } => inc(
                host,
                self.policies.get(&matched.policy).and_then(|c| c.denied),
            ),
            Reason::Allowed { matched } => {
                self.later(self.policies.get(&matched.policy).and_then(|c| c.allowed))
            }
            _ => {}
        }
        if d.audit.is_some() {
            inc(host, self.audit);
        }
        for shadow in [d.dry_run.deny, d.dry_run.allow].into_iter().flatten() {
            inc(
                host,
                match shadow {
                    ShadowResult::Denied => self.dry_run_denied,
                    ShadowResult::Allowed => self.dry_run_allowed,
                },
            );
        }
    }
}

/// The readiness series this VM has defined, and what bounds them.
#[derive(Debug, Default)]
struct Connections {
    ids: HashMap<Series, Option<u32>>,
    /// Distinct sources per (port, transport), for [`readiness::MAX_SOURCES`].
    sources: HashMap<(u16, readiness::Tls), usize>,
    ports: HashSet<u16>,
}

impl Metrics {
    /// A plaintext connection a dry-run STRICT would have refused (counted at once).
    pub fn record_dry_run_refused(&self, host: &impl Host) {
        inc(host, self.dry_run_refused);
    }

    /// One connection of a readiness series; a new series is defined once (a hostcall per
    /// distinct series, never per connection), the increment waits for the tick.
    pub fn record_connection(&self, host: &impl Host, mut s: Series) {
        let mut c = self.connections.borrow_mut();
        if !c.ports.contains(&s.port) {
            if c.ports.len() >= readiness::MAX_PORTS {
                s.port = 0;
            }
            c.ports.insert(s.port);
        }
        if !c.ids.contains_key(&s) {
            let n = c.sources.entry((s.port, s.tls)).or_insert(0);
            if *n >= readiness::MAX_SOURCES {
                s.source = readiness::OTHER.to_string();
            } else {
                *n += 1;
            }
        }
        let id = match c.ids.get(&s) {
            Some(id) => *id,
            None => {
                let id = define(host, &s.name());
                c.ids.insert(s, id);
                id
            }
        };
        self.later(id);
    }
}
