use serde::{Deserialize, Serialize};

/// A policy as `namespace/name`, for reports, logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which rule of which policy matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub policy: PolicyRef,
    /// Index in `spec.rules`; `None` when the whole policy matched without a rule (an
    /// invalid DENY or CUSTOM policy failing closed).
    pub rule: Option<usize>,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rule {
            Some(i) => write!(f, "{}[rule {}]", self.policy, i),
            None => write!(f, "{}", self.policy),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The filter has no valid configuration: everything is denied.
    NoConfig { why: String },
    /// STRICT port, plaintext connection.
    PlaintextRefused,
    /// DISABLE port, mTLS connection: Istio serves no TLS chain there.
    MtlsRefused,
    /// The client certificate carries no URI SAN of an accepted trust domain.
    UntrustedPeer { uri_sans: Vec<String> },
    /// A CUSTOM policy matched; peerguard has no external authorizer, so it denies.
    CustomDenied {
        matched: RuleRef,
        provider: Option<String>,
    },
    /// An enforced DENY rule matched.
    Denied { matched: RuleRef },
    /// The workload has enforced ALLOW policies and one matched.
    Allowed { matched: RuleRef },
    /// The workload has enforced ALLOW policies and none matched.
    NoAllowMatched,
    /// No enforced ALLOW policy: allowed by default.
    NoAllowPolicies,
    /// Envoy's connection manager answered before any filter ran (e.g. 400 for a path with
    /// `%00`): only in-process runs report it, the filter never sees such requests.
    Rejected { status: u16, why: String },
}

/// The one rendering of a reason, for people: `explain`, `test`, and the filter's log.
impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NoConfig { why } => write!(f, "no valid configuration, everything is denied: {why}"),
            Reason::PlaintextRefused => f.write_str("plaintext connection refused: the port's mTLS mode is STRICT"),
            Reason::MtlsRefused => {
                f.write_str("mTLS connection refused: the port's mTLS mode is DISABLE (plaintext only)")
            }
            Reason::UntrustedPeer { uri_sans } => write!(
                f,
                "client certificate has no URI SAN of an accepted trust domain (URI SANs: {})",
                uri_sans.join(", ")
            ),
            Reason::CustomDenied { matched, provider } => write!(
                f,
                "CUSTOM policy {matched} (provider {}) matched; peerguard has no external authorizer, so it denies",
                provider.as_deref().unwrap_or("<none>")
            ),
            Reason::Denied { matched } => write!(f, "denied by DENY policy {matched}"),
            Reason::Allowed { matched } => write!(f, "allowed by ALLOW policy {matched}"),
            Reason::NoAllowMatched => f.write_str("the workload has ALLOW policies and none matched"),
            Reason::NoAllowPolicies => {
                f.write_str("no DENY policy matched and no ALLOW policy applies: allowed by default")
            }
            Reason::Rejected { status, why } => {
                write!(f, "Envoy's connection manager answers {status} before any filter: {why}")
            }
        }
    }
}

/// The shadow outcome of dry-run policies, per action (Envoy `shadow_rules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowResult {
    Allowed,
    Denied,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRun {
    /// Present when the workload has dry-run DENY policies and the request reached that stage.
    pub deny: Option<ShadowResult>,
    pub deny_matched: Option<RuleRef>,
    /// Present when the workload has dry-run ALLOW policies and the request reached that stage.
    pub allow: Option<ShadowResult>,
    pub allow_matched: Option<RuleRef>,
    /// A plaintext connection on a dry-run STRICT port: STRICT would have refused it (and
    /// the decision went on as PERMISSIVE). The object that set the mode
    /// (`PeerAuthentication ns/name`, maybe with `portLevelMtls[port]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_refused: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    /// An AUDIT rule matched (never changes `allowed`).
    pub audit: Option<RuleRef>,
    pub dry_run: DryRun,
}

impl Decision {
    pub fn deny(reason: Reason) -> Self {
        Decision {
            allowed: false,
            reason,
            audit: None,
            dry_run: DryRun::default(),
        }
    }
}
