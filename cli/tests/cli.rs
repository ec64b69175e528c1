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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const ALLOW_GET: [&str; 8] = [
    "--peer",
    "cluster.local/ns/foo/sa/sleep",
    "--method",
    "GET",
    "--path",
    "/ip",
    "--host",
    "httpbin.foo",
];

#[test]
fn explain_denies_when_a_file_cannot_be_read_at_all() {
    let dir = tempdir("explain-syntax");
    write(&dir, "p.yaml", POLICIES);
    assert_eq!(
        explain(&dir, &ALLOW_GET).status.code(),
        Some(0),
        "the baseline allows"
    );
    // The only DENY, with a YAML syntax error: what it holds is unknown.
    write(
        &dir,
        "deny.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: foo\nspec: {action: DENY, rules: [{}]}\n",
    );
    let o = explain(&dir, &ALLOW_GET);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(
        out.starts_with(
            "DENY\nreason: no valid configuration, everything is denied: config invalid: "
        ),
        "{out}"
    );
    assert!(
        out.contains("deny.yaml: invalid YAML at line"),
        "names the file: {out}"
    );

    let o = explain(&dir, &[&ALLOW_GET[..], &["--output", "json"]].concat());
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON: {e}"));
    assert_eq!(
        v["decision"]["allowed"],
        serde_json::Value::Bool(false),
        "{v}"
    );
}

#[test]
fn a_misspelt_kind_or_version_is_invalid_on_every_command() {
    let dir = tempdir("typo");
    write(&dir, "p.yaml", POLICIES);
    write(
        &dir,
        "deny.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorisationPolicy\nmetadata: {name: deny-all, namespace: foo}\nspec: {action: DENY, rules: [{}]}\n",
    );
    let o = explain(&dir, &ALLOW_GET);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(
        out.starts_with("DENY\nreason: denied by DENY policy foo/deny-all"),
        "{out}"
    );
    assert!(out.contains("deny.yaml: AuthorisationPolicy foo/deny-all: kind: unknown kind \"AuthorisationPolicy\" in security.istio.io"), "{out}");

    let d = dir.to_string_lossy().into_owned();
    let o = peerguard(&[
        "compile",
        "--config",
        &d,
        "--workload",
        "foo/httpbin",
        "--labels",
        "app=httpbin",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o)
            .contains("error: deny.yaml: AuthorisationPolicy foo/deny-all: kind: unknown kind"),
        "{}",
        stderr(&o)
    );

    write(
        &dir,
        "deny.yaml",
        "apiVersion: security.istio.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {mtls: {mode: STRICT}}\n",
    );
    let o = peerguard(&[
        "compile",
        "--config",
        &d,
        "--workload",
        "foo/httpbin",
        "--labels",
        "app=httpbin",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("error: deny.yaml: PeerAuthentication foo/default: apiVersion: unknown version \"security.istio.io/v1alpha1\""),
        "{}",
        stderr(&o)
    );

    // JSON with a repeated key: refused, not read as its last value.
    std::fs::remove_file(dir.join("deny.yaml")).unwrap_or_else(|e| panic!("rm: {e}"));
    write(
        &dir,
        "deny.json",
        r#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "d", "namespace": "foo"}, "spec": {"action": "DENY", "rules": [{}], "action": "AUDIT"}}"#,
    );
    let o = peerguard(&[
        "compile",
        "--config",
        &d,
        "--workload",
        "foo/httpbin",
        "--labels",
        "app=httpbin",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o)
            .contains("deny.json: invalid JSON at line 1, column 167: duplicate key \"action\""),
        "{}",
        stderr(&o)
    );
    let o = explain(&dir, &ALLOW_GET);
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).starts_with("DENY"), "{}", stdout(&o));
}

const SCENARIO_WORKLOAD: &str = "workload: {namespace: foo, name: httpbin, service_account: httpbin, labels: {app: httpbin}}\nrequests:\n- about: get\n  peer: {principal: cluster.local/ns/foo/sa/sleep}\n  port: 8080\n  protocol: http\n  http: {method: GET, path: /, host: h}\n  expect: allow\n";

