//! The WasmPlugin form: one `extensions.istio.io/v1alpha1` WasmPlugin per workload selector
//! group and filter role (HTTP, and network for workloads with TCP ports), `pluginConfig` =
//! the compiled `WorkloadPolicy`.
//!
//! Groups: the registry's sidecar workloads (one per pod with `--source kubernetes`) grouped
//! by namespace and labels, the labels a controller varies per pod left out
//! ([`VOLATILE_LABELS`]): the pods of one Deployment form one group, selected by those labels.
//! Each group's policy is compiled as `serve` compiles it, with the group's name as the
//! workload name (so that the pods of a group get byte-identical configurations).
//!
//! Fail closed, always visible: a group whose pods would need different policies under one
//! selector (e.g. two service accounts behind the same labels), or whose policy is larger than
//! [`MAX_PLUGIN_CONFIG_BYTES`], gets a `pluginConfig` the filter refuses (it then denies every
//! request: no valid configuration), and a warning naming the group and recommending the
//! EnvoyFilter + ECDS form. A pod without labels cannot be selected alone and gets no
//! WasmPlugin (warning). A selector that also matches another group's pods (a subset of their
//! labels) makes both plugins run there: each must allow (never more open; warned).

use super::{FORM_LABEL, MANAGED_BY};
use crate::envoy_config::{HTTP_ROOT_ID, TCP_ROOT_ID};
use crate::registry::Protocol;
use crate::serve::build::scoped;
use crate::source::Inputs;
use peerguard_filter::compile::{compile, MeshConfig, Workload};
use peerguard_filter::istio::Resource;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

pub const API_VERSION: &str = "extensions.istio.io/v1alpha1";
pub const KIND: &str = "WasmPlugin";
pub const PLURAL: &str = "wasmplugins";
pub const FORM: &str = "wasmplugin";

/// Labels controllers set per pod or per revision; a selector must not name them.
pub const VOLATILE_LABELS: [&str; 5] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "pod-template-generation",
    "apps.kubernetes.io/pod-index",
];

/// Largest `pluginConfig` (compact JSON) written into a WasmPlugin. The object goes through the
/// API server into etcd (1.5 MiB per request by default, 3 MiB per API request body) and is
/// then copied by istiod into every selected sidecar's configuration (as a protobuf `Struct`
/// turned back into a JSON string): 512 KiB keeps the object (with managedFields) well under
/// etcd's limit. Larger policies: use the EnvoyFilter + ECDS form.
pub const MAX_PLUGIN_CONFIG_BYTES: usize = 512 * 1024;

/// Where sidecars load the module from.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ModuleArgs {
    /// The module's URL as Istio reads it: `file:///path` (inside the sidecar), `oci://...` or
    /// `https://...`.
    #[arg(
        long = "wasm-url",
        default_value = "file:///var/local/peerguard/peerguard.wasm"
    )]
    pub url: String,
    /// SHA-256 of the module (hex); required for `https://` (Istio verifies it).
    #[arg(long = "wasm-sha256")]
    pub sha256: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModuleError {
    #[error("--wasm-url {0:?}: expected file://, oci:// or https://")]
    Scheme(String),
    #[error("--wasm-url {0:?}: an https:// module needs --wasm-sha256 (Istio checks it)")]
    NeedsSha(String),
    #[error("--wasm-sha256 {0:?}: expected 64 hex digits")]
    Sha(String),
}

impl ModuleArgs {
    pub fn check(&self) -> Result<(), ModuleError> {
        let u = &self.url;
        let https = u.starts_with("https://");
        if !(u.starts_with("file:///") || u.starts_with("oci://") || https) {
            return Err(ModuleError::Scheme(u.clone()));
        }
        match &self.sha256 {
            None if https => Err(ModuleError::NeedsSha(u.clone())),
            Some(s) if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Err(ModuleError::Sha(s.clone()))
            }
            _ => Ok(()),
        }
    }
}

/// What rendering produced: the objects, and what users must know about them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    pub objects: Vec<Value>,
    pub warnings: Vec<String>,
    /// Groups written with a configuration the filter refuses (their pods deny everything).
    pub refused: usize,
}

#[derive(Debug)]
struct Group {
    namespace: String,
    selector: BTreeMap<String, String>,
    name: String,
    /// The policy JSON, or why the group cannot have one.
    config: Result<Value, String>,
    members: Vec<String>,
    tcp_ports: BTreeSet<u16>,
}

/// `peerguard-<app or first label value>-<hash of the selector>`: stable while the selector
/// is, so a policy change updates the object in place.
pub fn group_name(selector: &BTreeMap<String, String>) -> String {
    let slug_src = selector
        .get("app")
        .or_else(|| selector.get("app.kubernetes.io/name"))
        .or_else(|| selector.values().next())
        .cloned()
        .unwrap_or_default();
    let mut slug: String = slug_src
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    slug.truncate(30);
    let slug = slug.trim_matches('-');
    let canon = serde_json::to_string(selector).unwrap_or_default();
    let hash = crate::node::hex(&Sha256::digest(canon.as_bytes())[..4]);
    if slug.is_empty() {
        format!("peerguard-{hash}")
    } else {
        format!("peerguard-{slug}-{hash}")
    }
}

