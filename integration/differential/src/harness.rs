//! Everything this crate takes from the shared end-to-end harness, in one place: when the
//! harness moves (plugin-server `e2e` → an integration crate) or the Envoy configuration is
//! consolidated, only this file changes.

pub use peerguard_server::e2e::client::client_config;
pub use peerguard_server::e2e::config::{Bootstrap, FilterModule, ListenerProto, ListenerSpec};
pub use peerguard_server::e2e::envoy::{find_envoy, find_wasm, EnvoyProcess, TempDir};
pub use peerguard_server::e2e::pki::{CaChoice, ClientCertSpec, Issued, TestPki, SERVER_NAME};
pub use peerguard_server::e2e::upstream::{
    spawn_http_app, spawn_tcp_echo, APP_MARKER, APP_MARKER_VALUE,
};

/// The name the shared listener gives peerguard's filter (HTTP and network); the RBAC side
/// replaces exactly these entries.
pub const PEERGUARD_FILTER_NAME: &str = "peerguard";
/// The HTTP connection manager's filter name in the shared listener.
pub const HCM_NAME: &str = "envoy.filters.network.http_connection_manager";
