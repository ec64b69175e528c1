//! [`WorkloadPolicy`]: everything the filter needs to decide for one workload, already
//! resolved by `compile` (scopes, precedence, trust-domain aliases, legacy policies).
//! Serialized as JSON; this type is the filter's configuration schema and its only copy.

use super::PolicyRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped on any incompatible change; the filter refuses other versions (fail closed).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadPolicy {
    /// Must equal [`SCHEMA_VERSION`].
    pub schema: u32,
    pub workload: WorkloadRef,
    /// The mesh trust domain (`meshConfig.trustDomain`).
    pub trust_domain: String,
    /// `meshConfig.trustDomainAliases`: also accepted at the handshake check.
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
    pub mtls: MtlsPolicy,
    /// The authorization policies that apply to this workload, in a stable order
    /// (namespace, name). Dry-run and invalid ones included.
    #[serde(default, deserialize_with = "exact")]
    pub policies: Vec<AuthzPolicy>,
    /// Problems found while compiling (invalid objects, ignored selectors...), for humans.
    #[serde(default)]
    pub diagnostics: Vec<String>,
    /// How the connection manager in front of the filter normalizes paths
    /// (`meshConfig.pathNormalization`). The filter matches the path it is given — the one
    /// the app receives — so this only tells in-process runs (`explain`, `test`) what Envoy
    /// does before the filter, and the Envoy configuration what to write.
    #[serde(default)]
    pub path_normalization: PathNormalization,
    /// `numTrustedProxies`: how many proxies in front of this workload append to
    /// X-Forwarded-For. `remoteIpBlocks`/`remote.ip` take the address that many hops from
    /// the right of X-Forwarded-For (after Envoy appended the direct peer); 0: the direct peer.
    #[serde(default)]
    pub num_trusted_proxies: u32,
    /// The decision log (`serve --decision-log-sample`): absent, the default, writes none;
    /// left out of the JSON then, so a configuration without it is byte-identical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_log: Option<super::DecisionLog>,
}

/// Istio's `meshConfig.pathNormalization.normalization`
/// (https://istio.io/latest/docs/reference/config/security/normalization/).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    /// No normalization: the path is matched (and forwarded) exactly as received.
    None,
    /// RFC 3986 normalization, `\` to `/`, unreserved escapes decoded (Istio's DEFAULT).
    #[default]
    Base,
    /// BASE, then `//` merged.
    MergeSlashes,
    /// `%2F`/`%5C` decoded, then MERGE_SLASHES.
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    pub const ALL: [PathNormalization; 4] = [
        PathNormalization::None,
        PathNormalization::Base,
        PathNormalization::MergeSlashes,
        PathNormalization::DecodeAndMergeSlashes,
    ];

    /// The name Istio's mesh config uses.
    pub fn as_str(self) -> &'static str {
        match self {
            PathNormalization::None => "NONE",
            PathNormalization::Base => "BASE",
            PathNormalization::MergeSlashes => "MERGE_SLASHES",
            PathNormalization::DecodeAndMergeSlashes => "DECODE_AND_MERGE_SLASHES",
        }
    }
}

impl std::str::FromStr for PathNormalization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            // Istio's DEFAULT is BASE.
            "DEFAULT" | "BASE" => Ok(PathNormalization::Base),
            "NONE" => Ok(PathNormalization::None),
            "MERGE_SLASHES" => Ok(PathNormalization::MergeSlashes),
            "DECODE_AND_MERGE_SLASHES" => Ok(PathNormalization::DecodeAndMergeSlashes),
            _ => Err(format!(
                "unknown path normalization {s:?} (NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRef {
    pub namespace: String,
    pub name: String,
}

/// Resolved mTLS mode: `UNSET` has been resolved by `compile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    Disable,
    Permissive,
    Strict,
}

/// A resolved mode and the object it came from (`None`: nothing configured → PERMISSIVE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeFrom {
    pub mode: MtlsMode,
    /// e.g. `PeerAuthentication istio-system/default` or `Policy foo/httpbin`.
    #[serde(default)]
    pub from: Option<String>,
    /// STRICT only: `peerguard.dev/dry-run: "true"` on the PeerAuthentication that set it.
    /// Enforced as PERMISSIVE; plaintext connections are counted and logged as would-be
    /// refusals instead of being refused (see [`ModeFrom::enforced`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl ModeFrom {
    /// An enforced mode (no dry-run).
    pub fn new(mode: MtlsMode, from: Option<String>) -> Self {
        ModeFrom {
            mode,
            from,
            dry_run: false,
        }
    }

    /// The mode the listener enforces: a dry-run STRICT accepts what PERMISSIVE accepts.
    /// The one definition every consumer that refuses or builds filter chains reads.
    pub fn enforced(&self) -> MtlsMode {
        match (self.mode, self.dry_run) {
            (MtlsMode::Strict, true) => MtlsMode::Permissive,
            (mode, _) => mode,
        }
    }

    /// Whether plaintext on this port is a would-be refusal (counted, logged, accepted).
    pub fn is_dry_run_strict(&self) -> bool {
        self.mode == MtlsMode::Strict && self.dry_run
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsPolicy {
    /// The mode of every port not listed in `ports`.
    pub default: ModeFrom,
    /// Per workload (target) port overrides.
    #[serde(default)]
    pub ports: BTreeMap<u16, ModeFrom>,
}

impl MtlsPolicy {
    pub fn for_port(&self, port: u16) -> &ModeFrom {
        self.ports.get(&port).unwrap_or(&self.default)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Allow,
    Deny,
    Audit,
    Custom,
}

/// One AuthorizationPolicy as it applies to this workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzPolicy {
    pub policy: PolicyRef,
    pub action: Action,
    /// `istio.io/dry-run` parsed true: evaluated, reported, never enforced.
    #[serde(default)]
    pub dry_run: bool,
    /// CUSTOM only: `spec.provider.name`.
    #[serde(default)]
    pub provider: Option<String>,
    /// The object failed validation. It fails closed: an invalid ALLOW (or AUDIT) matches
    /// nothing, an invalid DENY or CUSTOM matches every request; `rules` is then empty.
    #[serde(default)]
    pub invalid: Option<String>,
    #[serde(default, deserialize_with = "exact")]
    pub rules: Vec<Rule>,
}

/// A list read with no spare capacity. Without a length from the JSON, a parsed `Vec` of
/// one element holds room for four: a `Source` (a few hundred bytes) in each of 10,000
/// policies made the parsed configuration ~4× its size. Shrunk as each list ends, so the
/// spare room is reused by the next allocation instead of kept: the filter's VM memory
/// never shrinks, so this parse's high-water mark is what every Envoy worker keeps.
fn exact<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut v = Vec::<T>::deserialize(d)?;
    v.shrink_to_fit();
    Ok(v)
}

