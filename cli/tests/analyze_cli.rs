//! `peerguard analyze` as users run it: the sandbox's stages (the auto mTLS walkthrough),
//! text and JSON output, exit codes, `--ca-cert`, and `--server` against a real
//! `peerguard serve`.
#![cfg(test)]

mod harness;

use harness::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn analyze(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .arg("analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running peerguard: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One `Workload` per pod of the sandbox's topology (sidecar or not), so the registry is the
/// sandbox's own.
fn sandbox_workloads() -> String {
    let text = std::fs::read_to_string(repo().join("integration/sandbox/topology.yaml")).unwrap();
    let t: Value = serde_saphyr::from_str(&text).unwrap();
    let services = t["services"].as_array().unwrap();
    let docs: Vec<String> = t["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let selects = |s: &&Value| {
                s["namespace"] == p["namespace"]
                    && s["selector"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| p["labels"][k] == *v)
            };
            let svcs: Vec<Value> = services
                .iter()
                .filter(selects)
                .map(|s| json!({"name": s["name"], "ports": [{"name": s["port_name"], "port": s["port"], "targetPort": s["target_port"]}]}))
                .collect();
            json!({
                "apiVersion": "peerguard.dev/v1alpha1",
                "kind": "Workload",
                "metadata": {"name": p["name"], "namespace": p["namespace"], "labels": p["labels"]},
                "spec": {"serviceAccount": p["service_account"], "services": svcs, "sidecar": p["sidecar"]},
            })
            .to_string()
        })
        .collect();
    docs.join("\n---\n")
}

/// A config directory: the sandbox registry and the named stage files.
fn sandbox_dir(tag: &str, stages: &[&str]) -> PathBuf {
    let dir = temp_dir(&format!("analyze-{tag}"));
    write(&dir.join("cfg/workloads.yaml"), &sandbox_workloads());
    for s in stages {
        let text =
            std::fs::read_to_string(repo().join("integration/sandbox/stages").join(s)).unwrap();
        write(&dir.join("cfg").join(s), &text);
    }
    dir.join("cfg")
}

