//! Every hostcall the adapter makes, with its `Status` mapped to a value or a log line.

use super::facts::{Host, HostError, Needs};
use crate::schema::HttpRequest;
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

/// The real proxy behind the [`Host`] seam.
pub(crate) struct WasmHost;

impl Host for WasmHost {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_property(path.to_vec()).map_err(|status| HostError {
            path: path.join("."),
            status: format!("{status:?}"),
        })
    }
}

/// Whether the downstream connection has no TLS at all (known at accept, before any
/// handshake). Errors answer `false`: the caller then waits for the handshake.
pub(crate) fn is_plaintext() -> bool {
    matches!(hostcalls::get_property(vec!["connection", "tls_version"]), Ok(None))
}

/// Logging must never fail a request: a lost log line is better than a dead VM.
pub(crate) fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

/// Envoy's current log level for this plugin. Unknown → `Info`.
pub(crate) fn log_level() -> LogLevel {
    hostcalls::get_log_level().unwrap_or(LogLevel::Info)
}

/// Whether a message at `level` would be printed when the proxy is at `current`.
pub(crate) fn enabled(current: LogLevel, level: LogLevel) -> bool {
    (level as u32) >= (current as u32)
}

/// The request headers, every value of a repeated header kept. Values that are not UTF-8
/// (legal obs-text in HTTP/1) are read lossily instead of panicking in the SDK's
/// string conversion: such a value cannot equal a policy string either way.
pub(crate) fn request_headers() -> Result<Vec<(String, String)>, String> {
    hostcalls::get_map_bytes(proxy_wasm::types::MapType::HttpRequestHeaders)
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| {
                    let v = String::from_utf8(v)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    (k, v)
                })
                .collect()
        })
        .map_err(|s| format!("reading request headers: host returned {s:?}"))
}

/// One request header (first value), lossily decoded like [`request_headers`]; absent → empty.
/// Only used for the pseudo-headers, which are never repeated.
pub(crate) fn request_header(name: &str) -> Result<String, String> {
    hostcalls::get_map_value_bytes(proxy_wasm::types::MapType::HttpRequestHeaders, name)
        .map(|v| {
            v.map(|v| {
                String::from_utf8(v)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
            })
            .unwrap_or_default()
        })
        .map_err(|s| format!("reading request header {name}: host returned {s:?}"))
}

/// The HTTP part of a request, as much as `needs` asks for: the full header map when a
/// policy looks at headers; else `:method`, `:path` and `:authority` when an operation
/// names them (three small reads instead of copying every header into the VM); else
/// nothing (empty values no rule of this configuration looks at).
pub(crate) fn http_request(needs: Needs) -> Result<HttpRequest, String> {
    if needs.headers {
        return request_headers().map(super::facts::http_request);
    }
    if !needs.request_line {
        return Ok(HttpRequest {
            method: String::new(),
            path: String::new(),
            host: String::new(),
            headers: Vec::new(),
            version: Default::default(),
        });
    }
    Ok(HttpRequest {
        method: request_header(":method")?,
        path: request_header(":path")?,
        host: request_header(":authority")?,
        headers: Vec::new(),
        version: Default::default(),
    })
}

pub(crate) fn plugin_configuration() -> Result<Option<Vec<u8>>, String> {
    hostcalls::get_buffer(
        proxy_wasm::types::BufferType::PluginConfiguration,
        0,
        usize::MAX,
    )
    .map_err(|s| format!("reading the plugin configuration: host returned {s:?}"))
}

pub(crate) fn root_id() -> String {
    match hostcalls::get_property(vec!["plugin_root_id"]) {
        Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    }
}
