//! Operations: `/healthz`, `/readyz`, `/metrics` (Prometheus text format, hand-written: a
//! handful of counters and gauges do not need a metrics framework), and shutdown signals.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// `(help, type)` of every metric, so `/metrics` documents itself.
const METRICS: &[(&str, &str, &str)] = &[
    ("peerguard_xds_connected_nodes", "gauge", "Nodes with at least one open xDS stream."),
    ("peerguard_xds_streams", "gauge", "Open xDS streams by service (ads, ecds, sds)."),
    ("peerguard_xds_pushes_total", "counter", "Discovery responses sent, by type."),
    ("peerguard_xds_acks_total", "counter", "Responses accepted by Envoy, by type."),
    ("peerguard_xds_rejects_total", "counter", "Responses rejected by Envoy (NACK), by type."),
    ("peerguard_xds_refused_streams_total", "counter", "Streams refused, by reason (unknown_node, unauthenticated, unsupported_type)."),
    ("peerguard_config_reloads_total", "counter", "Times the configuration was read and compiled."),
    ("peerguard_config_errors", "gauge", "Parse and registry errors in the current configuration."),
    ("peerguard_compile_diagnostics", "gauge", "Compile diagnostics (fail-closed objects etc.) over all workloads."),
    ("peerguard_workloads", "gauge", "Workloads in the registry."),
    ("peerguard_config_unreadable_files", "gauge", "Files with errors that leave no object behind (syntax errors...): served from their last good content, or holding policy updates."),
    ("peerguard_policy_updates_held", "gauge", "1 while policy (ECDS) updates are held because a file was never read successfully."),
    ("peerguard_certs_issued_total", "counter", "Workload certificates issued."),
    ("peerguard_cert_errors_total", "counter", "Workload certificate issuance failures."),
    ("peerguard_workload_cert_expiry_timestamp_seconds", "gauge", "not_after of each workload's current certificate (Unix time)."),
    ("peerguard_ca_cert_expiry_timestamp_seconds", "gauge", "not_after of the signing CA certificate (Unix time)."),
];

#[derive(Default)]
pub struct Metrics {
    /// name → rendered label set → value.
    series: Mutex<BTreeMap<&'static str, BTreeMap<String, f64>>>,
    ready: AtomicBool,
    /// Why the configuration is degraded (unreadable files), for `/readyz`; empty when fine.
    detail: Mutex<Vec<String>>,
}

fn labels(l: &[(&str, &str)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", parts.join(","))
}

impl Metrics {
    pub fn add(&self, name: &'static str, l: &[(&str, &str)], v: f64) {
        if let Ok(mut s) = self.series.lock() {
            *s.entry(name).or_default().entry(labels(l)).or_insert(0.0) += v;
        }
    }

    pub fn inc(&self, name: &'static str, l: &[(&str, &str)]) {
        self.add(name, l, 1.0);
    }

    pub fn set(&self, name: &'static str, l: &[(&str, &str)], v: f64) {
        if let Ok(mut s) = self.series.lock() {
            s.entry(name).or_default().insert(labels(l), v);
        }
    }

    /// Drops all series of a gauge (before re-setting the current ones).
    pub fn clear(&self, name: &'static str) {
        if let Ok(mut s) = self.series.lock() {
            s.remove(name);
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn set_detail(&self, lines: Vec<String>) {
        if let Ok(mut d) = self.detail.lock() {
            *d = lines;
        }
    }

    fn detail(&self) -> String {
        self.detail.lock().map(|d| d.iter().map(|l| format!("{l}\n")).collect()).unwrap_or_default()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(series) = self.series.lock() else { return out };
        for (name, kind, help) in METRICS {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            match series.get(name) {
                Some(s) => {
                    for (l, v) in s {
                        out.push_str(&format!("{name}{l} {v}\n"));
                    }
                }
                // Unlabelled metrics exist from the start.
                None if !needs_labels(name) => {
                    out.push_str(&format!("{name} 0\n"));
                }
                None => {}
            }
        }
        out
    }
}

fn needs_labels(name: &str) -> bool {
    name.starts_with("peerguard_xds_") || name.contains("expiry")
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `shutdown` fires.
pub async fn serve_http(listener: TcpListener, metrics: Arc<Metrics>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((mut sock, _)) = accepted else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // Read the request head (bounded); only the request line matters.
            while n < buf.len() {
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf[n..])).await {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(k)) => {
                        n += k;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path);
            let (status, ctype, body) = match path {
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                "/readyz" => readyz(&metrics),
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                _ => ("404 Not Found", "text/plain", "not found (try /healthz, /readyz, /metrics)\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// 200 once a configuration has been published; the body lists unreadable files, so a
/// degraded configuration is visible where operators look first.
fn readyz(metrics: &Metrics) -> (&'static str, &'static str, String) {
    let detail = metrics.detail();
    match (metrics.is_ready(), detail.is_empty()) {
        (true, true) => ("200 OK", "text/plain", "ready\n".to_string()),
        (true, false) => ("200 OK", "text/plain", format!("ready, degraded:\n{detail}")),
        (false, true) => ("503 Service Unavailable", "text/plain", "not ready: no configuration compiled yet\n".to_string()),
        (false, false) => ("503 Service Unavailable", "text/plain", format!("not ready: no policy published:\n{detail}")),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.inc("peerguard_xds_rejects_total", &[("type", "ecds")]);
        m.inc("peerguard_xds_rejects_total", &[("type", "ecds")]);
        m.set("peerguard_config_errors", &[], 3.0);
        let t = m.render();
        assert!(t.contains("# TYPE peerguard_xds_rejects_total counter\n"));
        assert!(t.contains("peerguard_xds_rejects_total{type=\"ecds\"} 2\n"), "{t}");
        assert!(t.contains("peerguard_config_errors 3\n"));
        assert!(t.contains("peerguard_config_reloads_total 0\n"));
    }
}
