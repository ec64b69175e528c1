//! The inbound listener every peerguard sidecar runs, and the sandbox's outbound listener.
//!
//! Inbound, per port: `tls_inspector` selects an mTLS chain (client certificate required,
//! the mesh roots, a `spiffe://<td>/` URI SAN of an accepted trust domain, TLS 1.2–1.3:
//! Istio's server-side handshake) or a plaintext chain. Both run the authorization filter,
//! which enforces the mode (STRICT refuses plaintext, DISABLE refuses mTLS) and the policies
//! from the verified connection. HTTP chains end in the connection manager ([`Inbound`] with
//! [`AppProtocol::Http`]), TCP chains in `tcp_proxy`. On a port without a declared protocol
//! ([`AppProtocol::Sniff`]) both exist, split as Istio's inbound listener splits them:
//! `http_inspector` names the plaintext protocol (`http/1.0`, `http/1.1`, `h2c`), ALPN names
//! the protocol inside TLS, anything else is TCP.

use super::{
    socket, wasm_filter, PathNormalization, HTTP_RBAC_TYPE, HTTP_ROOT_ID, HTTP_WASM_TYPE,
    NETWORK_RBAC_TYPE, NETWORK_WASM_TYPE, TCP_ROOT_ID, VM_ID,
};
use peerguard_filter::schema::MtlsMode;
use serde_json::{json, Value};

/// ECDS resource names (the filters' `name` in the listener), as `peerguard serve` serves them.
/// The filter name of an inline-configured peerguard module (HTTP and network).
pub const WASM_FILTER: &str = "peerguard";
pub const HTTP_FILTER: &str = "peerguard-http";
pub const TCP_FILTER: &str = "peerguard-tcp";
/// Istio's SDS secret names.
pub const SECRET_CERT: &str = "default";
pub const SECRET_ROOT: &str = "ROOTCA";

/// What is spoken on the port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// HTTP: connection manager + the HTTP filter.
    Http,
    /// Raw TCP: the network filter + `tcp_proxy`.
    Tcp,
    /// Not declared: HTTP and TCP on one port, told apart per connection (Istio's protocol
    /// sniffing).
    Sniff,
}

/// Where the workload certificate and the trusted roots come from.
#[derive(Debug, Clone)]
pub enum Certs {
    Inline {
        cert_pem: String,
        key_pem: String,
        ca_pem: String,
    },
    Files {
        cert: String,
        key: String,
        ca: String,
    },
    /// SDS from `peerguard serve` (secrets `default` and `ROOTCA`) over this config source.
    Sds { source: Value },
}

impl Certs {
    /// `common_tls_context` with the certificate, the roots and the peer URI SAN matchers.
    pub fn common_tls_context(&self, san_matchers: Vec<Value>) -> Value {
        match self {
            Certs::Inline {
                cert_pem,
                key_pem,
                ca_pem,
            } => json!({
                "tls_certificates": [{"certificate_chain": {"inline_string": cert_pem}, "private_key": {"inline_string": key_pem}}],
                "validation_context": {"trusted_ca": {"inline_string": ca_pem}, "match_typed_subject_alt_names": san_matchers},
            }),
            Certs::Files { cert, key, ca } => json!({
                "tls_certificates": [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}],
                "validation_context": {"trusted_ca": {"filename": ca}, "match_typed_subject_alt_names": san_matchers},
            }),
            Certs::Sds { source } => json!({
                "tls_certificate_sds_secret_configs": [{"name": SECRET_CERT, "sds_config": source}],
                "combined_validation_context": {
                    "default_validation_context": {"match_typed_subject_alt_names": san_matchers},
                    "validation_context_sds_secret_config": {"name": SECRET_ROOT, "sds_config": source},
                },
            }),
        }
    }
}

/// `spiffe://<td>/` prefix matchers, one per accepted trust domain (Istio's handshake check).
pub fn trust_domain_matchers(trust_domains: &[String]) -> Vec<Value> {
    trust_domains
        .iter()
        .map(|td| json!({"san_type": "URI", "matcher": {"prefix": format!("spiffe://{td}/")}}))
        .collect()
}

