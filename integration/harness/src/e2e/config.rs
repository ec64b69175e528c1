//! The Envoy bootstrap for a batch of scenarios: one listener per (scenario address, port),
//! each with an mTLS filter chain (Istio's handshake checks, section 1.3 of the spec) and a
//! plaintext one, both running peerguard's wasm filter in front of the test app.

use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

/// The protocol served on one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProto {
    Http,
    Tcp,
}

/// One listener to serve.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: String,
    pub address: Ipv4Addr,
    pub port: u16,
    pub proto: ListenerProto,
    /// Accepted at the handshake: `spiffe://<td>/` for each of these.
    pub trust_domains: Vec<String>,
    /// The filter's configuration (a serialized `WorkloadPolicy`).
    pub policy_json: String,
}

/// Where the filter comes from; `None` runs Envoy without peerguard (handshake checks only).
#[derive(Debug, Clone)]
pub struct FilterModule<'a> {
    pub wasm: &'a Path,
}

pub const HTTP_ROOT_ID: &str = "peerguard_http";
pub const TCP_ROOT_ID: &str = "peerguard_tcp";
/// One VM id (and code) for every filter instance, so Envoy creates one VM per worker.
pub const VM_ID: &str = "peerguard";

pub struct Bootstrap<'a> {
    pub listeners: &'a [ListenerSpec],
    pub filter: Option<FilterModule<'a>>,
    pub mesh_root_pem: &'a str,
    pub server_cert_pem: &'a str,
    pub server_key_pem: &'a str,
    pub http_upstream: SocketAddr,
    pub tcp_upstream: SocketAddr,
}

impl Bootstrap<'_> {
    pub fn to_json(&self) -> Value {
        json!({
            "admin": {"address": socket(SocketAddr::from(([127, 0, 0, 1], 0)))},
            "static_resources": {
                "listeners": self.listeners.iter().map(|l| self.listener(l)).collect::<Vec<_>>(),
                "clusters": [
                    cluster("app_http", self.http_upstream),
                    cluster("app_tcp", self.tcp_upstream),
                ],
            },
        })
    }

    fn listener(&self, l: &ListenerSpec) -> Value {
        json!({
            "name": l.name,
            "address": socket(SocketAddr::from((l.address, l.port))),
            "listener_filters": [{
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
            }],
            "filter_chains": [
                {
                    "name": "mtls",
                    "filter_chain_match": {"transport_protocol": "tls"},
                    "transport_socket": self.downstream_tls(l),
                    "filters": self.filters(l, "mtls"),
                },
                {
                    "name": "plaintext",
                    "filter_chain_match": {"transport_protocol": "raw_buffer"},
                    "filters": self.filters(l, "plaintext"),
                },
            ],
        })
    }

    fn downstream_tls(&self, l: &ListenerSpec) -> Value {
        let sans: Vec<Value> = l
            .trust_domains
            .iter()
            .map(|td| json!({"san_type": "URI", "matcher": {"prefix": format!("spiffe://{td}/")}}))
            .collect();
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": true,
                "common_tls_context": {
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
                    "alpn_protocols": ["h2", "http/1.1"],
                    "tls_certificates": [{
                        "certificate_chain": {"inline_string": self.server_cert_pem},
                        "private_key": {"inline_string": self.server_key_pem},
                    }],
                    "validation_context": {
                        "trusted_ca": {"inline_string": self.mesh_root_pem},
                        "match_typed_subject_alt_names": sans,
                    },
                },
            },
        })
    }

    fn filters(&self, l: &ListenerSpec, chain: &str) -> Vec<Value> {
        let stat = format!("{}_{chain}", l.name);
        match l.proto {
            ListenerProto::Http => {
                let mut http_filters = Vec::new();
                if let Some(f) = &self.filter {
                    http_filters.push(json!({
                        "name": "peerguard",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                            "config": plugin(f, HTTP_ROOT_ID, &l.policy_json),
                        },
                    }));
                }
                vec![inbound_hcm(&stat, http_filters, "app_http")]
            }
            ListenerProto::Tcp => {
                let mut filters = Vec::new();
                if let Some(f) = &self.filter {
                    filters.push(json!({
                        "name": "peerguard",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
                            "config": plugin(f, TCP_ROOT_ID, &l.policy_json),
                        },
                    }));
                }
                filters.push(json!({
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": stat,
                        "cluster": "app_tcp",
                    },
                }));
                filters
            }
        }
    }
}

fn plugin(f: &FilterModule<'_>, root_id: &str, policy_json: &str) -> Value {
    json!({
        "name": "peerguard",
        "root_id": root_id,
        "fail_open": false,
        "vm_config": {
            "vm_id": VM_ID,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": f.wasm.display().to_string()}},
        },
        "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": policy_json,
        },
    })
}

fn socket(addr: SocketAddr) -> Value {
    json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
}

fn cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(addr)}}]}],
        },
    })
}

/// The inbound HTTP connection manager of every peerguard listener: Istio's default path
/// normalization before authorization, the verified peer forwarded to the app (a client-sent
/// XFCC is replaced on mTLS and stripped on plaintext), `http_filters` then the router to
/// `cluster`. Shared by `test --envoy` and the Envoy benchmark so they measure one listener.
pub fn inbound_hcm(stat_prefix: &str, mut http_filters: Vec<Value>, cluster: &str) -> Value {
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }));
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "normalize_path": true,
            "merge_slashes": false,
            "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
            "forward_client_cert_details": "SANITIZE_SET",
            "set_current_client_cert_details": {"uri": true},
            "route_config": {
                "name": "app",
                "virtual_hosts": [{
                    "name": "app",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "5s"}}],
                }],
            },
            "http_filters": http_filters,
        },
    })
}
