//! Spec types mirroring istio/api protos (`security/v1beta1`, `networking/v1alpha3`, the
//! legacy `authentication/v1alpha1`). Field names are the YAML (camelCase) names. Unknown
//! fields are refused by the parser (a typo in a DENY rule must not silently widen access).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where an object came from, for error messages: `file` and the document index in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub file: String,
    /// 0-based index of the YAML document (or list item) in the file.
    pub index: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    /// `None` for cluster-scoped objects (MeshPolicy); namespaced objects without one are
    /// put in the `default` namespace by the parser, as kubectl does. `None` on a namespaced
    /// [`InvalidObject`] means the namespace was written but cannot be read (see
    /// [`InvalidObject::namespace_unreadable`]).
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339, kept as written (the parser refuses a malformed one); ordering reads it
    /// with [`crate::istio::time::rfc3339_seconds`].
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

/// `kind namespace/name` for messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One parsed object of a handled kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object<S> {
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: S,
    pub origin: Origin,
}

/// A resource of a kind peerguard handles, valid or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Resource {
    PeerAuthentication(Object<PeerAuthenticationSpec>),
    AuthorizationPolicy(Object<AuthorizationPolicySpec>),
    DestinationRule(Object<DestinationRuleSpec>),
    /// `authentication.istio.io/v1alpha1` `Policy` (namespaced).
    LegacyPolicy(Object<LegacyPolicySpec>),
    /// `authentication.istio.io/v1alpha1` `MeshPolicy` (cluster-scoped).
    MeshPolicy(Object<LegacyPolicySpec>),
    /// End-user (JWT) authentication: peerguard does not enforce it. Kept (rather than
    /// skipped) so that `compile` says so for every workload it selects.
    RequestAuthentication(Object<RequestAuthenticationSpec>),
    /// A handled kind that failed to parse or validate, or an object of one of Istio's groups
    /// with an unknown kind or version. Kept so that `compile` can fail closed for it (an
    /// invalid AuthorizationPolicy still counts) and report it.
    Invalid(InvalidObject),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvalidObject {
    pub kind: String,
    pub api_version: String,
    /// As much of the metadata as could be read.
    pub metadata: ObjectMeta,
    pub origin: Origin,
    /// The object as written, for best-effort fail-closed handling (action, selector).
    pub raw: serde_json::Value,
    pub error: String,
}

impl InvalidObject {
    /// A kind Istio's group does not have (a misspelt `kind`): what the object was meant to
    /// be is unknown, so `compile` reads it as a DENY of everything in its scope.
    pub fn unknown_kind(&self) -> bool {
        super::kinds::istio_group(&self.api_version)
            .is_some_and(|group| !super::kinds::kinds_of(group).contains(&self.kind.as_str()))
    }

    /// `metadata.namespace` was written but is not a namespace name (not a string, not a
    /// DNS-1123 label): the object could be in any namespace. Every Istio kind but MeshPolicy
    /// is namespaced; the parser puts an object without a namespace in `default`.
    pub fn namespace_unreadable(&self) -> bool {
        self.metadata.namespace.is_none() && self.kind != "MeshPolicy"
    }
}

// ---------------------------------------------------------------- security.istio.io

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeerMode {
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: PeerMode,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub mtls: Option<MutualTls>,
    /// Keys are workload (target) ports.
    #[serde(default)]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    /// `None` = no `rules` field (differs from `rules: []` only for messages).
    #[serde(default)]
    pub rules: Option<Vec<AuthzRule>>,
    #[serde(default)]
    pub action: AuthzAction,
    #[serde(default)]
    pub provider: Option<ExtensionProvider>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzRule {
    #[serde(default)]
    pub from: Option<Vec<RuleFrom>>,
    #[serde(default)]
    pub to: Option<Vec<RuleTo>>,
    #[serde(default)]
    pub when: Option<Vec<AuthzCondition>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(default)]
    pub source: Option<AuthzSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    #[serde(default)]
    pub operation: Option<AuthzOperation>,
}

