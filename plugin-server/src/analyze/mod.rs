//! `peerguard analyze`: what is wrong or risky in a mesh's resources. Pure (no I/O, no
//! clock): the caller reads the mesh ([`Inputs`]), the mesh settings and the certificate
//! facts ([`CertFacts`], with the current time), and gets [`Finding`]s, each with a stable
//! code, the object and field, a message that says where Istio documents the rule, and a
//! fix hint.
//!
//! Semantics are never re-derived here: the mTLS mode of a workload port, the policies that
//! select a workload and which PeerAuthentication wins a scope are what `compile` says for
//! that workload ([`compiled`], exactly as `serve` compiles it), and the TLS a client sidecar
//! originates is what the filter's client module chooses ([`peerguard_filter::client`]).
//!
//! Families (one file each): [`mtls`] PG1xx, [`authz`] PG2xx, [`legacy`] PG3xx, [`certs`]
//! PG4xx, [`probes`] PG5xx; PG0xx are objects that cannot be read at all.

mod authz;
mod certs;
mod legacy;
mod mtls;
mod probes;
#[cfg(test)]
mod tests;

pub use certs::{parse_metrics, CaCert, CertFacts, WorkloadCert};

use crate::registry::WorkloadEntry;
use crate::serve::build::scoped;
use crate::source::{Fallback, Inputs};
use peerguard_filter::compile::{compile, MeshConfig, Workload};
use peerguard_filter::istio::{Object, Resource};
use peerguard_filter::WorkloadPolicy;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
        }
    }
}

/// One thing wrong or risky.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable: `PG` + family digit + number (see the module docs and the README).
    pub code: &'static str,
    pub severity: Severity,
    /// `Kind namespace/name` (or what stands for it: `mesh`, `serve --workload-cert-ttl`).
    pub object: String,
    /// The file (or API server path) the object came from; empty when none.
    pub file: String,
    /// JSON path of the field, e.g. `spec.portLevelMtls[8080]`; empty for the whole object.
    pub field: String,
    /// What is wrong, and where Istio says so.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// One registered workload and the policy `serve` sends it.
pub(crate) struct Compiled<'a> {
    pub entry: &'a WorkloadEntry,
    pub workload: Workload,
    pub policy: WorkloadPolicy,
}

/// What every family reads.
pub(crate) struct Ctx<'a> {
    pub inputs: &'a Inputs,
    pub mesh: &'a MeshConfig,
    pub workloads: Vec<Compiled<'a>>,
}

impl<'a> Ctx<'a> {
    fn new(inputs: &'a Inputs, mesh: &'a MeshConfig) -> Self {
        let workloads = inputs
            .registry
            .workloads
            .values()
            .map(|entry| {
                let workload = entry.to_compile();
                let policy = compiled(inputs, mesh, &workload);
                Compiled {
                    entry,
                    workload,
                    policy,
                }
            })
            .collect();
        Ctx {
            inputs,
            mesh,
            workloads,
        }
    }

    /// A registry to check selectors against: with no registered workload at all, "selects
    /// no workload" would be said of every selector, so those checks stay silent.
    pub fn has_registry(&self) -> bool {
        !self.workloads.is_empty()
    }

    /// The file an object named `Kind ns/name` came from.
    pub fn file_of(&self, object: &str) -> String {
        self.inputs
            .resources
            .iter()
            .find(|r| object_name(r).as_deref() == Some(object))
            .map(|r| origin_of(r).to_string())
            .unwrap_or_default()
    }
}

/// The policy `serve` sends to `workload` (as [`crate::cli::workload::Mesh::compile`]).
pub(crate) fn compiled(inputs: &Inputs, mesh: &MeshConfig, workload: &Workload) -> WorkloadPolicy {
    let view = scoped(&inputs.resources, &workload.namespace, &mesh.root_namespace);
    compile(&view, workload, mesh)
}

/// A workload no object can select by namespace or labels: what is left is the mesh scope.
pub(crate) fn mesh_probe() -> Workload {
    Workload {
        namespace: " mesh".into(),
        name: " mesh".into(),
        service_account: "default".into(),
        ..Workload::default()
    }
}

pub(crate) fn namespace_of<S>(o: &Object<S>) -> &str {
    o.metadata.namespace.as_deref().unwrap_or("default")
}

pub(crate) fn key_of<S>(kind: &str, o: &Object<S>) -> String {
    if kind == "MeshPolicy" {
        format!("{kind} {}", o.metadata.name)
    } else {
        format!("{kind} {}/{}", namespace_of(o), o.metadata.name)
    }
}

