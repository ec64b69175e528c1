//! `peerguard sandbox` commands on a sandbox that is not running (no Envoy needed): they fail
//! with a clear message and a non-zero exit instead of reporting what a stopped sandbox looks
//! like (an all-`0` matrix with exit 0). The running cases are in `sandbox_stages.rs`.

#![cfg(test)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PG: &str = env!("CARGO_BIN_EXE_peerguard");

fn sandbox(dir: &Path, args: &[&str]) -> Output {
    Command::new(PG)
        .arg("sandbox")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn stage(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../integration/sandbox/stages")
        .join(name)
}

/// A state directory whose processes are gone (after `down`, or a reboot).
fn stopped_sandbox(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "peerguard-sandbox-cli-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("resources")).unwrap();
    std::fs::write(
        dir.join("sandbox.json"),
        r#"{"net": 213, "topology": null, "wasm": null, "envoy": "envoy", "chains": "filter", "xds": "files"}"#,
    )
    .unwrap();
    // A recorded pid that is not a sandbox process any more.
    std::fs::write(dir.join("pids"), "1 envoy httpbin.full\n").unwrap();
    dir
}

fn assert_refused(o: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_ne!(
        o.status.code(),
        Some(0),
        "{what} must fail on a stopped sandbox; stdout:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        stderr.contains("is not running (run `peerguard sandbox up`)"),
        "{what}: {stderr}"
    );
}

#[test]
fn commands_on_a_stopped_sandbox_fail_clearly() {
    let dir = stopped_sandbox("stopped");
    assert_refused(&sandbox(&dir, &["matrix"]), "matrix");
    assert_refused(
        &sandbox(&dir, &["matrix", "--output", "json"]),
        "matrix --output json",
    );
    assert_refused(&sandbox(&dir, &["status"]), "status");
    assert_refused(
        &sandbox(
            &dir,
            &[
                "exec",
                "sleep.full",
                "--",
                "GET",
                "http://httpbin.full:8000/ip",
            ],
        ),
        "exec",
    );
    let file = stage("3-strict.yaml");
    let o = sandbox(&dir, &["apply", file.to_str().unwrap()]);
    assert_refused(&o, "apply");
    assert!(
        o.stdout.is_empty(),
        "apply printed changes it did not make: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let stored: Vec<_> = std::fs::read_dir(dir.join("resources")).unwrap().collect();
    assert!(
        stored.is_empty(),
        "apply changed the store of a stopped sandbox"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn commands_without_a_sandbox_name_the_missing_state() {
    let dir =
        std::env::temp_dir().join(format!("peerguard-sandbox-cli-none-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = sandbox(&dir, &["matrix"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("no sandbox here (run `peerguard sandbox up` first)"));
    let _ = std::fs::remove_dir_all(&dir);
}
