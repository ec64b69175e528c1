//! The seam between the adapter and the proxy: everything the filter asks of Envoy, as one
//! trait. The wasm build implements it with `proxy_wasm::hostcalls` (`host.rs`); native
//! tests implement it with a fake (`testing.rs`), so the configuration lifecycle, the
//! facts, the checks and the counters all run under `cargo test`.

/// Envoy's log levels (proxy-wasm's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

/// Whether a message at `level` is printed when the proxy is at `current`.
pub(crate) fn enabled(current: Level, level: Level) -> bool {
    level >= current
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reading property {path}: host returned {status}")]
pub(crate) struct HostError {
    pub path: String,
    pub status: String,
}

pub(crate) trait Host {
    /// An Envoy attribute (`["connection", "mtls"]`), in Envoy's serialised form: strings raw,
    /// ints 8 bytes little-endian, bools 1 byte. `Ok(None)`: the attribute does not exist.
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError>;
    /// Every request header, a repeated header once per value, pseudo-headers included.
    fn request_headers(&self) -> Result<Vec<(String, String)>, String>;
    /// The first value of one request header; absent → empty.
    fn request_header(&self, name: &str) -> Result<String, String>;
    /// Up to `max` bytes of the plugin configuration from byte `start` (empty when there
    /// are none).
    fn plugin_configuration_part(&self, start: usize, max: usize) -> Result<Vec<u8>, String>;
    /// `plugin_root_id` (empty when unreadable).
    fn root_id(&self) -> String;
    fn log_level(&self) -> Level;
    /// Never fails: a lost log line is better than a failed request.
    fn log(&self, level: Level, msg: &str);
    fn define_counter(&self, name: &str) -> Result<u32, String>;
    /// Never fails (a lost increment is logged by nobody: counting must not deny).
    fn increment(&self, id: u32, by: i64);
}
