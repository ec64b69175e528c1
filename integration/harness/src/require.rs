//! The one require-or-skip rule for tests that need Envoy (and the wasm module): without
//! them a test prints `SKIPPED: <test>: <why>` and passes, unless `PEERGUARD_REQUIRE_ENVOY=1`
//! (or `PEERGUARD_REQUIRE_WASM=1` for the module), which makes a missing one a failure. CI
//! sets both, so nothing is skipped there silently.

use crate::envoy::{find_envoy, find_wasm};
use std::path::PathBuf;

/// What a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Envoy,
    EnvoyAndWasm,
}

/// Found tools. `wasm` is `Some` when asked for.
#[derive(Debug, Clone)]
pub struct Tools {
    pub envoy: PathBuf,
    pub wasm: Option<PathBuf>,
}

impl Tools {
    /// The module (asked for with [`Needs::EnvoyAndWasm`]).
    pub fn wasm(&self) -> anyhow::Result<PathBuf> {
        self.wasm
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the wasm module was not asked for"))
    }
}

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// `Ok(Some)`: run. `Ok(None)`: skipped (printed). `Err`: required but missing.
pub fn require(test: &str, needs: Needs) -> anyhow::Result<Option<Tools>> {
    let mut why = Vec::new();
    let envoy = find_envoy().map_err(|e| why.push(format!("{e:#}"))).ok();
    let wasm = match needs {
        Needs::Envoy => None,
        // Canonical: Envoy resolves the module path relative to its own working directory.
        Needs::EnvoyAndWasm => find_wasm()
            .map(|w| w.canonicalize().unwrap_or(w))
            .map_err(|e| why.push(format!("{e:#}")))
            .ok(),
    };
    match envoy {
        Some(envoy) if why.is_empty() => Ok(Some(Tools { envoy, wasm })),
        _ => {
            let why = why.join("; ");
            let required = flag("PEERGUARD_REQUIRE_ENVOY")
                || (needs == Needs::EnvoyAndWasm && flag("PEERGUARD_REQUIRE_WASM"));
            if required {
                anyhow::bail!("{test}: {why}, and PEERGUARD_REQUIRE_ENVOY=1 / PEERGUARD_REQUIRE_WASM=1 make that a failure");
            }
            println!("SKIPPED: {test}: {why}");
            Ok(None)
        }
    }
}
