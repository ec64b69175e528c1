//! The proxy-wasm adapter: a thin layer that turns Envoy's attributes into a
//! [`crate::Request`], asks [`crate::Engine`], and enforces the [`crate::Decision`].
//!
//! One `.wasm` serves both filters; the plugin's `root_id` selects the context type:
//! - `peerguard_http` (any root id not ending in `tcp`): HTTP filter. Denials answer
//!   `403 RBAC: access denied`; transport-level refusals (STRICT + plaintext, DISABLE + mTLS,
//!   untrusted peer) reset the stream instead, as Istio closes those before any HTTP exchange.
//! - `peerguard_tcp` (root id ending in `tcp`): network filter. Decides plaintext
//!   connections at accept (before `tcp_proxy` connects upstream) and TLS ones on their
//!   first data (the handshake is done by then); closes denied connections.
//!
//! Configuration: the plugin configuration bytes are a JSON [`crate::WorkloadPolicy`]. It is
//! parsed and indexed once in `on_configure`; an invalid one is logged and rejected (Envoy
//! refuses it / NACKs it, the last good one stays). With no configuration every request is
//! denied.
//!
//! Per-request cost (measured by `integration/bench`): the roots of one VM with the same
//! configuration bytes share one `Engine` (root.rs); only the attributes some policy can
//! look at are read (`facts::Needs`: source/destination IP, SNI, the full header map, else
//! just `:method`/`:path`/`:authority`); HTTP requests of a keep-alive connection reuse the
//! connection's facts by `connection.id` (`facts::ConnCache`); and the allow counters are
//! summed in the VM and added to Envoy's on the root's 1 s tick (denials count at once).
//!
//! Layout: everything the filter asks of Envoy goes through one trait (`seam::Host`). The
//! configuration lifecycle (`config`), the facts (`facts`, `der`), the checks (`check`) and
//! the counters (`metrics`) are host-independent and tested natively against a fake host
//! (`testing`, `tests`); the wasm-only part is the `Host` implementation over
//! `proxy_wasm::hostcalls` (`host`, every `Status` mapped, never unwrapped) and the
//! proxy-wasm context shells (`root`, `http`, `stream`) that call into the rest.

mod check;
mod config;
mod config_text;
mod decision_log;
pub(crate) mod der;
pub(crate) mod facts;
mod metrics;
mod seam;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hot_path;

#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod root;
#[cfg(target_arch = "wasm32")]
mod stream;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    // A panic aborts the VM (FAIL_CLOSED then refuses traffic); say why before it does.
    std::panic::set_hook(Box::new(|info| {
        seam::Host::log(&host::WasmHost, seam::Level::Critical, &format!("peerguard: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_context_id| Box::<root::Root>::default());
}}
