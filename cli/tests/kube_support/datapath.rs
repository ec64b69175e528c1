//! The data path for the Kubernetes tests (included with `#[path]`; no tests of its own): an
//! app, Envoy started from `peerguard bootstrap` as an Istio sidecar names itself, mTLS clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::harness::free_port;
use super::kube_harness::Proc;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ the data path

pub fn http_app() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 8192];
                let mut seen = Vec::new();
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\napp-ok")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

#[derive(Debug)]
pub struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    // What is tested is Envoy's check of the client; SPIFFE server certificates carry no DNS name.
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client certificate for `spiffe_uri`, signed by the server's built-in CA.
pub fn client_config(ca_cert: &Path, ca_key: &Path, spiffe_uri: &str) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read_to_string(ca_cert).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca_key).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::URI(spiffe_uri.try_into().unwrap())];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_client_auth_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    Arc::new(cfg)
}

/// `200 app-ok`, `403 RBAC: access denied`, or `closed: ...`.
pub fn request(port: u16, tls: Option<&Arc<rustls::ClientConfig>>) -> String {
    let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)) else {
        return "closed: connect refused".into();
    };
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = b"GET /get HTTP/1.1\r\nhost: httpbin.foo\r\nconnection: close\r\n\r\n";
    match tls {
        Some(cfg) => {
            let conn = rustls::ClientConnection::new(
                cfg.clone(),
                ServerName::try_from("httpbin.foo").unwrap(),
            )
            .unwrap();
            exchange(&mut rustls::StreamOwned::new(conn, tcp), req)
        }
        None => exchange(&mut { tcp }, req),
    }
}

/// Sends `req` and reads one response, complete as soon as its `content-length` body is in:
/// waiting for the close would add Envoy's `delayed_close_timeout` (1 s) to local replies
/// (a 403) and make every "DENY enforced" measurement a second late.
pub fn exchange(s: &mut impl ReadWrite, req: &[u8]) -> String {
    if let Err(e) = s.write_all(req) {
        return format!("closed: {e}");
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + len {
                let text = String::from_utf8_lossy(&seen).to_string();
                let code = text.split_whitespace().nth(1).unwrap_or("?").to_string();
                return format!(
                    "{code} {}",
                    String::from_utf8_lossy(&seen[end + 4..end + 4 + len])
                );
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return "closed: no response".into(),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => return format!("closed: {e}"),
        }
    }
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Polls `probe` as fast as it answers until it returns something starting with `want`;
/// returns how long that took from `since`.
pub fn until(
    what: &str,
    since: Instant,
    timeout: Duration,
    logs: &[&Proc],
    mut probe: impl FnMut() -> String,
    want: &str,
) -> Duration {
    let mut last = String::new();
    while since.elapsed() < timeout {
        last = probe();
        if last.starts_with(want) {
            return since.elapsed();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let logs: Vec<String> = logs
        .iter()
        .map(|p| format!("--- {} ---\n{}", p.log.display(), p.tail(40)))
        .collect();
    panic!(
        "{what}: wanted {want:?}, last saw {last:?}\n{}",
        logs.join("\n")
    );
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Envoy for pod `ns/pod` from `peerguard bootstrap`, renamed as Istio's sidecar names itself
/// (node id `sidecar~ip~pod.ns~…`, metadata NAME/NAMESPACE), its xDS cluster pointing at every
/// server in `grpc_ports`: (process, inbound port).
#[allow(clippy::too_many_arguments)]
pub fn start_envoy(
    envoy_bin: &Path,
    wasm: &Path,
    dir: &Path,
    ns: &str,
    pod: &str,
    token: &Path,
    app: u16,
    grpc_ports: &[u16],
) -> (Proc, u16) {
    let (inbound, admin) = (free_port(), free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .args([
            "bootstrap",
            "--format",
            "json",
            "--node",
            &format!("{ns}/{pod}"),
            "--server",
            &format!("127.0.0.1:{}", grpc_ports[0]),
        ])
        .arg("--token-file")
        .arg(token)
        .arg("--wasm")
        .arg(wasm)
        .args([
            "--inbound-address",
            "127.0.0.1",
            "--inbound-port",
            &inbound.to_string(),
            "--admin-port",
            &admin.to_string(),
        ])
        .args(["--app-port", &app.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bootstrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut boot: Value = serde_json::from_slice(&out.stdout).unwrap();
    boot["node"] = json!({
        "id": format!("sidecar~127.0.0.1~{pod}.{ns}~{ns}.svc.cluster.local"),
        "cluster": format!("httpbin.{ns}"),
        "metadata": {"NAMESPACE": ns, "NAME": pod, "WORKLOAD_NAME": "httpbin", "SERVICE_ACCOUNT": "httpbin"},
    });
    let clusters = boot["static_resources"]["clusters"].as_array_mut().unwrap();
    let xds = clusters
        .iter_mut()
        .find(|c| c["name"] == "peerguard-xds")
        .unwrap();
    let endpoints: Vec<Value> = grpc_ports
        .iter()
        .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
        .collect();
    xds["load_assignment"]["endpoints"][0]["lb_endpoints"] = Value::Array(endpoints);
    let name = format!("envoy-{pod}");
    let cfg = dir.join(format!("{name}.json"));
    std::fs::write(&cfg, serde_json::to_vec(&boot).unwrap()).unwrap();
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(envoy_bin)
        .arg("-c")
        .arg(&cfg)
        .args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "info",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (Proc { child, log }, inbound)
}
