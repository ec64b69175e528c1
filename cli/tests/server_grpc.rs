//! `peerguard serve` over real gRPC (no Envoy needed): ECDS content and pushes, ACK/NACK,
//! SDS token checks, unknown nodes, certificate rotation, ops endpoints, TTL refusal.
#![cfg(test)]

mod harness;

use envoy_types::pb::envoy::config::core::v3::{Node, TypedExtensionConfig};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_client::ExtensionConfigDiscoveryServiceClient;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::StringValue;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use harness::*;
use prost::Message;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

const ECDS: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const SDS: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

struct XdsStream {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

fn request(
    node: &str,
    type_url: &str,
    names: &[&str],
    version: &str,
    nonce: &str,
    nack: Option<&str>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: node.into(),
            ..Default::default()
        }),
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        error_detail: nack.map(|m| RpcStatus {
            code: 3,
            message: m.into(),
            details: vec![],
        }),
        ..Default::default()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Svc {
    Ecds,
    Sds,
    Ads,
}

async fn open(
    port: u16,
    sds: bool,
    token: Option<&str>,
    first: DiscoveryRequest,
) -> Result<XdsStream, tonic::Status> {
    open_svc(port, if sds { Svc::Sds } else { Svc::Ecds }, token, first).await
}

async fn open_svc(
    port: u16,
    svc: Svc,
    token: Option<&str>,
    first: DiscoveryRequest,
) -> Result<XdsStream, tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    tx.send(first).await.unwrap();
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("x-peerguard-token", t.parse().unwrap());
    }
    let url = format!("http://127.0.0.1:{port}");
    let stream = match svc {
        Svc::Sds => {
            SecretDiscoveryServiceClient::connect(url)
                .await
                .unwrap()
                .stream_secrets(req)
                .await?
        }
        Svc::Ecds => {
            ExtensionConfigDiscoveryServiceClient::connect(url)
                .await
                .unwrap()
                .stream_extension_configs(req)
                .await?
        }
        Svc::Ads => {
            AggregatedDiscoveryServiceClient::connect(url)
                .await
                .unwrap()
                .stream_aggregated_resources(req)
                .await?
        }
    };
    Ok(XdsStream {
        tx,
        rx: stream.into_inner(),
    })
}

async fn next(
    s: &mut XdsStream,
    wait: Duration,
) -> Option<Result<DiscoveryResponse, tonic::Status>> {
    match tokio::time::timeout(wait, s.rx.message()).await {
        Err(_) => None,
        Ok(Ok(Some(r))) => Some(Ok(r)),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => Some(Err(e)),
    }
}

fn policy_json(resp: &DiscoveryResponse) -> serde_json::Value {
    assert_eq!(resp.resources.len(), 1);
    let tec = TypedExtensionConfig::decode(resp.resources[0].value.as_slice()).unwrap();
    assert_eq!(tec.name, "peerguard-http");
    let wasm = Wasm::decode(tec.typed_config.unwrap().value.as_slice()).unwrap();
    let pc = wasm.config.unwrap();
    assert_eq!(pc.root_id, "peerguard_http");
    assert_eq!(pc.failure_policy, 2, "FAIL_CLOSED");
    let cfg = StringValue::decode(pc.configuration.unwrap().value.as_slice()).unwrap();
    serde_json::from_str(&cfg.value).unwrap()
}

fn secret_of(resp: &DiscoveryResponse) -> Secret {
    Secret::decode(resp.resources[0].value.as_slice()).unwrap()
}

