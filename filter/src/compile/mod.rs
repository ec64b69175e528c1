//! `compile`: Istio resources + one workload → [`WorkloadPolicy`].

use crate::istio::Resource;
use crate::schema::WorkloadPolicy;
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
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            trust_domain: "cluster.local".into(),
            trust_domain_aliases: Vec::new(),
            root_namespace: "istio-system".into(),
        }
    }
}

/// How a Service maps one of its ports onto the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub service: String,
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    pub target_port: u16,
}

/// The server workload being compiled for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// Compile the resources that apply to `workload` into its policy. Never fails: invalid
/// objects are compiled fail-closed and reported in `diagnostics`.
pub fn compile(_resources: &[Resource], workload: &Workload, mesh: &MeshConfig) -> WorkloadPolicy {
    use crate::schema::*;
    // Not built yet: a STRICT, allow-nothing policy (fail closed).
    WorkloadPolicy {
        schema: SCHEMA_VERSION,
        workload: WorkloadRef { namespace: workload.namespace.clone(), name: workload.name.clone() },
        trust_domain: mesh.trust_domain.clone(),
        trust_domain_aliases: mesh.trust_domain_aliases.clone(),
        mtls: MtlsPolicy { default: ModeFrom { mode: MtlsMode::Strict, from: None }, ports: Default::default() },
        policies: Vec::new(),
        diagnostics: vec!["compile is not implemented yet".into()],
    }
}
