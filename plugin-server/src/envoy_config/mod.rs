//! The one Envoy-configuration vocabulary of the project. Every Envoy configuration peerguard
//! writes — `peerguard bootstrap` (xDS and static reference sidecar), the sandbox, the
//! `test --envoy` runner, the benchmarks and `manifests/envoy/reference-sidecar.yaml` — takes
//! its listeners, connection managers, filters and static pieces from here, so that a
//! security setting (path normalization, the verified peer forwarded to the app, the filter
//! failing closed, the direct remote address) is decided once.
//!
//! - [`listener::Inbound`]: the inbound listener (TLS inspector, optional HTTP inspector for
//!   protocol sniffing, mTLS and plaintext chains, HTTP connection manager or `tcp_proxy`, the
//!   authorization filter); [`listener::outbound`]: the sandbox's outbound listener.
//! - [`xds_cluster`], [`xds_config_source`]: how a sidecar reaches `peerguard serve`.
//! - [`rbac`]: AuthorizationPolicies as Envoy's native RBAC filters (`compile --envoy-rbac`).
//! - [`istio`]: Istio sidecars' own names (`virtualInbound`, `sds-grpc`) and what the
//!   EnvoyFilter form adds to them.
//! - [`bootstrap`], [`admin`], [`stats_config`], [`static_cluster`], [`socket`]: the rest.
//!
//! Emitted as JSON values (envoy-types has no serde); Envoy reads them as JSON or YAML.

pub mod access_log;
pub mod istio;
pub mod listener;
pub mod rbac;
#[cfg(test)]
mod tests;

pub use listener::{AppProtocol, Authz, Certs, Chains, Inbound};

use serde_json::{json, Value};

/// One VM id (and code) for every peerguard filter instance: Envoy creates one VM per worker
/// shared by the HTTP and the network filter.
pub const VM_ID: &str = "peerguard";
pub const V8_RUNTIME: &str = "envoy.wasm.runtime.v8";
/// `root_id`s the module uses to tell its HTTP and network roles apart.
pub const HTTP_ROOT_ID: &str = "peerguard_http";
pub const TCP_ROOT_ID: &str = "peerguard_tcp";
pub const HTTP_WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
pub const NETWORK_WASM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm";
/// Envoy's native RBAC filters (what Istio's authorization builder emits, [`rbac`]; also the
/// deny-all default of the ECDS filters).
pub const RBAC_HTTP_FILTER: &str = "envoy.filters.http.rbac";
pub const RBAC_NETWORK_FILTER: &str = "envoy.filters.network.rbac";
pub const HTTP_RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
pub const NETWORK_RBAC_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
/// The static cluster of `peerguard serve`.
pub const XDS_CLUSTER: &str = "peerguard-xds";
/// gRPC initial metadata carrying a node's bootstrap token.
pub const TOKEN_HEADER: &str = crate::node::TOKEN_HEADER;

/// Istio's `meshConfig.pathNormalization` (the one definition is in the filter's schema:
/// in-process runs model the same setting).
pub use peerguard_filter::schema::PathNormalization;

/// `(normalize_path, merge_slashes, path_with_escaped_slashes_action)` as istiod sets them.
pub fn hcm_fields(p: PathNormalization) -> (bool, bool, &'static str) {
    match p {
        PathNormalization::None => (false, false, "KEEP_UNCHANGED"),
        PathNormalization::Base => (true, false, "KEEP_UNCHANGED"),
        PathNormalization::MergeSlashes => (true, true, "KEEP_UNCHANGED"),
        PathNormalization::DecodeAndMergeSlashes => (true, true, "UNESCAPE_AND_FORWARD"),
    }
}

/// The connection manager's type URL.
pub const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// The connection-manager fields every inbound HTTP chain peerguard decides on must have: the
/// connection's direct peer is the request's remote address (the filter's `source.address`,
/// and the address Envoy appends to X-Forwarded-For), and no forwarded hop is trusted.
/// peerguard's `ipBlocks` (direct peer) and `remoteIpBlocks` (X-Forwarded-For counted with
/// `numTrustedProxies` from the right, the direct peer appended last) rely on both; with
/// `use_remote_address: false` (Istio's sidecar default) Envoy takes the stream's source
/// address from a client-sent X-Forwarded-For.
pub fn direct_peer_fields() -> Value {
    json!({"use_remote_address": true, "xff_num_trusted_hops": 0})
}

/// `{"socket_address": ...}`.
pub fn socket(address: &str, port: u16) -> Value {
    json!({"socket_address": {"address": address, "port_value": port}})
}

