//! The migration to STRICT through real Envoys (the sandbox): stage 1 (PERMISSIVE) with the
//! legacy plaintext client → `peerguard readiness` says NOT READY and names it → stage 2b
//! (dry-run STRICT: plaintext still accepted, each would-be refusal counted and logged) →
//! stage 3 (STRICT: the legacy client is refused, readiness reports STRICT).
//!
//! Istio's inbound chains per mode (`--inbound-chains istio`): a dry-run STRICT port must get
//! PERMISSIVE's plaintext chain, or the plaintext client would be refused by Envoy itself.
//!
//! SKIPPED without Envoy or the wasm module unless PEERGUARD_REQUIRE_ENVOY=1 (or
//! PEERGUARD_REQUIRE_WASM=1), which turns a missing one into a failure.
#![cfg(test)]

use peerguard_harness::require::{require, Needs};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const PG: &str = env!("CARGO_BIN_EXE_peerguard");
const SLEEP_FULL: &str = "cluster.local/ns/full/sa/sleep";
const HTTPBIN_FULL: &str = "http://httpbin.full:8000/headers";

fn stage(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("integration/sandbox/stages")
        .join(name)
}

struct Sandbox {
    dir: PathBuf,
    net: u8,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.pg(&["down"]);
    }
}

impl Sandbox {
    fn pg(&self, args: &[&str]) -> Output {
        Command::new(PG)
            .arg("sandbox")
            .arg("--dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("running peerguard")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.pg(args);
        assert!(
            out.status.success(),
            "peerguard sandbox {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, file: &str) {
        self.ok(&["apply", stage(file).to_str().unwrap()]);
    }

    /// One request (one new connection) from `from` to httpbin.full: the HTTP status, 0 when
    /// the connection was refused.
    fn get(&self, from: &str) -> u16 {
        let out = self.pg(&["exec", "-i", from, "--", "GET", HTTPBIN_FULL]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    fn admin(&self) -> String {
        format!("http://127.{}.1.20:15000", self.net)
    }

    fn legacy_ip(&self) -> String {
        format!("127.{}.3.10", self.net)
    }

    fn counter(&self, name: &str) -> u64 {
        let addr = format!("127.{}.1.20:15000", self.net).parse().unwrap();
        let stats = peerguard_harness::http1::get(addr, &format!("/stats?filter={name}"))
            .unwrap()
            .text();
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The sandbox runs Envoy at `warn`; the would-be refusals are logged at info. The filter
    /// reads the level on its 1 s tick.
    fn wasm_log_info(&self) {
        use peerguard_harness::http1::{exchange_blocking, Request};
        let addr: std::net::SocketAddr = format!("127.{}.1.20:15000", self.net).parse().unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut post = Request::get("/logging?wasm=info", "localhost");
        post.method = "POST".into();
        let r = exchange_blocking(&mut s, &post).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        std::thread::sleep(Duration::from_millis(2500));
    }

    fn envoy_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy/httpbin.full/envoy.log")).unwrap_or_default()
    }
}

fn readiness(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(PG)
        .arg("readiness")
        .args(args)
        .output()
        .expect("running peerguard readiness");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn start() -> Option<Sandbox> {
    let tools = require("sandbox_readiness", Needs::EnvoyAndWasm).unwrap()?;
    let (envoy, wasm) = (tools.envoy.clone(), tools.wasm().unwrap());
    let dir = std::env::temp_dir().join(format!(
        "peerguard-sandbox-readiness-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Other sandboxes (sandbox_stages uses 20 + (pid*3 + 0..2) % 200) may share the machine:
    // start elsewhere and move on when `up` finds the addresses in use.
    let first = 20 + (std::process::id() as usize * 7 + 101) % 200;
    for i in 0..12 {
        let net = 20 + (first - 20 + i * 5) % 200;
        let sb = Sandbox {
            dir: dir.clone(),
            net: net as u8,
        };
        let out = sb.pg(&[
            "up",
            "--net",
            &net.to_string(),
            "--inbound-chains",
            "istio",
            "--xds",
            "serve",
            "--no-matrix",
            "--envoy",
            envoy.to_str().unwrap(),
            "--wasm",
            wasm.to_str().unwrap(),
        ]);
        if out.status.success() {
            return Some(sb);
        }
        std::mem::forget(sb);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("is in use"),
            "peerguard sandbox up failed:\n{stderr}"
        );
    }
    panic!("no free 127.<net>.x.y for the sandbox after 12 tries");
}

fn port_80(report: &Value) -> &Value {
    let w = &report["workloads"][0];
    assert_eq!(w["workload"], "full/httpbin", "{report:#}");
    w["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == 80)
        .unwrap_or_else(|| panic!("no port 80: {report:#}"))
}

fn sources(port: &Value, key: &str) -> Vec<(String, u64)> {
    port[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["source"].as_str().unwrap().to_string(),
                s["connections"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn permissive_to_dry_run_to_strict() {
    let Some(sb) = start() else { return };
    let admin = sb.admin();
    let legacy = sb.legacy_ip();

    // Stage 1: PERMISSIVE. A window in which sleep.legacy sends 3 plaintext connections and
    // sleep.full 2 mTLS requests; the counters reach Envoy on the filter's 1 s tick.
    sb.apply("1-permissive.yaml");
    let reader = std::thread::spawn({
        let admin = admin.clone();
        move || {
            readiness(&[
                "--envoy-admin",
                &admin,
                "--window",
                "6s",
                "--output",
                "json",
            ])
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        assert_eq!(sb.get("sleep.legacy"), 200);
    }
    for _ in 0..2 {
        assert_eq!(sb.get("sleep.full"), 200);
    }
    let (code, out, err) = reader.join().unwrap();
    assert_eq!(code, Some(1), "NOT READY exits 1\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let p = port_80(&report);
    assert_eq!(p["mode"], "PERMISSIVE", "{report:#}");
    assert_eq!(p["verdict"], "NOT_READY");
    assert_eq!(sources(p, "plaintext_sources"), vec![(legacy.clone(), 3)]);
    // sleep.full's sidecar may reuse its upstream connection: 1 or 2 connections.
    let mtls = sources(p, "mtls_sources");
    assert!(
        mtls.len() == 1 && mtls[0].0 == SLEEP_FULL && (1..=2).contains(&mtls[0].1),
        "{mtls:?}"
    );
    assert!(report["window_seconds"].as_f64().unwrap() >= 6.0);

    // A window with only mTLS: ready.
    let reader = std::thread::spawn({
        let admin = admin.clone();
        move || readiness(&["--envoy-admin", &admin, "--window", "4s"])
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(sb.get("sleep.full"), 200);
    let (code, out, err) = reader.join().unwrap();
    assert_eq!(code, Some(0), "READY exits 0\n{out}\n{err}");
    assert!(
        out.contains("full/httpbin") && out.contains("  READY"),
        "{out}"
    );
    assert!(!out.contains("plaintext from"), "{out}");

    // Stage 2b: dry-run STRICT. Plaintext is still accepted, each connection counted once
    // and logged with its source; mTLS is no would-be refusal.
    sb.wasm_log_info();
    sb.apply("2b-strict-dry-run.yaml");
    let refused = "wasmcustom.peerguard_plaintext_dry_run_refused";
    let before = sb.counter(refused);
    for _ in 0..4 {
        assert_eq!(sb.get("sleep.legacy"), 200, "dry-run accepts plaintext");
    }
    assert_eq!(sb.get("sleep.full"), 200);
    assert_eq!(
        sb.counter(refused) - before,
        4,
        "exactly the plaintext connections"
    );
    let log = sb.envoy_log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("dry-run STRICT: would refuse plaintext connection"))
        .collect();
    assert_eq!(
        lines.len(),
        4,
        "one log line per connection:\n{}",
        lines.join("\n")
    );
    assert!(
        lines.iter().all(|l| l.contains(&format!("from {legacy}:"))
            && l.contains("to port 80")
            && l.contains("PeerAuthentication full/httpbin")),
        "{}",
        lines.join("\n")
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (code, out, err) = readiness(&["--envoy-admin", &admin, "--since-start"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        out.contains("port 80: STRICT (dry-run), set by PeerAuthentication full/httpbin"),
        "{out}"
    );
    assert!(
        out.contains(&format!("plaintext from {legacy} (7)")),
        "{out}"
    );
    assert!(
        out.contains("dry-run STRICT would have refused 4 plaintext connection(s)"),
        "{out}"
    );

    // Prometheus form, from the same Envoy: the tags make one metric with labels. (Before
    // STRICT: once enforced, the HTTP slot may move to native RBAC and the filter's VM, with
    // its counters, goes away.)
    let prom = format!("{admin}/stats/prometheus");
    let (code, out, err) = readiness(&["--prometheus", &prom, "--since-start", "--output", "json"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let p = &report["workloads"][0]["ports"][0];
    assert_eq!(p["port"], 80, "{report:#}");
    assert_eq!(sources(p, "plaintext_sources"), vec![(legacy.clone(), 7)]);

    // Stage 3: STRICT. The legacy client is refused; readiness reports STRICT enforced.
    sb.ok(&["delete", stage("2b-strict-dry-run.yaml").to_str().unwrap()]);
    sb.apply("3-strict-v1.yaml");
    assert_eq!(sb.get("sleep.legacy"), 0, "STRICT refuses plaintext");
    assert_eq!(sb.get("sleep.full"), 200);
    let (code, out, err) =
        readiness(&["--envoy-admin", &admin, "--since-start", "--output", "json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["workloads"][0]["ports"][0]["verdict"], "STRICT",
        "{report:#}"
    );

    // An unreachable endpoint is an error (exit 2), not a verdict.
    let (code, _, err) = readiness(&["--envoy-admin", "http://127.0.0.1:1", "--since-start"]);
    assert_eq!(code, Some(2), "{err}");
}

/// `explain` shows the dry-run STRICT and the would-be refusal (no Envoy needed).
#[test]
fn explain_shows_a_dry_run_strict() {
    let out = Command::new(PG)
        .args(["explain", "--config"])
        .arg(stage("2b-strict-dry-run.yaml"))
        .args([
            "--workload",
            "full/httpbin",
            "--labels",
            "app=httpbin",
            "--plaintext",
            "--port",
            "80",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("ALLOW\n"), "{text}");
    assert!(
        text.contains("mTLS: port 80 is STRICT (dry-run: enforced as PERMISSIVE) (set by PeerAuthentication full/httpbin)"),
        "{text}"
    );
    assert!(
        text.contains("dry-run STRICT: this plaintext connection would be refused"),
        "{text}"
    );
}
