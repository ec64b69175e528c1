//! The workload registry: which workloads exist, their service account, labels and ports.
//!
//! In directory mode the registry comes from peerguard's own kind, read from the same files
//! as the Istio resources (the Istio parser skips it as an unhandled kind):
//!
//! ```yaml
//! apiVersion: peerguard.dev/v1alpha1
//! kind: Workload
//! metadata: { name: httpbin, namespace: foo, labels: { app: httpbin } }
//! spec:
//!   serviceAccount: httpbin          # required
//!   services:
//!     - name: httpbin
//!       ports: [{ name: http, port: 8000, targetPort: 80, protocol: http }]
//!   sidecar: true                    # default true
//!   address: 10.0.0.5                # optional, informational
//!   probes:                          # optional: the kubelet's health checks (for `analyze`)
//!     - { kind: liveness, type: http, port: 80, path: /healthz }   # kind: liveness|readiness|startup
//!     - { kind: readiness, type: tcp, port: 80, rewritten: false }  # type: http|tcp|grpc|exec
//! ```
//!
//! Invalid objects are reported with file, object and field and left out; a workload that is
//! left out gets no configuration and no certificate (its Envoy keeps warming: fail closed).

use peerguard_filter::compile::{ServicePort, Workload};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

pub const API_VERSION: &str = "peerguard.dev/v1alpha1";
pub const KIND: &str = "Workload";

/// `namespace/name` of a workload (and of the Envoy node that runs as it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    /// Defaults to `port`.
    #[serde(default)]
    pub target_port: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    pub service_account: String,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    #[serde(default = "yes")]
    pub sidecar: bool,
    #[serde(default)]
    pub address: Option<String>,
    /// Health checks the platform (the kubelet) sends to the workload's ports; read only by
    /// `peerguard analyze` (a probe on a STRICT port fails: the prober has no certificate).
    #[serde(default)]
    pub probes: Vec<ProbeSpec>,
}

/// One liveness/readiness/startup probe, as the prober sends it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    #[serde(rename = "type")]
    pub probe_type: ProbeType,
    /// The workload (container) port probed; required except for `exec`.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub path: Option<String>,
    /// Istio's sidecar injector rewrote it to go through the sidecar agent
    /// (`sidecar.istio.io/rewriteAppHTTPProbers`, on by default): it then never reaches the
    /// mesh port. Default `false` (a directory workload has no injector).
    #[serde(default)]
    pub rewritten: bool,
    /// The container it belongs to, for messages (Kubernetes).
    #[serde(default)]
    pub container: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeType {
    Http,
    Tcp,
    Grpc,
    Exec,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
            ProbeKind::Startup => "startup",
        }
    }
}

impl ProbeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeType::Http => "http",
            ProbeType::Tcp => "tcp",
            ProbeType::Grpc => "grpc",
            ProbeType::Exec => "exec",
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkloadObject {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Metadata,
    spec: WorkloadSpec,
}

/// One registered workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEntry {
    pub key: WorkloadKey,
    pub labels: BTreeMap<String, String>,
    pub spec: WorkloadSpec,
    /// The file it came from, for messages.
    pub file: String,
}

impl WorkloadEntry {
    /// The workload as `compile` sees it.
    pub fn to_compile(&self) -> Workload {
        let mut services = Vec::new();
        let mut service_ports = Vec::new();
        for s in &self.spec.services {
            services.push(s.name.clone());
            for p in &s.ports {
                service_ports.push(ServicePort {
                    service: s.name.clone(),
                    name: p.name.clone(),
                    port: p.port,
                    target_port: p.target_port.unwrap_or(p.port),
                });
            }
        }
        Workload {
            namespace: self.key.namespace.clone(),
            name: self.key.name.clone(),
            service_account: self.spec.service_account.clone(),
            labels: self.labels.clone(),
            services,
            service_ports,
        }
    }
}

/// A problem with one registry object: `file: Workload ns/name: field: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {object}: {}{message}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct RegistryError {
    pub file: String,
    pub object: String,
    pub field: Option<String>,
    pub message: String,
}

/// Is this JSON document one of ours?
pub fn is_workload(doc: &serde_json::Value) -> bool {
    doc.get("kind").and_then(|k| k.as_str()) == Some(KIND)
        && doc.get("apiVersion").and_then(|k| k.as_str()) == Some(API_VERSION)
}

/// Read one `Workload` document.
pub fn parse_workload(doc: &serde_json::Value, file: &str) -> Result<WorkloadEntry, RegistryError> {
    let meta = doc.get("metadata");
    let s = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    };
    let object = format!("{KIND} {}/{}", s("namespace"), s("name"));
    let obj: WorkloadObject = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        RegistryError {
            file: file.into(),
            object: object.clone(),
            field: (path != ".").then_some(path),
            message: e.into_inner().to_string(),
        }
    })?;
    let err = |field: &str, message: String| RegistryError {
        file: file.into(),
        object: object.clone(),
        field: Some(field.into()),
        message,
    };
    for (k, v) in [
        ("metadata.name", &obj.metadata.name),
        ("metadata.namespace", &obj.metadata.namespace),
    ] {
        if !valid_dns_label(v) {
            return Err(err(k, format!("{v:?} is not a valid DNS label")));
        }
    }
    if obj.spec.service_account.is_empty() || obj.spec.service_account.contains('/') {
        return Err(err(
            "spec.serviceAccount",
            format!("{:?} is not a valid name", obj.spec.service_account),
        ));
    }
    for (i, svc) in obj.spec.services.iter().enumerate() {
        for (j, p) in svc.ports.iter().enumerate() {
            if p.port == 0 || p.target_port == Some(0) {
                return Err(err(
                    &format!("spec.services[{i}].ports[{j}]"),
                    "port 0 is not valid".into(),
                ));
            }
        }
    }
    for (i, p) in obj.spec.probes.iter().enumerate() {
        match (p.probe_type, p.port) {
            (_, Some(0)) => {
                return Err(err(
                    &format!("spec.probes[{i}].port"),
                    "port 0 is not valid".into(),
                ))
            }
            (ProbeType::Exec, _) | (_, Some(_)) => {}
            (t, None) => {
                return Err(err(
                    &format!("spec.probes[{i}].port"),
                    format!("required for a {} probe", t.as_str()),
                ))
            }
        }
    }
    let _ = obj.metadata.annotations;
    Ok(WorkloadEntry {
        key: WorkloadKey {
            namespace: obj.metadata.namespace,
            name: obj.metadata.name,
        },
        labels: obj.metadata.labels,
        spec: obj.spec,
        file: file.into(),
    })
}

