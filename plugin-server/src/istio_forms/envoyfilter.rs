//! The EnvoyFilter + ECDS form: one `networking.istio.io/v1alpha3` EnvoyFilter that adds to
//! Istio sidecars
//!
//! 1. the cluster `peerguard-xds` to `peerguard serve` (mTLS with the sidecar's own Istio
//!    certificate by default, the server's SPIFFE id checked),
//! 2. the HTTP filter `peerguard-http` before the router of every inbound connection manager,
//! 3. the network filter `peerguard-tcp` before `tcp_proxy` of every inbound TCP chain,
//!
//! both filters with `config_discovery` from the server (deny-all until the first
//! configuration; a listener waits for it). The server names each sidecar's pod from Istio's
//! node id and pushes that pod's compiled policy, so policies of any size and sub-second
//! pushes never go through etcd or istiod.
//!
//! Written against Istio's inbound listener (`virtualInbound`, context `SIDECAR_INBOUND`, one
//! chain per port and transport); `--port` restricts the filters to chains whose
//! `destination_port` is that port (EnvoyFilter `listener.portNumber`).

use super::{FORM_LABEL, MANAGED_BY};
use crate::envoy_config::istio::{self as ei, XdsTransport};
use crate::envoy_config::BadAddress;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const API_VERSION: &str = "networking.istio.io/v1alpha3";
pub const KIND: &str = "EnvoyFilter";
pub const PLURAL: &str = "envoyfilters";
pub const FORM: &str = "envoyfilter";

/// `peerguard manifests istio envoyfilter`'s defaults (also what
/// `manifests/istio/envoyfilter-ecds.yaml` is rendered with).
pub const DEFAULT_NAME: &str = "peerguard-ecds";
pub const DEFAULT_NAMESPACE: &str = "istio-system";
pub const DEFAULT_SERVER: &str = "peerguard.peerguard-system.svc.cluster.local:15010";
pub const DEFAULT_SERVER_IDENTITY: &str = "spiffe://cluster.local/ns/peerguard-system/sa/peerguard";

#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    /// Istio's root namespace applies it to the whole mesh; another namespace to that one.
    pub namespace: String,
    /// `workloadSelector.labels` (empty: every sidecar of the namespace / mesh).
    pub selector: BTreeMap<String, String>,
    /// `peerguard serve`'s gRPC address as sidecars reach it, `HOST:PORT`.
    pub server: String,
    pub transport: XdsTransport,
    /// Only the chains of these inbound ports (empty: every inbound chain).
    pub ports: Vec<u16>,
}

fn inbound_match(port: Option<u16>, filter: Value) -> Value {
    let mut listener = json!({"filterChain": {"filter": filter}});
    if let Some(p) = port {
        listener["portNumber"] = json!(p);
    }
    json!({"context": "SIDECAR_INBOUND", "listener": listener})
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: DEFAULT_NAME.into(),
            namespace: DEFAULT_NAMESPACE.into(),
            selector: BTreeMap::new(),
            server: DEFAULT_SERVER.into(),
            transport: XdsTransport::IstioMutual {
                server_identity: DEFAULT_SERVER_IDENTITY.into(),
            },
            ports: Vec::new(),
        }
    }
}

pub fn render(o: &Options) -> Result<Value, BadAddress> {
    let mut patches = vec![json!({
        "applyTo": "CLUSTER",
        "match": {"context": "SIDECAR_OUTBOUND"},
        "patch": {"operation": "ADD", "value": ei::xds_cluster(&o.server, &o.transport)?},
    })];
    let ports: Vec<Option<u16>> = if o.ports.is_empty() {
        vec![None]
    } else {
        o.ports.iter().copied().map(Some).collect()
    };
    for p in &ports {
        patches.push(json!({
            "applyTo": "HTTP_FILTER",
            "match": inbound_match(*p, json!({"name": ei::HCM, "subFilter": {"name": ei::ROUTER}})),
            "patch": {"operation": "INSERT_BEFORE", "value": ei::http_filter()},
        }));
    }
    for p in &ports {
        patches.push(json!({
            "applyTo": "NETWORK_FILTER",
            "match": inbound_match(*p, json!({"name": ei::TCP_PROXY})),
            "patch": {"operation": "INSERT_BEFORE", "value": ei::network_filter()},
        }));
    }
    // peerguard's ipBlocks/remoteIpBlocks read the direct peer and the X-Forwarded-For the
    // connection manager appends it to: Istio's inbound default would let a client-sent
    // X-Forwarded-For decide them (`istio_conformance` cases 101, 102 without this patch).
    for p in &ports {
        patches.push(json!({
            "applyTo": "NETWORK_FILTER",
            "match": inbound_match(*p, json!({"name": ei::HCM})),
            "patch": {"operation": "MERGE", "value": ei::inbound_hcm_merge()},
        }));
    }
    let mut spec = json!({"configPatches": patches});
    if !o.selector.is_empty() {
        spec["workloadSelector"] = json!({"labels": o.selector});
    }
    Ok(json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": o.name,
            "namespace": o.namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1, FORM_LABEL: FORM},
        },
        "spec": spec,
    }))
}