/// The authorization filter in every chain.
#[derive(Debug, Clone)]
pub enum Authz {
    /// None: only the handshake decides (benchmark baseline, the runner checking itself).
    None,
    /// peerguard's module from a local file, its `WorkloadPolicy` JSON inline (`None`: no
    /// configuration, the filter denies everything).
    Wasm {
        module: String,
        policy_json: Option<String>,
    },
    /// peerguard from `peerguard serve` over ECDS; a deny-all RBAC until the first config
    /// arrives if the fetch fails.
    Ecds { source: Value },
    /// Other filters in the same places (the benchmark's native RBAC and no-op module).
    Custom { http: Value, network: Value },
    /// Envoy's native RBAC filters in the same places, in order (`compile --envoy-rbac`,
    /// [`super::rbac::RbacFilters`]): no filter at all when no policy applies.
    Rbac {
        http: Vec<Value>,
        network: Vec<Value>,
    },
}

impl Authz {
    fn http(&self) -> Vec<Value> {
        if let Authz::Rbac { http, .. } = self {
            return http.clone();
        }
        match self {
            Authz::None | Authz::Rbac { .. } => None,
            Authz::Wasm {
                module,
                policy_json,
            } => Some(inline_wasm(true, module, policy_json.as_deref())),
            Authz::Ecds { source } => Some(ecds_http_filter(source)),
            Authz::Custom { http, .. } => Some(http.clone()),
        }
        .into_iter()
        .collect()
    }

    fn network(&self) -> Vec<Value> {
        if let Authz::Rbac { network, .. } = self {
            return network.clone();
        }
        match self {
            Authz::None | Authz::Rbac { .. } => None,
            Authz::Wasm {
                module,
                policy_json,
            } => Some(inline_wasm(false, module, policy_json.as_deref())),
            Authz::Ecds { source } => Some(ecds_network_filter(source)),
            Authz::Custom { network, .. } => Some(network.clone()),
        }
        .into_iter()
        .collect()
    }
}

/// peerguard's module from a local file, its `WorkloadPolicy` JSON inline (`None`: no
/// configuration, the filter denies everything).
fn inline_wasm(http: bool, module: &str, policy_json: Option<&str>) -> Value {
    let root_id = if http { HTTP_ROOT_ID } else { TCP_ROOT_ID };
    wasm_filter(http, WASM_FILTER, VM_ID, root_id, module, policy_json)
}

/// The HTTP filter of [`Authz::Wasm`] (for configurations that mix it with native RBAC).
pub fn wasm_http_filter(module: &str, policy_json: &str) -> Value {
    inline_wasm(true, module, Some(policy_json))
}

/// The network filter of [`Authz::Wasm`].
pub fn wasm_network_filter(module: &str, policy_json: &str) -> Value {
    inline_wasm(false, module, Some(policy_json))
}

/// The HTTP filter `peerguard-http` from ECDS over `source`; a deny-all RBAC until the first
/// configuration arrives if the fetch fails.
pub fn ecds_http_filter(source: &Value) -> Value {
    json!({
        "name": HTTP_FILTER,
        "config_discovery": {
            "config_source": source,
            "default_config": {"@type": HTTP_RBAC_TYPE, "rules": {}},
            "type_urls": [HTTP_WASM_TYPE, HTTP_RBAC_TYPE],
        },
    })
}

/// The network filter `peerguard-tcp` from ECDS over `source` (deny-all default, as HTTP).
pub fn ecds_network_filter(source: &Value) -> Value {
    json!({
        "name": TCP_FILTER,
        "config_discovery": {
            "config_source": source,
            "default_config": {"@type": NETWORK_RBAC_TYPE, "stat_prefix": "peerguard_default", "rules": {}},
            "type_urls": [NETWORK_WASM_TYPE, NETWORK_RBAC_TYPE],
        },
    })
}

