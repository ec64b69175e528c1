//! Shared helpers for the `server_*` tests (included with `#[path]`; no tests of its own).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod istio;
pub mod sidecar;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const WORKLOADS: &str = "apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: httpbin, namespace: foo, labels: {app: httpbin}}
spec:
  serviceAccount: httpbin
  services: [{name: httpbin, ports: [{name: http, port: 8000, targetPort: 80}]}]
---
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: sleep, namespace: bar}
spec: {serviceAccount: sleep}
";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("cfg")).unwrap();
    std::fs::create_dir_all(d.join("state")).unwrap();
    d
}

/// Writes through a temporary name, as editors and `kubectl cp` do.
pub fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub struct Server {
    pub child: Child,
    pub dir: PathBuf,
    pub grpc_port: u16,
    pub http_port: u16,
    pub log: PathBuf,
}

impl Server {
    pub fn start(dir: &Path, wasm: &str, extra: &[&str]) -> Server {
        Self::start_on(dir, wasm, free_port(), free_port(), extra)
    }

    pub fn start_on(
        dir: &Path,
        wasm: &str,
        grpc_port: u16,
        http_port: u16,
        extra: &[&str],
    ) -> Server {
        let s = Self::spawn_on(dir, wasm, grpc_port, http_port, extra);
        s.wait_ready();
        s
    }

    /// Starts the server without waiting for `/readyz`.
    pub fn spawn_on(
        dir: &Path,
        wasm: &str,
        grpc_port: u16,
        http_port: u16,
        extra: &[&str],
    ) -> Server {
        let log = dir.join(format!(
            "server-{grpc_port}-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_peerguard"))
            .args(["serve", "--config-dir"])
            .arg(dir.join("cfg"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args([
                "--wasm",
                wasm,
                "--listen",
                &format!("127.0.0.1:{grpc_port}"),
                "--http-listen",
                &format!("127.0.0.1:{http_port}"),
            ])
            .args(["--poll-interval", "100ms"])
            .args(extra)
            .env("RUST_LOG", "info,peerguard=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let s = Server {
            child,
            dir: dir.to_path_buf(),
            grpc_port,
            http_port,
            log,
        };
        s.wait_up();
        s
    }

    /// Waits until the ops endpoint answers at all.
    pub fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_get(self.http_port, "/healthz").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "server not up; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some((200, _)) = http_get(self.http_port, "/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "server not ready; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn metrics(&self) -> String {
        http_get(self.http_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|r| r.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    pub fn token(&self, ns: &str, name: &str) -> String {
        std::fs::read_to_string(
            self.dir
                .join("state/tokens")
                .join(ns)
                .join(format!("{name}.token")),
        )
        .unwrap()
        .trim()
        .to_string()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait: graceful shutdown.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not stop within 10s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on the ops endpoint: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = peerguard_harness::http1::get(std::net::SocketAddr::from(([127, 0, 0, 1], port)), path)
        .ok()?;
    Some((r.status, r.text()))
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}