#[test]
fn test_command_refuses_misspelt_kinds_and_unreadable_files() {
    let dir = tempdir("scenario-typo");
    let d = dir.to_string_lossy().into_owned();
    write(
        &dir,
        "typo.yaml",
        &format!("name: typo\nresources:\n- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicyy\n  metadata: {{name: deny, namespace: foo}}\n  spec: {{action: DENY, rules: [{{}}]}}\n{SCENARIO_WORKLOAD}"),
    );
    let o = peerguard(&["test", &d]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("typo.yaml: resources[0]: AuthorizationPolicyy foo/deny: kind: unknown kind \"AuthorizationPolicyy\" in security.istio.io"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).trim_end().ends_with("0 passed, 0 failed"),
        "{}",
        stdout(&o)
    );

    write(
        &dir,
        "typo.yaml",
        &format!("name: syntax\nresources: [\n{SCENARIO_WORKLOAD}"),
    );
    let o = peerguard(&["test", &d]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).contains("INVALID") && stdout(&o).contains("typo.yaml"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).trim_end().ends_with("0 passed, 0 failed"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn jwt_reliance_is_a_warning_on_every_command() {
    const JWT: &str = "JWT is not enforced by peerguard: ";
    let policies = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: foo}\nspec: {jwtRules: [{issuer: https://issuer.example}]}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: need-jwt, namespace: foo}\nspec: {rules: [{from: [{source: {requestPrincipals: [\"*\"]}}]}]}\n";
    let dir = tempdir("jwt");
    write(&dir, "p.yaml", policies);
    let d = dir.to_string_lossy().into_owned();

    let o = peerguard(&[
        "compile",
        "--config",
        &d,
        "--workload",
        "foo/httpbin",
        "--labels",
        "app=httpbin",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "warning: {JWT}p.yaml: RequestAuthentication foo/jwt: spec.jwtRules: "
        )),
        "{err}"
    );
    assert!(err.contains(&format!("warning: {JWT}p.yaml: AuthorizationPolicy foo/need-jwt: spec.rules[0].from[0].source.requestPrincipals: ")), "{err}");

    let o = explain(&dir, &ALLOW_GET);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.starts_with("DENY"),
        "requestPrincipals never match: {out}"
    );
    assert!(
        out.contains(&format!("  - {JWT}p.yaml: RequestAuthentication foo/jwt")),
        "{out}"
    );

    let scenarios = tempdir("jwt-scenario");
    write(
        &scenarios,
        "jwt.yaml",
        &format!("name: jwt\nresources:\n- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata: {{name: need-jwt, namespace: foo}}\n  spec: {{rules: [{{from: [{{source: {{requestPrincipals: [\"*\"]}}}}]}}]}}\n{}", SCENARIO_WORKLOAD.replace("expect: allow", "expect: deny")),
    );
    let o = peerguard(&["test", &scenarios.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("WARNING {JWT}"))
            && stdout(&o).contains(
                "AuthorizationPolicy foo/need-jwt: spec.rules[0].from[0].source.requestPrincipals"
            ),
        "{}",
        stdout(&o)
    );
}

/// A mesh as `serve` reads it: registered workloads (labels, service account, Service ports)
/// beside the Istio resources.
const REGISTERED_MESH: &str = r#"
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: httpbin, namespace: foo, labels: {app: httpbin}}
spec:
  serviceAccount: httpbin
  services: [{name: httpbin, ports: [{name: http, port: 8000, targetPort: 80}]}]
---
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: httpbin, namespace: bar, labels: {app: httpbin}}
spec:
  serviceAccount: httpbin
  services: [{name: httpbin, ports: [{name: http, port: 8000, targetPort: 80}]}]
---
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: httpbin, namespace: legacy, labels: {app: httpbin}}
spec:
  serviceAccount: httpbin
  sidecar: false
  services: [{name: httpbin, ports: [{name: http, port: 8000, targetPort: 80}]}]
---
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
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: foo}
spec:
  host: httpbin.foo.svc.cluster.local
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: to-legacy, namespace: foo}
spec:
  host: httpbin.legacy.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: httpbin, namespace: bar}
spec:
  targets: [{name: httpbin, ports: [{number: 8000}]}]
  peers: [{mtls: {}}]
"#;

