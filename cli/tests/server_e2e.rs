//! `peerguard serve` + `peerguard bootstrap` with a real Envoy, real certificates and real
//! connections: the policy arrives over ECDS, the certificates over SDS, editing a YAML file
//! flips a live decision, and a server restart changes nothing while Envoy reconnects.
//!
//! Needs Envoy (`PEERGUARD_ENVOY`, `.peerguard/env` from `scripts/setup.sh`, or `envoy` on
//! PATH) and the module (`PEERGUARD_WASM` or `$CARGO_TARGET_DIR/peerguard.wasm` from
//! `scripts/build-wasm.sh`). Missing either prints `SKIPPED: ...` and passes, unless
//! `PEERGUARD_REQUIRE_ENVOY=1`.
#![cfg(test)]

mod harness;

use harness::sidecar::*;
use harness::*;
use peerguard_harness::http1;
use peerguard_harness::pki::Issued;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DENY_SLEEP: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-sleep, namespace: foo}
spec:
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/sleep]}}]}]
";

const STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
";

#[test]
fn http_policy_over_ecds_certs_over_sds_live_edit_and_server_restart() {
    let Some((envoy_bin, wasm)) =
        prerequisites("http_policy_over_ecds_certs_over_sds_live_edit_and_server_restart")
    else {
        return;
    };
    let dir = temp_dir("e2e-http");
    let app = http_app();
    write(&dir.join("cfg/workloads.yaml"), &workloads(app));
    let wasm_s = wasm.display().to_string();
    let mut server = Server::start(&dir, &wasm_s, &[]);
    let (envoy, port) = Envoy::start(
        &envoy_bin,
        &dir,
        &server,
        &wasm,
        &["--app-port", &app.to_string()],
        "http",
    );
    let sleep = client_cert(
        &dir.join("state"),
        "spiffe://cluster.local/ns/bar/sa/sleep",
        false,
    );
    let long = Duration::from_secs(30);

    // No policy: PERMISSIVE, everything allowed, over mTLS (certs from SDS) and plaintext.
    eventually(
        "mTLS request once ECDS+SDS arrived",
        long,
        &envoy,
        &server,
        || request(port, Some(&sleep), true),
        "200 app-ok",
    );
    eventually(
        "plaintext under PERMISSIVE",
        long,
        &envoy,
        &server,
        || request(port, None, false),
        "200 app-ok",
    );
    // The handshake itself: client certificate required, from the mesh CA, in the trust domain.
    assert!(
        request(port, None, true).starts_with("closed"),
        "TLS without a client certificate must fail"
    );
    let rogue = client_cert(
        &dir.join("state"),
        "spiffe://cluster.local/ns/bar/sa/sleep",
        true,
    );
    assert!(
        request(port, Some(&rogue), true).starts_with("closed"),
        "an untrusted CA must fail the handshake"
    );
    let other_td = client_cert(
        &dir.join("state"),
        "spiffe://other.td/ns/bar/sa/sleep",
        false,
    );
    assert!(
        request(port, Some(&other_td), true).starts_with("closed"),
        "another trust domain must fail the handshake"
    );

    // Editing YAML flips live decisions: allow → deny → allow.
    write(&dir.join("cfg/deny.yaml"), DENY_SLEEP);
    eventually(
        "DENY policy applied",
        long,
        &envoy,
        &server,
        || request(port, Some(&sleep), true),
        "403 RBAC: access denied",
    );
    std::fs::remove_file(dir.join("cfg/deny.yaml")).unwrap();
    eventually(
        "DENY policy removed",
        long,
        &envoy,
        &server,
        || request(port, Some(&sleep), true),
        "200 app-ok",
    );
    write(&dir.join("cfg/strict.yaml"), STRICT);
    eventually(
        "STRICT refuses plaintext",
        long,
        &envoy,
        &server,
        || request(port, None, false),
        "closed",
    );
    write(&dir.join("cfg/deny.yaml"), DENY_SLEEP);
    eventually(
        "DENY policy re-applied",
        long,
        &envoy,
        &server,
        || request(port, Some(&sleep), true),
        "403 RBAC: access denied",
    );
    assert_eq!(
        server.metric("peerguard_xds_rejects_total{type=\"ecds\"}"),
        0.0,
        "Envoy rejected a config:\n{}",
        envoy.log_tail()
    );

    // The DENY file broken into invalid YAML (its kind is unreadable, nothing of it parses):
    // its last good content stays in force, and the degradation is loud.
    write(
        &dir.join("cfg/deny.yaml"),
        &DENY_SLEEP.replace("action: DENY", "action: [DENY"),
    );
    wait_for("the unreadable file to be reported", long, || {
        server.metric("peerguard_config_unreadable_files") == 1.0
    });
    let readyz = http_get(server.http_port, "/readyz").unwrap();
    assert_eq!(readyz.0, 200);
    assert!(
        readyz.1.contains("deny.yaml: unreadable") && readyz.1.contains("last successfully read"),
        "{readyz:?}"
    );
    assert!(server.log_text().contains("FAIL-CLOSED: deny.yaml"));
    for _ in 0..5 {
        assert_eq!(
            request(port, Some(&sleep), true).split_whitespace().next(),
            Some("403"),
            "the broken DENY must stay enforced"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Kill the server: Envoy keeps its last accepted config and certificates.
    let (grpc, http) = (server.grpc_port, server.http_port);
    let _ = server.child.kill();
    let _ = server.child.wait();
    for _ in 0..5 {
        assert_eq!(
            request(port, Some(&sleep), true).split_whitespace().next(),
            Some("403")
        );
        assert!(request(port, None, false).starts_with("closed"));
        std::thread::sleep(Duration::from_millis(300));
    }
    // Restart on the same address with deny.yaml still broken: the file never parsed in this
    // server's life, so policy updates are held (not ready, nothing pushed) and Envoy keeps
    // deciding with its last accepted policy while it reconnects.
    drop(server);
    let server = Server::spawn_on(&dir, &wasm_s, grpc, http, &[]);
    wait_for("Envoy to reconnect", long, || {
        server.metric("peerguard_xds_connected_nodes") >= 1.0
    });
    assert_eq!(server.metric("peerguard_policy_updates_held"), 1.0);
    let readyz = http_get(server.http_port, "/readyz").unwrap();
    assert_eq!(readyz.0, 503, "{readyz:?}");
    assert!(
        readyz.1.contains("deny.yaml: unreadable") && readyz.1.contains("held"),
        "{readyz:?}"
    );
    for _ in 0..5 {
        assert_eq!(
            request(port, Some(&sleep), true).split_whitespace().next(),
            Some("403")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        server.metric("peerguard_xds_pushes_total{type=\"ecds\"}"),
        0.0,
        "no policy while held"
    );
    // ...and it follows the restarted server: removing the DENY allows again.
    std::fs::remove_file(dir.join("cfg/deny.yaml")).unwrap();
    eventually(
        "edit after restart",
        long,
        &envoy,
        &server,
        || request(port, Some(&sleep), true),
        "200 app-ok",
    );
    server.wait_ready();
    assert!(
        request(port, None, false).starts_with("closed"),
        "STRICT still in force"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tcp_network_filter_over_ecds() {
    let Some((envoy_bin, wasm)) = prerequisites("tcp_network_filter_over_ecds") else {
        return;
    };
    let dir = temp_dir("e2e-tcp");
    let app = echo_app();
    write(
        &dir.join("cfg/workloads.yaml"),
        &workloads(app).replace("protocol: http", "protocol: tcp"),
    );
    let server = Server::start(&dir, &wasm.display().to_string(), &[]);
    let (envoy, port) = Envoy::start(
        &envoy_bin,
        &dir,
        &server,
        &wasm,
        &["--protocol", "tcp", "--app-port", &app.to_string()],
        "tcp",
    );
    let sleep = client_cert(
        &dir.join("state"),
        "spiffe://cluster.local/ns/bar/sa/sleep",
        false,
    );
    let long = Duration::from_secs(30);
    eventually(
        "TCP allowed with no policy",
        long,
        &envoy,
        &server,
        || tcp_probe(port, &sleep),
        "echo",
    );
    write(&dir.join("cfg/deny.yaml"), DENY_SLEEP);
    eventually(
        "TCP denied by the DENY policy",
        long,
        &envoy,
        &server,
        || tcp_probe(port, &sleep),
        "closed",
    );
    std::fs::remove_file(dir.join("cfg/deny.yaml")).unwrap();
    eventually(
        "TCP allowed again",
        long,
        &envoy,
        &server,
        || tcp_probe(port, &sleep),
        "echo",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const DENY_ADMIN: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin, /admin/*]}}]}]
";

/// A sidecar from `peerguard bootstrap` normalizes the path before the filter decides and
/// the app receives the same normalized path (Istio: the normalized request is used for
/// authorization and sent to the backend). Without it the app got
/// `/admin/%2e%2e/public` raw while the filter decided on `/public`.
#[test]
fn bootstrap_sidecar_normalizes_paths_for_the_filter_and_the_app() {
    let test = "bootstrap_sidecar_normalizes_paths_for_the_filter_and_the_app";
    let Some((envoy_bin, wasm)) = prerequisites(test) else {
        return;
    };
    let dir = temp_dir("e2e-paths");
    let app = http_app();
    write(&dir.join("cfg/workloads.yaml"), &workloads(app));
    write(&dir.join("cfg/deny-admin.yaml"), DENY_ADMIN);
    let server = Server::start(&dir, &wasm.display().to_string(), &[]);
    let app_port = app.to_string();
    let (base, base_port) = Envoy::start(
        &envoy_bin,
        &dir,
        &server,
        &wasm,
        &["--app-port", &app_port],
        "paths-base",
    );
    let (decode, decode_port) = Envoy::start(
        &envoy_bin,
        &dir,
        &server,
        &wasm,
        &[
            "--app-port",
            &app_port,
            "--path-normalization",
            "DECODE_AND_MERGE_SLASHES",
        ],
        "paths-decode",
    );
    let sleep = client_cert(
        &dir.join("state"),
        "spiffe://cluster.local/ns/bar/sa/sleep",
        false,
    );
    let long = Duration::from_secs(30);
    for (envoy, port) in [(&base, base_port), (&decode, decode_port)] {
        eventually(
            "the DENY on /admin in force",
            long,
            envoy,
            &server,
            || request_path(port, Some(&sleep), true, "/admin").0,
            "403 RBAC: access denied",
        );
    }
    // (path sent, BASE: what the app sees or None for 403, DECODE_AND_MERGE_SLASHES: same)
    let cases: [(&str, Option<&str>, Option<&str>); 8] = [
        ("/public", Some("/public"), Some("/public")),
        ("/admin/%2e%2e/public", Some("/public"), Some("/public")),
        ("/admin/x\\..\\..\\public", Some("/public"), Some("/public")),
        ("/public/../admin", None, None),
        ("/public/%2E%2E/admin/x", None, None),
        ("/Public/..\\admin", None, None),
        // Escaped slashes and doubled slashes: kept by BASE (the filter and the app both see
        // them, and `/admin%2Fx` is not `/admin/x`), decoded and merged by the other setting.
        ("/admin%2Fx", Some("/admin%2Fx"), None),
        ("//admin", Some("//admin"), None),
    ];
    for (sent, want_base, want_decode) in cases {
        for (envoy, port, want, setting) in [
            (&base, base_port, want_base, "BASE"),
            (
                &decode,
                decode_port,
                want_decode,
                "DECODE_AND_MERGE_SLASHES",
            ),
        ] {
            for tls in [true, false] {
                let cert = tls.then_some(&sleep);
                let (got, saw) = request_path(port, cert, tls, sent);
                match want {
                    Some(path) => assert_eq!(
                        (got.as_str(), saw.as_deref()),
                        ("200 app-ok", Some(path)),
                        "{setting}: {sent} (tls {tls}) should reach the app as {path}\n{}",
                        envoy.log_tail()
                    ),
                    None => assert_eq!(
                        got, "403 RBAC: access denied",
                        "{setting}: {sent} (tls {tls}) must stay denied; app saw {saw:?}"
                    ),
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_config_envoy_rejects_is_counted_and_fails_closed() {
    let Some((envoy_bin, wasm)) =
        prerequisites("a_config_envoy_rejects_is_counted_and_fails_closed")
    else {
        return;
    };
    let dir = temp_dir("e2e-nack");
    let app = http_app();
    write(&dir.join("cfg/workloads.yaml"), &workloads(app));
    // The server announces a module path that does not exist: Envoy must NACK it.
    let missing = dir.join("missing.wasm").display().to_string();
    let server = Server::start(&dir, &missing, &[]);
    let (envoy, port) = Envoy::start(
        &envoy_bin,
        &dir,
        &server,
        &wasm,
        &["--app-port", &app.to_string()],
        "nack",
    );
    let long = Duration::from_secs(30);
    wait_for("a NACK", long, || {
        server.metric("peerguard_xds_rejects_total{type=\"ecds\"}") >= 1.0
    });
    assert!(
        server.log_text().contains("missing.wasm"),
        "the NACK's error_detail is logged"
    );
    // No configuration accepted: the deny-all default applies, never the app.
    eventually(
        "deny-all default config",
        long,
        &envoy,
        &server,
        || request(port, None, false),
        "403 RBAC: access denied",
    );
    // The rejected version is not re-sent in a loop: one push per slot (the HTTP filter and
    // the transport slot).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        server.metric("peerguard_xds_pushes_total{type=\"ecds\"}"),
        2.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_config_envoy_refuses_is_nacked_and_the_previous_policy_keeps_deciding() {
    let test = "a_config_envoy_refuses_is_nacked_and_the_previous_policy_keeps_deciding";
    let Some((envoy_bin, wasm)) = prerequisites(test) else {
        return;
    };
    let dir = temp_dir("e2e-refused");
    let app = http_app();
    write(&dir.join("cfg/workloads.yaml"), &workloads(app));
    write(&dir.join("cfg/deny.yaml"), DENY_SLEEP);
    // The server sends this path; Envoy reads the module from it for every new filter
    // configuration. Replacing the file with something that is not a module makes the next
    // configuration one Envoy cannot load, with no test hook in the server.
    let module = dir.join("module.wasm");
    std::fs::copy(&wasm, &module).unwrap();
    let server = Server::start(&dir, &module.display().to_string(), &[]);
    let (envoy, port) = Envoy::start(
        &envoy_bin,
        &dir,
        &server,
        &module,
        &["--app-port", &app.to_string()],
        "refused",
    );
    let sleep = client_cert(
        &dir.join("state"),
        "spiffe://cluster.local/ns/bar/sa/sleep",
        false,
    );
    let other = client_cert(
        &dir.join("state"),
        "spiffe://cluster.local/ns/baz/sa/other",
        false,
    );
    let long = Duration::from_secs(30);
    eventually(
        "the DENY policy in force",
        long,
        &envoy,
        &server,
        || request(port, Some(&sleep), true),
        "403 RBAC: access denied",
    );
    eventually(
        "others allowed",
        long,
        &envoy,
        &server,
        || request(port, Some(&other), true),
        "200 app-ok",
    );
    assert_eq!(
        server.metric("peerguard_xds_rejects_total{type=\"ecds\"}"),
        0.0
    );

    // The next configuration (the DENY removed) cannot be loaded: Envoy NACKs it and the
    // previous policy keeps deciding live traffic.
    std::fs::write(&module, b"not a wasm module").unwrap();
    std::fs::remove_file(dir.join("cfg/deny.yaml")).unwrap();
    wait_for("the NACK", long, || {
        server.metric("peerguard_xds_rejects_total{type=\"ecds\"}") >= 1.0
    });
    assert!(
        server.log_text().contains("NACK"),
        "the NACK is logged:\n{}",
        server.log_text()
    );
    for _ in 0..10 {
        assert_eq!(
            request(port, Some(&sleep), true),
            "403 RBAC: access denied",
            "the previous policy still denies"
        );
        assert_eq!(
            request(port, Some(&other), true),
            "200 app-ok",
            "the previous policy still allows"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pushes = server.metric("peerguard_xds_pushes_total{type=\"ecds\"}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        server.metric("peerguard_xds_pushes_total{type=\"ecds\"}"),
        pushes,
        "a rejected version is not re-sent"
    );

    // A loadable configuration goes through again: the module is back and the policy changed
    // (the same policy would be the rejected version, which is not re-sent).
    std::fs::copy(&wasm, &module).unwrap();
    write(&dir.join("cfg/strict.yaml"), STRICT);
    eventually(
        "the new policy after the fix",
        long,
        &envoy,
        &server,
        || request(port, Some(&sleep), true),
        "200 app-ok",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ rotation

/// Verifies Envoy's certificate like a mesh peer: chain to the mesh root, within its validity
/// period (an expired certificate fails the handshake). SPIFFE certificates carry a URI SAN,
/// not a DNS name, so only the name check is waived.
#[derive(Debug)]
struct MeshServerVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end: &CertificateDer<'_>,
        im: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as C;
        match self.0.verify_server_cert(end, im, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn mesh_client_config(state: &Path, cert: &Issued) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let root_pem = std::fs::read_to_string(state.join("ca/root-cert.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(root_pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pem.contents)).unwrap();
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshServerVerifier(inner)))
        .with_client_auth_cert(vec![cert.cert_der.clone()], cert.private_key())
        .unwrap();
    Arc::new(cfg)
}

/// One request on a new verified mTLS connection: `Ok(serial of Envoy's certificate)` for
/// `200 app-ok`, or what went wrong.
fn verified_request(port: u16, cfg: &Arc<rustls::ClientConfig>) -> Result<String, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let conn =
        rustls::ClientConnection::new(cfg.clone(), ServerName::try_from("httpbin.foo").unwrap())
            .unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let r = http1::exchange_blocking(&mut s, &http1::Request::get("/get", "httpbin.foo"))
        .map_err(|e| format!("io: {e}"))?;
    if !(r.status == 200 && r.text() == "app-ok") {
        return Err(format!("response: {} {:?}", r.status, r.text()));
    }
    let der = s
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no peer certificate")?;
    let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    Ok(x.raw_serial_as_string())
}

#[test]
fn certificate_rotation_under_continuous_mtls_traffic_fails_no_request() {
    let test = "certificate_rotation_under_continuous_mtls_traffic_fails_no_request";
    let Some((envoy_bin, wasm)) = prerequisites(test) else {
        return;
    };
    let dir = temp_dir("e2e-rotation");
    let app = http_app();
    write(&dir.join("cfg/workloads.yaml"), &workloads(app));
    // Certificates live 6 s and are replaced at 80% of that.
    let server = Server::start(
        &dir,
        &wasm.display().to_string(),
        &["--workload-cert-ttl", "6s"],
    );
    let (envoy, port) = Envoy::start(
        &envoy_bin,
        &dir,
        &server,
        &wasm,
        &["--app-port", &app.to_string()],
        "rotation",
    );
    let sleep = client_cert(
        &dir.join("state"),
        "spiffe://cluster.local/ns/bar/sa/sleep",
        false,
    );
    let cfg = mesh_client_config(&dir.join("state"), &sleep);
    eventually(
        "mTLS up",
        Duration::from_secs(30),
        &envoy,
        &server,
        || request(port, Some(&sleep), true),
        "200 app-ok",
    );
    let issued_before = server.metric("peerguard_certs_issued_total");

    // Continuous traffic, one new handshake per request, across at least two rotations.
    let start = Instant::now();
    let (mut ok, mut failed, mut serials) = (0usize, Vec::new(), Vec::<String>::new());
    while start.elapsed() < Duration::from_secs(15) {
        match verified_request(port, &cfg) {
            Ok(serial) => {
                ok += 1;
                if serials.last() != Some(&serial) {
                    serials.push(serial);
                }
            }
            Err(e) => failed.push(format!("{:.1}s: {e}", start.elapsed().as_secs_f64())),
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    println!(
        "rotation: {ok} requests, {} failed, served serials {serials:?}",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed requests during rotation: {failed:?}\n{}",
        envoy.log_tail()
    );
    assert!(ok >= 100, "too little traffic to mean anything: {ok}");
    assert!(
        serials.len() >= 3,
        "Envoy's certificate must have changed at least twice: {serials:?}"
    );
    assert!(server.metric("peerguard_certs_issued_total") >= issued_before + 2.0);
    assert!(server.metric("peerguard_xds_pushes_total{type=\"sds\"}") >= 3.0);
    let _ = std::fs::remove_dir_all(&dir);
}
