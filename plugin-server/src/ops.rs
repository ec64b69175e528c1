//! Operations: `/healthz`, `/readyz`, `/metrics` (Prometheus text format, hand-written: a
//! handful of counters and gauges do not need a metrics framework), the read-only certificate
//! endpoints of [`certs`], and shutdown signals.

pub mod certs;

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
    ("peerguard_native_rbac_slots", "gauge", "Filter slots (HTTP and TCP, over all workloads) holding Envoy's native RBAC instead of the wasm filter (--enforcement)."),
    ("peerguard_config_unreadable_files", "gauge", "Files with errors that leave no object behind (syntax errors...): served from their last good content, or holding policy updates."),
    ("peerguard_policy_updates_held", "gauge", "1 while policy (ECDS) updates are held because a file was never read successfully."),
    ("peerguard_istio_wasmplugins", "gauge", "WasmPlugins peerguard keeps in the cluster (--istio-wasmplugins)."),
    ("peerguard_istio_wasmplugin_writes_total", "counter", "WasmPlugin writes by this replica, by op (apply, delete)."),
    ("peerguard_istio_wasmplugin_errors_total", "counter", "Failed WasmPlugin reconciles (retried after 2 s, doubling up to 60 s)."),
    ("peerguard_ready", "gauge", "1 when /readyz answers 200."),
    ("peerguard_not_ready", "gauge", "1 for each reason /readyz answers 503 (config_dir_missing, policy_updates_held, no_workloads, not_compiled)."),
    ("peerguard_config_dir_missing", "gauge", "1 while the config directory is missing or not a directory (its last content read is served)."),
    ("peerguard_config_files_pending", "gauge", "Files not read because they are being written (their last content read stands in)."),
    ("peerguard_config_budget_nodes", "gauge", "YAML/JSON nodes the config files expand to, aliases included (see --max-config-nodes)."),
    ("peerguard_config_budget_text_bytes", "gauge", "Bytes of text the config files expand to, aliases included (see --max-config-text-bytes)."),
    ("peerguard_config_over_budget_files", "gauge", "Files over the per-file or the total budget (served from their last good content, or holding policy updates)."),
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
    readiness: Mutex<Readiness>,
}

/// What `/readyz` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A configuration has been compiled and published at least once.
    pub published: bool,
    /// Why the server is not ready (503): `(metric label, line for humans)`.
    pub not_ready: Vec<(&'static str, String)>,
    /// What is degraded without making it unready (200), one line each.
    pub degraded: Vec<String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.published && self.not_ready.is_empty()
    }
}

fn labels(l: &[(&str, &str)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = l
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
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

    /// Sets what `/readyz` answers, and the `peerguard_ready` / `peerguard_not_ready` gauges.
    pub fn set_readiness(&self, r: Readiness) {
        self.ready.store(r.is_ready(), Ordering::SeqCst);
        self.set("peerguard_ready", &[], if r.is_ready() { 1.0 } else { 0.0 });
        self.clear("peerguard_not_ready");
        if !r.published {
            self.set("peerguard_not_ready", &[("reason", "not_compiled")], 1.0);
        }
        for (label, _) in &r.not_ready {
            self.set("peerguard_not_ready", &[("reason", label)], 1.0);
        }
        if let Ok(mut cur) = self.readiness.lock() {
            *cur = r;
        }
    }

    fn readiness(&self) -> Readiness {
        self.readiness.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(series) = self.series.lock() else {
            return out;
        };
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
    name.starts_with("peerguard_xds_")
        || name.contains("expiry")
        || name == "peerguard_not_ready"
        // Only with --istio-wasmplugins.
        || name.starts_with("peerguard_istio_")
}

/// Serves `/healthz`, `/readyz`, `/metrics` and the certificate endpoints until `shutdown`
/// fires.
pub async fn serve_http(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    issued: Arc<certs::IssuedCerts>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((mut sock, _)) = accepted else {
            continue;
        };
        let metrics = metrics.clone();
        let issued = issued.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // Read the request head (bounded); only the request line matters.
            while n < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf[n..]),
                )
                .await
                {
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
                p => issued.respond(p).unwrap_or((
                    "404 Not Found",
                    "text/plain",
                    "not found (try /healthz, /readyz, /metrics, /trust-bundle, /certs/<namespace>/<name>)\n"
                        .to_string(),
                )),
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

/// 200 once a configuration has been published and nothing makes it unready (the config
/// directory missing, policy updates held, every workload gone); the body says why not, and
/// lists what is degraded (unreadable files, files being written), so a degraded
/// configuration is visible where operators look first.
fn readyz(metrics: &Metrics) -> (&'static str, &'static str, String) {
    let r = metrics.readiness();
    let lines = |l: &[String]| l.iter().map(|l| format!("{l}\n")).collect::<String>();
    let degraded = lines(&r.degraded);
    let reasons: Vec<String> = r.not_ready.iter().map(|(_, why)| why.clone()).collect();
    if r.is_ready() {
        return if degraded.is_empty() {
            ("200 OK", "text/plain", "ready\n".to_string())
        } else {
            (
                "200 OK",
                "text/plain",
                format!("ready, degraded:\n{degraded}"),
            )
        };
    }
    let head = if r.published {
        "not ready:\n"
    } else {
        "not ready: no policy published yet\n"
    };
    (
        "503 Service Unavailable",
        "text/plain",
        format!("{head}{}{degraded}", lines(&reasons)),
    )
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
        assert!(
            t.contains("peerguard_xds_rejects_total{type=\"ecds\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("peerguard_config_errors 3\n"));
        assert!(t.contains("peerguard_config_reloads_total 0\n"));
    }

    #[test]
    fn readiness_is_not_sticky() {
        let m = Metrics::default();
        assert_eq!(readyz(&m).0, "503 Service Unavailable");
        m.set_readiness(Readiness {
            published: true,
            ..Default::default()
        });
        assert_eq!(readyz(&m), ("200 OK", "text/plain", "ready\n".to_string()));
        assert!(m.render().contains("peerguard_ready 1\n"));
        m.set_readiness(Readiness {
            published: true,
            not_ready: vec![("no_workloads", "no workloads".into())],
            degraded: vec!["a.yaml: x".into()],
        });
        let (status, _, body) = readyz(&m);
        assert_eq!(status, "503 Service Unavailable");
        assert_eq!(body, "not ready:\nno workloads\na.yaml: x\n");
        let t = m.render();
        assert!(
            t.contains("peerguard_ready 0\n")
                && t.contains("peerguard_not_ready{reason=\"no_workloads\"} 1\n"),
            "{t}"
        );
        m.set_readiness(Readiness {
            published: true,
            degraded: vec!["a.yaml: x".into()],
            ..Default::default()
        });
        assert_eq!(readyz(&m).2, "ready, degraded:\na.yaml: x\n");
        assert!(!m.render().contains("peerguard_not_ready{"));
    }
}