fn uri_sans(pem: &str) -> Vec<String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let x = p.parse_x509().unwrap();
    let san = x.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|g| match g {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

const DENY_SLEEP: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-sleep, namespace: foo}
spec:
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/sleep]}}]}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecds_serves_the_compiled_policy_pushes_on_edit_and_counts_nacks() {
    let dir = temp_dir("grpc-ecds");
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    // A broken file next to valid ones: reported, the rest is still served.
    write(&dir.join("cfg/broken.yaml"), "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: x, namespace: foo}\nspec: {serviceAccount: x, sidecar: perhaps}\n");
    let server = Server::start(&dir, "/opt/peerguard.wasm", &[]);
    assert_eq!(server.metric("peerguard_config_errors"), 1.0);
    assert!(
        server
            .log_text()
            .contains("broken.yaml: Workload foo/x: spec.sidecar: "),
        "{}",
        server.log_text()
    );

    let mut s = open(
        server.grpc_port,
        false,
        None,
        request("foo/httpbin", ECDS, &["peerguard-http"], "", "", None),
    )
    .await
    .unwrap();
    let r1 = next(&mut s, Duration::from_secs(5))
        .await
        .expect("initial push")
        .unwrap();
    let p1 = policy_json(&r1);
    assert_eq!(p1["workload"]["namespace"], "foo");
    assert_eq!(p1["workload"]["name"], "httpbin");
    s.tx.send(request(
        "foo/httpbin",
        ECDS,
        &["peerguard-http"],
        &r1.version_info,
        &r1.nonce,
        None,
    ))
    .await
    .unwrap();
    assert!(
        next(&mut s, Duration::from_millis(500)).await.is_none(),
        "an ACK gets no response"
    );

    // Editing a file pushes a new version to this node.
    write(&dir.join("cfg/deny.yaml"), DENY_SLEEP);
    let r2 = next(&mut s, Duration::from_secs(5))
        .await
        .expect("push after edit")
        .unwrap();
    assert_ne!(r2.version_info, r1.version_info);
    let p2 = policy_json(&r2);
    assert_ne!(p1, p2);
    assert!(serde_json::to_string(&p2).unwrap().contains("deny-sleep"));

    // NACK: counted, not re-sent, last accepted stays.
    s.tx.send(request(
        "foo/httpbin",
        ECDS,
        &["peerguard-http"],
        &r1.version_info,
        &r2.nonce,
        Some("on_configure failed"),
    ))
    .await
    .unwrap();
    assert!(
        next(&mut s, Duration::from_millis(700)).await.is_none(),
        "a rejected version is not re-sent"
    );
    wait_for("reject metric", Duration::from_secs(3), || {
        server.metric("peerguard_xds_rejects_total{type=\"ecds\"}") == 1.0
    });
    assert!(server.log_text().contains("on_configure failed"));

    // Reconnect with the current version: nothing to send.
    let mut s2 = open(
        server.grpc_port,
        false,
        None,
        request(
            "foo/httpbin",
            ECDS,
            &["peerguard-http"],
            &r2.version_info,
            "",
            None,
        ),
    )
    .await
    .unwrap();
    assert!(next(&mut s2, Duration::from_millis(700)).await.is_none());
    let m = server.metrics();
    assert!(m.contains("peerguard_xds_connected_nodes 1"), "{m}");
    assert!(
        m.contains("peerguard_xds_pushes_total{type=\"ecds\"} 2"),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_nodes_are_refused_with_a_clear_error() {
    let dir = temp_dir("grpc-unknown");
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    let server = Server::start(&dir, "/opt/peerguard.wasm", &[]);
    let mut s = open(
        server.grpc_port,
        false,
        None,
        request("foo/ghost", ECDS, &["peerguard-http"], "", "", None),
    )
    .await
    .unwrap();
    let err = next(&mut s, Duration::from_secs(5))
        .await
        .expect("an error")
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("unknown node foo/ghost"),
        "{}",
        err.message()
    );
    let mut s = open(
        server.grpc_port,
        false,
        None,
        request("no-slash", ECDS, &["peerguard-http"], "", "", None),
    )
    .await
    .unwrap();
    let err = next(&mut s, Duration::from_secs(5))
        .await
        .expect("an error")
        .unwrap_err();
    assert!(
        err.message().contains("<namespace>/<name>"),
        "{}",
        err.message()
    );
    assert_eq!(
        server.metric("peerguard_xds_refused_streams_total{reason=\"unknown_node\"}"),
        2.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_need_the_node_token_and_rotate() {
    let dir = temp_dir("grpc-sds");
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    let server = Server::start(&dir, "/opt/peerguard.wasm", &["--workload-cert-ttl", "5s"]);
    let names = ["default"];
    let req = || request("foo/httpbin", SDS, &names, "", "", None);

    // No token, and another workload's token: refused, no secret.
    for token in [
        None,
        Some(server.token("bar", "sleep")),
        Some("00".repeat(32)),
    ] {
        let mut s = open(server.grpc_port, true, token.as_deref(), req())
            .await
            .unwrap();
        let got = next(&mut s, Duration::from_secs(5))
            .await
            .expect("a refusal");
        let err = got.expect_err("no secret without a valid token");
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    assert_eq!(
        server.metric("peerguard_xds_refused_streams_total{reason=\"unauthenticated\"}"),
        3.0
    );

    let token = server.token("foo", "httpbin");
    let mut s = open(server.grpc_port, true, Some(&token), req())
        .await
        .unwrap();
    let r1 = next(&mut s, Duration::from_secs(5))
        .await
        .expect("cert")
        .unwrap();
    let sec = secret_of(&r1);
    assert_eq!(sec.name, "default");
    let Some(secret::Type::TlsCertificate(tls)) = sec.r#type else {
        panic!("not a tls_certificate")
    };
    let chain = match tls.certificate_chain.unwrap().specifier.unwrap() {
        envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        uri_sans(&chain),
        vec!["spiffe://cluster.local/ns/foo/sa/httpbin"]
    );
    s.tx.send(request(
        "foo/httpbin",
        SDS,
        &names,
        &r1.version_info,
        &r1.nonce,
        None,
    ))
    .await
    .unwrap();
    // 5s TTL: rotated at 80% (4s), pushed on the open stream.
    let r2 = next(&mut s, Duration::from_secs(8))
        .await
        .expect("rotated cert")
        .unwrap();
    assert_ne!(r2.version_info, r1.version_info);
    assert!(
        server.metric("peerguard_certs_issued_total") >= 3.0,
        "{}",
        server.metrics()
    );

    // ROOTCA is the CA in the state dir.
    let mut s = open(
        server.grpc_port,
        true,
        Some(&token),
        request("foo/httpbin", SDS, &["ROOTCA"], "", "", None),
    )
    .await
    .unwrap();
    let r = next(&mut s, Duration::from_secs(5))
        .await
        .expect("root")
        .unwrap();
    let Some(secret::Type::ValidationContext(vc)) = secret_of(&r).r#type else {
        panic!("not a validation_context")
    };
    let root_file = std::fs::read_to_string(dir.join("state/ca/root-cert.pem")).unwrap();
    assert_eq!(
        vc.trusted_ca.unwrap().specifier,
        Some(
            envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(
                root_file
            )
        )
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("state/ca/root-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!server.log_text().contains("PRIVATE KEY"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ops_endpoints_and_graceful_shutdown() {
    let dir = temp_dir("grpc-ops");
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    let mut server = Server::start(&dir, "/opt/peerguard.wasm", &[]);
    assert_eq!(
        http_get(server.http_port, "/healthz").map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        http_get(server.http_port, "/readyz").map(|r| r.0),
        Some(200)
    );
    let m = server.metrics();
    for name in [
        "peerguard_xds_connected_nodes",
        "peerguard_xds_rejects_total",
        "peerguard_config_errors",
        "peerguard_workload_cert_expiry_timestamp_seconds",
        "peerguard_ca_cert_expiry_timestamp_seconds",
    ] {
        assert!(
            m.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{m}"
        );
    }
    assert_eq!(server.metric("peerguard_workloads"), 2.0);
    let st = server.stop();
    assert!(st.success(), "{st:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_ttl_above_the_maximum_is_refused() {
    let dir = temp_dir("grpc-ttl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .args(["serve", "--config-dir"])
        .arg(dir.join("cfg"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args([
            "--wasm",
            "/x.wasm",
            "--workload-cert-ttl",
            "91d",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("greater than the max allowed TTL 90d"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_serves_extension_configs_and_secrets_on_one_stream() {
    let dir = temp_dir("grpc-ads");
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    let server = Server::start(&dir, "/opt/peerguard.wasm", &[]);
    let token = server.token("bar", "sleep");
    let mut s = open_svc(
        server.grpc_port,
        Svc::Ads,
        Some(&token),
        request(
            "bar/sleep",
            ECDS,
            &["peerguard-http", "peerguard-tcp"],
            "",
            "",
            None,
        ),
    )
    .await
    .unwrap();
    let r = next(&mut s, Duration::from_secs(5))
        .await
        .expect("ecds")
        .unwrap();
    assert_eq!(r.type_url, ECDS);
    assert_eq!(r.resources.len(), 2);
    s.tx.send(request(
        "bar/sleep",
        SDS,
        &["default", "ROOTCA"],
        "",
        "",
        None,
    ))
    .await
    .unwrap();
    let r = next(&mut s, Duration::from_secs(5))
        .await
        .expect("sds")
        .unwrap();
    assert_eq!(r.type_url, SDS);
    let mut names: Vec<String> = r
        .resources
        .iter()
        .map(|a| Secret::decode(a.value.as_slice()).unwrap().name)
        .collect();
    names.sort();
    assert_eq!(names, vec!["ROOTCA", "default"]);
    // A type ADS does not serve is refused.
    s.tx.send(request(
        "bar/sleep",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
        &[],
        "",
        "",
        None,
    ))
    .await
    .unwrap();
    let err = next(&mut s, Duration::from_secs(5))
        .await
        .expect("refusal")
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let _ = std::fs::remove_dir_all(&dir);
}