fn valid_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// All registered workloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    pub workloads: BTreeMap<WorkloadKey, WorkloadEntry>,
}

impl Registry {
    /// Adds an entry; a second definition of the same `ns/name` is an error and both are
    /// kept out (which one is right is unknown: fail closed).
    pub fn build(entries: Vec<WorkloadEntry>) -> (Registry, Vec<RegistryError>) {
        let mut by_key: BTreeMap<WorkloadKey, Vec<WorkloadEntry>> = BTreeMap::new();
        for e in entries {
            by_key.entry(e.key.clone()).or_default().push(e);
        }
        let mut reg = Registry::default();
        let mut errors = Vec::new();
        for (key, mut list) in by_key {
            if list.len() == 1 {
                if let Some(e) = list.pop() {
                    reg.workloads.insert(key, e);
                }
            } else {
                let files: Vec<_> = list.iter().map(|e| e.file.clone()).collect();
                errors.push(RegistryError {
                    file: files.join(", "),
                    object: format!("{KIND} {key}"),
                    field: None,
                    message: "defined more than once; ignored until only one definition remains"
                        .into(),
                });
            }
        }
        (reg, errors)
    }

    pub fn get(&self, key: &WorkloadKey) -> Option<&WorkloadEntry> {
        self.workloads.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(y: &str) -> serde_json::Value {
        serde_saphyr::from_str(y).unwrap_or(serde_json::Value::Null)
    }

    #[test]
    fn parses_a_workload() {
        let d = doc("apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: httpbin, namespace: foo, labels: {app: httpbin}}\nspec:\n  serviceAccount: httpbin\n  services: [{name: httpbin, ports: [{name: http, port: 8000, targetPort: 80}]}]\n");
        assert!(is_workload(&d));
        let e = parse_workload(&d, "w.yaml").map_err(|e| e.to_string());
        let e = match e {
            Ok(e) => e,
            Err(m) => panic!("{m}"),
        };
        let w = e.to_compile();
        assert_eq!(w.service_account, "httpbin");
        assert_eq!(w.service_ports[0].target_port, 80);
        assert_eq!(w.labels.get("app").map(String::as_str), Some("httpbin"));
        assert!(e.spec.sidecar);
        assert!(e.spec.probes.is_empty());
    }

    #[test]
    fn probes_are_read_and_checked() {
        let d = doc("apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: a, namespace: foo}\nspec:\n  serviceAccount: a\n  probes: [{kind: liveness, type: http, port: 80, path: /healthz}, {kind: readiness, type: exec}]\n");
        let e = parse_workload(&d, "w.yaml").map_err(|e| e.to_string());
        let probes = e.map(|e| e.spec.probes).unwrap_or_default();
        assert_eq!(probes.len(), 2);
        assert_eq!(probes[0].probe_type, ProbeType::Http);
        assert_eq!(probes[0].port, Some(80));
        assert!(!probes[0].rewritten);
        let d = doc("apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: a, namespace: foo}\nspec:\n  serviceAccount: a\n  probes: [{kind: liveness, type: tcp}]\n");
        let msg = parse_workload(&d, "w.yaml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("spec.probes[0].port: required"), "{msg}");
        let d = doc("apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: a, namespace: foo}\nspec:\n  serviceAccount: a\n  probes: [{kind: liveness, type: tcp, port: 80, bogus: 1}]\n");
        assert!(parse_workload(&d, "w.yaml").is_err());
    }

    #[test]
    fn errors_name_file_object_and_field() {
        let d = doc("apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: a, namespace: foo}\nspec:\n  serviceAccount: a\n  services: [{name: s, ports: [{port: 80, protocol: udp}]}]\n");
        let msg = parse_workload(&d, "w.yaml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.starts_with("w.yaml: Workload foo/a: spec.services[0].ports[0].protocol: "),
            "{msg}"
        );
        let d = doc("apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: a, namespace: foo}\nspec: {}\n");
        let msg = parse_workload(&d, "w.yaml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("serviceAccount"), "{msg}");
    }

    #[test]
    fn duplicates_are_refused() {
        let d = doc("apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: a, namespace: foo}\nspec: {serviceAccount: a}\n");
        let a = parse_workload(&d, "1.yaml").ok();
        let b = parse_workload(&d, "2.yaml").ok();
        let (reg, errs) = Registry::build(a.into_iter().chain(b).collect());
        assert!(reg.workloads.is_empty());
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().contains("1.yaml, 2.yaml"));
    }
}
