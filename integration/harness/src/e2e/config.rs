//! The Envoy bootstrap for a batch of scenarios, from the product's one Envoy-config
//! vocabulary ([`peerguard_server::envoy_config`]): one inbound listener per (scenario
//! address, port), as a peerguard sidecar has it (mTLS and plaintext chains, the wasm filter
//! configured with the scenario's `WorkloadPolicy`), in front of the test app (HTTP) and echo
//! server (TCP). A port that carries both HTTP and TCP requests sniffs the protocol per
//! connection, as Istio's inbound listener does on a port without a declared protocol.

use peerguard_server::envoy_config::{
    self as ec, AppProtocol, Authz, Certs, Chains, Inbound, PathNormalization,
};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

/// One listener to serve.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: String,
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: AppProtocol,
    /// Accepted at the handshake: `spiffe://<td>/` for each of these.
    pub trust_domains: Vec<String>,
    /// The filter's configuration (a serialized `WorkloadPolicy`).
    pub policy_json: String,
    /// This listener's path normalization; `None`: the bootstrap's.
    pub path_normalization: Option<PathNormalization>,
}

/// Where the filter comes from; `None` runs Envoy without peerguard (handshake checks only).
#[derive(Debug, Clone)]
pub struct FilterModule<'a> {
    pub wasm: &'a Path,
}

pub const HTTP_CLUSTER: &str = "app_http";
pub const TCP_CLUSTER: &str = "app_tcp";

pub struct Bootstrap<'a> {
    pub listeners: &'a [ListenerSpec],
    pub filter: Option<FilterModule<'a>>,
    pub mesh_root_pem: &'a str,
    pub server_cert_pem: &'a str,
    pub server_key_pem: &'a str,
    pub http_upstream: SocketAddr,
    pub tcp_upstream: SocketAddr,
    pub path_normalization: PathNormalization,
}

impl Bootstrap<'_> {
    pub fn to_json(&self) -> Value {
        let listeners = self
            .listeners
            .iter()
            .map(|l| self.inbound(l).listener())
            .collect();
        let cluster =
            |name: &str, a: SocketAddr| ec::static_cluster(name, &[(a.ip().to_string(), a.port())]);
        ec::bootstrap(
            None,
            ec::admin("127.0.0.1", 0),
            listeners,
            vec![
                cluster(HTTP_CLUSTER, self.http_upstream),
                cluster(TCP_CLUSTER, self.tcp_upstream),
            ],
        )
    }

    fn inbound(&self, l: &ListenerSpec) -> Inbound {
        Inbound {
            name: l.name.clone(),
            address: l.address.to_string(),
            port: l.port,
            protocol: l.protocol,
            trust_domains: l.trust_domains.clone(),
            certs: Certs::Inline {
                cert_pem: self.server_cert_pem.into(),
                key_pem: self.server_key_pem.into(),
                ca_pem: self.mesh_root_pem.into(),
            },
            authz: match &self.filter {
                Some(f) => Authz::Wasm {
                    module: f.wasm.display().to_string(),
                    policy_json: Some(l.policy_json.clone()),
                },
                None => Authz::None,
            },
            chains: Chains::Both,
            path_normalization: l.path_normalization.unwrap_or(self.path_normalization),
            http_cluster: HTTP_CLUSTER.into(),
            tcp_cluster: TCP_CLUSTER.into(),
            route_timeout: Some("5s".into()),
        }
    }
}