/// Every list is `None` when absent (no constraint) and `Some` when written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzSource {
    pub principals: Option<Vec<String>>,
    pub not_principals: Option<Vec<String>>,
    pub request_principals: Option<Vec<String>>,
    pub not_request_principals: Option<Vec<String>>,
    pub namespaces: Option<Vec<String>>,
    pub not_namespaces: Option<Vec<String>>,
    pub service_accounts: Option<Vec<String>>,
    pub not_service_accounts: Option<Vec<String>>,
    pub trust_domains: Option<Vec<String>>,
    pub not_trust_domains: Option<Vec<String>>,
    pub ip_blocks: Option<Vec<String>>,
    pub not_ip_blocks: Option<Vec<String>>,
    pub remote_ip_blocks: Option<Vec<String>>,
    pub not_remote_ip_blocks: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzOperation {
    pub hosts: Option<Vec<String>>,
    pub not_hosts: Option<Vec<String>>,
    pub ports: Option<Vec<String>>,
    pub not_ports: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub not_methods: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub not_paths: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzCondition {
    pub key: String,
    pub values: Option<Vec<String>>,
    pub not_values: Option<Vec<String>>,
}

/// `RequestAuthentication`: only what selection needs is typed; `jwtRules` are kept as
/// written because peerguard validates no JWT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub jwt_rules: Vec<serde_json::Map<String, serde_json::Value>>,
}

// ---------------------------------------------------------------- networking.istio.io

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    #[default]
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

/// `ClientTLSSettings`. Only `mode` drives peerguard's decisions; the certificate fields
/// are kept for MUTUAL/SIMPLE origination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTlsSettings {
    #[serde(default)]
    pub mode: TlsMode,
    pub client_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
    pub credential_name: Option<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    pub sni: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSelector {
    pub number: Option<u32>,
}

/// Fields other than TLS (load balancing, outlier detection...) are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    pub port: Option<PortSelector>,
    pub tls: Option<ClientTlsSettings>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    pub tls: Option<ClientTlsSettings>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    pub host: String,
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    #[serde(default)]
    pub export_to: Vec<String>,
    pub workload_selector: Option<WorkloadSelector>,
}

// ---------------------------------------------------------- authentication.istio.io/v1alpha1

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LegacyMtlsMode {
    /// Enum value 0 in the 1.4 proto: `mtls: {}` and a bare `mtls:` mean STRICT.
    #[default]
    Strict,
    Permissive,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyMtls {
    #[serde(default)]
    pub mode: LegacyMtlsMode,
    #[serde(default)]
    pub allow_tls: bool,
}

/// One `peers` entry: `mtls` (possibly null) or `jwt` (kept opaque, unsupported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LegacyPeer {
    Mtls(LegacyMtls),
    Jwt(serde_json::Value),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LegacyPortSelector {
    Number(u32),
    Name(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyTarget {
    pub name: String,
    pub ports: Vec<LegacyPortSelector>,
}

/// `Policy` / `MeshPolicy` spec. `origins`, `principalBinding` and jwt peers are end-user
/// authentication, out of scope: they are kept only to be reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyPolicySpec {
    pub targets: Vec<LegacyTarget>,
    pub peers: Vec<LegacyPeer>,
    pub peer_is_optional: bool,
    pub has_origins: bool,
}

impl LegacyPolicySpec {
    /// The mTLS mode this policy gives its ports: the first `mtls` peer decides; no mtls
    /// peer at all means plaintext only (spec 3.1).
    pub fn mtls_mode(&self) -> Option<LegacyMtlsMode> {
        self.peers.iter().find_map(|p| match p {
            LegacyPeer::Mtls(m) => Some(m.mode),
            LegacyPeer::Jwt(_) => None,
        })
    }
}
