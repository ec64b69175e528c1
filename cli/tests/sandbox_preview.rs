//! `peerguard preview` on the product path, as the README shows it: the sandbox's
//! `peerguard serve` turns the decision log on (`sandbox up --decision-log-sample 1`), real
//! sidecars log their decisions, and `preview` of stage 3 plus a DENY on `/admin*` predicts
//! which requests flip. Then the proposal is applied and the same requests are sent again:
//! exactly the predicted ones must now be refused, and nothing else.
//!
//! SKIPPED without Envoy or the wasm module unless PEERGUARD_REQUIRE_ENVOY=1.
#![cfg(test)]

use peerguard_harness::require::{require, Needs};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PG: &str = env!("CARGO_BIN_EXE_peerguard");

const NO_ADMIN: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin, namespace: full}\nspec:\n  action: DENY\n  rules:\n  - to: [{operation: {paths: ['/admin*']}}]\n";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
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

    /// Whether `GET http://httpbin.full:8000<path>` from `pod` reaches the app (every demo
    /// app response names its pod in `x-sandbox-pod`; a denial is the sidecar's 403, a
    /// refusal a closed connection).
    fn allowed(&self, pod: &str, path: &str) -> bool {
        let url = format!("http://httpbin.full:8000{path}");
        let out = self.pg(&["exec", "-i", pod, "--", "GET", &url]);
        String::from_utf8_lossy(&out.stdout)
            .to_ascii_lowercase()
            .contains("x-sandbox-pod: httpbin.full")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.pg(&["down"]);
    }
}

fn start() -> Option<Sandbox> {
    let tools = require("sandbox_preview", Needs::EnvoyAndWasm).unwrap()?;
    let (envoy, wasm) = (tools.envoy.clone(), tools.wasm().unwrap());
    let dir =
        std::env::temp_dir().join(format!("peerguard-sandbox-preview-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sb = Sandbox { dir };
    // Another net than sandbox_stages' tests (slots 0-2 of the same formula).
    let first = 20 + (std::process::id() as usize * 3 + 2 + 100) % 200;
    for i in 0..12 {
        let net = (20 + (first - 20 + i * 3) % 200).to_string();
        let out = sb.pg(&[
            "up",
            "--net",
            &net,
            "--no-matrix",
            "--decision-log-sample",
            "1",
            "--envoy",
            envoy.to_str().unwrap(),
            "--wasm",
            wasm.to_str().unwrap(),
        ]);
        if out.status.success() {
            return Some(sb);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is in use"), "sandbox up failed:\n{stderr}");
    }
    panic!("no free 127.<net>.x.y for the sandbox after 12 tries");
}

#[test]
fn preview_predicts_what_applying_the_proposal_does() {
    let Some(sb) = start() else { return };
    let requests: Vec<(&str, &str)> = ["/headers", "/ip", "/admin/x"]
        .iter()
        .flat_map(|p| [("sleep.full", *p), ("sleep.legacy", *p)])
        .collect();
    for (pod, path) in &requests {
        assert!(sb.allowed(pod, path), "stage 1 allows {pod} {path}");
    }
    let current = sb.dir.join("resources");
    let proposed = sb.dir.join("proposed");
    std::fs::create_dir_all(&proposed).unwrap();
    for f in std::fs::read_dir(&current).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, proposed.join(f.file_name().unwrap())).unwrap();
    }
    let strict = repo().join("integration/sandbox/stages/3-strict.yaml");
    std::fs::copy(&strict, proposed.join("3-strict.yaml")).unwrap();
    std::fs::write(proposed.join("no-admin.yaml"), NO_ADMIN).unwrap();
    let logs: Vec<PathBuf> = std::fs::read_dir(sb.dir.join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().path().join("envoy.log"))
        .collect();

    let out = Command::new(PG)
        .args(["preview", "--current", current.to_str().unwrap()])
        .args(["--proposed", proposed.to_str().unwrap(), "--output", "json"])
        .args(&logs)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["totals"]["recorded_mismatch"], 0, "{report:#}");
    assert_eq!(report["totals"]["unreplayable"], 0, "{report:#}");
    // The requests the preview says flip, as (source, path).
    let mut predicted = BTreeSet::new();
    for g in report["groups"].as_array().unwrap() {
        assert_eq!(g["direction"], "ALLOW->DENY");
        assert_eq!(g["workload"], "full/httpbin");
        for r in g["requests"].as_array().unwrap() {
            let path = r["request"].as_str().unwrap().split(' ').nth(1).unwrap();
            let path = path.trim_start_matches("httpbin.full:8000").to_string();
            predicted.insert((g["source"].as_str().unwrap().to_string(), path));
        }
    }
    assert_eq!(
        report["totals"]["flipped"].as_u64(),
        Some(predicted.len() as u64)
    );

    for f in [&strict, &proposed.join("no-admin.yaml")] {
        let out = sb.pg(&["apply", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Who each pod is in the log: sleep.full's sidecar presents its principal; sleep.legacy
    // has no sidecar and connects in plaintext from its own address.
    let legacy_ip = |report: &Value| -> Option<String> {
        report["groups"].as_array()?.iter().find_map(|g| {
            g["source"]
                .as_str()?
                .strip_prefix("plaintext ")
                .map(str::to_string)
        })
    };
    let legacy = format!(
        "plaintext {}",
        legacy_ip(&report).expect("a plaintext flip")
    );
    let observed: BTreeSet<(String, String)> = requests
        .iter()
        .filter(|(pod, path)| !sb.allowed(pod, path))
        .map(|(pod, path)| {
            let source = match *pod {
                "sleep.full" => "cluster.local/ns/full/sa/sleep".to_string(),
                _ => legacy.clone(),
            };
            (source, path.to_string())
        })
        .collect();
    assert_eq!(
        observed, predicted,
        "refused after applying vs predicted by preview"
    );
    assert_eq!(
        predicted.len(),
        4,
        "sleep.legacy x 3 (STRICT) + sleep.full /admin/x"
    );
}
