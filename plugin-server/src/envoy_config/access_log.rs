//! The access-log format `peerguard preview` reads besides the filter's decision log: an
//! Envoy `json_format` file access log with the command operators that carry what a decision
//! depends on. [`attach`] adds it to every connection manager and `tcp_proxy` of a listener;
//! [`parse`] reads one of its lines back as a `DecisionLine` (without a decision: the access
//! log does not know which filter answered).
//!
//! Fields (one JSON object per line):
//!
//! | key | command operator | meaning |
//! |---|---|---|
//! | `peerguard_access_log` | literal `1` | marks the format (and its version) |
//! | `workload` | literal `namespace/name` | the workload whose listener logged it |
//! | `protocol` | `%PROTOCOL%` | `HTTP/1.1`, `HTTP/2`; absent for TCP |
//! | `method`, `path`, `authority` | `%REQ(:METHOD)%`, `%REQ(:PATH)%`, `%REQ(:AUTHORITY)%` | the request line after the connection manager (path normalized) |
//! | `source` | `%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%` | the direct peer |
//! | `remote` | `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%` | Envoy's remote address (X-Forwarded-For aware), for people |
//! | `local`, `local_port` | `%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%`, `%DOWNSTREAM_LOCAL_PORT%` | destination address and workload port |
//! | `tls` | `%DOWNSTREAM_TLS_VERSION%` | present: an mTLS connection (the listener requires a client certificate) |
//! | `peer_uri_san` | `%DOWNSTREAM_PEER_URI_SAN%` | the client certificate's URI SANs, comma-separated |
//! | `sni` | `%REQUESTED_SERVER_NAME%` | TLS SNI |
//! | `response_code` | `%RESPONSE_CODE%` | for people |
//! | `headers.<name>` | `%REQ(<name>)%` | each header the policies read (configure the same names as they read) |
//!
//! An unavailable value is `null` (or `-`, or missing) and reads as absent. Limits: `%REQ()%`
//! gives a header's first value only (a policy matching a later value of a repeated header
//! replays differently; the decision log records every value), and a header whose value is
//! literally `-` reads as absent.

use peerguard_filter::schema::{DecisionLine, HttpVersion, LineHttp, DECISION_LINE_VERSION};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The marker key; its value is the format version.
pub const MARKER: &str = "peerguard_access_log";
pub const VERSION: &str = "1";

/// The `json_format` of the access log for `workload` (`namespace/name`), recording the
/// request headers `headers` (the names the workload's policies read).
pub fn json_format(workload: &str, headers: &[String]) -> Value {
    let hdrs: Map<String, Value> = headers
        .iter()
        .map(|h| {
            let h = h.to_ascii_lowercase();
            let op = format!("%REQ({h})%");
            (h, Value::String(op))
        })
        .collect();
    json!({
        MARKER: VERSION,
        "workload": workload,
        "protocol": "%PROTOCOL%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "authority": "%REQ(:AUTHORITY)%",
        "source": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%",
        "remote": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "local": "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%",
        "local_port": "%DOWNSTREAM_LOCAL_PORT%",
        "tls": "%DOWNSTREAM_TLS_VERSION%",
        "peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
        "sni": "%REQUESTED_SERVER_NAME%",
        "response_code": "%RESPONSE_CODE%",
        "headers": hdrs,
    })
}

/// One `access_log` entry: Envoy's file access logger writing [`json_format`] to `path`.
pub fn file_access_log(path: &str, workload: &str, headers: &[String]) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {"json_format": json_format(workload, headers)},
        },
    })
}

/// Adds [`file_access_log`] to every HTTP connection manager and `tcp_proxy` of `listener`
/// (a listener as [`super::Inbound::listener`] writes it).
pub fn attach(listener: &mut Value, path: &str, workload: &str, headers: &[String]) {
    let entry = file_access_log(path, workload, headers);
    let Some(chains) = listener
        .get_mut("filter_chains")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for chain in chains {
        let Some(filters) = chain.get_mut("filters").and_then(Value::as_array_mut) else {
            continue;
        };
        for f in filters {
            let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
            if matches!(
                name,
                "envoy.filters.network.http_connection_manager" | "envoy.filters.network.tcp_proxy"
            ) {
                if let Some(tc) = f.get_mut("typed_config").and_then(Value::as_object_mut) {
                    tc.insert("access_log".into(), json!([entry.clone()]));
                }
            }
        }
    }
}