/// [`exact`] for an optional list.
fn exact_opt<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut v = Option::<Vec<T>>::deserialize(d)?;
    if let Some(v) = v.as_mut() {
        v.shrink_to_fit();
    }
    Ok(v)
}

/// Matches when any `from` matches (or `from` is absent), any `to` matches (or absent)
/// and every `when` matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, deserialize_with = "exact_opt")]
    pub from: Option<Vec<Source>>,
    #[serde(default, deserialize_with = "exact_opt")]
    pub to: Option<Vec<Operation>>,
    #[serde(default, deserialize_with = "exact")]
    pub when: Vec<Condition>,
}

/// A positive and a negative list for one attribute. Empty `values` = no positive
/// constraint; empty `not_values` = no negative constraint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field<T> {
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<T>,
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<T>,
}

impl<T> Default for Field<T> {
    fn default() -> Self {
        Field {
            values: Vec::new(),
            not_values: Vec::new(),
        }
    }
}

impl<T> Field<T> {
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.not_values.is_empty()
    }
}

/// Istio's string match: decided by the first and last character only (spec 4.8).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: any non-empty value (for headers: present).
    Presence,
}

/// An IPv4/IPv6 address or CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix_len: u8,
}

/// A path value: Istio string match, or a path template (`{*}`, `{**}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Str(StrMatch),
    /// Segments of a URI template, e.g. `/allow/admin/{**}`.
    Template(Vec<TemplateSegment>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateSegment {
    Literal(String),
    /// `{*}`: exactly one non-empty segment.
    One,
    /// `{**}`: zero or more characters, across segments; last operator only.
    Any,
}

/// `source` of a rule, with principals already in peer form (no `spiffe://`, aliases
/// expanded by `compile`). HTTP-only fields: `request_principals`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub principals: Field<StrMatch>,
    /// Namespace globs (`*` anywhere is a wildcard), matched against `/ns/<x>/`.
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub namespaces: Field<String>,
    /// `ns/sa` pairs (already qualified with the policy namespace when written as `sa`).
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub service_accounts: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub trust_domains: Field<StrMatch>,
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub request_principals: Field<StrMatch>,
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub ip_blocks: Field<Cidr>,
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub remote_ip_blocks: Field<Cidr>,
}

/// `to.operation` of a rule. HTTP-only fields: `hosts`, `methods`, `paths`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// Compared case-insensitively (values stored lower-case).
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub hosts: Field<StrMatch>,
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub ports: Field<u16>,
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub methods: Field<StrMatch>,
    #[serde(default, skip_serializing_if = "Field::is_empty")]
    pub paths: Field<PathMatch>,
}

/// A `when` condition, typed by its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "attribute", rename_all = "snake_case")]
pub enum Condition {
    /// `request.headers[name]` (name stored lower-case). HTTP only.
    RequestHeader {
        name: String,
        field: Field<StrMatch>,
    },
    SourceIp {
        field: Field<Cidr>,
    },
    RemoteIp {
        field: Field<Cidr>,
    },
    DestinationIp {
        field: Field<Cidr>,
    },
    DestinationPort {
        field: Field<u16>,
    },
    SourcePrincipal {
        field: Field<StrMatch>,
    },
    SourceNamespace {
        field: Field<String>,
    },
    SourceServiceAccount {
        field: Field<String>,
    },
    SourceTrustDomain {
        field: Field<StrMatch>,
    },
    ConnectionSni {
        field: Field<StrMatch>,
    },
    /// `request.auth.*` (JWT). HTTP only. peerguard has no RequestAuthentication, so the
    /// attribute is always absent: positive values never match, negative always do.
    RequestAuth {
        claim: String,
        field: Field<StrMatch>,
    },
    /// `experimental.envoy.filters.*`: not available to peerguard. Treated as absent.
    EnvoyMetadata {
        path: String,
        field: Field<StrMatch>,
    },
}
