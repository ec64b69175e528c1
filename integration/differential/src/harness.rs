//! Everything this crate takes from the shared end-to-end harness and the product's Envoy
//! vocabulary, in one place.

pub use peerguard_harness::e2e::config::{Bootstrap, FilterModule, ListenerSpec};
pub use peerguard_harness::envoy::{find_envoy, find_wasm, EnvoyProcess, TempDir};
pub use peerguard_harness::pki::{CaChoice, ClientCertSpec, Issued, TestPki, SERVER_NAME};
pub use peerguard_harness::tls::mesh_client_config as client_config;
pub use peerguard_harness::upstream::{
    spawn_http_app, spawn_tcp_echo, APP_MARKER, APP_MARKER_VALUE,
};
pub use peerguard_server::envoy_config::{AppProtocol, PathNormalization};

/// The names the shared listener gives peerguard's filters (HTTP and network); the RBAC
/// side replaces exactly these entries.
pub fn is_peerguard_filter(name: &serde_json::Value) -> bool {
    use peerguard_server::envoy_config::listener::{HTTP_FILTER, TCP_FILTER, WASM_FILTER};
    name == WASM_FILTER || name == HTTP_FILTER || name == TCP_FILTER
}

/// The HTTP connection manager's filter name in the shared listener.
pub const HCM_NAME: &str = "envoy.filters.network.http_connection_manager";
