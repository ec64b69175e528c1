//! The Istio side of the EnvoyFilter-form tests: the Istio agent's SDS, the project's
//! representative sidecar inbound configuration (`integration/istio/sidecar-inbound.yaml`),
//! the rendered EnvoyFilter and the stand-in for the server pod's own sidecar. Shared by
//! `istio_envoyfilter.rs` and `istio_conformance.rs`.

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use peerguard_harness::pki::Issued;
use peerguard_server::envoy_config as ec;
use peerguard_server::istio_forms::patch;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tokio_stream::Stream;

/// The server's identity, as the rendered EnvoyFilter checks it by default.
pub const SERVER_ID: &str = "spiffe://cluster.local/ns/peerguard-system/sa/peerguard";

fn inline(s: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.to_string())),
        ..Default::default()
    })
}

/// The Istio agent's part: SDS `default` (the workload certificate) and `ROOTCA` on a Unix
/// socket, as `sds-grpc` expects.
#[derive(Clone)]
pub struct AgentSds {
    pub cert: Issued,
    pub root_pem: String,
}

type RespStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>>;

impl AgentSds {
    fn secret(&self, name: &str) -> Option<prost_types_any::Any> {
        let s = match name {
            "default" => Secret {
                name: name.into(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: inline(&self.cert.cert_pem),
                    private_key: inline(&self.cert.key_pem),
                    ..Default::default()
                })),
            },
            "ROOTCA" => Secret {
                name: name.into(),
                r#type: Some(secret::Type::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: inline(&self.root_pem),
                        ..Default::default()
                    },
                )),
            },
            _ => return None,
        };
        Some(prost_types_any::Any {
            type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into(),
            value: prost::Message::encode_to_vec(&s),
        })
    }
}

mod prost_types_any {
    pub use envoy_types::pb::google::protobuf::Any;
}

#[tonic::async_trait]
impl SecretDiscoveryService for AgentSds {
    type StreamSecretsStream = RespStream;
    type DeltaSecretsStream = Pin<
        Box<
            dyn Stream<
                    Item = Result<
                        envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse,
                        tonic::Status,
                    >,
                > + Send,
        >,
    >;

    async fn stream_secrets(
        &self,
        req: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<RespStream>, tonic::Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let me = self.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok(Some(r)) = inbound.message().await {
                if !r.response_nonce.is_empty() {
                    continue; // an ACK or NACK
                }
                n += 1;
                let resources = r
                    .resource_names
                    .iter()
                    .filter_map(|s| me.secret(s))
                    .collect();
                let resp = DiscoveryResponse {
                    version_info: "1".into(),
                    resources,
                    type_url: r.type_url.clone(),
                    nonce: n.to_string(),
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_secrets(
        &self,
        _: tonic::Request<
            tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest>,
        >,
    ) -> Result<tonic::Response<Self::DeltaSecretsStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("delta"))
    }

    async fn fetch_secrets(
        &self,
        _: tonic::Request<DiscoveryRequest>,
    ) -> Result<tonic::Response<DiscoveryResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("fetch"))
    }
}

/// Serves `sds` on the Unix socket `sock` on the current runtime (the task ends with it).
pub fn serve_agent_sds(
    rt: &tokio::runtime::Handle,
    sock: &Path,
    sds: AgentSds,
) -> tokio::task::JoinHandle<()> {
    let uds = {
        let _g = rt.enter();
        tokio::net::UnixListener::bind(sock)
            .unwrap_or_else(|e| panic!("binding {}: {e}", sock.display()))
    };
    rt.spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(SecretDiscoveryServiceServer::new(sds))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(uds))
            .await;
    })
}

/// The Istio-style `sds-grpc` cluster: the agent's SDS on `sock`.
pub fn sds_cluster(sock: &Path) -> Value {
    json!({
        "name": ec::istio::SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": ec::istio::SDS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": sock}}}}]}]},
    })
}

// ------------------------------------------------------------------ the recorded config

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The recorded inbound configuration with these ports.
pub fn recorded(http: u16, tcp: u16, app_http: u16, app_tcp: u16) -> patch::Config {
    let path = repo_root().join("integration/istio/sidecar-inbound.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in [
        ("@HTTP_PORT_END@", http + 1),
        ("@TCP_PORT_END@", tcp + 1),
        ("@HTTP_PORT@", http),
        ("@TCP_PORT@", tcp),
        ("@APP_HTTP_PORT@", app_http),
        ("@APP_TCP_PORT@", app_tcp),
    ] {
        text = text.replace(k, &v.to_string());
    }
    let v: Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    patch::Config {
        listeners: v["listeners"].as_array().unwrap().clone(),
        clusters: v["clusters"].as_array().unwrap().clone(),
    }
}

/// `peerguard manifests istio envoyfilter --server SERVER`'s `configPatches`, as the command
/// prints them.
pub fn rendered_patches(server: &str) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .args([
            "manifests",
            "istio",
            "envoyfilter",
            "--server",
            server,
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["items"][0]["kind"], "EnvoyFilter");
    list["items"][0]["spec"]["configPatches"]
        .as_array()
        .unwrap()
        .clone()
}

/// A listener of the stand-in for the server pod's own Istio sidecar: terminates mTLS (mesh
/// root, client certificate required, its URI SAN matched by `client_san` when given) on
/// `port` in front of `cluster` (`peerguard serve`), presenting the server's identity.
pub fn standin_listener(
    name: &str,
    port: u16,
    cluster: &str,
    server_cert: &Issued,
    mesh_root_pem: &str,
    client_san: Option<&Value>,
) -> Value {
    let mut validation = json!({"trusted_ca": {"inline_string": mesh_root_pem}});
    if let Some(m) = client_san {
        validation["match_typed_subject_alt_names"] = json!([{"san_type": "URI", "matcher": m}]);
    }
    json!({
        "name": name,
        "address": ec::socket("127.0.0.1", port),
        "filter_chains": [{
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": true,
                "common_tls_context": {
                    "tls_certificates": [{"certificate_chain": {"inline_string": server_cert.cert_pem}, "private_key": {"inline_string": server_cert.key_pem}}],
                    "validation_context": validation,
                },
            }},
            "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": name, "cluster": cluster}}],
        }],
    })
}

/// The filters Envoy got over ECDS (name, config type), from its config dump.
pub fn ecds_filters(config_dump: &str) -> Vec<(String, String)> {
    let dump: Value = serde_json::from_str(config_dump).unwrap();
    let mut ecds = Vec::new();
    for c in dump["configs"].as_array().unwrap() {
        if c["@type"] == "type.googleapis.com/envoy.admin.v3.EcdsConfigDump" {
            for f in c["ecds_filters"].as_array().unwrap() {
                ecds.push((
                    f["ecds_filter"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    f["ecds_filter"]["typed_config"]["@type"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ));
            }
        }
    }
    ecds.sort();
    ecds
}

/// Whether a sidecar has both peerguard filters from ECDS, each either the wasm filter or
/// native RBAC of its kind (`serve --enforcement auto` picks per workload); the deny-all
/// default is not an ECDS resource and does not count.
pub fn ecds_from_serve(filters: &[(String, String)]) -> bool {
    let ok = |name: &str, types: [&str; 2]| {
        filters
            .iter()
            .any(|(n, t)| n == name && types.contains(&t.as_str()))
    };
    filters.len() == 2
        && ok("peerguard-http", [ec::HTTP_WASM_TYPE, ec::HTTP_RBAC_TYPE])
        && ok(
            "peerguard-tcp",
            [ec::NETWORK_WASM_TYPE, ec::NETWORK_RBAC_TYPE],
        )
}