/// The WasmPlugins for every sidecar workload of `inputs`.
pub fn render(inputs: &Inputs, mesh: &MeshConfig, module: &ModuleArgs) -> Rendered {
    let mut out = Rendered::default();
    let mut groups: BTreeMap<(String, BTreeMap<String, String>), Group> = BTreeMap::new();
    let mut views: BTreeMap<&str, Vec<Resource>> = BTreeMap::new();
    for (key, entry) in &inputs.registry.workloads {
        if !entry.spec.sidecar {
            continue;
        }
        let selector: BTreeMap<String, String> = entry
            .labels
            .iter()
            .filter(|(k, _)| !VOLATILE_LABELS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if selector.is_empty() {
            out.warnings.push(format!(
                "workload {key}: no labels to select it by; it gets no WasmPlugin (label it, or use the EnvoyFilter + ECDS form)"
            ));
            continue;
        }
        let name = group_name(&selector);
        let view = views
            .entry(key.namespace.as_str())
            .or_insert_with(|| scoped(&inputs.resources, &key.namespace, &mesh.root_namespace));
        let mut workload: Workload = entry.to_compile();
        workload.name = name.clone();
        let policy = compile(view, &workload, mesh);
        let config = serde_json::to_value(&policy).map_err(|e| format!("cannot serialize: {e}"));
        let tcp_ports: BTreeSet<u16> = entry
            .spec
            .services
            .iter()
            .flat_map(|s| s.ports.iter())
            .filter(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.target_port.unwrap_or(p.port))
            .collect();
        let g = groups
            .entry((key.namespace.clone(), selector.clone()))
            .or_insert_with(|| Group {
                namespace: key.namespace.clone(),
                selector,
                name,
                config: config.clone(),
                members: Vec::new(),
                tcp_ports: BTreeSet::new(),
            });
        if g.config.is_ok() && g.config != config {
            g.config = Err(format!(
                "its pods need different policies under one selector ({} and {key}: different service accounts, services or ports behind the same labels)",
                g.members.first().map(String::as_str).unwrap_or("?")
            ));
        }
        g.members.push(key.to_string());
        g.tcp_ports.extend(tcp_ports);
    }
    let all: Vec<&Group> = groups.values().collect();
    for g in &all {
        for other in &all {
            if std::ptr::eq(*g, *other) || g.namespace != other.namespace {
                continue;
            }
            if g.selector
                .iter()
                .all(|(k, v)| other.selector.get(k) == Some(v))
            {
                out.warnings.push(format!(
                    "WasmPlugin {}/{} also selects the pods of {}/{} ({}): both filters run there, each must allow",
                    g.namespace,
                    g.name,
                    other.namespace,
                    other.name,
                    other.members.join(", ")
                ));
            }
        }
    }
    for g in groups.values() {
        let config = match &g.config {
            Ok(v) => {
                let size = serde_json::to_string(v)
                    .map(|s| s.len())
                    .unwrap_or(usize::MAX);
                if size > MAX_PLUGIN_CONFIG_BYTES {
                    Err(format!(
                        "its policy is {size} bytes of JSON, more than the {MAX_PLUGIN_CONFIG_BYTES} a WasmPlugin carries through etcd"
                    ))
                } else {
                    Ok(v.clone())
                }
            }
            Err(e) => Err(e.clone()),
        };
        let config = match config {
            Ok(v) => v,
            Err(why) => {
                out.warnings.push(format!(
                    "WasmPlugin {}/{} ({}): {why}; it is written with a configuration the filter refuses, so these pods DENY every request (fail closed); use the EnvoyFilter + ECDS form (peerguard manifests istio envoyfilter)",
                    g.namespace,
                    g.name,
                    g.members.join(", ")
                ));
                out.refused += 1;
                refused_config(&why)
            }
        };
        out.objects.push(object(g, &config, module, false));
        if !g.tcp_ports.is_empty() {
            out.objects.push(object(g, &config, module, true));
        }
    }
    out
}

/// A `pluginConfig` that is not a `WorkloadPolicy`: the filter refuses it and denies.
pub fn refused_config(why: &str) -> Value {
    json!({"peerguard_refused": why})
}

fn object(g: &Group, config: &Value, module: &ModuleArgs, network: bool) -> Value {
    let name = if network {
        format!("{}-tcp", g.name)
    } else {
        g.name.clone()
    };
    let mut matches = json!({"mode": "SERVER"});
    if network {
        let ports: Vec<Value> = g.tcp_ports.iter().map(|p| json!({"number": p})).collect();
        matches["ports"] = Value::Array(ports);
    }
    let mut spec = json!({
        "selector": {"matchLabels": g.selector},
        "url": module.url,
        "pluginName": if network { TCP_ROOT_ID } else { HTTP_ROOT_ID },
        "type": if network { "NETWORK" } else { "HTTP" },
        "phase": "AUTHZ",
        "failStrategy": "FAIL_CLOSE",
        "match": [matches],
        "pluginConfig": config,
    });
    if let Some(sha) = &module.sha256 {
        spec["sha256"] = json!(sha.to_ascii_lowercase());
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": g.namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1, FORM_LABEL: FORM},
        },
        "spec": spec,
    })
}

#[cfg(test)]
mod tests;