/// `Kind ns/name` of a resource, as `compile` names it in `from` and diagnostics.
pub(crate) fn object_name(r: &Resource) -> Option<String> {
    Some(match r {
        Resource::PeerAuthentication(o) => key_of("PeerAuthentication", o),
        Resource::AuthorizationPolicy(o) => key_of("AuthorizationPolicy", o),
        Resource::DestinationRule(o) => key_of("DestinationRule", o),
        Resource::LegacyPolicy(o) => key_of("Policy", o),
        Resource::MeshPolicy(o) => key_of("MeshPolicy", o),
        Resource::RequestAuthentication(o) => key_of("RequestAuthentication", o),
        Resource::Invalid(o) => match &o.metadata.namespace {
            Some(ns) => format!("{} {ns}/{}", o.kind, o.metadata.name),
            None => format!("{} {}", o.kind, o.metadata.name),
        },
    })
}

fn origin_of(r: &Resource) -> &str {
    match r {
        Resource::PeerAuthentication(o) => &o.origin.file,
        Resource::AuthorizationPolicy(o) => &o.origin.file,
        Resource::DestinationRule(o) => &o.origin.file,
        Resource::LegacyPolicy(o) | Resource::MeshPolicy(o) => &o.origin.file,
        Resource::RequestAuthentication(o) => &o.origin.file,
        Resource::Invalid(o) => &o.origin.file,
    }
}

/// Everything wrong or risky, most severe first within each object.
pub fn analyze(inputs: &Inputs, mesh: &MeshConfig, certs: &CertFacts) -> Vec<Finding> {
    let ctx = Ctx::new(inputs, mesh);
    let mut out = Vec::new();
    unreadable(inputs, &mut out);
    mtls::check(&ctx, &mut out);
    authz::check(&ctx, &mut out);
    legacy::check(&ctx, &mut out);
    certs::check(certs, &mut out);
    probes::check(&ctx, &mut out);
    out.sort_by(|a, b| {
        (
            &a.object,
            &a.file,
            std::cmp::Reverse(a.severity),
            a.code,
            &a.field,
        )
            .cmp(&(
                &b.object,
                &b.file,
                std::cmp::Reverse(b.severity),
                b.code,
                &b.field,
            ))
    });
    out.dedup();
    out
}

/// PG001 (every parse, validation and registry error) and PG002 (files not readable at all).
fn unreadable(inputs: &Inputs, out: &mut Vec<Finding>) {
    for e in &inputs.errors {
        let (file, object, field, message) = split_error(e);
        out.push(Finding {
            code: "PG001",
            severity: Severity::Error,
            object,
            file,
            field,
            message: format!("invalid: {message}; peerguard enforces it fail-closed (an invalid DENY or PeerAuthentication denies its whole scope, an invalid ALLOW allows nothing, a Workload left out gets no configuration)"),
            hint: "fix the field named (Istio's API server or webhook would refuse this object: `istioctl validate` / `kubectl apply --dry-run=server`)".into(),
        });
    }
    for u in &inputs.unreadable {
        if u.fallback == Fallback::Nothing {
            continue;
        }
        let what = match u.fallback {
            Fallback::LastGood => "its last good content is served",
            _ => "policy updates are held for every workload (serve)",
        };
        out.push(Finding {
            code: "PG002",
            severity: Severity::Error,
            object: "file".into(),
            file: u.file.clone(),
            field: String::new(),
            message: format!("unreadable ({}): {what}", u.errors.join("; ")),
            hint: "fix the YAML syntax (or the file's permissions); what it holds is unknown until then".into(),
        });
    }
}

/// `file: Kind ns/name: field: message` → its parts (the format of [`Inputs::errors`]).
fn split_error(e: &str) -> (String, String, String, String) {
    let mut parts: Vec<&str> = e.splitn(4, ": ").collect();
    let file = if parts.len() > 1 {
        parts.remove(0).to_string()
    } else {
        String::new()
    };
    let looks_like_object = |s: &str| {
        let mut w = s.split(' ');
        matches!((w.next(), w.next(), w.next()), (Some(k), Some(_), None) if k.chars().next().is_some_and(char::is_uppercase))
    };
    let object = if parts.len() > 1 && looks_like_object(parts[0]) {
        parts.remove(0).to_string()
    } else {
        String::new()
    };
    let looks_like_field = |s: &str| {
        ["spec", "metadata", "apiVersion", "kind"]
            .iter()
            .any(|p| s.starts_with(p))
            && !s.contains(' ')
    };
    let field = if parts.len() > 1 && looks_like_field(parts[0]) {
        parts.remove(0).to_string()
    } else {
        String::new()
    };
    (file, object, field, parts.join(": "))
}
