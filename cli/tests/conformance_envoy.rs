//! Every conformance case through `peerguard test --envoy`, the command as users run it.
//!
//! Needs Envoy and the wasm module; without them it prints `SKIPPED: <why>` and passes,
//! unless PEERGUARD_REQUIRE_ENVOY=1, then it fails.

#![cfg(test)]

use anyhow::{bail, Context as _};
use peerguard_harness::require::{require, Needs};
use std::path::PathBuf;

/// (a) Every conformance case through `peerguard test --envoy`.
#[test]
fn conformance_cases_through_envoy() -> anyhow::Result<()> {
    let test = "conformance_cases_through_envoy";
    if require(test, Needs::EnvoyAndWasm)?.is_none() {
        return Ok(());
    }
    let dir = std::env::var_os("CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../integration/conformance/cases")
        });
    if !dir.is_dir() {
        bail!(
            "conformance cases not found at {} (set CONFORMANCE_DIR)",
            dir.display()
        );
    }
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .arg("test")
        .arg("--envoy")
        .arg(&dir)
        .output()
        .context("running peerguard test --envoy")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}\n(took {:?})", started.elapsed());
    if !out.status.success() {
        bail!(
            "peerguard test --envoy {} failed ({}):\n{stdout}\n{stderr}",
            dir.display(),
            out.status
        );
    }
    Ok(())
}