#[test]
fn explain_and_compile_read_the_registry_like_serve() {
    let dir = tempdir("registry");
    write(&dir, "mesh.yaml", REGISTERED_MESH);
    let d = dir.to_string_lossy().into_owned();
    let run = |workload: &str, extra: &[&str]| {
        let mut args = vec!["explain", "--config", &d, "--workload", workload];
        args.extend_from_slice(extra);
        peerguard(&args)
    };
    // The labels come from the Workload: the ALLOW policy selects it, so another principal
    // is denied (without the registry, no policy would select an unlabelled workload).
    let o = run(
        "foo/httpbin",
        &["--port", "80", "--peer", "cluster.local/ns/foo/sa/other"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("DENY\nreason: the workload has ALLOW policies and none matched"),
        "{}",
        stdout(&o)
    );
    let o = run(
        "foo/httpbin",
        &["--port", "80", "--peer", "cluster.local/ns/foo/sa/sleep"],
    );
    assert!(stdout(&o).starts_with("ALLOW\n"), "{}", stdout(&o));
    // Describing a registered workload on the command line too is refused: the answer must
    // be the one serve enforces.
    let o = run("foo/httpbin", &["--plaintext", "--labels", "app=other"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("workload foo/httpbin is registered (mesh.yaml)"),
        "{}",
        stderr(&o)
    );
    // The legacy Policy names Service port 8000; the registry maps it to target port 80,
    // which is STRICT, while another port stays PERMISSIVE.
    let o = run("bar/httpbin", &["--port", "80", "--plaintext"]);
    let out = stdout(&o);
    assert!(out.starts_with("DENY\n"), "{out}");
    assert!(
        out.contains("mTLS: port 80 is STRICT (set by Policy bar/httpbin)"),
        "{out}"
    );
    let o = run("bar/httpbin", &["--port", "9090", "--plaintext"]);
    assert!(stdout(&o).starts_with("ALLOW\n"), "{}", stdout(&o));
    // compile prints what serve sends: the same policy.
    let o = peerguard(&["compile", "--config", &d, "--workload", "bar/httpbin"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let policy: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(policy["mtls"]["ports"]["80"]["mode"], "STRICT", "{policy}");
    // An unregistered workload is still described on the command line, with a note.
    let o = run("baz/web", &["--plaintext", "--labels", "app=web"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("baz/web is not in the registry"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn describe_shows_modes_sources_clients_and_policies() {
    let dir = tempdir("describe");
    write(&dir, "mesh.yaml", REGISTERED_MESH);
    let d = dir.to_string_lossy().into_owned();
    let o = peerguard(&["describe", "--config", &d, "--workload", "foo/httpbin"]);
    let out = stdout(&o);
    // The DestinationRule sends plaintext to a STRICT port: the walkthrough's 503.
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    for want in [
        "workload: foo/httpbin\n",
        "  identity: spiffe://cluster.local/ns/foo/sa/httpbin (service account httpbin)\n",
        "  registry: defined in mesh.yaml; sidecar: yes\n",
        "  other ports: STRICT (set by PeerAuthentication foo/default)\n",
        "  port 80: STRICT (set by PeerAuthentication foo/default)\n",
        "  httpbin:8000 -> 80 (STRICT): client sends plaintext (DestinationRule foo/httpbin) — FAILS: plaintext towards a STRICT port",
        "  ALLOW foo/allow-sleep (1 rule)\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // No DestinationRule for bar's httpbin: auto mTLS sends ISTIO_MUTUAL, which works.
    let o = peerguard(&[
        "describe",
        "--config",
        &d,
        "--workload",
        "bar/httpbin",
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(j["services"][0]["client_tls"], "ISTIO_MUTUAL", "{j}");
    assert_eq!(j["services"][0]["client_tls_from"], "auto mTLS", "{j}");
    assert_eq!(j["services"][0]["server_mode"], "STRICT", "{j}");
    assert!(j["services"][0]["problem"].is_null(), "{j}");
    assert_eq!(j["mtls"][1]["from"], "Policy bar/httpbin", "{j}");
    // ISTIO_MUTUAL towards a workload without a sidecar.
    let o = peerguard(&[
        "describe",
        "--config",
        &d,
        "--workload",
        "legacy/httpbin",
        "--client-namespace",
        "foo",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("client sends ISTIO_MUTUAL (DestinationRule foo/to-legacy) — FAILS: ISTIO_MUTUAL towards a workload without a sidecar"),
        "{}",
        stdout(&o)
    );
}
