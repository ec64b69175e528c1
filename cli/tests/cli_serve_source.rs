//! `peerguard serve` refuses a missing source before it creates anything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn serve_without_a_config_dir_fails_before_creating_state() {
    let state = std::env::temp_dir().join(format!("pg-cli-source-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let out = Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .args([
            "serve",
            "--wasm",
            "/x.wasm",
            "--http-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs --config-dir"), "{err}");
    assert!(
        !state.exists(),
        "no state (CA, token secret) created for a command that cannot run"
    );
}
