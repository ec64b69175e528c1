//! The human-facing commands as users run them: output and exit codes of the real binary.

#![cfg(test)]

use std::path::Path;
use std::process::{Command, Output};

fn peerguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running peerguard: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("writing {name}: {e}"));
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("peerguard-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir: {e}"));
    d
}

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-sleep, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/foo/sa/sleep"]}}]
    to: [{operation: {methods: ["GET"]}}]
"#;

fn explain(dir: &Path, extra: &[&str]) -> Output {
    let dir = dir.to_string_lossy().into_owned();
    let mut args = vec![
        "explain",
        "--config",
        &dir,
        "--workload",
        "foo/httpbin",
        "--labels",
        "app=httpbin",
        "--port",
        "8080",
    ];
    args.extend_from_slice(extra);
    peerguard(&args)
}

#[test]
fn explain_names_the_policy_and_the_mode() {
    let dir = tempdir("explain");
    write(&dir, "p.yaml", POLICIES);
    let get = ["--method", "GET", "--path", "/ip", "--host", "httpbin.foo"];

    let o = explain(
        &dir,
        &[&["--peer", "cluster.local/ns/foo/sa/sleep"][..], &get].concat(),
    );
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.starts_with("ALLOW"), "{out}");
    assert!(out.contains("foo/allow-sleep"), "{out}");

    let o = explain(
        &dir,
        &[
            &["--peer", "cluster.local/ns/bar/sa/sleep", "--fail-on-deny"][..],
            &get,
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).starts_with("DENY"));

    let o = explain(&dir, &["--plaintext", "--tcp"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.starts_with("DENY") && out.contains("STRICT") && out.contains("foo/default"),
        "{out}"
    );
}

#[test]
fn explain_exits_2_on_invalid_resources_and_still_fails_closed() {
    let dir = tempdir("explain-bad");
    write(&dir, "p.yaml", POLICIES);
    write(
        &dir,
        "bad.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: foo}\nspec: {action: DENIED}\n",
    );
    let o = explain(
        &dir,
        &[
            "--peer",
            "cluster.local/ns/foo/sa/sleep",
            "--method",
            "GET",
            "--path",
            "/",
            "--host",
            "h",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(
        out.starts_with("DENY"),
        "an invalid DENY policy denies what it selects: {out}"
    );
    assert!(
        out.contains("bad.yaml: AuthorizationPolicy foo/x: spec.action: unknown value `DENIED`"),
        "{out}"
    );
}

#[test]
fn test_command_exit_codes() {
    let dir = tempdir("scenarios");
    let case = |expect: &str| {
        format!(
            "name: strict\nabout: x\nsource: x\nresources:\n- apiVersion: security.istio.io/v1\n  kind: PeerAuthentication\n  metadata: {{name: default, namespace: foo}}\n  spec: {{mtls: {{mode: STRICT}}}}\nworkload: {{namespace: foo, name: httpbin, service_account: httpbin, labels: {{app: httpbin}}, services: [httpbin]}}\nrequests:\n- about: plaintext\n  peer: null\n  port: 8080\n  protocol: tcp\n  expect: {expect}\n"
        )
    };
    write(&dir, "a.yaml", &case("deny"));
    let d = dir.to_string_lossy().into_owned();
    let o = peerguard(&["test", &d]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).trim_end().ends_with("1 passed, 0 failed"),
        "{}",
        stdout(&o)
    );

    write(&dir, "a.yaml", &case("allow"));
    let o = peerguard(&["test", &d]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("FAIL"), "{}", stdout(&o));

    write(&dir, "a.yaml", "name: broken\nrequests: 7\n");
    let o = peerguard(&["test", &d]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn compile_prints_the_filter_configuration_or_refuses() {
    let dir = tempdir("compile");
    write(&dir, "p.yaml", POLICIES);
    let d = dir.to_string_lossy().into_owned();
    let args = [
        "compile",
        "--config",
        &d,
        "--workload",
        "foo/httpbin",
        "--labels",
        "app=httpbin",
    ];
    let o = peerguard(&args);
    assert_eq!(o.status.code(), Some(0));
    let policy: peerguard_filter::WorkloadPolicy =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not a WorkloadPolicy: {e}"));
    assert_eq!(
        policy.mtls.default.mode,
        peerguard_filter::schema::MtlsMode::Strict
    );
    assert_eq!(policy.policies.len(), 1);
    assert_eq!(policy.policies[0].policy.to_string(), "foo/allow-sleep");

    write(&dir, "bad.yaml", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x, namespace: foo}\nspec: {mtls: {mode: STRCT}}\n");
    let o = peerguard(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        o.stdout.is_empty(),
        "nothing printed for a broken configuration"
    );
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("bad.yaml: PeerAuthentication foo/x: spec.mtls.mode"));
}
