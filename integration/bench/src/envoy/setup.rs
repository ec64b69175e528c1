//! What is benchmarked: the variants (no filter, native RBAC, a no-op wasm filter,
//! peerguard), the policies each one holds, and the Envoy bootstrap that serves them.
//!
//! Every variant runs the product's inbound listener (`peerguard_server::envoy_config`:
//! `tls_inspector`, an mTLS chain requiring a client certificate from the mesh root with a
//! `spiffe://<td>/` URI SAN, a plaintext chain, the same connection manager) with an HTTP
//! listener and a TCP listener; only the authorization filter differs, so the measured
//! difference is the filter's.

use anyhow::Context as _;
use peerguard_filter::schema::{
    Action, AuthzPolicy, Field, ModeFrom, MtlsMode, MtlsPolicy, PolicyRef, Rule, Source, StrMatch,
    WorkloadPolicy, WorkloadRef, SCHEMA_VERSION,
};
use peerguard_server::envoy_config::{
    self as ec, AppProtocol, Authz, Certs, Chains, Inbound, PathNormalization,
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
    /// peerguard's module built from an earlier commit (`--baseline-wasm`): the "before".
    Baseline,
    Peerguard,
    /// What `peerguard serve` pushes for the workload (`enforcement::choose`): native RBAC
    /// in the filter slot when cheaper, peerguard's wasm filter otherwise.
    Adaptive,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Rbac => "rbac",
            Kind::Noop => "noop-wasm",
            Kind::Baseline => "baseline",
            Kind::Peerguard => "peerguard",
            Kind::Adaptive => "adaptive",
        }
    }

    /// Does this variant enforce policies (so a stranger must be denied)?
    pub fn enforces(self) -> bool {
        matches!(
            self,
            Kind::Rbac | Kind::Baseline | Kind::Peerguard | Kind::Adaptive
        )
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
pub fn policy_at(i: usize, n: usize) -> (String, String) {
    let name = format!("allow-{i:05}");
    let principal = if i + 1 == n {
        CLIENT_PRINCIPAL.to_string()
    } else {
        format!("{TRUST_DOMAIN}/ns/ns-{i}/sa/sa-{i}")
    };
    (name, principal)
}

/// The STRICT configuration (the benchmark's default).
#[cfg(test)]
pub fn workload_policy(n: usize) -> WorkloadPolicy {
    workload_policy_in(n, MtlsMode::Strict)
}

/// peerguard's configuration: `n` ALLOW policies, one principal each, mTLS `mode`.
pub fn workload_policy_in(n: usize, mode: MtlsMode) -> WorkloadPolicy {
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
        path_normalization: Default::default(),
        num_trusted_proxies: 0,
        decision_log: None,
        mtls: MtlsPolicy {
            default: ModeFrom::new(mode, None),
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
    /// The "before" module (`--baseline-wasm`), if the run has one.
    pub baseline: Option<&'a Path>,
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
    /// peerguard's mode (STRICT unless `--mtls-mode`).
    pub mtls_mode: MtlsMode,
    /// The `adaptive` variant's filters (from `enforcement::choose`), built by the caller.
    pub adaptive: Option<&'a Authz>,
}

pub const HTTP_LISTENER: &str = "bench_http";
pub const TCP_LISTENER: &str = "bench_tcp";

impl BootstrapInput<'_> {
    /// The product's inbound listener (the one vocabulary); only the authorization filter
    /// differs between variants.
    pub fn to_json(&self) -> anyhow::Result<Value> {
        let authz = self.authz()?;
        let listener = |name: &str, protocol: AppProtocol| {
            Inbound {
                name: name.into(),
                address: "127.0.0.1".into(),
                port: 0,
                protocol,
                trust_domains: vec![TRUST_DOMAIN.into()],
                certs: Certs::Inline {
                    cert_pem: self.server_cert_pem.into(),
                    key_pem: self.server_key_pem.into(),
                    ca_pem: self.mesh_root_pem.into(),
                },
                authz: authz.clone(),
                chains: Chains::Both,
                path_normalization: PathNormalization::Base,
                http_cluster: "app_http".into(),
                tcp_cluster: "app_tcp".into(),
                route_timeout: Some("5s".into()),
            }
            .listener()
        };
        let cluster =
            |name: &str, a: SocketAddr| ec::static_cluster(name, &[(a.ip().to_string(), a.port())]);
        Ok(ec::bootstrap(
            None,
            ec::admin("127.0.0.1", 0),
            vec![
                listener(HTTP_LISTENER, AppProtocol::Http),
                listener(TCP_LISTENER, AppProtocol::Tcp),
            ],
            vec![
                cluster("app_http", self.http_upstream),
                cluster("app_tcp", self.tcp_upstream),
            ],
        ))
    }

    /// The variant's authorization filters, placed before the router / tcp_proxy.
    fn authz(&self) -> anyhow::Result<Authz> {
        let n = self.variant.policies;
        Ok(match self.variant.kind {
            Kind::None => Authz::None,
            Kind::Rbac => {
                let rules = rbac_rules(n);
                Authz::Custom {
                    http: json!({
                        "name": "envoy.filters.http.rbac",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                            "rules": rules,
                        },
                    }),
                    network: json!({
                        "name": "envoy.filters.network.rbac",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                            "stat_prefix": "bench_tcp_rbac",
                            "rules": rules,
                        },
                    }),
                }
            }
            Kind::Noop => {
                let module = self.modules.noop.display().to_string();
                Authz::Custom {
                    http: ec::wasm_filter(true, "noop", "noop", "noop_http", &module, None),
                    network: ec::wasm_filter(false, "noop", "noop", "noop_tcp", &module, None),
                }
            }
            Kind::Peerguard | Kind::Baseline => {
                let module = if self.variant.kind == Kind::Baseline {
                    self.modules
                        .baseline
                        .context("a baseline variant without --baseline-wasm")?
                } else {
                    self.modules.peerguard
                };
                Authz::Wasm {
                    module: module.display().to_string(),
                    policy_json: Some(
                        serde_json::to_string(&workload_policy_in(n, self.mtls_mode))
                            .context("serializing the WorkloadPolicy")?,
                    ),
                }
            }
            Kind::Adaptive => self
                .adaptive
                .cloned()
                .context("an adaptive variant without its enforcement")?,
        })
    }
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
                version: Default::default(),
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
