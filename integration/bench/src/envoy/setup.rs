//! What is benchmarked: the variants (no filter, native RBAC, a no-op wasm filter,
//! peerguard), the policies each one holds, and the Envoy bootstrap that serves them.
//!
//! Every variant runs the same Envoy shape (the reference sidecar's: `tls_inspector`, an mTLS
//! chain requiring a client certificate from the mesh root with a `spiffe://<td>/` URI SAN,
//! a plaintext chain, Istio's HCM settings) with an HTTP listener and a TCP listener; only
//! the authorization filter differs, so the measured difference is the filter's.

use anyhow::Context as _;
use peerguard_filter::schema::{
    Action, AuthzPolicy, Field, ModeFrom, MtlsMode, MtlsPolicy, PolicyRef, Rule, Source, StrMatch,
    WorkloadPolicy, WorkloadRef, SCHEMA_VERSION,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

pub const TRUST_DOMAIN: &str = "cluster.local";
pub const NAMESPACE: &str = "bench";
/// The load client's identity; the last policy (in evaluation order) names it.
pub const CLIENT_PRINCIPAL: &str = "cluster.local/ns/bench/sa/client";
/// A mesh identity no policy names: the sanity check expects it to be denied.
pub const STRANGER_PRINCIPAL: &str = "cluster.local/ns/bench/sa/stranger";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// No authorization filter: the baseline.
    None,
    /// `envoy.filters.{http,network}.rbac` with Istio's policies.
    Rbac,
    /// A proxy-wasm module returning `Continue`: the floor of any wasm filter.
    Noop,
    Peerguard,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Rbac => "rbac",
            Kind::Noop => "noop-wasm",
            Kind::Peerguard => "peerguard",
        }
    }

    /// Does this variant enforce policies (so a stranger must be denied)?
    pub fn enforces(self) -> bool {
        matches!(self, Kind::Rbac | Kind::Peerguard)
    }
}

/// One Envoy configuration under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Variant {
    pub kind: Kind,
    /// Policies held (0 for `none` and `noop`).
    pub policies: usize,
}

impl Variant {
    pub fn name(&self) -> String {
        if self.kind.enforces() {
            format!("{}/{}", self.kind.label(), self.policies)
        } else {
            self.kind.label().to_string()
        }
    }
}

/// Policy `i` of `n`: its name (zero-padded, so name order is generation order: Envoy's
/// RBAC evaluates its policy map in name order) and the principal it allows. The last one
/// names the client, so RBAC's linear scan visits every policy before matching.
fn policy_at(i: usize, n: usize) -> (String, String) {
    let name = format!("allow-{i:05}");
    let principal = if i + 1 == n {
        CLIENT_PRINCIPAL.to_string()
    } else {
        format!("{TRUST_DOMAIN}/ns/ns-{i}/sa/sa-{i}")
    };
    (name, principal)
}

