//! Real Envoy for the `server_*` tests (included with `#[path]`; it brings
//! `server_harness.rs` along; no tests of its own): finding Envoy and the module, upstream
//! apps, mTLS clients with certificates from the server's CA, an Envoy bootstrapped by
//! `peerguard bootstrap`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "server_harness.rs"]
mod harness;
pub use harness::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn find_envoy() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PEERGUARD_ENVOY") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let env = std::fs::read_to_string(repo_root().join(".peerguard/env")).unwrap_or_default();
    if let Some(p) = env.lines().find_map(|l| l.strip_prefix("PEERGUARD_ENVOY=")) {
        let p = PathBuf::from(p.trim().trim_matches('"'));
        if p.is_file() {
            return Some(p);
        }
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("envoy")).find(|p| p.is_file()))
}

pub fn find_wasm() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PEERGUARD_WASM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let mut candidates = Vec::new();
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("peerguard.wasm"));
    }
    // The test binary's own target dir: <target>/debug/peerguard.
    if let Some(t) = Path::new(env!("CARGO_BIN_EXE_peerguard")).parent().and_then(|d| d.parent()) {
        candidates.push(t.join("peerguard.wasm"));
    }
    candidates.push(repo_root().join("target/peerguard.wasm"));
    candidates.into_iter().find(|p| p.is_file())
}

/// `(envoy, wasm)`, or `None` after printing why the test is skipped.
pub fn prerequisites(test: &str) -> Option<(PathBuf, PathBuf)> {
    let envoy = find_envoy();
    let wasm = find_wasm();
    match (envoy, wasm) {
        (Some(e), Some(w)) => Some((e, w.canonicalize().unwrap_or(w))),
        (e, w) => {
            let why = match (e, w) {
                (None, _) => "no Envoy (set PEERGUARD_ENVOY or run scripts/setup.sh)",
                _ => "no peerguard.wasm (run scripts/build-wasm.sh or set PEERGUARD_WASM)",
            };
            if std::env::var("PEERGUARD_REQUIRE_ENVOY").as_deref() == Ok("1") {
                panic!("{test}: {why}, and PEERGUARD_REQUIRE_ENVOY=1");
            }
            println!("SKIPPED: {test}: {why}");
            None
        }
    }
}

// ------------------------------------------------------------------ upstream apps

/// A tiny HTTP app answering `200 app-ok` to everything.
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
                        let body = "app-ok";
                        let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// A TCP echo app.
pub fn echo_app() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

// ------------------------------------------------------------------ clients

#[derive(Debug)]
pub struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    // The test checks what Envoy verifies about the client; SPIFFE server certificates have
    // no DNS name for the client to check anyway.
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

pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Vec<u8>,
}

/// A client certificate for `spiffe_uri`, signed by the server's CA in `state` (or by a
/// throwaway CA when `rogue`).
pub fn client_cert(state: &Path, spiffe_uri: &str, rogue: bool) -> ClientCert {
    let (issuer_pem, issuer_key) = if rogue {
        let k = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        (p.self_signed(&k).unwrap().pem(), k)
    } else {
        let pem = std::fs::read_to_string(state.join("ca/root-cert.pem")).unwrap();
        let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(state.join("ca/root-key.pem")).unwrap()).unwrap();
        (pem, key)
    };
    let issuer = rcgen::Issuer::from_ca_cert_pem(&issuer_pem, issuer_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::URI(spiffe_uri.try_into().unwrap())];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    ClientCert { chain: vec![cert.der().clone()], key: key.serialize_der() }
}

/// What happened to one request: `200 app-ok`, `403 RBAC: access denied`, or `closed: ...`.
pub fn request(port: u16, cert: Option<&ClientCert>, tls: bool) -> String {
    request_path(port, cert, tls, "/get")
}

/// [`request`] for another path.
pub fn request_path(port: u16, cert: Option<&ClientCert>, tls: bool, path: &str) -> String {
    let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)) else { return "closed: connect refused".into() };
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: httpbin.foo\r\nconnection: close\r\n\r\n");
    let req = req.as_bytes();
    let mut out = Vec::new();
    let res = if tls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)));
        let cfg = match cert {
            Some(c) => b
                .with_client_auth_cert(c.chain.clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.clone())))
                .unwrap(),
            None => b.with_no_client_auth(),
        };
        let conn = rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("httpbin.foo").unwrap()).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(req).and_then(|_| s.read_to_end(&mut out))
    } else {
        let mut s = tcp;
        s.write_all(req).and_then(|_| s.read_to_end(&mut out))
    };
    let text = String::from_utf8_lossy(&out).to_string();
    match (text.split_whitespace().nth(1), res) {
        (Some(code), _) => format!("{code} {}", text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("")),
        (None, Err(e)) => format!("closed: {e}"),
        (None, Ok(_)) => "closed: no response".into(),
    }
}

/// Send a line through the TCP listener; `echo` when it came back.
pub fn tcp_probe(port: u16, cert: &ClientCert) -> String {
    let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)) else { return "closed: connect refused".into() };
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_client_auth_cert(cert.chain.clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.clone())))
        .unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("x").unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    if let Err(e) = s.write_all(b"ping\n") {
        return format!("closed: {e}");
    }
    let mut buf = [0u8; 5];
    match s.read_exact(&mut buf) {
        Ok(()) if &buf == b"ping\n" => "echo".into(),
        Ok(()) => format!("garbage {buf:?}"),
        Err(e) => format!("closed: {e}"),
    }
}

// ------------------------------------------------------------------ Envoy

pub struct Envoy {
    pub child: Child,
    pub log: PathBuf,
}

impl Envoy {
    pub fn start(envoy: &Path, dir: &Path, server: &Server, wasm: &Path, extra: &[&str], name: &str) -> (Envoy, u16) {
        let inbound = free_port();
        let admin = free_port();
        let out = Command::new(env!("CARGO_BIN_EXE_peerguard"))
            .args(["bootstrap", "--node", "foo/httpbin", "--server", &format!("127.0.0.1:{}", server.grpc_port)])
            .arg("--token-file")
            .arg(dir.join("state/tokens/foo/httpbin.token"))
            .arg("--wasm")
            .arg(wasm)
            .args(["--inbound-address", "127.0.0.1", "--inbound-port", &inbound.to_string(), "--admin-port", &admin.to_string()])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "bootstrap: {}", String::from_utf8_lossy(&out.stderr));
        let cfg = dir.join(format!("envoy-{name}.yaml"));
        std::fs::write(&cfg, &out.stdout).unwrap();
        let log = dir.join(format!("envoy-{name}.log"));
        let child = Command::new(envoy)
            .arg("-c")
            .arg(&cfg)
            .args(["--disable-hot-restart", "--concurrency", "1", "--log-level", "info"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (Envoy { child, log }, inbound)
    }

    pub fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until `probe()` returns something starting with `want`.
pub fn eventually(what: &str, timeout: Duration, envoy: &Envoy, server: &Server, mut probe: impl FnMut() -> String, want: &str) {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        last = probe();
        if last.starts_with(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{what}: wanted {want:?}, last saw {last:?}\n--- envoy log ---\n{}\n--- server log ---\n{}",
        envoy.log_tail(),
        server.log_text().lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

pub fn workloads(app_port: u16) -> String {
    WORKLOADS.replace("targetPort: 80", &format!("targetPort: {app_port}"))
}
