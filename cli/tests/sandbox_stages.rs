//! The auto mTLS walkthrough end to end: `peerguard sandbox up`, the stage files applied
//! live, and the matrix of codes and client identities after each stage
//! (spec 5.4; conformance cases 007–010). Real Envoy sidecars, the real wasm filter, real
//! certificates.
//!
//! SKIPPED without Envoy or the wasm module unless PEERGUARD_REQUIRE_ENVOY=1 (or
//! PEERGUARD_REQUIRE_WASM=1), which turns a missing one into a failure.
#![cfg(test)]

use peerguard_harness::require::{require, Needs};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PG: &str = env!("CARGO_BIN_EXE_peerguard");
const SLEEP_FULL: &str = "spiffe://cluster.local/ns/full/sa/sleep";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn stage(name: &str) -> PathBuf {
    repo().join("integration/sandbox/stages").join(name)
}

struct Sandbox {
    dir: PathBuf,
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

    fn delete(&self, file: &str) {
        self.ok(&["delete", stage(file).to_str().unwrap()]);
    }

    /// (from, to) → (code, principal)
    fn matrix(&self) -> Vec<(String, String, u64, Option<String>)> {
        let v: Value = serde_json::from_str(&self.ok(&["matrix", "--output", "json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["from"].as_str().unwrap().to_string(),
                    c["to"].as_str().unwrap().to_string(),
                    c["code"].as_u64().unwrap(),
                    c["principal"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    fn expect_matrix(&self, what: &str, want: &[(String, String, u64, Option<String>)]) {
        assert_eq!(self.matrix(), want, "{what}: matrix differs");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new(PG)
            .arg("sandbox")
            .arg("--dir")
            .arg(&self.dir)
            .arg("down")
            .output();
    }
}

/// `slot`: 0, 1, 2 for the three tests, so that they never pick the same addresses.
fn start(chains: &str, xds: &str, slot: usize) -> Option<Sandbox> {
    let tools = require("sandbox_stages", Needs::EnvoyAndWasm).unwrap()?;
    let (envoy, wasm) = (tools.envoy.clone(), tools.wasm().unwrap());
    let dir = std::env::temp_dir().join(format!(
        "peerguard-sandbox-test-{}-{chains}-{xds}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sb = Sandbox { dir };
    // Each test gets its own 127.<net>.x.y. Other runs of these tests (another checkout, CI)
    // may share the machine: start from a net derived from the pid and the test, and move
    // on when `up` finds the addresses in use.
    let first = 20 + (std::process::id() as usize * 3 + slot) % 200;
    for i in 0..12 {
        let net = (20 + (first - 20 + i * 3) % 200).to_string();
        let out = sb.pg(&[
            "up",
            "--net",
            &net,
            "--inbound-chains",
            chains,
            "--xds",
            xds,
            "--no-matrix",
            "--envoy",
            envoy.to_str().unwrap(),
            "--wasm",
            wasm.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return Some(sb);
        }
        assert!(
            stderr.contains("is in use"),
            "peerguard sandbox up failed:\n{stderr}"
        );
    }
    panic!("no free 127.<net>.x.y for the sandbox after 12 tries");
}

/// A row of an expected matrix: (from, to, code, principal).
type Row = (String, String, u64, Option<String>);

/// Matrix `n` of `integration/sandbox/expected-matrices.txt`, the one definition shared with
/// the kind test (integration/kind/run.sh).
fn expected(n: u32) -> Vec<Row> {
    let path = repo().join("integration/sandbox/expected-matrices.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let rows: Vec<Row> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 5 && w[0] == n.to_string())
        .map(|w| {
            let principal = (w[4] != "-").then(|| w[4].to_string());
            (
                w[1].to_string(),
                w[2].to_string(),
                w[3].parse().unwrap(),
                principal,
            )
        })
        .collect();
    assert_eq!(rows.len(), 6, "{}: matrix {n}", path.display());
    rows
}

/// The stage files that must produce matrix `n` (`stage N FILE...` lines).
fn stage_files(n: u32) -> Vec<String> {
    let text =
        std::fs::read_to_string(repo().join("integration/sandbox/expected-matrices.txt")).unwrap();
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() > 2 && w[0] == "stage" && w[1] == n.to_string())
        .map(|w| w[2..].iter().map(|s| s.to_string()).collect())
        .unwrap()
}

const F: &str = "sleep.full";
const L: &str = "sleep.legacy";

/// The product path: `peerguard serve` delivers the filter configuration (ECDS) and the
/// certificates (SDS) to sidecars set up from `peerguard bootstrap`; both chains on every
/// port, the mode enforced by the transport slot (native RBAC, first in every chain) or the
/// wasm filter (`--enforcement`).
#[test]
fn walkthrough_with_peerguard_serve() {
    if let Some(sb) = start("filter", "serve", 0) {
        walkthrough(&sb);
        // The refusals of stages 3 and 5 were serve's slots' (not a missing filter chain).
        let stats = sb.httpbin_full_stats();
        assert!(
            stat(&stats, "wasmcustom.peerguard_plaintext_refused")
                + stat(&stats, "transport.rbac.denied")
                >= 2,
            "{stats}"
        );
        stop(sb, 8);
    }
}

/// Filter config and certificates inline in the generated files (the sandbox's own CA).
#[test]
fn walkthrough_with_files() {
    if let Some(sb) = start("filter", "files", 1) {
        walkthrough(&sb);
        // `up` over a running sandbox is refused and leaves it running.
        let pids = std::fs::read_to_string(sb.dir.join("pids")).unwrap();
        let again = sb.pg(&["up", "--no-matrix"]);
        assert!(!again.status.success(), "a second `up` must fail");
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("already running"),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(sb.dir.join("pids")).unwrap(),
            pids,
            "the running sandbox was touched"
        );
        sb.expect_matrix("after a refused second up", &expected(5));
        let dir = sb.dir.clone();
        stop(sb, 7);
        // Stopped: the commands that talk to the sidecars fail, with a non-zero exit.
        for args in [
            &["matrix"][..],
            &["status"],
            &["apply", stage("3-strict.yaml").to_str().unwrap()],
        ] {
            let o = Command::new(PG)
                .arg("sandbox")
                .arg("--dir")
                .arg(&dir)
                .args(args)
                .output()
                .unwrap();
            assert!(
                !o.status.success(),
                "{args:?} on a stopped sandbox must fail"
            );
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("is not running"),
                "{args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

/// Istio's inbound chains per mode (Envoy refuses by itself), the filter still in every chain.
#[test]
fn walkthrough_with_istio_chains() {
    if let Some(sb) = start("istio", "files", 2) {
        walkthrough(&sb);
        stop(sb, 7);
    }
}

fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(": ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

impl Sandbox {
    /// httpbin.full's sidecar stats (127.<net>.1.20 in the topology, admin port 15000).
    fn httpbin_full_stats(&self) -> String {
        let settings: Value =
            serde_json::from_str(&std::fs::read_to_string(self.dir.join("sandbox.json")).unwrap())
                .unwrap();
        let net = settings["net"].as_u64().unwrap();
        let addr: std::net::SocketAddr = format!("127.{net}.1.20:15000").parse().unwrap();
        peerguard_harness::http1::get(addr, "/stats")
            .unwrap()
            .text()
    }
}

fn walkthrough(sb: &Sandbox) {
    // 1: MeshPolicy PERMISSIVE.
    sb.apply("1-permissive.yaml");
    assert_eq!(stage_files(1), ["1-permissive.yaml"]);
    let stage1 = expected(1);
    sb.expect_matrix("stage 1 (PERMISSIVE)", &stage1);

    // 2: the same Service, endpoints with and without sidecar: auto mTLS per endpoint.
    sb.apply("2-partial-migration.yaml");
    let mut seen = Vec::new();
    for _ in 0..6 {
        let out = sb.ok(&[
            "exec",
            "-i",
            F,
            "--",
            "GET",
            "http://httpbin.partial:8000/headers",
        ]);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let pod = out
            .lines()
            .find_map(|l| l.strip_prefix("x-sandbox-pod: "))
            .unwrap()
            .to_string();
        let has_uri = out.contains(&format!("URI={SLEEP_FULL}"));
        // mTLS exactly when the endpoint has a sidecar.
        assert_eq!(has_uri, pod == "httpbin.partial", "{pod}: {out}");
        seen.push(has_uri);
    }
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "round robin alternates with/without URI: {seen:?}"
    );

    // 3: STRICT for httpbin in full (legacy Policy, then the v1 PeerAuthentication).
    let stage3 = expected(3);
    assert_eq!(stage_files(3), ["3-strict.yaml", "3-strict-v1.yaml"]);
    sb.apply("3-strict.yaml");
    sb.expect_matrix("stage 3 (legacy Policy STRICT)", &stage3);
    // curl's view of the refused plaintext connection: 000 / exit code 56.
    let out = sb.pg(&["exec", L, "--", "GET", "http://httpbin.full:8000/headers"]);
    assert_eq!(
        out.status.code(),
        Some(56),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sb.delete("3-strict.yaml");
    sb.expect_matrix("stage 3 deleted: back to PERMISSIVE", &stage1);
    sb.apply("3-strict-v1.yaml");
    sb.expect_matrix("stage 3 (PeerAuthentication STRICT)", &stage3);
    sb.delete("3-strict-v1.yaml");

    // An invalid file is refused as a whole and changes nothing.
    let bad = sb.dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x, namespace: full}\nspec: {mtls: {mode: STRICTER}}\n").unwrap();
    let out = sb.pg(&["apply", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PeerAuthentication full/x"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sb.expect_matrix("after a refused file", &stage1);

    // 4: plaintext only for httpbin.full; sleep.full's sidecar follows (no URI there).
    // httpbin.partial is not concerned: its sidecar endpoint still gets mTLS (spec 5.4).
    assert_eq!(stage_files(4), ["4-plaintext.yaml", "4-plaintext-v1.yaml"]);
    sb.apply("4-plaintext-v1.yaml");
    sb.expect_matrix("stage 4 (PeerAuthentication DISABLE)", &expected(4));
    sb.delete("4-plaintext-v1.yaml");
    sb.apply("4-plaintext.yaml");
    sb.expect_matrix("stage 4 (Policy without peers)", &expected(4));

    // 5: DestinationRule ISTIO_MUTUAL towards the plaintext-only httpbin.full: 503.
    sb.apply("5-dr-istio-mutual.yaml");
    assert_eq!(stage_files(5), ["5-dr-istio-mutual.yaml"]);
    sb.expect_matrix("stage 5 (DR ISTIO_MUTUAL)", &expected(5));
}

/// `down` stops everything it started.
fn stop(sb: Sandbox, processes: usize) {
    let pids: Vec<u32> = std::fs::read_to_string(sb.dir.join("pids"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(pids.len(), processes);
    sb.ok(&["down"]);
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(sb.dir.to_str().unwrap()),
            "pid {pid} still running"
        );
    }
}
