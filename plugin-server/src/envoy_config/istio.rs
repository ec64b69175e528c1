//! What an Istio sidecar's own configuration calls things, and the pieces peerguard adds to
//! it (the EnvoyFilter + ECDS form, `peerguard manifests istio envoyfilter`).
//!
//! Names as istiod generates them for sidecars (checked against Istio 1.22–1.24's
//! `pilot/pkg/networking/core` listener and cluster builders and their config dumps): the
//! inbound listener `virtualInbound` on 15006 with one filter chain per inbound port and
//! transport (`transport_protocol` `tls` with Istio's ALPNs for mTLS, `raw_buffer` for
//! plaintext, matched on `destination_port`), HTTP chains ending in the connection manager's
//! router, TCP chains in `tcp_proxy`; certificates from the Istio agent over SDS (`default`,
//! `ROOTCA`) on the static cluster `sds-grpc`.

use super::listener::{ecds_http_filter, ecds_network_filter};
use super::XDS_CLUSTER;
use serde_json::{json, Value};

/// Istio's inbound listener and its port.
pub const INBOUND_LISTENER: &str = "virtualInbound";
pub const INBOUND_PORT: u16 = 15006;
/// The Istio agent's SDS cluster and secret names.
pub const SDS_CLUSTER: &str = "sds-grpc";
pub use super::listener::{SECRET_CERT, SECRET_ROOT};
pub const HCM: &str = "envoy.filters.network.http_connection_manager";
pub const ROUTER: &str = "envoy.filters.http.router";
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
/// Istio's in-mesh ALPN for HTTP/2 (`util.ALPNInMeshH2`): what a sidecar offers to another
/// sidecar's mTLS chain.
pub const ALPN_IN_MESH_H2: [&str; 2] = ["istio", "h2"];

/// The config source of Istio's SDS secrets (the agent on `sds-grpc`), as istiod writes it.
pub fn sds_config() -> Value {
    json!({
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "set_node_on_first_message_only": true,
            "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
        },
        "resource_api_version": "V3",
        "initial_fetch_timeout": "0s",
    })
}

/// ECDS from `peerguard serve` for an Istio sidecar: gRPC over [`XDS_CLUSTER`], no token (the
/// server names the pod from Istio's node id; filter configuration is not a secret), and a
/// listener waits for its policy (`initial_fetch_timeout: 0s`).
pub fn ecds_config_source() -> Value {
    json!({
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
        },
        "resource_api_version": "V3",
        "initial_fetch_timeout": "0s",
    })
}

/// How a sidecar reaches `peerguard serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XdsTransport {
    /// mTLS with the sidecar's own Istio certificate (SDS `default`/`ROOTCA` from the agent),
    /// the server's certificate checked for this SPIFFE id (the server runs in the mesh, its
    /// own sidecar terminating mTLS).
    IstioMutual { server_identity: String },
    /// Plaintext (a server reached over a trusted network only).
    Plaintext,
}

/// The `peerguard-xds` cluster for an Istio sidecar: the server at `host:port` (DNS), HTTP/2.
pub fn xds_cluster(server: &str, transport: &XdsTransport) -> Result<Value, super::BadAddress> {
    let mut c = super::xds_cluster(server)?;
    if let XdsTransport::IstioMutual { server_identity } = transport {
        c["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ALPN_IN_MESH_H2,
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
                    "tls_certificate_sds_secret_configs": [{"name": SECRET_CERT, "sds_config": sds_config()}],
                    "combined_validation_context": {
                        "default_validation_context": {"match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": server_identity}}]},
                        "validation_context_sds_secret_config": {"name": SECRET_ROOT, "sds_config": sds_config()},
                    },
                },
            },
        });
    }
    Ok(c)
}

/// What is merged into an Istio sidecar's inbound connection managers so that peerguard's
/// address conditions read what they must ([`super::direct_peer_fields`]): Istio's inbound
/// default, `use_remote_address: false`, lets a client-sent X-Forwarded-For become the
/// stream's source address.
pub fn inbound_hcm_merge() -> Value {
    let mut typed = super::direct_peer_fields();
    typed["@type"] = json!(super::HCM_TYPE);
    json!({"name": HCM, "typed_config": typed})
}

/// The peerguard HTTP filter an Istio sidecar gets from ECDS.
pub fn http_filter() -> Value {
    ecds_http_filter(&ecds_config_source())
}

/// The peerguard network filter an Istio sidecar gets from ECDS.
pub fn network_filter() -> Value {
    ecds_network_filter(&ecds_config_source())
}
