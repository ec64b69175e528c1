//! `peerguard certs` against real parts: the real `peerguard serve` (the certificate it issues
//! to a workload over SDS is the one `--workload` shows, verified against its root, rotation
//! included) and a real Envoy with the test PKI (`--connect`, with and without a client
//! certificate, trusted or not).
#![cfg(test)]

mod harness;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use harness::*;
use peerguard_harness::envoy::{EnvoyProcess, TempDir};
use peerguard_harness::pki::{CaChoice, ClientCertSpec, TestPki};
use peerguard_harness::require::{require, Needs};
use peerguard_server::envoy_config::{self as ec, listener};
use prost::Message;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `peerguard certs ARGS`: (exit code, stdout, stderr).
fn certs(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .arg("certs")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn certs_json(args: &[&str]) -> (i32, Value) {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    let (code, out, err) = certs(&a);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\nstderr: {err}"));
    (code, v)
}

fn codes(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

/// The chain SDS sends `foo/httpbin` as its `default` secret, as Envoy receives it.
fn sds_chain(server: &Server) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let req = DiscoveryRequest {
            node: Some(Node {
                id: "foo/httpbin".into(),
                ..Default::default()
            }),
            type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into(),
            resource_names: vec!["default".into()],
            ..Default::default()
        };
        let mut r = tonic::Request::new(tokio_stream::iter(vec![req]));
        r.metadata_mut().insert(
            "x-peerguard-token",
            server.token("foo", "httpbin").parse().unwrap(),
        );
        let mut client =
            SecretDiscoveryServiceClient::connect(format!("http://127.0.0.1:{}", server.grpc_port))
                .await
                .unwrap();
        let mut stream = client.stream_secrets(r).await.unwrap().into_inner();
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let s = Secret::decode(resp.resources[0].value.as_slice()).unwrap();
        let Some(secret::Type::TlsCertificate(tls)) = s.r#type else {
            panic!("not a tls_certificate")
        };
        match tls.certificate_chain.unwrap().specifier.unwrap() {
            Specifier::InlineString(s) => s,
            other => panic!("{other:?}"),
        }
    })
}