/// Whether a JSON object is a line of this format.
pub fn is_access_log(v: &Value) -> bool {
    v.get(MARKER).is_some()
}

/// A value Envoy recorded, or `None` when it was unavailable.
fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if s.is_empty() || s == "-" => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One access-log line → the request it records (no decision). Errors name the field.
pub fn parse(v: &Value) -> Result<DecisionLine, String> {
    match text(v, MARKER).as_deref() {
        Some(VERSION) => {}
        other => {
            return Err(format!(
                "{MARKER}: version {} (this peerguard reads version {VERSION})",
                other.unwrap_or("<none>")
            ))
        }
    }
    let workload = text(v, "workload").ok_or("workload: missing")?;
    let port = text(v, "local_port")
        .ok_or("local_port: missing")?
        .parse::<u16>()
        .map_err(|e| format!("local_port: {e}"))?;
    let ip = |key: &str| -> Result<Option<IpAddr>, String> {
        text(v, key)
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|e| format!("{key}: {s:?}: {e}"))
            })
            .transpose()
    };
    let peer = text(v, "tls").map(|_| {
        text(v, "peer_uri_san")
            .map(|s| {
                s.split(',')
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    });
    let http = match text(v, "method") {
        None => None,
        Some(method) => {
            let mut headers = BTreeMap::new();
            if let Some(Value::Object(h)) = v.get("headers") {
                for name in h.keys() {
                    let values = text(&v["headers"], name).into_iter().collect();
                    headers.insert(name.to_ascii_lowercase(), values);
                }
            }
            Some(LineHttp {
                method,
                path: text(v, "path").ok_or("path: missing")?,
                host: text(v, "authority").unwrap_or_default(),
                version: match text(v, "protocol").as_deref() {
                    Some("HTTP/1.1") => Some(HttpVersion::Http11),
                    Some("HTTP/2") => Some(HttpVersion::Http2),
                    _ => None,
                },
                headers,
            })
        }
    };
    Ok(DecisionLine {
        v: DECISION_LINE_VERSION,
        workload,
        port,
        peer,
        src: ip("source")?,
        remote: ip("remote")?,
        dst: ip("local")?,
        sni: text(v, "sni"),
        http,
        allowed: None,
        reason: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_lines() {
        let f = json_format("foo/httpbin", &["X-Token".into()]);
        assert_eq!(f["headers"]["x-token"], "%REQ(x-token)%");
        let line = json!({
            "peerguard_access_log": "1", "workload": "foo/httpbin", "protocol": "HTTP/1.1",
            "method": "GET", "path": "/ip", "authority": "httpbin.foo:8000",
            "source": "127.0.0.9", "remote": "127.0.0.9", "local": "127.0.1.1",
            "local_port": 8000, "tls": "TLSv1.3",
            "peer_uri_san": "spiffe://cluster.local/ns/foo/sa/sleep", "sni": null,
            "response_code": 200, "headers": {"x-token": "a", "x-other": null},
        });
        let l = parse(&line).unwrap();
        assert_eq!(l.workload, "foo/httpbin");
        assert_eq!(l.port, 8000);
        assert_eq!(
            l.peer.as_deref(),
            Some(&["spiffe://cluster.local/ns/foo/sa/sleep".to_string()][..])
        );
        let h = l.http.as_ref().unwrap();
        assert_eq!(h.headers["x-token"], ["a"]);
        assert!(h.headers["x-other"].is_empty(), "recorded as absent");
        assert!(l.allowed.is_none());
        let tcp = json!({"peerguard_access_log": "1", "workload": "foo/db", "protocol": null,
            "method": null, "source": "127.0.0.9", "local_port": "3306", "tls": null});
        let t = parse(&tcp).unwrap();
        assert!(t.http.is_none() && t.peer.is_none());
        assert!(parse(&json!({"peerguard_access_log": "2"}))
            .unwrap_err()
            .contains("version 2"));
        assert!(
            parse(&json!({"peerguard_access_log": "1", "workload": "a/b"}))
                .unwrap_err()
                .contains("local_port")
        );
        let mut listener = json!({"filter_chains": [{"filters": [
            {"name": "envoy.filters.network.wasm"},
            {"name": "envoy.filters.network.tcp_proxy", "typed_config": {}},
        ]}]});
        attach(&mut listener, "/tmp/a.log", "foo/db", &[]);
        assert_eq!(
            listener["filter_chains"][0]["filters"][1]["typed_config"]["access_log"][0]
                ["typed_config"]["path"],
            "/tmp/a.log"
        );
    }
}