/// peerguard's configuration: `n` ALLOW policies, one principal each, STRICT mTLS.
pub fn workload_policy(n: usize) -> WorkloadPolicy {
    let policies = (0..n)
        .map(|i| {
            let (name, principal) = policy_at(i, n);
            AuthzPolicy {
                policy: PolicyRef {
                    namespace: NAMESPACE.into(),
                    name,
                },
                action: Action::Allow,
                dry_run: false,
                provider: None,
                invalid: None,
                rules: vec![Rule {
                    from: Some(vec![Source {
                        principals: Field {
                            values: vec![StrMatch::Exact(principal)],
                            not_values: Vec::new(),
                        },
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
            }
        })
        .collect();
    WorkloadPolicy {
        schema: SCHEMA_VERSION,
        workload: WorkloadRef {
            namespace: NAMESPACE.into(),
            name: "server".into(),
        },
        trust_domain: TRUST_DOMAIN.into(),
        trust_domain_aliases: Vec::new(),
        mtls: MtlsPolicy {
            default: ModeFrom {
                mode: MtlsMode::Strict,
                from: None,
            },
            ports: BTreeMap::new(),
        },
        policies,
        diagnostics: Vec::new(),
    }
}

/// The `rules` Istio generates for the same `n` ALLOW policies: one RBAC policy per
/// AuthorizationPolicy rule, named as istiod names them, principals as
/// `authenticated.principal_name.exact` of the full SPIFFE URI, any permission.
pub fn rbac_rules(n: usize) -> Value {
    let mut policies = serde_json::Map::new();
    for i in 0..n {
        let (name, principal) = policy_at(i, n);
        policies.insert(
            format!("ns[{NAMESPACE}]-policy[{name}]-rule[0]"),
            json!({
                "permissions": [{"any": true}],
                "principals": [{"authenticated": {"principal_name": {"exact": format!("spiffe://{principal}")}}}],
            }),
        );
    }
    json!({"action": "ALLOW", "policies": policies})
}

/// The modules the wasm variants load.
pub struct Modules<'a> {
    pub peerguard: &'a Path,
    pub noop: &'a Path,
}

/// Envoy bootstrap for one variant: admin and both listeners on 127.0.0.1, ephemeral ports
/// (read back from the admin endpoint), so runs never collide with other processes.
pub struct BootstrapInput<'a> {
    pub variant: Variant,
    pub modules: &'a Modules<'a>,
    pub mesh_root_pem: &'a str,
    pub server_cert_pem: &'a str,
    pub server_key_pem: &'a str,
    pub http_upstream: SocketAddr,
    pub tcp_upstream: SocketAddr,
}

pub const HTTP_LISTENER: &str = "bench_http";
pub const TCP_LISTENER: &str = "bench_tcp";

impl BootstrapInput<'_> {
    pub fn to_json(&self) -> anyhow::Result<Value> {
        let (http_filter, net_filter) = self.filters()?;
        Ok(json!({
            "admin": {"address": socket("127.0.0.1", 0)},
            "static_resources": {
                "listeners": [
                    self.listener(HTTP_LISTENER, true, self.http_chain(http_filter.as_ref())),
                    self.listener(TCP_LISTENER, false, self.tcp_chain(net_filter.as_ref())),
                ],
                "clusters": [
                    cluster("app_http", self.http_upstream),
                    cluster("app_tcp", self.tcp_upstream),
                ],
            },
        }))
    }

    /// (HTTP filter, network filter) placed before the router / tcp_proxy, if any.
    fn filters(&self) -> anyhow::Result<(Option<Value>, Option<Value>)> {
        let n = self.variant.policies;
        Ok(match self.variant.kind {
            Kind::None => (None, None),
            Kind::Rbac => {
                let rules = rbac_rules(n);
                (
                    Some(json!({
                        "name": "envoy.filters.http.rbac",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                            "rules": rules,
                        },
                    })),
                    Some(json!({
                        "name": "envoy.filters.network.rbac",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                            "stat_prefix": "bench_tcp_rbac",
                            "rules": rules,
                        },
                    })),
                )
            }
            Kind::Noop => (
                Some(wasm_filter(
                    true,
                    self.modules.noop,
                    "noop",
                    "noop_http",
                    None,
                )),
                Some(wasm_filter(
                    false,
                    self.modules.noop,
                    "noop",
                    "noop_tcp",
                    None,
                )),
            ),
            Kind::Peerguard => {
                let policy = serde_json::to_string(&workload_policy(n))
                    .context("serializing the WorkloadPolicy")?;
                (
                    Some(wasm_filter(
                        true,
                        self.modules.peerguard,
                        "peerguard",
                        "peerguard_http",
                        Some(&policy),
                    )),
                    Some(wasm_filter(
                        false,
                        self.modules.peerguard,
                        "peerguard",
                        "peerguard_tcp",
                        Some(&policy),
                    )),
                )
            }
        })
    }

    fn listener(&self, name: &str, http: bool, filters: Value) -> Value {
        json!({
            "name": name,
            "address": socket("127.0.0.1", 0),
            "listener_filters": [{
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
            }],
            "filter_chains": [
                {
                    "name": "mtls",
                    "filter_chain_match": {"transport_protocol": "tls"},
                    "transport_socket": self.downstream_tls(http),
                    "filters": filters.clone(),
                },
                {
                    "name": "plaintext",
                    "filter_chain_match": {"transport_protocol": "raw_buffer"},
                    "filters": filters,
                },
            ],
        })
    }

    fn downstream_tls(&self, http: bool) -> Value {
        let mut common = json!({
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
            "tls_certificates": [{
                "certificate_chain": {"inline_string": self.server_cert_pem},
                "private_key": {"inline_string": self.server_key_pem},
            }],
            "validation_context": {
                "trusted_ca": {"inline_string": self.mesh_root_pem},
                "match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": {"prefix": format!("spiffe://{TRUST_DOMAIN}/")}},
                ],
            },
        });
        if http {
            common["alpn_protocols"] = json!(["h2", "http/1.1"]);
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

    fn http_chain(&self, filter: Option<&Value>) -> Value {
        let http_filters: Vec<Value> = filter.into_iter().cloned().collect();
        json!([peerguard_harness::e2e::config::inbound_hcm("bench_http", http_filters, "app_http")])
    }

    fn tcp_chain(&self, filter: Option<&Value>) -> Value {
        let mut filters: Vec<Value> = filter.into_iter().cloned().collect();
        filters.push(json!({
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "bench_tcp",
                "cluster": "app_tcp",
            },
        }));
        Value::Array(filters)
    }
}

