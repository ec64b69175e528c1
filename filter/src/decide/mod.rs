//! `decide`: one [`Request`] against a compiled [`WorkloadPolicy`] → [`Decision`].
//!
//! [`Engine::new`] indexes the policy once (on configuration); [`Engine::decide`] runs per
//! connection or request and does no parsing. Order, as Istio's sidecar (spec 2.5, 1.3,
//! 4.2): listener checks (mTLS mode, trust domain) → AUDIT (reported) → CUSTOM → DENY →
//! ALLOW, with dry-run policies evaluated as Envoy `shadow_rules` of their stage.
//!
//! Choices where Istio leaves room (documented, safer reading):
//! - CUSTOM: no external authorizer, so a matching enforced CUSTOM rule denies. Dry-run
//!   CUSTOM policies are ignored (Istio's CUSTOM dry-run is a separate mechanism).
//! - AUDIT: only enforced AUDIT policies mark a request; dry-run AUDIT policies are ignored.
//! - `ipBlocks` / `source.ip` match the connection's direct peer; `remoteIpBlocks` /
//!   `remote.ip` the client X-Forwarded-For names `num_trusted_proxies` hops from the right
//!   (Envoy's `use_remote_address` rule), which is the direct peer when that is 0. A
//!   client-sent X-Forwarded-For alone can therefore never move a request into or out of
//!   an IP block.
//! - Paths are matched as given: Envoy normalized them before the filter and forwards the
//!   same path to the app (`crate::hcm` models that step for in-process runs).

mod matcher;

pub(crate) use matcher::forwarded_client;
/// `pub(crate)` for its FNV hasher (the filter's counters use it too).
pub(crate) mod ruleset;
mod transport;

#[cfg(test)]
mod tests;

use crate::schema::{
    Action, AuthzPolicy, Condition, Decision, DryRun, MtlsMode, Reason, Request, Rule, RuleRef,
    ShadowResult, WorkloadPolicy, SCHEMA_VERSION,
};
use matcher::Ctx;
use ruleset::{Entry, RuleSet, Rules};
use transport::Variant;

/// A compiled, indexed policy, ready to decide.
#[derive(Debug, Clone)]
pub struct Engine {
    policy: WorkloadPolicy,
    /// `spiffe://<td>/` for the trust domain and every alias (handshake check, spec 1.3).
    trusted_prefixes: Vec<String>,
    stages: Stages,
    /// The TCP forms of rules that differ from their HTTP rule (spec 4.10); every other
    /// entry of a stage points into `policy`.
    narrowed: Vec<Rule>,
    /// Some rule looks at `remoteIpBlocks`/`remote.ip` and X-Forwarded-For is trusted.
    want_remote_ip: bool,
}

#[derive(Debug, Clone, Default)]
struct Stages {
    audit: Stage,
    custom: Stage,
    deny: Stage,
    deny_dry: Stage,
    allow: Stage,
    allow_dry: Stage,
    has_enforced_allow: bool,
    has_dry_deny: bool,
    has_dry_allow: bool,
}

/// One stage's rules in both transport variants (spec 4.10), built once.
#[derive(Debug, Clone, Default)]
struct Stage {
    http: RuleSet,
    tcp: RuleSet,
    /// Some rule has a TCP form other than itself (dropped or narrowed). When none has,
    /// `tcp` is left empty and TCP uses `http`: one index instead of two identical ones.
    tcp_differs: bool,
}

impl Stage {
    fn for_request(&self, ctx: &Ctx) -> &RuleSet {
        if ctx.http.is_some() {
            &self.http
        } else {
            self.tcp()
        }
    }

    fn tcp(&self) -> &RuleSet {
        match self.tcp_differs {
            true => &self.tcp,
            false => &self.http,
        }
    }

    /// Files policy number `index` (`p`) in both variants; a rule whose TCP form differs is
    /// narrowed into `narrowed` (the others are used in place, not copied).
    fn add(&mut self, index: u32, p: &AuthzPolicy, narrowed: &mut Vec<Rule>) {
        if p.invalid.is_some() {
            // Fail closed (spec 4.11): an invalid DENY/CUSTOM matches everything, an
            // invalid ALLOW/AUDIT nothing.
            if matches!(p.action, Action::Deny | Action::Custom) {
                let e = Entry {
                    policy: index,
                    rule: None,
                    narrowed: None,
                };
                self.http.push(e, None);
                self.tcp.push(e, None);
            }
            return;
        }
        for (i, rule) in p.rules.iter().enumerate() {
            let entry = Entry {
                policy: index,
                rule: Some(u32::try_from(i).unwrap_or(u32::MAX)),
                narrowed: None,
            };
            self.http.push(entry, Some(rule));
            match transport::tcp_variant(p.action, rule) {
                Variant::Same => self.tcp.push(entry, Some(rule)),
                Variant::Dropped => self.tcp_differs = true,
                Variant::Narrowed(tcp) => {
                    self.tcp_differs = true;
                    let n = u32::try_from(narrowed.len()).unwrap_or(u32::MAX);
                    let e = Entry {
                        narrowed: Some(n),
                        ..entry
                    };
                    self.tcp.push(e, Some(&tcp));
                    narrowed.push(tcp);
                }
            }
        }
    }

