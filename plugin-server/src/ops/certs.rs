//! Read-only certificate endpoints of the ops server, for `peerguard certs --server`:
//!
//! - `/certs/<namespace>/<name>`: the chain `serve` currently issues to that workload, PEM
//!   (leaf first, then any intermediate); 404 for a workload without a certificate;
//! - `/trust-bundle`: the roots it distributes as the SDS secret `ROOTCA`, PEM.
//!
//! Only public parts are ever stored here (the builder hands over `chain_pem`, never the key).
//! What it reveals: certificates every peer of the workload already receives in each handshake,
//! and which workloads exist, which `/metrics` already shows
//! (`peerguard_workload_cert_expiry_timestamp_seconds{namespace,name}`). The ops server
//! listens on localhost by default; where it is exposed for scraping, these endpoints are
//! exposed with it, and they say nothing a scraper cannot already see or a peer receive.

use crate::registry::WorkloadKey;
use std::collections::BTreeMap;
use std::sync::RwLock;

#[derive(Debug, Default)]
pub struct IssuedCerts {
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    chains: BTreeMap<(String, String), String>,
    bundle: String,
}

pub const PEM: &str = "application/x-pem-file";

impl IssuedCerts {
    /// Replaces what is served: each workload's current chain, and the trust bundle.
    pub fn publish<'a>(
        &self,
        chains: impl IntoIterator<Item = (&'a WorkloadKey, &'a str)>,
        bundle: &str,
    ) {
        let chains = chains
            .into_iter()
            .map(|(k, pem)| ((k.namespace.clone(), k.name.clone()), pem.to_string()))
            .collect();
        if let Ok(mut s) = self.state.write() {
            *s = State {
                chains,
                bundle: bundle.to_string(),
            };
        }
    }

    /// The trust bundle only (at start, before any workload certificate exists).
    pub fn publish_bundle(&self, bundle: &str) {
        if let Ok(mut s) = self.state.write() {
            s.bundle = bundle.to_string();
        }
    }

    /// `(status, content type, body)` for a path of this module, `None` for any other path.
    pub fn respond(&self, path: &str) -> Option<(&'static str, &'static str, String)> {
        let state = self.state.read().ok();
        if path == "/trust-bundle" {
            return Some(match state.as_ref().map(|s| s.bundle.clone()) {
                Some(b) if !b.is_empty() => ("200 OK", PEM, b),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "no trust bundle yet\n".into(),
                ),
            });
        }
        let rest = path.strip_prefix("/certs/")?;
        let (ns, name) = rest.split_once('/')?;
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        let chain = state.and_then(|s| s.chains.get(&(ns.to_string(), name.to_string())).cloned());
        Some(match chain {
            Some(pem) => ("200 OK", PEM, pem),
            None => (
                "404 Not Found",
                "text/plain",
                format!("no certificate issued to workload {ns}/{name}\n"),
            ),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serves_chains_and_bundle_and_404s_the_rest() {
        let c = IssuedCerts::default();
        assert_eq!(c.respond("/trust-bundle").unwrap().0, "404 Not Found");
        let k = WorkloadKey {
            namespace: "foo".into(),
            name: "httpbin".into(),
        };
        c.publish([(&k, "LEAF")], "ROOT");
        assert_eq!(
            c.respond("/certs/foo/httpbin").unwrap(),
            ("200 OK", PEM, "LEAF".to_string())
        );
        assert_eq!(c.respond("/trust-bundle").unwrap().2, "ROOT");
        assert_eq!(c.respond("/certs/foo/sleep").unwrap().0, "404 Not Found");
        assert!(c.respond("/certs/foo").is_none());
        assert!(c.respond("/certs/foo/httpbin/x").is_none());
        assert!(c.respond("/metrics").is_none());
        c.publish([], "ROOT");
        assert_eq!(c.respond("/certs/foo/httpbin").unwrap().0, "404 Not Found");
    }
}
