//! `compile`: Istio resources + one workload → [`WorkloadPolicy`].
//!
//! - `peer_authn`: effective mTLS per port from PeerAuthentication (spec 2.2–2.4).
//! - `legacy`: the v1alpha1 Policy/MeshPolicy, used only when no PeerAuthentication
//!   applies to the workload (3.4, 3.5).
//! - `authz`: which AuthorizationPolicies apply (4.1) and their rules (4.4–4.9, 4.12).
//! - [`values`]: single-value conversions (string matches, ports, CIDRs, templates,
//!   trust-domain aliases, Go booleans, timestamps).
//!
//! peerguard choices (fail closed, where Istio would reject the object at the webhook or
//! skip it at run time):
//! - an invalid PeerAuthentication counts as STRICT at the scope its readable selector gives
//!   it; an invalid legacy Policy/MeshPolicy counts as STRICT for its readable targets;
//! - an invalid AuthorizationPolicy keeps its readable namespace, selector and action (an
//!   unreadable selector, or one Istio would refuse, selects the whole namespace; an
//!   unreadable action is DENY) and has no rules: ALLOW/AUDIT match nothing, DENY/CUSTOM
//!   match everything they select;
//! - an invalid object whose namespace cannot be read counts as being in the namespace of
//!   every workload compiled;
//! - an object of Istio's groups with an unknown kind (a misspelling) is a DENY of every
//!   request in its namespace (the whole mesh from the root namespace); one with an unknown
//!   version is an invalid object of its kind;
//! - JWT (RequestAuthentication, `requestPrincipals`, `request.auth.*`) is not enforced: it
//!   never matches (its negations always do), and every use is reported ([`JWT_NOT_ENFORCED`]);
//! - a value that cannot be converted here (port, CIDR, path template, `when` key) makes the
//!   whole policy invalid in the same way, rather than dropping the rule as Istio does;
//! - objects without `creationTimestamp` count as created at one same instant, before any
//!   timestamped object (Go's zero time), ties broken by name then namespace;
//! - nothing configured at all (neither API) is PERMISSIVE (spec 7.3).

mod authz;
#[cfg(test)]
mod dry_run_tests;
#[cfg(test)]
mod fail_closed_tests;
mod jwt;
mod legacy;
mod peer_authn;
mod select;
#[cfg(test)]
mod tests;
pub mod values;

pub use authz::DRY_RUN_ANNOTATION;
pub use jwt::JWT_NOT_ENFORCED;

/// How an object whose namespace cannot be read is named in policies and diagnostics.
pub(crate) const UNREADABLE_NAMESPACE: &str = "<unreadable>";

use crate::istio::Resource;
use crate::schema::{
    ModeFrom, MtlsMode, MtlsPolicy, PathNormalization, WorkloadPolicy, WorkloadRef, SCHEMA_VERSION,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The mesh-wide settings that change decisions (`meshConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshConfig {
    /// `meshConfig.trustDomain`, default `cluster.local`.
    pub trust_domain: String,
    /// `meshConfig.trustDomainAliases`.
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
    /// `meshConfig.rootNamespace`, default `istio-system`.
    pub root_namespace: String,
    /// `meshConfig.pathNormalization`, default BASE.
    #[serde(default)]
    pub path_normalization: PathNormalization,
    /// `meshConfig.defaultConfig.gatewayTopology.numTrustedProxies`, default 0.
    #[serde(default)]
    pub num_trusted_proxies: u32,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            trust_domain: "cluster.local".into(),
            trust_domain_aliases: Vec::new(),
            root_namespace: "istio-system".into(),
            path_normalization: PathNormalization::Base,
            num_trusted_proxies: 0,
        }
    }
}

/// How a Service maps one of its ports onto the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    pub service: String,
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    pub target_port: u16,
}

/// The server workload being compiled for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Short names of the Services (in `namespace`) that select this workload.
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub service_ports: Vec<ServicePort>,
}

/// Human-readable problems found while compiling one workload.
pub(crate) type Diagnostics = Vec<String>;

/// Compile the resources that apply to `workload` into its policy. Never fails: invalid
/// objects are compiled fail-closed and reported in `diagnostics`.
pub fn compile(resources: &[Resource], workload: &Workload, mesh: &MeshConfig) -> WorkloadPolicy {
    let mut diags = Diagnostics::new();
    let mtls = mtls_policy(resources, workload, mesh, &mut diags);
    let bundle = values::Bundle::new(&mesh.trust_domain, &mesh.trust_domain_aliases);
    let policies = authz::compile(resources, workload, mesh, &bundle, &mut diags);
    jwt::request_authentications(resources, workload, mesh, &mut diags);
    WorkloadPolicy {
        schema: SCHEMA_VERSION,
        workload: WorkloadRef {
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        },
        trust_domain: mesh.trust_domain.clone(),
        trust_domain_aliases: mesh.trust_domain_aliases.clone(),
        mtls,
        policies,
        diagnostics: diags,
        path_normalization: mesh.path_normalization,
        num_trusted_proxies: mesh.num_trusted_proxies,
        decision_log: None,
    }
}

/// PeerAuthentication when any applies to the workload, else the legacy API, else
/// PERMISSIVE (spec 2.4, 3.5, 7.3).
fn mtls_policy(
    resources: &[Resource],
    workload: &Workload,
    mesh: &MeshConfig,
    diags: &mut Diagnostics,
) -> MtlsPolicy {
    let candidates = peer_authn::candidates(resources, diags);
    let beta = peer_authn::resolve(&candidates, workload, mesh, diags);
    let legacy = legacy::resolve(resources, workload, diags);
    match (beta, legacy) {
        (Some(beta), Some(_)) => {
            diags.push(
                "legacy authentication Policy/MeshPolicy ignored for mTLS: a PeerAuthentication applies to this workload (Istio 1.5 rule)"
                    .into(),
            );
            beta
        }
        (Some(beta), None) => beta,
        (None, Some(legacy)) => legacy,
        (None, None) => MtlsPolicy {
            default: ModeFrom::new(MtlsMode::Permissive, None),
            ports: BTreeMap::new(),
        },
    }
}