fn json_findings(o: &Output) -> Vec<(String, String, String)> {
    let v: Value =
        serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)));
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_string(),
                f["code"].as_str().unwrap().to_string(),
                f["object"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn s(v: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = v
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<(String, String, String)>) -> Vec<(String, String, String)> {
    v.sort();
    v
}

#[test]
fn the_sandbox_walkthrough_stage_by_stage() {
    // Stage 5: the DestinationRule forces ISTIO_MUTUAL on httpbin.full, whose legacy Policy
    // (stage 4) serves plaintext only: the 503 of the walkthrough, an error.
    let cfg = sandbox_dir(
        "stage5",
        &[
            "1-permissive.yaml",
            "4-plaintext.yaml",
            "5-dr-istio-mutual.yaml",
        ],
    );
    let cfg = cfg.to_string_lossy().into_owned();
    let text = analyze(&["--config", &cfg]);
    assert_eq!(text.status.code(), Some(1), "{}", stdout(&text));
    let out = stdout(&text);
    assert!(out.contains("DestinationRule full/httpbin-full-mtls (") && out.contains("5-dr-istio-mutual.yaml)\n  ERROR PG103 DestinationRule full/httpbin-full-mtls spec.trafficPolicy.tls.mode: tls.mode ISTIO_MUTUAL towards httpbin.full:8000 (workload full/httpbin port 80), whose mTLS mode is DISABLE (from Policy full/httpbin)"), "{out}");
    assert!(
        out.contains("      fix: remove `tls` from the DestinationRule"),
        "{out}"
    );
    assert!(
        out.contains("1 error(s), 3 warning(s), 0 info (directory "),
        "{out}"
    );
    let json = analyze(&["--config", &cfg, "--output", "json"]);
    assert_eq!(json.status.code(), Some(1));
    assert_eq!(
        sorted(json_findings(&json)),
        s(&[
            ("error", "PG103", "DestinationRule full/httpbin-full-mtls"),
            ("warning", "PG107", "MeshPolicy default"),
            ("warning", "PG301", "MeshPolicy default"),
            ("warning", "PG301", "Policy full/httpbin"),
        ])
    );
    // --min-severity hides the warnings; the exit code still says there is an error.
    let errors_only = analyze(&[
        "--config",
        &cfg,
        "--output",
        "json",
        "--min-severity",
        "error",
    ]);
    assert_eq!(errors_only.status.code(), Some(1));
    assert_eq!(json_findings(&errors_only).len(), 1);

    // Stage 3 (STRICT for httpbin.full) with a DestinationRule sending plaintext: the other
    // 503, and ISTIO_MUTUAL towards the legacy namespace (no sidecars).
    let dir = sandbox_dir("stage3", &["1-permissive.yaml", "3-strict.yaml"]);
    write(&dir.join("dr.yaml"), "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: plaintext, namespace: full}\nspec: {host: httpbin.full.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: legacy-mtls, namespace: legacy}\nspec: {host: '*.legacy.svc.cluster.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n");
    let o = analyze(&["--config", &dir.to_string_lossy(), "--output", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let f = json_findings(&o);
    assert!(
        f.contains(&(
            "error".into(),
            "PG101".into(),
            "DestinationRule full/plaintext".into()
        )),
        "{f:?}"
    );
    assert!(
        f.contains(&(
            "error".into(),
            "PG102".into(),
            "DestinationRule legacy/legacy-mtls".into()
        )),
        "{f:?}"
    );

    // Stage 1 alone: no error, exit 0; the PERMISSIVE mesh and the legacy MeshPolicy warn.
    let dir = sandbox_dir("stage1", &["1-permissive.yaml"]);
    let o = analyze(&["--config", &dir.to_string_lossy(), "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(
        sorted(json_findings(&o)),
        s(&[
            ("warning", "PG107", "MeshPolicy default"),
            ("warning", "PG301", "MeshPolicy default"),
        ])
    );
}

#[test]
fn bad_input_is_exit_2_and_invalid_objects_are_errors() {
    let o = analyze(&["--config", "/nonexistent/peerguard-analyze"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/peerguard-analyze"));
    let dir = sandbox_dir("invalid", &[]);
    write(&dir.join("typo.yaml"), "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: typo, namespace: full}\nspec: {action: DENY, rulez: []}\n");
    let cfg = dir.to_string_lossy().into_owned();
    let o = analyze(&["--config", &cfg, "--output", "json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(json_findings(&o).contains(&(
        "error".into(),
        "PG001".into(),
        "AuthorizationPolicy full/typo".into()
    )));
    write(&dir.join("garbage.pem"), "not a certificate");
    let o = analyze(&[
        "--config",
        &cfg,
        "--ca-cert",
        &dir.join("garbage.pem").to_string_lossy(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("garbage.pem"),
        "{o:?}"
    );
}

fn ca_pem(dir: &Path, name: &str, until: (i32, u8, u8)) -> PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let cert = p.self_signed(&key).unwrap();
    let path = dir.join(name);
    write(&path, &cert.pem());
    path
}

#[test]
fn certificates_ttl_ca_and_a_running_server() {
    let dir = temp_dir("analyze-certs");
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    write(&dir.join("cfg/strict.yaml"), "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n");
    let cfg = dir.join("cfg").to_string_lossy().into_owned();
    let clean = analyze(&["--config", &cfg, "--output", "json"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    assert_eq!(json_findings(&clean), vec![]);
    // A TTL above the maximum is refused, as serve refuses it.
    let o = analyze(&[
        "--config",
        &cfg,
        "--output",
        "json",
        "--workload-cert-ttl",
        "100d",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        json_findings(&o),
        s(&[("error", "PG401", "serve --workload-cert-ttl")])
    );
    // An expired CA is an error, a long-lived one nothing.
    let old = ca_pem(&dir, "old.pem", (2021, 1, 1));
    let o = analyze(&[
        "--config",
        &cfg,
        "--output",
        "json",
        "--ca-cert",
        &old.to_string_lossy(),
    ]);
    assert_eq!(
        json_findings(&o),
        s(&[("error", "PG403", "CA certificate")])
    );
    let new = ca_pem(&dir, "new.pem", (2099, 1, 1));
    let o = analyze(&[
        "--config",
        &cfg,
        "--output",
        "json",
        "--ca-cert",
        &new.to_string_lossy(),
    ]);
    assert_eq!(json_findings(&o), vec![]);

    // A real server issuing 2-minute certificates: past the renewal point of a 24h TTL.
    let server = Server::start(&dir, "/opt/peerguard.wasm", &["--workload-cert-ttl", "2m"]);
    wait_for(
        "certificates in /metrics",
        std::time::Duration::from_secs(20),
        || {
            server
                .metrics()
                .contains("peerguard_workload_cert_expiry_timestamp_seconds{")
        },
    );
    let url = format!("http://127.0.0.1:{}", server.http_port);
    let o = analyze(&["--config", &cfg, "--output", "json", "--server", &url]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(
        sorted(json_findings(&o)),
        s(&[
            ("warning", "PG402", "Workload bar/sleep"),
            ("warning", "PG402", "Workload foo/httpbin"),
        ])
    );
    // With the TTL the server really uses, they are fresh; its CA (from /metrics) is
    // flagged only with a threshold beyond its 10 years.
    let o = analyze(&[
        "--config",
        &cfg,
        "--output",
        "json",
        "--server",
        &url,
        "--workload-cert-ttl",
        "2m",
    ]);
    assert_eq!(json_findings(&o), vec![]);
    let o = analyze(&[
        "--config",
        &cfg,
        "--output",
        "json",
        "--server",
        &format!("{url}/metrics"),
        "--workload-cert-ttl",
        "2m",
        "--warn-within",
        "4000d",
    ]);
    assert_eq!(
        json_findings(&o),
        s(&[("warning", "PG403", "CA certificate")])
    );
    let o = analyze(&["--config", &cfg, "--server", "http://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(2));
}
