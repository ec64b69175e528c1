//! The real proxy behind the [`Host`] seam: every hostcall, with its `Status` mapped to a
//! value or an error string (never unwrapped: the SDK's own wrappers panic on unexpected
//! statuses).

use super::seam::{Host, HostError, Level};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};

pub(crate) struct WasmHost;

fn to_wasm(level: Level) -> LogLevel {
    match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
        Level::Critical => LogLevel::Critical,
    }
}

/// Values that are not UTF-8 (legal obs-text in HTTP/1) are read lossily instead of
/// panicking in the SDK's string conversion: such a value cannot equal a policy string.
fn lossy(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl Host for WasmHost {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_property(path.to_vec()).map_err(|status| HostError {
            path: path.join("."),
            status: format!("{status:?}"),
        })
    }

    fn request_headers(&self) -> Result<Vec<(String, String)>, String> {
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
            .map(|pairs| pairs.into_iter().map(|(k, v)| (k, lossy(v))).collect())
            .map_err(|s| format!("reading request headers: host returned {s:?}"))
    }

    fn request_header(&self, name: &str) -> Result<String, String> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .map(|v| v.map(lossy).unwrap_or_default())
            .map_err(|s| format!("reading request header {name}: host returned {s:?}"))
    }

    fn plugin_configuration_part(&self, start: usize, max: usize) -> Result<Vec<u8>, String> {
        hostcalls::get_buffer(BufferType::PluginConfiguration, start, max)
            .map(Option::unwrap_or_default)
            .map_err(|s| {
                format!("reading the plugin configuration at byte {start}: host returned {s:?}")
            })
    }

    fn root_id(&self) -> String {
        match hostcalls::get_property(vec!["plugin_root_id"]) {
            Ok(Some(b)) => lossy(b),
            _ => String::new(),
        }
    }

    fn log_level(&self) -> Level {
        match hostcalls::get_log_level() {
            Ok(LogLevel::Trace) => Level::Trace,
            Ok(LogLevel::Debug) => Level::Debug,
            Ok(LogLevel::Warn) => Level::Warn,
            Ok(LogLevel::Error) => Level::Error,
            Ok(LogLevel::Critical) => Level::Critical,
            Ok(LogLevel::Info) | Err(_) => Level::Info,
        }
    }

    fn log(&self, level: Level, msg: &str) {
        let _ = hostcalls::log(to_wasm(level), msg);
    }

    fn define_counter(&self, name: &str) -> Result<u32, String> {
        hostcalls::define_metric(MetricType::Counter, name).map_err(|s| format!("{s:?}"))
    }

    fn increment(&self, id: u32, by: i64) {
        let _ = hostcalls::increment_metric(id, by);
    }
}

/// Whether the downstream connection has no TLS at all (known at accept, before any
/// handshake): `connection.tls_version` exists (possibly empty) on every TLS connection and
/// never on a plaintext one. Errors answer `false`: the caller then waits for the handshake.
pub(crate) fn is_plaintext() -> bool {
    matches!(
        hostcalls::get_property(vec!["connection", "tls_version"]),
        Ok(None)
    )
}

/// Answers `403 RBAC: access denied`, or resets the stream when that fails.
pub(crate) fn deny_http() {
    if let Err(s) = hostcalls::send_http_response(403, vec![], Some(b"RBAC: access denied")) {
        WasmHost.log(
            Level::Error,
            &format!("peerguard: 403 not sent ({s:?}); resetting"),
        );
        let _ = hostcalls::reset_http_request();
    }
}

/// Resets the stream (transport-level refusal), or answers 403 when that fails.
pub(crate) fn refuse_http() {
    if let Err(s) = hostcalls::reset_http_request() {
        WasmHost.log(
            Level::Error,
            &format!("peerguard: reset failed ({s:?}); answering 403"),
        );
        let _ = hostcalls::send_http_response(403, vec![], Some(b"RBAC: access denied"));
    }
}

pub(crate) fn close_downstream() {
    if let Err(s) = hostcalls::close_downstream() {
        WasmHost.log(
            Level::Error,
            &format!("peerguard: close_downstream failed: {s:?}"),
        );
    }
}