    fn finish(&mut self) {
        self.http.finish();
        if self.tcp_differs {
            self.tcp.finish();
        } else {
            // Every entry was pushed to both, identically.
            self.tcp = RuleSet::default();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unsupported schema version {found} (this filter reads version {expected})")]
    SchemaVersion { found: u32, expected: u32 },
}

impl Engine {
    pub fn new(mut policy: WorkloadPolicy) -> Result<Self, EngineError> {
        if policy.schema != SCHEMA_VERSION {
            return Err(EngineError::SchemaVersion {
                found: policy.schema,
                expected: SCHEMA_VERSION,
            });
        }
        // A policy the matchers could only misread fails closed on its own, like an invalid
        // object (spec 4.11), without dropping the rest of the configuration.
        let mut diagnostics = Vec::new();
        for p in policy.policies.iter_mut().filter(|p| p.invalid.is_none()) {
            if let Err(why) = validate(p) {
                diagnostics.push(format!("AuthorizationPolicy {}: {why}", p.policy));
                p.invalid = Some(why);
                p.rules.clear();
            }
        }
        policy.diagnostics.extend(diagnostics);
        // Parsed into a doubling Vec: the spare capacity would stay in the VM for good.
        policy.policies.shrink_to_fit();
        let trusted_prefixes = std::iter::once(&policy.trust_domain)
            .chain(&policy.trust_domain_aliases)
            .map(|td| format!("{}{td}/", crate::identity::SPIFFE_SCHEME))
            .collect();
        let mut stages = Stages::default();
        let mut narrowed = Vec::new();
        for (index, p) in policy.policies.iter().enumerate() {
            let stage = match (p.action, p.dry_run) {
                (Action::Allow, false) => {
                    stages.has_enforced_allow = true;
                    &mut stages.allow
                }
                (Action::Allow, true) => {
                    stages.has_dry_allow = true;
                    &mut stages.allow_dry
                }
                (Action::Deny, false) => &mut stages.deny,
                (Action::Deny, true) => {
                    stages.has_dry_deny = true;
                    &mut stages.deny_dry
                }
                (Action::Audit, false) => &mut stages.audit,
                (Action::Custom, false) => &mut stages.custom,
                (Action::Audit | Action::Custom, true) => continue,
            };
            stage.add(u32::try_from(index).unwrap_or(u32::MAX), p, &mut narrowed);
        }
        for stage in [
            &mut stages.audit,
            &mut stages.custom,
            &mut stages.deny,
            &mut stages.deny_dry,
            &mut stages.allow,
            &mut stages.allow_dry,
        ] {
            stage.finish();
        }
        narrowed.shrink_to_fit();
        let want_remote_ip = policy.num_trusted_proxies > 0 && uses_remote_ip(&policy);
        Ok(Engine {
            policy,
            trusted_prefixes,
            stages,
            narrowed,
            want_remote_ip,
        })
    }

    pub fn policy(&self) -> &WorkloadPolicy {
        &self.policy
    }

    pub fn decide(&self, request: &Request) -> Decision {
        if let Some(refused) = self.listener_check(request) {
            return Decision::deny(refused);
        }
        let ctx = Ctx::new(
            request,
            self.policy.num_trusted_proxies,
            self.want_remote_ip,
        );
        let rules = Rules {
            policies: &self.policy.policies,
            narrowed: &self.narrowed,
        };
        let first = |stage: &Stage| -> Option<Entry> {
            stage.for_request(&ctx).first_match(&ctx, rules).copied()
        };
        let audit = first(&self.stages.audit).map(|e| self.rule_ref(&e));
        let mut dry_run = DryRun {
            strict_refused: self.strict_dry_run(request),
            ..DryRun::default()
        };
        let done = |allowed, reason, dry_run| Decision {
            allowed,
            reason,
            audit: audit.clone(),
            dry_run,
        };

        if let Some(e) = first(&self.stages.custom) {
            let reason = Reason::CustomDenied {
                matched: self.rule_ref(&e),
                provider: self
                    .policy
                    .policies
                    .get(e.policy as usize)
                    .and_then(|p| p.provider.clone()),
            };
            return done(false, reason, dry_run);
        }
        if self.stages.has_dry_deny {
            let m = first(&self.stages.deny_dry);
            dry_run.deny = Some(if m.is_some() {
                ShadowResult::Denied
            } else {
                ShadowResult::Allowed
            });
            dry_run.deny_matched = m.map(|e| self.rule_ref(&e));
        }
        if let Some(e) = first(&self.stages.deny) {
            return done(
                false,
                Reason::Denied {
                    matched: self.rule_ref(&e),
                },
                dry_run,
            );
        }
        if self.stages.has_dry_allow {
            let m = first(&self.stages.allow_dry);
            dry_run.allow = Some(if m.is_some() {
                ShadowResult::Allowed
            } else {
                ShadowResult::Denied
            });
            dry_run.allow_matched = m.map(|e| self.rule_ref(&e));
        }
        if !self.stages.has_enforced_allow {
            return done(true, Reason::NoAllowPolicies, dry_run);
        }
        match first(&self.stages.allow) {
            Some(e) => done(
                true,
                Reason::Allowed {
                    matched: self.rule_ref(&e),
                },
                dry_run,
            ),
            None => done(false, Reason::NoAllowMatched, dry_run),
        }
    }

    /// The policy and rule an entry stands for, as a decision reports it.
    fn rule_ref(&self, e: &Entry) -> RuleRef {
        RuleRef {
            policy: self
                .policy
                .policies
                .get(e.policy as usize)
                .map(|p| p.policy.clone())
                // Cannot happen (entries are built from these policies).
                .unwrap_or_else(|| crate::schema::PolicyRef {
                    namespace: String::new(),
                    name: String::new(),
                }),
            rule: e.rule.map(|r| r as usize),
        }
    }

    /// A plaintext request on a dry-run STRICT port: the object whose STRICT would refuse it.
    fn strict_dry_run(&self, request: &Request) -> Option<String> {
        let m = self.policy.mtls.for_port(request.port);
        (request.peer.is_none() && m.is_dry_run_strict())
            .then(|| m.from.clone().unwrap_or_else(|| "STRICT".into()))
    }

    /// What the inbound listener decides before any authorization (spec 2.5, 1.3). A dry-run
    /// STRICT port is checked as PERMISSIVE ([`crate::schema::ModeFrom::enforced`]).
    fn listener_check(&self, request: &Request) -> Option<Reason> {
        let mode = self.policy.mtls.for_port(request.port).enforced();
        match (&request.peer, mode) {
            (None, MtlsMode::Strict) => Some(Reason::PlaintextRefused),
            (None, _) => None,
            (Some(_), MtlsMode::Disable) => Some(Reason::MtlsRefused),
            (Some(peer), _) => {
                let trusted = peer.uri_sans.iter().any(|san| {
                    self.trusted_prefixes
                        .iter()
                        .any(|p| san.starts_with(p.as_str()))
                });
                (!trusted).then(|| Reason::UntrustedPeer {
                    uri_sans: peer.uri_sans.clone(),
                })
            }
        }
    }
}

/// Whether any rule looks at the forwarded client address.
pub(crate) fn uses_remote_ip(policy: &WorkloadPolicy) -> bool {
    policy.policies.iter().flat_map(|p| &p.rules).any(|r| {
        r.from
            .iter()
            .flatten()
            .any(|s| !s.remote_ip_blocks.is_empty())
            || r.when
                .iter()
                .any(|c| matches!(c, Condition::RemoteIp { .. }))
    })
}

/// Refuses configurations the matchers could only misread (fail closed at configuration).
fn validate(p: &AuthzPolicy) -> Result<(), String> {
    let check_cidr = |c: &crate::schema::Cidr| {
        let max = if c.addr.is_ipv4() { 32 } else { 128 };
        if c.prefix_len > max {
            return Err(format!(
                "CIDR {}/{} has a prefix longer than the address",
                c.addr, c.prefix_len
            ));
        }
        Ok(())
    };
    let check_sa = |v: &String| {
        if !v.contains('/') {
            return Err(format!(
                "service account {v:?} is not qualified as namespace/name"
            ));
        }
        Ok(())
    };
    for r in &p.rules {
        for s in r.from.iter().flatten() {
            for c in s.ip_blocks.values.iter().chain(&s.ip_blocks.not_values) {
                check_cidr(c)?;
            }
            for c in s
                .remote_ip_blocks
                .values
                .iter()
                .chain(&s.remote_ip_blocks.not_values)
            {
                check_cidr(c)?;
            }
            for v in s
                .service_accounts
                .values
                .iter()
                .chain(&s.service_accounts.not_values)
            {
                check_sa(v)?;
            }
        }
        for c in &r.when {
            match c {
                Condition::SourceIp { field }
                | Condition::RemoteIp { field }
                | Condition::DestinationIp { field } => {
                    for c in field.values.iter().chain(&field.not_values) {
                        check_cidr(c)?;
                    }
                }
                Condition::SourceServiceAccount { field } => {
                    for v in field.values.iter().chain(&field.not_values) {
                        check_sa(v)?;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Convenience for one-off checks (`explain`, tests): index and decide.
pub fn decide(policy: &WorkloadPolicy, request: &Request) -> Decision {
    match Engine::new(policy.clone()) {
        Ok(engine) => engine.decide(request),
        Err(e) => Decision::deny(Reason::NoConfig { why: e.to_string() }),
    }
}
