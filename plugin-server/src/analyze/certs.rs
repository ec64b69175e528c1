//! PG4xx: certificates (istio-semantics 1.2: Istio's CA lifetimes).
//!
//! - PG401 error: `--workload-cert-ttl` above `--max-workload-cert-ttl` (refused, as Citadel
//!   refuses such a request; `serve` does not start) or zero.
//! - PG402 warning/error: a workload certificate near expiry / expired.
//! - PG403 warning/error: the CA certificate near expiry / expired.

use super::{Finding, Severity};
use crate::ca::duration;
use std::time::Duration;

/// The signing CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCert {
    /// Where it was read (`--ca-cert FILE`, or the server's `/metrics`).
    pub source: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// One workload's current certificate, as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadCert {
    pub namespace: String,
    pub name: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// Everything the certificate checks read, the current time included (the core reads no
/// clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Unix seconds.
    pub now: i64,
    /// How close to expiry is "near".
    pub warn_within: Duration,
    pub workload_cert_ttl: Duration,
    pub max_workload_cert_ttl: Duration,
    pub ca: Option<CaCert>,
    pub workload_certs: Vec<WorkloadCert>,
    /// Where `workload_certs` came from (`--server URL`), for messages.
    pub workload_certs_source: String,
}

impl CertFacts {
    /// `serve`'s defaults and nothing observed.
    pub fn defaults(now: i64) -> Self {
        CertFacts {
            now,
            warn_within: Duration::from_secs(30 * 86400),
            workload_cert_ttl: Duration::from_secs(86400),
            max_workload_cert_ttl: Duration::from_secs(90 * 86400),
            ca: None,
            workload_certs: Vec::new(),
            workload_certs_source: String::new(),
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn left(now: i64, not_after: i64) -> String {
    let s = not_after - now;
    if s <= 0 {
        format!(
            "expired {} ago",
            duration::format(Duration::from_secs((-s) as u64))
        )
    } else {
        format!(
            "expires in {}",
            duration::format(Duration::from_secs(s as u64))
        )
    }
}

pub(super) fn check(f: &CertFacts, out: &mut Vec<Finding>) {
    let ttl = duration::format(f.workload_cert_ttl);
    let max = duration::format(f.max_workload_cert_ttl);
    if f.workload_cert_ttl.is_zero() || f.workload_cert_ttl > f.max_workload_cert_ttl {
        out.push(Finding {
            code: "PG401",
            severity: Severity::Error,
            object: "serve --workload-cert-ttl".into(),
            file: String::new(),
            field: "--workload-cert-ttl".into(),
            message: if f.workload_cert_ttl.is_zero() {
                "a workload certificate TTL of 0 is refused".into()
            } else {
                format!("workload certificate TTL {ttl} is greater than the max allowed TTL {max}: refused, not clamped, as Istio's CA (Citadel's --max-workload-cert-ttl) refuses it; `serve` does not start (istio-semantics 1.2)")
            },
            hint: format!("lower --workload-cert-ttl (Istio's default is 24h) or raise --max-workload-cert-ttl (default 90d) to at least {ttl}"),
        });
    }
    if let Some(ca) = &f.ca {
        let remaining = ca.not_after - f.now;
        let severity = if remaining <= 0 {
            Some(Severity::Error)
        } else if remaining < secs(f.warn_within) {
            Some(Severity::Warning)
        } else {
            None
        };
        if let Some(severity) = severity {
            let cut = if remaining > 0 && remaining < secs(f.workload_cert_ttl) {
                format!("; it is shorter than --workload-cert-ttl {ttl}, so workload certificates are already cut to it")
            } else {
                String::new()
            };
            out.push(Finding {
                code: "PG403",
                severity,
                object: "CA certificate".into(),
                file: ca.source.clone(),
                field: "notAfter".into(),
                message: format!("the signing CA certificate {}{cut}: workload certificates cannot outlive it, and once it expires no workload can complete a handshake (istio-semantics 1.2: lifetimes are cut to the CA chain's)", left(f.now, ca.not_after)),
                hint: "renew the CA (same key, or a new intermediate under the same root) and restart `serve` with it before it expires; distribute a new root in the trust bundle first if the root changes".into(),
            });
        }
    }
    // Serve rotates at 80% of a certificate's life: a certificate past that point was not
    // renewed (its Envoy is disconnected, or the CA cannot sign).
    let rotation = secs(f.workload_cert_ttl) / 5;
    let threshold = rotation.min(secs(f.warn_within));
    for c in &f.workload_certs {
        let remaining = c.not_after - f.now;
        let severity = if remaining <= 0 {
            Severity::Error
        } else if remaining < threshold {
            Severity::Warning
        } else {
            continue;
        };
        out.push(Finding {
            code: "PG402",
            severity,
            object: format!("Workload {}/{}", c.namespace, c.name),
            file: f.workload_certs_source.clone(),
            field: "certificate notAfter".into(),
            message: format!("its workload certificate {} although serve renews at 80% of the lifetime ({ttl}): its Envoy is probably not connected to serve, and its mTLS connections fail once it expires", left(f.now, c.not_after)),
            hint: "check the workload's Envoy (xDS connection to serve, its token) and serve's log for this node".into(),
        });
    }
}

/// The certificate gauges of serve's `/metrics` (names from [`crate::ops`]): the workload
/// certificates and the CA's expiry.
pub fn parse_metrics(text: &str) -> (Vec<WorkloadCert>, Option<i64>) {
    let mut certs = Vec::new();
    let mut ca = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let value = value as i64;
        if series == "peerguard_ca_cert_expiry_timestamp_seconds" && value > 0 {
            ca = Some(value);
            continue;
        }
        let Some(labels) = series
            .strip_prefix("peerguard_workload_cert_expiry_timestamp_seconds{")
            .and_then(|l| l.strip_suffix('}'))
        else {
            continue;
        };
        let mut namespace = None;
        let mut name = None;
        for pair in labels.split(',') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let v = v.trim_matches('"').to_string();
            match k.trim() {
                "namespace" => namespace = Some(v),
                "name" => name = Some(v),
                _ => {}
            }
        }
        if let (Some(namespace), Some(name)) = (namespace, name) {
            certs.push(WorkloadCert {
                namespace,
                name,
                not_after: value,
            });
        }
    }
    (certs, ca)
}
