//! [a] File write → decision enforced by a real Envoy: DENY on, DENY off, repeatedly, each
//! time polling with new mTLS connections until Envoy answers the new way.

use super::{free_port, write_atomic, ServerArgs, ServerProc};
use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Result {
    pub latencies: Vec<Duration>,
    pub timeouts: usize,
    pub probes: usize,
}

const DENY_SLEEP: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-sleep, namespace: foo}
spec:
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/sleep]}}]}]
";

fn repo_env(key: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.to_path_buf();
    let env = std::fs::read_to_string(root.join(".peerguard/env")).ok()?;
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|p| PathBuf::from(p.trim().trim_matches('"')))
        .filter(|p| p.is_file())
}

pub fn find_envoy() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PEERGUARD_ENVOY") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    repo_env("PEERGUARD_ENVOY").or_else(|| {
        std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("envoy")).find(|p| p.is_file()))
    })
}

pub fn find_wasm() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PEERGUARD_WASM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let mut candidates = Vec::new();
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("peerguard.wasm"));
    }
    // <target>/<profile>/peerguard → <target>/peerguard.wasm
    if let Some(t) = std::env::current_exe().ok().as_deref().and_then(Path::parent).and_then(Path::parent) {
        candidates.push(t.join("peerguard.wasm"));
    }
    if let Some(root) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        candidates.push(root.join("target/peerguard.wasm"));
    }
    candidates.into_iter().find(|p| p.is_file()).and_then(|p| p.canonicalize().ok())
}

/// A tiny HTTP app answering `200 app-ok`.
fn http_app() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let mut seen = Vec::new();
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\napp-ok").is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Ok(port)
}

#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    // Only Envoy's decision is measured here; its certificate is checked by the e2e tests.
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration presenting `spiffe://cluster.local/ns/bar/sa/sleep`, signed by the
/// server's CA.
fn client_config(state: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read_to_string(state.join("ca/root-cert.pem"))?;
    let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(state.join("ca/root-key.pem"))?)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&pem, key)?;
    let leaf_key = rcgen::KeyPair::generate()?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    p.subject_alt_names = vec![rcgen::SanType::URI("spiffe://cluster.local/ns/bar/sa/sleep".try_into()?)];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&leaf_key, &issuer)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_client_auth_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())))?;
    Ok(Arc::new(cfg))
}

/// The status code of one request on a new mTLS connection, or 0 when it failed.
fn probe(port: u16, cfg: &Arc<rustls::ClientConfig>) -> u16 {
    let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)) else { return 0 };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
    let Ok(name) = ServerName::try_from("httpbin.foo") else { return 0 };
    let Ok(conn) = rustls::ClientConnection::new(cfg.clone(), name) else { return 0 };
    let mut s = rustls::StreamOwned::new(conn, tcp);
    if s.write_all(b"GET /get HTTP/1.1\r\nhost: httpbin.foo\r\nconnection: close\r\n\r\n").is_err() {
        return 0;
    }
    // The status line is enough: waiting for the close would add Envoy's
    // delayed_close_timeout (1 s) after a local reply.
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

struct EnvoyProc(Child);

impl Drop for EnvoyProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(exe: &Path, dir: &Path, envoy: &Path, wasm: &Path, args: &ServerArgs) -> anyhow::Result<Result> {
    std::fs::create_dir_all(dir.join("cfg"))?;
    std::fs::create_dir_all(dir.join("state"))?;
    let app = http_app()?;
    let workloads = format!(
        "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {{name: httpbin, namespace: foo, labels: {{app: httpbin}}}}\nspec:\n  serviceAccount: httpbin\n  services: [{{name: httpbin, ports: [{{name: http, port: 8000, targetPort: {app}}}]}}]\n"
    );
    write_atomic(&dir.join("cfg/workloads.yaml"), &workloads)?;
    let mut server = ServerProc::start(exe, dir, &wasm.display().to_string(), args)?;
    server.wait_ready(Duration::from_secs(30))?;

    let (inbound, admin) = (free_port()?, free_port()?);
    let out = Command::new(exe)
        .args(["bootstrap", "--node", "foo/httpbin", "--server", &format!("127.0.0.1:{}", server.grpc_port)])
        .arg("--token-file")
        .arg(dir.join("state/tokens/foo/httpbin.token"))
        .arg("--wasm")
        .arg(wasm)
        .args(["--inbound-address", "127.0.0.1", "--inbound-port", &inbound.to_string(), "--admin-port", &admin.to_string()])
        .args(["--app-port", &app.to_string()])
        .output()
        .context("peerguard bootstrap")?;
    anyhow::ensure!(out.status.success(), "peerguard bootstrap: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.join("envoy.yaml"), &out.stdout)?;
    let _envoy = EnvoyProc(
        Command::new(envoy)
            .arg("-c")
            .arg(dir.join("envoy.yaml"))
            .args(["--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("envoy.log"))?)
            .spawn()
            .context("starting Envoy")?,
    );
    let cfg = client_config(&dir.join("state"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while probe(inbound, &cfg) != 200 {
        anyhow::ensure!(Instant::now() < deadline, "Envoy never allowed the first request; see {}", dir.join("envoy.log").display());
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut result = Result { latencies: Vec::new(), timeouts: 0, probes: 0 };
    let deny = dir.join("cfg/deny.yaml");
    for i in 0..args.flips {
        let on = i % 2 == 0;
        let want = if on { 403 } else { 200 };
        let t0 = Instant::now();
        if on {
            write_atomic(&deny, DENY_SLEEP)?;
        } else {
            std::fs::remove_file(&deny)?;
        }
        loop {
            result.probes += 1;
            if probe(inbound, &cfg) == want {
                result.latencies.push(t0.elapsed());
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                result.timeouts += 1;
                break;
            }
            std::thread::sleep(args.probe_interval);
        }
        // Let the edit settle, and do not line the next write up with the poll timer.
        std::thread::sleep(Duration::from_millis(150 + (i as u64 * 37) % 100));
    }
    drop(server);
    Ok(result)
}