fn fingerprint(v: &Value) -> String {
    v["certificates"][0]["sha256_fingerprint"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn workload_shows_the_certificate_serve_issues_and_verifies_it_against_serves_root() {
    let dir = temp_dir("certs-serve");
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    let server = Server::start(&dir, "/opt/peerguard.wasm", &["--workload-cert-ttl", "6s"]);
    let url = format!("http://127.0.0.1:{}", server.http_port);
    let state = dir.join("state");
    let state = state.to_str().unwrap();

    let (code, v) = certs_json(&["--workload", "foo/httpbin", "--server", &url]);
    let leaf = &v["certificates"][0];
    assert_eq!(
        leaf["spiffe"],
        serde_json::json!({"id": "spiffe://cluster.local/ns/foo/sa/httpbin", "trust_domain": "cluster.local", "namespace": "foo", "service_account": "httpbin"}),
        "{v:#}"
    );
    assert_eq!(v["verification"]["status"], "verified", "{v:#}");
    assert!(v["verification"]["trust_bundle"]
        .as_str()
        .unwrap()
        .contains(&url));
    // A 6s certificate is within the default --warn-within (1h): a warning, exit 0.
    assert_eq!(codes(&v), vec!["expiring-soon"], "{v:#}");
    assert_eq!(code, 0);

    // The same certificate SDS hands to Envoy (public parts only: no key in the endpoint).
    let (status, body) = http_get(server.http_port, "/certs/foo/httpbin").unwrap();
    assert_eq!(status, 200);
    assert!(!body.contains("PRIVATE KEY"));
    let file = dir.join("from-endpoint.pem");
    std::fs::write(&file, &body).unwrap();
    let sds = dir.join("from-sds.pem");
    std::fs::write(&sds, sds_chain(&server)).unwrap();
    let (_, a) = certs_json(&["--file", file.to_str().unwrap(), "--state-dir", state]);
    let (_, b) = certs_json(&["--file", sds.to_str().unwrap(), "--state-dir", state]);
    assert_eq!(a["verification"]["status"], "verified", "{a:#}");
    let (_, now) = certs_json(&["--workload", "foo/httpbin", "--server", &url]);
    assert!(
        fingerprint(&b) == fingerprint(&now) || fingerprint(&b) == fingerprint(&a),
        "SDS and /certs disagree"
    );

    // Rotation (at 80% of 6s): the endpoint follows what is currently issued.
    let first = fingerprint(&v);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, w) = certs_json(&["--workload", "foo/httpbin", "--server", &url]);
        if fingerprint(&w) != first {
            assert_eq!(w["verification"]["status"], "verified");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the certificate was never rotated"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Text for people.
    let (code, text, _) = certs(&["--workload", "foo/httpbin", "--server", &url]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "SPIFFE ID       trust domain cluster.local, namespace foo, service account httpbin"
        ) && text.contains("chain: verified against the trust bundle of serve at"),
        "{text}"
    );

    // Another mesh's root: not verified, exit 1.
    let other = TestPki::new().unwrap();
    let other_root = dir.join("other-root.pem");
    std::fs::write(&other_root, other.mesh_root_pem()).unwrap();
    let (code, v) = certs_json(&[
        "--workload",
        "foo/httpbin",
        "--server",
        &url,
        "--trust-bundle",
        other_root.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        codes(&v).contains(&"chain-not-verified".to_string()),
        "{v:#}"
    );
    // Another trust domain: refused as Istio would, exit 1.
    let (code, v) = certs_json(&[
        "--workload",
        "foo/httpbin",
        "--server",
        &url,
        "--trust-domain",
        "example.org",
    ]);
    assert_eq!(code, 1);
    assert!(codes(&v).contains(&"trust-domain-not-accepted".to_string()));
    // `describe --server`: the certificate the workload holds, checked against its identity.
    let cfg = dir.join("cfg");
    let describe = |extra: &[&str]| {
        let mut a = vec![
            "describe",
            "--config",
            cfg.to_str().unwrap(),
            "--workload",
            "foo/httpbin",
        ];
        a.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_peerguard"))
            .args(&a)
            .output()
            .unwrap()
    };
    let o = describe(&["--server", &url]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("certificate (issued by serve at {url}):\n  spiffe://cluster.local/ns/foo/sa/httpbin serial "))
            && text.contains("  chain: verified against serve's trust bundle\n"),
        "{text}"
    );
    // Another trust domain for the mesh: the held certificate is not the workload's identity.
    let o = describe(&[
        "--server",
        &url,
        "--trust-domain",
        "example.org",
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(1), "{v:#}");
    assert!(
        v["certificate"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the workload's identity is spiffe://example.org/ns/foo/sa/httpbin"),
        "{v:#}"
    );
    // A server that does not answer: exit 2.
    let o = describe(&["--server", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(o.status.code(), Some(2));

    // An unknown workload, an unreachable server: exit 2 with the reason.
    let (code, _, err) = certs(&["--workload", "foo/nope", "--server", &url]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no certificate issued to workload foo/nope"),
        "{err}"
    );
    let (code, _, err) = certs(&[
        "--workload",
        "foo/httpbin",
        "--server",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot connect"), "{err}");
}

fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn connect_records_envoys_chain_and_whether_the_client_certificate_is_accepted() {
    let Some(tools) = require(
        "connect_records_envoys_chain_and_whether_the_client_certificate_is_accepted",
        Needs::Envoy,
    )
    .unwrap() else {
        return;
    };
    let pki = TestPki::new().unwrap();
    let spec = |uri: &str, ca| ClientCertSpec {
        uri_sans: vec![uri.into()],
        ca,
        expired: false,
    };
    // Envoy presents an Istio-shaped workload certificate and requires one from clients
    // (the STRICT inbound chain of every peerguard sidecar).
    let server_cert = pki
        .client(&spec(
            "spiffe://cluster.local/ns/foo/sa/httpbin",
            CaChoice::Mesh,
        ))
        .unwrap();
    let mut dir = TempDir::new("pg-certs-connect").unwrap();
    let port = free_port();
    let inbound = listener::Inbound {
        name: "inbound".into(),
        address: "127.0.0.1".into(),
        port,
        protocol: listener::AppProtocol::Http,
        trust_domains: vec!["cluster.local".into()],
        certs: listener::Certs::Inline {
            cert_pem: server_cert.cert_pem.clone(),
            key_pem: server_cert.key_pem.clone(),
            ca_pem: pki.mesh_root_pem().into(),
        },
        authz: listener::Authz::None,
        chains: listener::Chains::Istio(peerguard_filter::schema::MtlsMode::Strict),
        path_normalization: Default::default(),
        http_cluster: "app".into(),
        tcp_cluster: "app".into(),
        route_timeout: None,
    };
    let bootstrap = ec::bootstrap(
        None,
        ec::admin("127.0.0.1", 0),
        vec![inbound.listener()],
        vec![ec::static_cluster(
            "app",
            &[("127.0.0.1".into(), free_port())],
        )],
    );
    let config = write_file(
        dir.path(),
        "envoy.json",
        &serde_json::to_string(&bootstrap).unwrap(),
    );
    let envoy = match EnvoyProcess::start(
        &tools.envoy,
        Path::new(&config),
        dir.path(),
        &[],
        Duration::from_secs(60),
    ) {
        Ok(e) => e,
        Err(e) => {
            dir.keep();
            panic!("{e:#}")
        }
    };
    let addr = format!("127.0.0.1:{port}");
    let d = dir.path();
    let root = write_file(d, "root.pem", pki.mesh_root_pem());
    let client = |name: &str, uri: &str, ca| {
        let c = pki.client(&spec(uri, ca)).unwrap();
        (
            write_file(d, &format!("{name}.pem"), &c.cert_pem),
            write_file(d, &format!("{name}.key"), &c.key_pem),
        )
    };

    // No client certificate: Envoy's chain is shown and verified (serverAuth); Envoy asked for
    // a client certificate and refused the connection without one.
    let (code, v) = certs_json(&["--connect", &addr, "--trust-bundle", &root]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        v["certificates"][0]["spiffe"]["service_account"], "httpbin",
        "{v:#}"
    );
    assert_eq!(
        v["certificates"][0]["sha256_fingerprint"]
            .as_str()
            .unwrap()
            .len(),
        95
    );
    assert_eq!(v["verification"]["status"], "verified");
    assert_eq!(
        v["verification"]["usages"],
        serde_json::json!(["serverAuth"])
    );
    let cc = &v["tls"]["client_certificate"];
    assert_eq!(cc["requested"], true, "{v:#}");
    assert_eq!(cc["presented"], false);
    assert_eq!(cc["result"], "rejected", "{v:#}");
    assert_eq!(codes(&v), vec!["client-cert-required"]);

    // A mesh client certificate: accepted.
    let (cert, key) = client(
        "sleep",
        "spiffe://cluster.local/ns/bar/sa/sleep",
        CaChoice::Mesh,
    );
    let (code, v) = certs_json(&[
        "--connect",
        &addr,
        "--trust-bundle",
        &root,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ]);
    let cc = &v["tls"]["client_certificate"];
    assert_eq!(
        (cc["presented"].as_bool(), cc["result"].as_str()),
        (Some(true), Some("accepted")),
        "{v:#}"
    );
    assert_eq!(codes(&v), Vec::<String>::new());
    assert_eq!(code, 0);

    // Signed by a root Envoy does not trust, or in another trust domain: refused, exit 1.
    for (name, uri, ca) in [
        (
            "rogue",
            "spiffe://cluster.local/ns/bar/sa/sleep",
            CaChoice::Untrusted,
        ),
        (
            "other-td",
            "spiffe://example.org/ns/bar/sa/sleep",
            CaChoice::Mesh,
        ),
    ] {
        let (cert, key) = client(name, uri, ca);
        let (code, v) = certs_json(&[
            "--connect",
            &addr,
            "--trust-bundle",
            &root,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
        ]);
        assert_eq!(
            v["tls"]["client_certificate"]["result"], "rejected",
            "{name}: {v:#}"
        );
        assert_eq!(codes(&v), vec!["client-cert-rejected"], "{name}: {v:#}");
        assert_eq!(code, 1, "{name}");
    }

    // Verified against the wrong roots: exit 1; text output says why.
    let wrong = write_file(d, "wrong.pem", pki.untrusted_root_pem());
    let (code, text, _) = certs(&["--connect", &addr, "--trust-bundle", &wrong]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("chain: NOT verified against --trust-bundle"),
        "{text}"
    );
    assert!(
        text.contains("client certificate: requested, none presented: rejected"),
        "{text}"
    );

    // Nothing listening: exit 2.
    let (code, _, err) = certs(&["--connect", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot connect"), "{err}");
    drop(envoy);
}

#[test]
fn bad_input_exits_2_and_help_lists_the_findings() {
    let dir = temp_dir("certs-bad");
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let (code, _, err) = certs(&["--file", junk.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("junk.pem: certificate 0: not an X.509 certificate"),
        "{err}"
    );
    let (code, _, err) = certs(&["--file", "/nonexistent.pem"]);
    assert_eq!(code, 2, "{err}");
    // Exactly one input.
    let (code, _, _) = certs(&["--file", "a", "--connect", "b:1"]);
    assert_eq!(code, 2);
    let (code, out, _) = certs(&["--help"]);
    assert_eq!(code, 0);
    for c in [
        "no-spiffe-id",
        "trust-domain-not-accepted",
        "ca-leaf",
        "chain-not-verified",
    ] {
        assert!(out.contains(c), "{out}");
    }
}