/// A wasm filter as the reference sidecar declares it (one VM per worker shared by the HTTP
/// and the network filter: same `vm_id` and code), FAIL_CLOSED.
fn wasm_filter(
    http: bool,
    module: &Path,
    vm_id: &str,
    root_id: &str,
    configuration: Option<&str>,
) -> Value {
    let mut config = json!({
        "name": vm_id,
        "root_id": root_id,
        "vm_config": {
            "vm_id": vm_id,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": module.display().to_string()}},
        },
        "failure_policy": "FAIL_CLOSED",
    });
    if let Some(c) = configuration {
        config["configuration"] = json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": c,
        });
    }
    let ty = if http {
        "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
    } else {
        "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
    };
    json!({"name": vm_id, "typed_config": {"@type": ty, "config": config}})
}

fn socket(address: &str, port: u16) -> Value {
    json!({"socket_address": {"address": address, "port_value": port}})
}

fn cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(&addr.ip().to_string(), addr.port())}}]}],
        },
    })
}

/// The listeners' bound addresses, from the admin endpoint (`/listeners?format=json`).
pub fn listener_addresses(body: &str) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let v: Value = serde_json::from_str(body).context("admin /listeners: not JSON")?;
    let statuses = v["listener_statuses"]
        .as_array()
        .context("admin /listeners: no listener_statuses")?;
    let find = |name: &str| -> anyhow::Result<SocketAddr> {
        let s = statuses
            .iter()
            .find(|s| s["name"] == name)
            .with_context(|| format!("admin /listeners: no listener {name}"))?;
        let sa = &s["local_address"]["socket_address"];
        let ip = sa["address"].as_str().context("listener address")?;
        let port = sa["port_value"].as_u64().context("listener port")?;
        format!("{ip}:{port}")
            .parse()
            .with_context(|| format!("listener {name} address"))
    };
    Ok((find(HTTP_LISTENER)?, find(TCP_LISTENER)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerguard_filter::schema::{HttpRequest, Peer, Request};
    use peerguard_filter::Engine;

    fn request(principal: &str) -> Request {
        Request {
            peer: Some(Peer::from_principal(principal)),
            source_ip: "127.0.0.1".parse().ok(),
            destination_ip: "127.0.0.1".parse().ok(),
            port: 8080,
            sni: None,
            http: Some(HttpRequest {
                method: "GET".into(),
                path: "/bench".into(),
                host: "bench".into(),
                headers: Vec::new(),
            }),
        }
    }

    #[test]
    fn the_client_matches_the_last_policy_and_a_stranger_none() -> anyhow::Result<()> {
        for n in [1, 10, 100] {
            let policy = workload_policy(n);
            let last = policy.policies.last().map(|p| p.policy.name.clone());
            let engine = Engine::new(policy)?;
            let d = engine.decide(&request(CLIENT_PRINCIPAL));
            assert!(d.allowed, "n={n}: {d:?}");
            assert_eq!(last, Some(format!("allow-{:05}", n - 1)));
            assert!(
                !engine.decide(&request(STRANGER_PRINCIPAL)).allowed,
                "n={n}"
            );
        }
        Ok(())
    }

    #[test]
    fn rbac_policies_are_distinct_and_the_client_sorts_last() {
        let rules = rbac_rules(100);
        let policies = rules["policies"].as_object().cloned().unwrap_or_default();
        assert_eq!(policies.len(), 100);
        let mut names: Vec<&String> = policies.keys().collect();
        names.sort();
        let last = names
            .last()
            .map(|n| policies[n.as_str()].clone())
            .unwrap_or_default();
        assert_eq!(
            last["principals"][0]["authenticated"]["principal_name"]["exact"],
            format!("spiffe://{CLIENT_PRINCIPAL}")
        );
        let mut principals: Vec<String> = policies
            .values()
            .map(|p| p["principals"][0]["authenticated"]["principal_name"]["exact"].to_string())
            .collect();
        principals.sort();
        principals.dedup();
        assert_eq!(principals.len(), 100);
    }

    #[test]
    fn listener_addresses_are_read_from_the_admin_json() -> anyhow::Result<()> {
        let body = r#"{"listener_statuses":[
            {"name":"bench_http","local_address":{"socket_address":{"address":"127.0.0.1","port_value":4001}}},
            {"name":"bench_tcp","local_address":{"socket_address":{"address":"127.0.0.1","port_value":4002}}}]}"#;
        let (h, t) = listener_addresses(body)?;
        assert_eq!((h.port(), t.port()), (4001, 4002));
        assert!(listener_addresses("{}").is_err());
        Ok(())
    }
}