/// A `STATIC` cluster with these endpoints (the local app, the test upstreams).
pub fn static_cluster(name: &str, endpoints: &[(String, u16)]) -> Value {
    let lb: Vec<Value> = endpoints
        .iter()
        .map(|(ip, port)| json!({"endpoint": {"address": socket(ip, *port)}}))
        .collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb}]},
    })
}

/// The admin interface (bind it to loopback).
pub fn admin(address: &str, port: u16) -> Value {
    json!({"address": socket(address, port)})
}

/// The module defines per-policy counters as
/// `wasmcustom.peerguard_policy_{denied,allowed}.<ns>.<name>`; this turns `<ns>.<name>` into a
/// `peerguard_policy` tag (a Prometheus label), so namespace and name stay unambiguous. The
/// STRICT-readiness counters get `port`, `tls` and `source` tags
/// (`peerguard_filter::readiness::STATS_TAGS`).
pub fn stats_config() -> Value {
    let mut tags = vec![json!({
        "tag_name": "peerguard_policy",
        "regex": r"^wasmcustom\.peerguard_policy_(?:denied|allowed)(\.(.+))$",
    })];
    tags.extend(
        peerguard_filter::readiness::STATS_TAGS
            .iter()
            .map(|(name, regex)| json!({"tag_name": name, "regex": regex})),
    );
    json!({ "stats_tags": tags })
}

/// A bootstrap: stats tags, admin, optional node, static listeners and clusters.
pub fn bootstrap(
    node: Option<Value>,
    admin: Value,
    listeners: Vec<Value>,
    clusters: Vec<Value>,
) -> Value {
    let mut b = json!({
        "stats_config": stats_config(),
        "admin": admin,
        "static_resources": {"listeners": listeners, "clusters": clusters},
    });
    if let Some(n) = node {
        b["node"] = n;
    }
    b
}

/// Where `peerguard serve` listens: `HOST:PORT` or `unix:/path`.
#[derive(Debug, thiserror::Error)]
#[error("server address {0:?}: expected HOST:PORT or unix:/path")]
pub struct BadAddress(pub String);

/// The static cluster `peerguard-xds`: HTTP/2 (gRPC) with keepalives to the server; a host
/// name is resolved (`STRICT_DNS`), an IP or a Unix socket is used as is.
pub fn xds_cluster(server: &str) -> Result<Value, BadAddress> {
    let (address, dns) = if let Some(path) = server.strip_prefix("unix:") {
        (json!({"pipe": {"path": path}}), false)
    } else {
        let (host, port) = server
            .rsplit_once(':')
            .ok_or_else(|| BadAddress(server.into()))?;
        let port: u16 = port.parse().map_err(|_| BadAddress(server.into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (
            socket(host, port),
            host.parse::<std::net::IpAddr>().is_err(),
        )
    };
    Ok(json!({
        "name": XDS_CLUSTER,
        "type": if dns { "STRICT_DNS" } else { "STATIC" },
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    "connection_keepalive": {"interval": "30s", "timeout": "10s"},
                }},
            },
        },
        "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]},
    }))
}

/// The config source for ECDS and SDS from `peerguard serve`: gRPC over [`XDS_CLUSTER`], the
/// node's token as initial metadata, and `initial_fetch_timeout: 0s` (a listener waits for
/// its policy, as Istio's do for extensions).
pub fn xds_config_source(token: &str) -> Value {
    json!({
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{
                "envoy_grpc": {"cluster_name": XDS_CLUSTER},
                "initial_metadata": [{"key": TOKEN_HEADER, "value": token}],
            }],
        },
        "resource_api_version": "V3",
        "initial_fetch_timeout": "0s",
    })
}

/// A proxy-wasm filter (HTTP or network) loading `module` from a local file, failing closed:
/// a VM that cannot start or crashes refuses traffic. `configuration`: the plugin's
/// configuration string (`None`: none; peerguard then denies everything).
pub fn wasm_filter(
    http: bool,
    name: &str,
    vm_id: &str,
    root_id: &str,
    module: &str,
    configuration: Option<&str>,
) -> Value {
    let mut config = json!({
        "name": name,
        "root_id": root_id,
        "vm_config": {
            "vm_id": vm_id,
            "runtime": V8_RUNTIME,
            "code": {"local": {"filename": module}},
        },
        "failure_policy": "FAIL_CLOSED",
    });
    if let Some(c) = configuration {
        config["configuration"] =
            json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": c});
    }
    let ty = if http {
        HTTP_WASM_TYPE
    } else {
        NETWORK_WASM_TYPE
    };
    json!({"name": name, "typed_config": {"@type": ty, "config": config}})
}
