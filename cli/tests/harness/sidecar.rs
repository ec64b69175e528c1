//! A sidecar for the `server_*` tests: `peerguard serve` + an Envoy from `peerguard
//! bootstrap`, upstream apps, and mTLS/plaintext clients.

use super::*;
use peerguard_harness::pki::{self, CaChoice, ClientCertSpec, Issued, TestPki};
use peerguard_harness::require::{require, Needs};
use peerguard_harness::upstream::{self, APP_SAW_PATH};
use peerguard_harness::{http1, tls};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `(envoy, wasm)`, or `None` after printing why the test is skipped.
pub fn prerequisites(test: &str) -> Option<(PathBuf, PathBuf)> {
    let tools = require(test, Needs::EnvoyAndWasm).unwrap()?;
    Some((tools.envoy.clone(), tools.wasm().unwrap()))
}

// ------------------------------------------------------------------ upstream apps

/// `200 app-ok` to everything, the target it received in [`APP_SAW_PATH`].
pub fn http_app() -> u16 {
    upstream::ok_app().unwrap().port()
}

pub fn echo_app() -> u16 {
    upstream::echo_app().unwrap().port()
}

// ------------------------------------------------------------------ clients

/// A client certificate for `spiffe_uri`, signed by the server's CA in `state` (or by a root
/// Envoy does not trust when `rogue`).
pub fn client_cert(state: &Path, spiffe_uri: &str, rogue: bool) -> Issued {
    if rogue {
        let spec = ClientCertSpec {
            uri_sans: vec![spiffe_uri.into()],
            ca: CaChoice::Untrusted,
            expired: false,
        };
        return TestPki::new().unwrap().client(&spec).unwrap();
    }
    pki::issue_with_ca_files(
        &state.join("ca/root-cert.pem"),
        &state.join("ca/root-key.pem"),
        spiffe_uri,
    )
    .unwrap()
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// What happened to one request: `200 app-ok`, `403 RBAC: access denied`, or `closed: ...`.
pub fn request(port: u16, cert: Option<&Issued>, tls: bool) -> String {
    request_path(port, cert, tls, "/get").0
}

/// One request for `path`: (`<code> <body>` or `closed: ...`, the path the app saw).
pub fn request_path(
    port: u16,
    cert: Option<&Issued>,
    tls: bool,
    path: &str,
) -> (String, Option<String>) {
    let req = http1::Request::get(path, "httpbin.foo");
    let timeout = Duration::from_secs(5);
    let res = if tls {
        let cfg = tls::any_server_client_config(cert).unwrap();
        match tls::connect_blocking(local(port), &cfg, "httpbin.foo", timeout) {
            Ok(mut s) => http1::exchange_blocking(&mut s, &req),
            Err(e) => return (format!("closed: {e:#}"), None),
        }
    } else {
        let Ok(mut s) = TcpStream::connect(local(port)) else {
            return ("closed: connect refused".into(), None);
        };
        s.set_read_timeout(Some(timeout)).unwrap();
        http1::exchange_blocking(&mut s, &req)
    };
    match res {
        Ok(r) => (
            format!("{} {}", r.status, r.text()),
            r.header(APP_SAW_PATH).map(str::to_string),
        ),
        Err(e) => (format!("closed: {e}"), None),
    }
}

/// Send a line through the TCP listener; `echo` when it came back.
pub fn tcp_probe(port: u16, cert: &Issued) -> String {
    let cfg = tls::any_server_client_config(Some(cert)).unwrap();
    let mut s = match tls::connect_blocking(local(port), &cfg, "x", Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => return format!("closed: {e:#}"),
    };
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
    child: Child,
    log: PathBuf,
    /// Envoy's admin port (stats, config dump).
    pub admin: u16,
}

impl Envoy {
    pub fn start(
        envoy: &Path,
        dir: &Path,
        server: &Server,
        wasm: &Path,
        extra: &[&str],
        name: &str,
    ) -> (Envoy, u16) {
        let inbound = free_port();
        let admin = free_port();
        let out = Command::new(env!("CARGO_BIN_EXE_peerguard"))
            .args([
                "bootstrap",
                "--node",
                "foo/httpbin",
                "--server",
                &format!("127.0.0.1:{}", server.grpc_port),
            ])
            .arg("--token-file")
            .arg(dir.join("state/tokens/foo/httpbin.token"))
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
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cfg = dir.join(format!("envoy-{name}.yaml"));
        std::fs::write(&cfg, &out.stdout).unwrap();
        let log = dir.join(format!("envoy-{name}.log"));
        let child = Command::new(envoy)
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
        (Envoy { child, log, admin }, inbound)
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
pub fn eventually(
    what: &str,
    timeout: Duration,
    envoy: &Envoy,
    server: &Server,
    mut probe: impl FnMut() -> String,
    want: &str,
) {
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
        server
            .log_text()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

pub fn workloads(app_port: u16) -> String {
    WORKLOADS.replace("targetPort: 80", &format!("targetPort: {app_port}"))
}
