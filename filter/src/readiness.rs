//! STRICT-readiness counters: the name layout the filter writes and `peerguard readiness`
//! reads (one definition for both sides).
//!
//! Under PERMISSIVE (and dry-run STRICT) the filter counts every connection once, by
//! destination (workload) port, transport and source: the source address for plaintext,
//! the principal (first `spiffe://` URI SAN, without the scheme) for mTLS. One counter per
//! series, named
//!
//! ```text
//! wasmcustom.peerguard_connections.port.<port>.tls.<plaintext|mtls>.source.<source>
//! ```
//!
//! The source is last, so it may contain dots and slashes. Envoy's Prometheus output turns
//! it into `peerguard_connections{port="80",tls="plaintext",source="127.0.3.10"}` with the
//! tag extractors of [`STATS_TAGS`] in the bootstrap's `stats_config` (peerguard's
//! generated bootstraps carry them).
//!
//! Cardinality is bounded per VM (one per worker thread): at most [`MAX_SOURCES`] distinct
//! sources per port and transport, the rest counted under the source [`OTHER`]; at most
//! [`MAX_PORTS`] distinct ports, the rest under port 0.

/// Counter name (after Envoy's `wasmcustom.` prefix) before the tags.
pub const CONNECTIONS: &str = "peerguard_connections";
/// Plaintext connections a dry-run STRICT would have refused (accepted).
pub const DRY_RUN_REFUSED: &str = "peerguard_plaintext_dry_run_refused";
/// peerguard's annotation on a PeerAuthentication: its STRICT (whole object, its
/// `portLevelMtls` included) is counted and logged instead of enforced. Istio has
/// `istio.io/dry-run` for AuthorizationPolicy only, and ignores this one.
pub const MTLS_DRY_RUN_ANNOTATION: &str = "peerguard.dev/dry-run";
/// Envoy's namespace for metrics a wasm module defines.
pub const ENVOY_PREFIX: &str = "wasmcustom.";
/// Distinct sources per port and transport, per VM, before [`OTHER`].
pub const MAX_SOURCES: usize = 32;
/// Distinct ports per VM before port 0.
pub const MAX_PORTS: usize = 64;
/// The source of connections beyond [`MAX_SOURCES`] (or without a readable source).
pub const OTHER: &str = "other";

/// How a connection arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tls {
    Plaintext,
    Mtls,
}

impl Tls {
    pub fn as_str(self) -> &'static str {
        match self {
            Tls::Plaintext => "plaintext",
            Tls::Mtls => "mtls",
        }
    }
}

/// One counter: connections to `port` over `tls` from `source`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Series {
    pub port: u16,
    pub tls: Tls,
    pub source: String,
}

impl Series {
    /// The counter name the filter defines (Envoy shows it with [`ENVOY_PREFIX`]).
    pub fn name(&self) -> String {
        format!(
            "{CONNECTIONS}.port.{}.tls.{}.source.{}",
            self.port,
            self.tls.as_str(),
            self.source
        )
    }

    /// Reads a name as Envoy's admin `/stats` shows it (with or without `wasmcustom.`).
    pub fn parse(stat: &str) -> Option<Series> {
        let rest = stat.strip_prefix(ENVOY_PREFIX).unwrap_or(stat);
        let rest = rest.strip_prefix(CONNECTIONS)?.strip_prefix(".port.")?;
        let (port, rest) = rest.split_once(".tls.")?;
        let (tls, source) = rest.split_once(".source.")?;
        Some(Series {
            port: port.parse().ok()?,
            tls: match tls {
                "plaintext" => Tls::Plaintext,
                "mtls" => Tls::Mtls,
                _ => return None,
            },
            source: source.to_string(),
        })
    }

    /// Reads Envoy's Prometheus form (tags extracted by [`STATS_TAGS`]): the metric name
    /// and its labels.
    pub fn from_labels(metric: &str, labels: &[(String, String)]) -> Option<Series> {
        if metric != CONNECTIONS {
            return None;
        }
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        Series::parse(&format!(
            "{CONNECTIONS}.port.{}.tls.{}.source.{}",
            get("port")?,
            get("tls")?,
            get("source")?
        ))
    }
}

/// Envoy `stats_config.stats_tags` entries (tag name, regex: the first group is cut from
/// the name, the second is the value) that turn the counters above into one Prometheus
/// metric with `port`, `tls` and `source` labels.
pub const STATS_TAGS: [(&str, &str); 3] = [
    (
        "port",
        r"^wasmcustom\.peerguard_connections(\.port\.(\d+))\.tls\.",
    ),
    (
        "tls",
        r"^wasmcustom\.peerguard_connections\.port\.\d+(\.tls\.(plaintext|mtls))\.source\.",
    ),
    (
        "source",
        r"^wasmcustom\.peerguard_connections\.port\.\d+\.tls\.(?:plaintext|mtls)(\.source\.(.+))$",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_with_dots_and_slashes_in_the_source() {
        for s in [
            Series {
                port: 80,
                tls: Tls::Plaintext,
                source: "127.0.3.10".into(),
            },
            Series {
                port: 8080,
                tls: Tls::Mtls,
                source: "cluster.local/ns/full/sa/sleep".into(),
            },
            Series {
                port: 9000,
                tls: Tls::Plaintext,
                source: "2001:db8::1".into(),
            },
        ] {
            assert_eq!(Series::parse(&s.name()), Some(s.clone()));
            assert_eq!(
                Series::parse(&format!("{ENVOY_PREFIX}{}", s.name())),
                Some(s.clone())
            );
            let labels = vec![
                ("port".to_string(), s.port.to_string()),
                ("tls".to_string(), s.tls.as_str().to_string()),
                ("source".to_string(), s.source.clone()),
            ];
            assert_eq!(Series::from_labels(CONNECTIONS, &labels), Some(s));
        }
    }

    #[test]
    fn other_names_are_not_series() {
        for n in [
            "wasmcustom.peerguard_allowed",
            "wasmcustom.peerguard_connections.port.x.tls.mtls.source.a",
            "wasmcustom.peerguard_connections.port.80.tls.tcp.source.a",
            "wasmcustom.peerguard_connections.port.80.tls.mtls",
            "wasmcustom.peerguard_connections.port.70000.tls.mtls.source.a",
        ] {
            assert_eq!(Series::parse(n), None, "{n}");
        }
    }
}