/// The name of [`render_direct_peer`]'s EnvoyFilter.
pub const DIRECT_PEER_NAME: &str = "peerguard-direct-peer";

/// The connection-manager part of [`render`] alone, mesh-wide: what the WasmPlugin form needs
/// besides its WasmPlugins. A WasmPlugin cannot change the connection manager, and with
/// Istio's inbound default (`use_remote_address: false`) a client-sent X-Forwarded-For would
/// become the filter's `source.address`, deciding `ipBlocks` and `source.ip`.
pub fn render_direct_peer(namespace: &str) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": DIRECT_PEER_NAME,
            "namespace": namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1, FORM_LABEL: FORM},
        },
        "spec": {"configPatches": [{
            "applyTo": "NETWORK_FILTER",
            "match": inbound_match(None, json!({"name": ei::HCM})),
            "patch": {"operation": "MERGE", "value": ei::inbound_hcm_merge()},
        }]},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_mesh_wide_istio_mutual_and_every_inbound_chain() {
        let ef = render(&Options::default()).unwrap();
        assert_eq!(ef["metadata"]["namespace"], DEFAULT_NAMESPACE);
        assert!(ef["spec"].get("workloadSelector").is_none());
        let p = ef["spec"]["configPatches"].as_array().unwrap();
        assert_eq!(p.len(), 4);
        let tls = &p[0]["patch"]["value"]["transport_socket"]["typed_config"]["common_tls_context"];
        assert_eq!(
            tls["combined_validation_context"]["default_validation_context"]
                ["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            DEFAULT_SERVER_IDENTITY
        );
        assert_eq!(
            tls["tls_certificate_sds_secret_configs"][0]["sds_config"]["api_config_source"]
                ["grpc_services"][0]["envoy_grpc"]["cluster_name"],
            ei::SDS_CLUSTER
        );
        for q in &p[1..] {
            assert_eq!(q["match"]["context"], "SIDECAR_INBOUND");
            assert!(q["match"]["listener"].get("portNumber").is_none());
        }
        for q in &p[1..3] {
            assert_eq!(q["patch"]["operation"], "INSERT_BEFORE");
        }
        assert_eq!(p[3]["patch"]["operation"], "MERGE");
        assert_eq!(
            p[3]["patch"]["value"]["typed_config"]["use_remote_address"],
            true
        );
        assert_eq!(
            p[1]["patch"]["value"]["name"],
            crate::envoy_config::listener::HTTP_FILTER
        );
        assert_eq!(
            p[2]["patch"]["value"]["name"],
            crate::envoy_config::listener::TCP_FILTER
        );
    }

    #[test]
    fn plaintext_selector_and_ports() {
        let ef = render(&Options {
            transport: XdsTransport::Plaintext,
            selector: [("app".to_string(), "httpbin".to_string())].into(),
            ports: vec![80, 9000],
            ..Options::default()
        })
        .unwrap();
        let p = ef["spec"]["configPatches"].as_array().unwrap();
        assert!(p[0]["patch"]["value"].get("transport_socket").is_none());
        assert_eq!(
            ef["spec"]["workloadSelector"],
            json!({"labels": {"app": "httpbin"}})
        );
        let ports: Vec<&Value> = p[1..]
            .iter()
            .map(|q| &q["match"]["listener"]["portNumber"])
            .collect();
        assert_eq!(
            ports,
            [
                &json!(80),
                &json!(9000),
                &json!(80),
                &json!(9000),
                &json!(80),
                &json!(9000)
            ]
        );
        assert!(render(&Options {
            server: "no-port".into(),
            ..Options::default()
        })
        .is_err());
    }
}
