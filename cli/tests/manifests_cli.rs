//! `peerguard manifests istio …` as users run it: output formats and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::process::Command;

fn pg(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mesh_dir(name: &str, text: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pg-manifests-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("mesh.yaml"), text).unwrap();
    d
}

const HTTPBIN: &str = "apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: httpbin-1, namespace: foo, labels: {app: httpbin}}
spec: {serviceAccount: httpbin, services: [{name: httpbin, ports: [{port: 8000}]}]}
";

#[test]
fn wasmplugin_renders_yaml_and_json_and_exits_by_outcome() {
    let d = mesh_dir("ok", HTTPBIN);
    let cfg = d.to_str().unwrap();
    let (code, yaml, err) = pg(&["manifests", "istio", "wasmplugin", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        yaml.starts_with("---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n"),
        "{yaml}"
    );
    let (code, json, _) = pg(&[
        "manifests",
        "istio",
        "wasmplugin",
        "--config",
        cfg,
        "--output",
        "json",
    ]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["kind"], "List");
    // The WasmPlugin, then the mesh-wide EnvoyFilter the form needs (direct peer as the
    // connection managers' remote address).
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(list["items"][0]["spec"]["pluginConfig"]["schema"], 1);
    assert_eq!(list["items"][1]["kind"], "EnvoyFilter");
    assert_eq!(
        list["items"][1]["metadata"]["name"],
        "peerguard-direct-peer"
    );

    // Bad module URLs and unreadable meshes: 2, nothing printed.
    for args in [
        vec!["--wasm-url", "https://example.invalid/p.wasm"],
        vec!["--wasm-url", "ftp://example.invalid/p.wasm"],
        vec!["--wasm-url", "oci://r/p:1", "--wasm-sha256", "xyz"],
    ] {
        let mut a = vec!["manifests", "istio", "wasmplugin", "--config", cfg];
        a.extend(args.iter());
        let (code, out, err) = pg(&a);
        assert_eq!((code, out.as_str()), (2, ""), "{a:?}: {err}");
        assert!(err.contains("--wasm-"), "{err}");
    }
    let (code, out, _) = pg(&[
        "manifests",
        "istio",
        "wasmplugin",
        "--config",
        "/nonexistent/dir",
    ]);
    assert_eq!((code, out.as_str()), (2, ""));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_fail_closed_group_exits_1_and_says_why() {
    // Two pods with the same labels behind different Services, one of them STRICT by a legacy
    // Policy: no single policy fits the selector.
    let text = format!(
        "{HTTPBIN}---
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {{name: httpbin-2, namespace: foo, labels: {{app: httpbin}}}}
spec: {{serviceAccount: httpbin, services: [{{name: other, ports: [{{port: 8000}}]}}]}}
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {{name: other, namespace: foo}}
spec: {{targets: [{{name: other}}], peers: [{{mtls: {{}}}}]}}
"
    );
    let d = mesh_dir("conflict", &text);
    let (code, json, err) = pg(&[
        "manifests",
        "istio",
        "wasmplugin",
        "--config",
        d.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("DENY every request") && err.contains("foo/httpbin-1, foo/httpbin-2"),
        "{err}"
    );
    let list: Value = serde_json::from_str(&json).unwrap();
    assert!(list["items"][0]["spec"]["pluginConfig"]
        .get("schema")
        .is_none());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn envoyfilter_arguments_are_checked() {
    let (code, out, err) = pg(&["manifests", "istio", "envoyfilter", "--server", "no-port"]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    let (code, _, err) = pg(&[
        "manifests",
        "istio",
        "envoyfilter",
        "--server-identity",
        "peerguard",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--server-identity"), "{err}");
    let (code, _, err) = pg(&["manifests", "istio", "envoyfilter", "--selector", "app"]);
    assert_eq!(code, 2);
    assert!(err.contains("--selector"), "{err}");
    let (code, yaml, _) = pg(&[
        "manifests",
        "istio",
        "envoyfilter",
        "--namespace",
        "foo",
        "--selector",
        "app=httpbin",
    ]);
    assert_eq!(code, 0);
    assert!(
        yaml.contains("namespace: foo") && yaml.contains("workloadSelector"),
        "{yaml}"
    );
}
