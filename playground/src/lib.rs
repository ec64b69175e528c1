//! peerguard's policy playground: the engine behind a static web page.
//!
//! The page calls three functions, each JSON text in and JSON text out, compiled to
//! wasm32 with `wasm-bindgen` (`scripts/build-playground.sh`):
//! - `evaluate(state)`: parse the editor's resources, compile them for the workload, decide
//!   every request ([`evaluate`]);
//! - `import_scenario(text)` / `export_scenario(state)`: the conformance scenario format
//!   ([`scenario_io`]).
//!
//! Natively the crate also carries the built page ([`assets`]) for `peerguard playground`.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod evaluate;
pub mod locate;
pub mod scenario_io;

#[cfg(not(target_arch = "wasm32"))]
pub mod assets;

use serde_json::json;

/// `evaluate` for the page: a JSON [`evaluate::State`] in, a JSON [`evaluate::Evaluation`] out
/// (`{"input_error": ...}` when the state cannot be read).
pub fn evaluate_json(state: &str) -> String {
    let out = match serde_json::from_str::<evaluate::State>(state) {
        Ok(s) => serde_json::to_value(evaluate::evaluate(&s)),
        Err(e) => Ok(json!({ "input_error": format!("page state: {e}") })),
    };
    out.map(|v| v.to_string())
        .unwrap_or_else(|e| json!({ "input_error": e.to_string() }).to_string())
}

/// `{"state": State}` or `{"error": "..."}`.
pub fn import_json(text: &str, file: &str) -> String {
    match scenario_io::import(text, file) {
        Ok(s) => json!({ "state": s }).to_string(),
        Err(e) => json!({ "error": e }).to_string(),
    }
}

/// `{"yaml": "..."}` or `{"error": "..."}`.
pub fn export_json(state: &str) -> String {
    let r = serde_json::from_str::<evaluate::State>(state)
        .map_err(|e| format!("page state: {e}"))
        .and_then(|s| scenario_io::export(&s));
    match r {
        Ok(y) => json!({ "yaml": y }).to_string(),
        Err(e) => json!({ "error": e }).to_string(),
    }
}

#[cfg(target_arch = "wasm32")]
mod bindings {
    use wasm_bindgen::prelude::wasm_bindgen;

    #[wasm_bindgen]
    pub fn evaluate(state: &str) -> String {
        super::evaluate_json(state)
    }

    #[wasm_bindgen]
    pub fn import_scenario(text: &str, file: &str) -> String {
        super::import_json(text, file)
    }

    #[wasm_bindgen]
    pub fn export_scenario(state: &str) -> String {
        super::export_json(state)
    }

    /// The library's version, shown in the page's footer.
    #[wasm_bindgen]
    pub fn engine_version() -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }
}

#[cfg(test)]
mod tests;
