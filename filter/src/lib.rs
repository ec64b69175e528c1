//! peerguard's Istio security semantics.
//!
//! The crate is layered as types → compile → decide, with no I/O below the wasm adapter:
//! - [`istio`]: the Istio CRDs as users write them, and the parser that reads them (feature
//!   `resources`).
//! - [`schema`]: [`schema::WorkloadPolicy`], the compiled per-workload policy. It is the
//!   filter's configuration schema (JSON), shared by the server and the filter, and the only
//!   copy of it; plus the [`schema::Request`] and [`schema::Decision`] of one check.
//! - [`compile`]: resources + one workload → `WorkloadPolicy` (feature `resources`).
//! - [`decide`]: `WorkloadPolicy` → indexed [`decide::Engine`] → `Decision`. Pure, no clock.
//! - `wasm`: the proxy-wasm adapter, only on `target_arch = "wasm32"`.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod decide;
pub mod hcm;
pub mod identity;
pub mod path;
pub mod readiness;
pub mod schema;

#[cfg(feature = "resources")]
pub mod client;
#[cfg(feature = "resources")]
pub mod compile;
#[cfg(feature = "resources")]
pub mod istio;
#[cfg(feature = "resources")]
pub mod scenario;

// The adapter's host-independent part (`wasm::facts`) is unit-tested natively, and fuzzed
// (feature `fuzzing`), where most of it is unused. Left out when the engine is embedded in
// another wasm module (feature `embedded`, the playground).
#[cfg(any(
    test,
    feature = "fuzzing",
    all(target_arch = "wasm32", not(feature = "embedded"))
))]
#[cfg_attr(
    all(feature = "fuzzing", not(test), not(target_arch = "wasm32")),
    allow(dead_code)
)]
mod wasm;

/// The adapter's input readers, which otherwise exist only inside the `.wasm`, for the fuzz
/// targets in `fuzz/` (feature `fuzzing`; not a stable API).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    /// `connection.peer_certificate` (URL-encoded PEM) → every URI SAN, as the filter reads it.
    pub fn uri_sans_from_url_pem(encoded: &[u8]) -> Result<Vec<String>, String> {
        crate::wasm::der::uri_sans_from_url_pem(encoded)
    }

    /// One DER certificate → every URI SAN, as the filter reads it.
    pub fn uri_sans_from_der(der: &[u8]) -> Result<Vec<String>, String> {
        crate::wasm::der::uri_sans_from_der(der)
    }

    /// Envoy's request header map → the HTTP part of a [`crate::Request`], as the filter builds it.
    pub fn http_request(headers: Vec<(String, String)>) -> crate::schema::HttpRequest {
        crate::wasm::facts::http_request(headers)
    }
}

pub use decide::Engine;
pub use schema::{Decision, Request, WorkloadPolicy};
