//! `peerguard preview` as users run it: arguments, output formats and exit codes of the real
//! binary (the replay itself is tested in plugin-server's `cli::preview` and, through real
//! Envoy, in integration/harness/tests/preview_e2e.rs).
#![cfg(test)]

use std::path::Path;
use std::process::{Command, Output};

fn peerguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running peerguard: {e}"))
}

fn dir(tag: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "peerguard-preview-cli-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for (name, text) in files {
        std::fs::write(d.join(name), text).unwrap();
    }
    d
}

const WORKLOAD: &str = "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: httpbin, namespace: foo}\nspec: {serviceAccount: httpbin}\n";
const DENY_ADMIN: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin, namespace: foo}\nspec:\n  action: DENY\n  rules:\n  - to: [{operation: {paths: ['/admin*']}}]\n";

fn line(path: &str) -> String {
    format!(
        "[info][wasm] wasm log peerguard_http peerguard: peerguard-decision {{\"v\":1,\"workload\":\"foo/httpbin\",\"port\":80,\"src\":\"127.0.0.3\",\"http\":{{\"method\":\"GET\",\"path\":\"{path}\",\"host\":\"httpbin.foo\"}},\"allowed\":true,\"reason\":{{\"kind\":\"no_allow_policies\"}}}}\n"
    )
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn preview_help_text_json_and_exit_codes() {
    let help = peerguard(&["preview", "--help"]);
    assert!(
        help.status.success(),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--proposed") && help.contains("<LOG>"),
        "{help}"
    );

    let current = dir("current", &[("w.yaml", WORKLOAD)]);
    let proposed = dir(
        "proposed",
        &[("w.yaml", WORKLOAD), ("deny.yaml", DENY_ADMIN)],
    );
    let logs = dir(
        "logs",
        &[(
            "envoy.log",
            &format!("{}{}not a decision\n", line("/ip"), line("/admin/x")),
        )],
    );
    let log = path(&logs.join("envoy.log"));
    let (c, p) = (path(&current), path(&proposed));

    let o = peerguard(&["preview", "--current", &c, "--proposed", &p, &log]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "a flip: {text}");
    assert!(
        text.contains("ALLOW → DENY (1)")
            && text.contains("plaintext 127.0.0.3: denied by DENY policy foo/no-admin[rule 0]"),
        "{text}"
    );
    assert!(
        text.contains("envoy.log:2  GET httpbin.foo/admin/x"),
        "{text}"
    );

    let o = peerguard(&[
        "preview",
        "--current",
        &c,
        "--proposed",
        &p,
        &log,
        "--output",
        "json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["totals"]["flipped"], 1);
    assert_eq!(json["totals"]["ignored"], 1);
    assert_eq!(json["groups"][0]["policy"], "foo/no-admin[rule 0]");

    let o = peerguard(&["preview", "--current", &c, "--proposed", &c, &log]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = peerguard(&["preview", "--current", &c, "--proposed", &p, "/no/such/log"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/log"));
    let o = peerguard(&[
        "preview",
        "--current",
        &c,
        "--proposed",
        "/no/such/dir",
        &log,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("proposed configuration"));
}