/// Which transport chains exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chains {
    /// peerguard's design: an mTLS and a plaintext chain on every port; the filter refuses
    /// what the mode forbids.
    Both,
    /// The chains Istio builds for a mode (spec 2.5): STRICT only mTLS; PERMISSIVE mTLS
    /// (selected by an Istio ALPN) and plaintext; DISABLE only plaintext, no TLS inspector.
    Istio(MtlsMode),
}

impl Chains {
    /// Istio's chains for a port's compiled mode: the mode the listener enforces, so a
    /// dry-run STRICT (`peerguard.dev/dry-run`) gets PERMISSIVE's chains and its plaintext
    /// connections reach the filter, which counts them instead of refusing them.
    pub fn istio(mode: &peerguard_filter::schema::ModeFrom) -> Chains {
        Chains::Istio(mode.enforced())
    }
}

/// Istio's ALPN values that select the mTLS chain of a PERMISSIVE port.
const ISTIO_ALPNS: [&str; 5] = [
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
/// ALPN inside TLS that means HTTP: what HTTP clients send, and Istio's sidecar values.
const TLS_HTTP_ALPNS: [&str; 5] = [
    "h2",
    "http/1.1",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
/// What `http_inspector` reports for plaintext HTTP.
const PLAINTEXT_HTTP_PROTOCOLS: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

/// One inbound listener.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Listener name; also the stat prefix of its connection manager and `tcp_proxy`.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub protocol: AppProtocol,
    /// Accepted at the handshake (trust domain and aliases).
    pub trust_domains: Vec<String>,
    pub certs: Certs,
    pub authz: Authz,
    pub chains: Chains,
    pub path_normalization: PathNormalization,
    pub http_cluster: String,
    pub tcp_cluster: String,
    /// Route timeout (`None`: Envoy's default).
    pub route_timeout: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tls,
    Plain,
}

impl Inbound {
    pub fn listener(&self) -> Value {
        let transports: &[Transport] = match self.chains {
            Chains::Both | Chains::Istio(MtlsMode::Permissive) => {
                &[Transport::Tls, Transport::Plain]
            }
            Chains::Istio(MtlsMode::Strict) => &[Transport::Tls],
            Chains::Istio(MtlsMode::Disable) => &[Transport::Plain],
        };
        let protocols = match self.protocol {
            AppProtocol::Sniff => vec![AppProtocol::Http, AppProtocol::Tcp],
            p => vec![p],
        };
        let mut chains = Vec::new();
        for &t in transports {
            for &p in &protocols {
                chains.push(self.chain(t, p));
            }
        }
        let mut listener_filters = Vec::new();
        if transports.contains(&Transport::Tls) {
            listener_filters.push(json!({
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
            }));
        }
        let sniff_plaintext =
            self.protocol == AppProtocol::Sniff && transports.contains(&Transport::Plain);
        if sniff_plaintext {
            listener_filters.push(json!({
                "name": "envoy.filters.listener.http_inspector",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"},
            }));
        }
        let mut l = json!({
            "name": self.name,
            "address": socket(&self.address, self.port),
            "listener_filters": listener_filters,
            "filter_chains": chains,
        });
        if sniff_plaintext {
            // As Istio's sniffing listener: a client that sends nothing (a server-first
            // protocol) is served as TCP once detection gives up, instead of being closed.
            l["continue_on_listener_filters_timeout"] = json!(true);
        }
        l
    }

    fn chain(&self, t: Transport, p: AppProtocol) -> Value {
        let sniff = self.protocol == AppProtocol::Sniff;
        let mut name = self.name.clone();
        name.push_str(if t == Transport::Tls {
            "_mtls"
        } else {
            "_plaintext"
        });
        if sniff {
            name.push_str(if p == AppProtocol::Http {
                "_http"
            } else {
                "_tcp"
            });
        }
        let mut m = serde_json::Map::new();
        match t {
            Transport::Tls => {
                m.insert("transport_protocol".into(), json!("tls"));
                if sniff && p == AppProtocol::Http {
                    m.insert("application_protocols".into(), json!(TLS_HTTP_ALPNS));
                } else if !sniff && self.chains == Chains::Istio(MtlsMode::Permissive) {
                    m.insert("application_protocols".into(), json!(ISTIO_ALPNS));
                }
            }
            Transport::Plain => {
                // Without a TLS inspector the transport is unknown: match every connection.
                if self.chains != Chains::Istio(MtlsMode::Disable) {
                    m.insert("transport_protocol".into(), json!("raw_buffer"));
                }
                if sniff && p == AppProtocol::Http {
                    m.insert(
                        "application_protocols".into(),
                        json!(PLAINTEXT_HTTP_PROTOCOLS),
                    );
                }
            }
        }
        let filters = match p {
            AppProtocol::Http => vec![self.hcm()],
            _ => self.tcp_filters(),
        };
        let mut c = json!({"name": name, "filters": filters});
        if !m.is_empty() {
            c["filter_chain_match"] = Value::Object(m);
        }
        if t == Transport::Tls {
            c["transport_socket"] = self.downstream_tls(p == AppProtocol::Http);
        }
        c
    }

    fn downstream_tls(&self, http: bool) -> Value {
        let mut common = json!({"tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}});
        if http {
            common["alpn_protocols"] = json!(["h2", "http/1.1"]);
        }
        if let (Some(c), Value::Object(certs)) = (
            common.as_object_mut(),
            self.certs
                .common_tls_context(trust_domain_matchers(&self.trust_domains)),
        ) {
            c.extend(certs);
        }
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": true,
                "common_tls_context": common,
            },
        })
    }

    fn tcp_filters(&self) -> Vec<Value> {
        let mut filters: Vec<Value> = self.authz.network().into_iter().collect();
        filters.push(json!({
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": self.name,
                "cluster": self.tcp_cluster,
            },
        }));
        filters
    }

    /// The inbound connection manager: path normalization before any filter (the decision
    /// and the app see the same path), the direct peer as the remote address (no forwarded
    /// hop trusted), the verified peer forwarded to the app (a client-sent XFCC is replaced on
    /// mTLS and stripped on plaintext), then the authorization filter and the router.
    fn hcm(&self) -> Value {
        let mut route = json!({"cluster": self.http_cluster});
        if let Some(t) = &self.route_timeout {
            route["timeout"] = json!(t);
        }
        let vhost = json!({"name": "inbound", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": route}]});
        let mut http_filters: Vec<Value> = self.authz.http().into_iter().collect();
        http_filters.push(router());
        let mut hcm = connection_manager(
            &self.name,
            self.path_normalization,
            json!({"name": self.name, "virtual_hosts": [vhost]}),
            http_filters,
        );
        if let (Some(h), Value::Object(fields)) = (hcm.as_object_mut(), super::direct_peer_fields())
        {
            h.extend(fields);
        }
        hcm["forward_client_cert_details"] = json!("SANITIZE_SET");
        hcm["set_current_client_cert_details"] = json!({"uri": true});
        json!({
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        })
    }
}

fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    })
}

fn connection_manager(
    stat_prefix: &str,
    paths: PathNormalization,
    route_config: Value,
    http_filters: Vec<Value>,
) -> Value {
    let (normalize, merge, escaped) = super::hcm_fields(paths);
    json!({
        "@type": super::HCM_TYPE,
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "normalize_path": normalize,
        "merge_slashes": merge,
        "path_with_escaped_slashes_action": escaped,
        "route_config": route_config,
        "http_filters": http_filters,
    })
}

/// A sidecar's outbound listener (the sandbox): plain HTTP from the local app, routed by
/// `virtual_hosts`. As Istio's outbound side: the same path normalization, and the app's
/// address is not taken as a remote client (`use_remote_address: false`).
pub fn outbound(
    name: &str,
    address: &str,
    port: u16,
    paths: PathNormalization,
    virtual_hosts: Vec<Value>,
) -> Value {
    let mut hcm = connection_manager(
        "outbound",
        paths,
        json!({"name": "outbound", "virtual_hosts": virtual_hosts}),
        vec![router()],
    );
    hcm["use_remote_address"] = json!(false);
    json!({
        "name": name,
        "address": socket(address, port),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    })
}
