//! Host-independent half of the adapter: Envoy attribute bytes → the facts of a [`Request`].
//!
//! Everything here talks to Envoy only through the [`Host`] seam, so it is unit-tested natively
//! with a fake host. Identity only ever comes from the connection (`connection.*`), never from a
//! request header (x-forwarded-client-cert is ignored on purpose, spec 6).

use super::der::{uri_sans_from_url_pem, Sans, SanCache};
pub(crate) use super::seam::{Host, HostError};
use crate::schema::{Condition, HttpRequest, Peer, Request, WorkloadPolicy};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

/// Why the facts of a connection could not be established. The caller denies (fail closed):
/// guessing "plaintext" for an mTLS connection could dodge a DENY on its principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FactsError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("property {path} is missing")]
    Missing { path: &'static str },
    #[error("property {path} is malformed: {why}")]
    Malformed { path: &'static str, why: String },
}

/// What one connection tells us, read once per decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnFacts {
    pub peer: Option<Peer>,
    pub source_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub port: u16,
    pub sni: Option<String>,
    /// The connection is mTLS but its certificate could not be read or parsed: the peer is
    /// kept with no URI SAN (so no principal can match and the trust-domain check refuses
    /// it), and this says why, for the log.
    pub cert_problem: Option<String>,
}

impl ConnFacts {
    pub fn into_request(self, http: Option<HttpRequest>) -> Request {
        Request {
            peer: self.peer,
            source_ip: self.source_ip,
            destination_ip: self.destination_ip,
            port: self.port,
            sni: self.sni,
            http,
        }
    }
}

/// Which optional request attributes a configuration can look at, computed once per
/// configuration so a request reads (and copies) nothing the policies cannot use. The peer
/// (mTLS, URI SANs) and the port are always read.
/// An attribute left unread is `None`/empty in the [`Request`]; that is only sound because
/// no rule of the configuration looks at it, so every cache of facts records the `Needs`
/// it was read with (see [`ConnCache`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    pub source_ip: bool,
    pub destination_ip: bool,
    pub sni: bool,
    /// `:method`, `:path` and `:authority` (an operation names hosts, methods or paths).
    pub request_line: bool,
    /// The full header map (a `request.headers[...]` condition exists).
    pub headers: bool,
}

impl Needs {
    /// Everything (the tests' default).
    #[cfg(test)]
    pub const ALL: Needs = Needs {
        source_ip: true,
        destination_ip: true,
        sni: true,
        request_line: true,
        headers: true,
    };

    /// Walks every rule of every policy (invalid and dry-run ones too: over-reading is only
    /// a cost, under-reading would be a wrong decision).
    pub fn of(policy: &WorkloadPolicy) -> Needs {
        let mut n = Needs::default();
        for rule in policy.policies.iter().flat_map(|p| &p.rules) {
            for s in rule.from.iter().flatten() {
                if !s.ip_blocks.is_empty() || !s.remote_ip_blocks.is_empty() {
                    n.source_ip = true;
                }
            }
            for o in rule.to.iter().flatten() {
                if !o.hosts.is_empty() || !o.methods.is_empty() || !o.paths.is_empty() {
                    n.request_line = true;
                }
            }
            for c in &rule.when {
                match c {
                    Condition::SourceIp { .. } | Condition::RemoteIp { .. } => n.source_ip = true,
                    Condition::DestinationIp { .. } => n.destination_ip = true,
                    Condition::ConnectionSni { .. } => n.sni = true,
                    Condition::RequestHeader { .. } => n.headers = true,
                    Condition::DestinationPort { .. }
                    | Condition::SourcePrincipal { .. }
                    | Condition::SourceNamespace { .. }
                    | Condition::SourceServiceAccount { .. }
                    | Condition::SourceTrustDomain { .. }
                    | Condition::RequestAuth { .. }
                    | Condition::EnvoyMetadata { .. } => {}
                }
            }
        }
        // The forwarded client comes from X-Forwarded-For when hops are trusted.
        if policy.num_trusted_proxies > 0 && crate::decide::uses_remote_ip(policy) {
            n.headers = true;
        }
        n
    }

    /// Whether facts read with `self` hold everything `want` asks for.
    pub fn covers(&self, want: &Needs) -> bool {
        (self.source_ip || !want.source_ip)
            && (self.destination_ip || !want.destination_ip)
            && (self.sni || !want.sni)
            && (self.request_line || !want.request_line)
            && (self.headers || !want.headers)
    }
}

const MTLS: &[&str] = &["connection", "mtls"];
const PEER_CERT: &[&str] = &["connection", "peer_certificate"];
const PEER_DIGEST: &[&str] = &["connection", "sha256_peer_certificate_digest"];
const SOURCE: &[&str] = &["source", "address"];
const DESTINATION: &[&str] = &["destination", "address"];
const DESTINATION_PORT: &[&str] = &["destination", "port"];
const SNI: &[&str] = &["connection", "requested_server_name"];
const CONNECTION_ID: &[&str] = &["connection", "id"];

/// `connection.id` (an 8-byte int, unique per Envoy process), or `None` when the host has
/// none or it is malformed: the caller then reads the facts without caching them.
pub(crate) fn connection_id(host: &impl Host) -> Option<u64> {
    let b = host.property(CONNECTION_ID).ok()??;
    let bytes: [u8; 8] = b.as_slice().try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Connection facts of recent connections, keyed by `connection.id`, so the requests after
/// the first on a keep-alive connection read one property instead of seven. The HTTP filter
/// has no connection-close hook, so the map is bounded by count and evicts the oldest
/// entry; an evicted live connection is simply read again.
///
/// Facts of a connection never change during its life and connection ids are never reused
/// within an Envoy process, so an entry cannot go stale; an entry read for a configuration
/// that needed fewer attributes is not used for one that needs more (`Needs::covers`).
#[derive(Debug, Default)]
pub(crate) struct ConnCache {
    map: HashMap<u64, (Needs, ConnFacts)>,
    order: VecDeque<u64>,
}

impl ConnCache {
    pub const CAPACITY: usize = 256;

    pub fn get(&self, id: u64, want: &Needs) -> Option<&ConnFacts> {
        self.map
            .get(&id)
            .filter(|(had, _)| had.covers(want))
            .map(|(_, f)| f)
    }

    pub fn put(&mut self, id: u64, needs: Needs, facts: ConnFacts) {
        if self.map.insert(id, (needs, facts)).is_some() {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Reads the connection attributes. Certificates are parsed once per distinct certificate
/// (keyed by Envoy's sha256 digest, which Envoy computes once per connection), so a
/// keep-alive connection or a busy client does not pay the X.509 parse on every request.
/// Attributes `needs` leaves out are not read (`None`).
pub(crate) fn read_conn(
    host: &impl Host,
    cache: &mut SanCache,
    needs: &Needs,
) -> Result<ConnFacts, FactsError> {
    let mtls = match host.property(MTLS)? {
        None => false,
        Some(b) => match b.as_slice() {
            [v] => *v != 0,
            other => {
                return Err(FactsError::Malformed {
                    path: "connection.mtls",
                    why: format!("expected 1 byte, got {}", other.len()),
                })
            }
        },
    };
    let (peer, cert_problem) = if mtls {
        let sans = peer_uri_sans(host, cache)?;
        match sans {
            Ok(uri_sans) => (Some(Peer { uri_sans }), None),
            Err(why) => (
                Some(Peer {
                    uri_sans: Vec::new(),
                }),
                Some(why),
            ),
        }
    } else {
        (None, None)
    };
    let port = match host.property(DESTINATION_PORT)? {
        None => {
            return Err(FactsError::Missing {
                path: "destination.port",
            })
        }
        Some(b) => parse_port(&b)?,
    };
    Ok(ConnFacts {
        peer,
        source_ip: match needs.source_ip {
            true => host.property(SOURCE)?.as_deref().and_then(parse_ip),
            false => None,
        },
        destination_ip: match needs.destination_ip {
            true => host.property(DESTINATION)?.as_deref().and_then(parse_ip),
            false => None,
        },
        port,
        sni: match needs.sni {
            true => host
                .property(SNI)?
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty()),
            false => None,
        },
        cert_problem,
    })
}

/// The URI SANs of the peer certificate, or why they cannot be known (outer error: the host
/// failed; inner error: the certificate is absent or unreadable).
fn peer_uri_sans(host: &impl Host, cache: &mut SanCache) -> Result<Sans, FactsError> {
    let digest = host.property(PEER_DIGEST)?.filter(|d| !d.is_empty());
    if let Some(d) = &digest {
        if let Some(hit) = cache.get(d) {
            return Ok(hit.clone());
        }
    }
    let parsed = match host.property(PEER_CERT)? {
        None => {
            Err("connection.mtls is true but connection.peer_certificate is absent".to_string())
        }
        Some(encoded) => uri_sans_from_url_pem(&encoded),
    };
    if let Some(d) = digest {
        cache.put(d, parsed.clone());
    }
    Ok(parsed)
}

/// `destination.port`: an int attribute, 8 bytes little-endian.
fn parse_port(b: &[u8]) -> Result<u16, FactsError> {
    let bytes: [u8; 8] = b.try_into().map_err(|_| FactsError::Malformed {
        path: "destination.port",
        why: format!("expected 8 bytes, got {}", b.len()),
    })?;
    let v = i64::from_le_bytes(bytes);
    u16::try_from(v).map_err(|_| FactsError::Malformed {
        path: "destination.port",
        why: format!("{v} is not a port"),
    })
}

/// `ip:port`, `[v6]:port`, or a bare IP. Anything else (a pipe path) has no IP.
fn parse_ip(b: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(b).ok()?;
    s.parse::<SocketAddr>()
        .map(|a| a.ip())
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok())
}

/// The HTTP part of a request, as much as `needs` asks for: the full header map when a
/// policy looks at headers; else `:method`, `:path` and `:authority` when an operation
/// names them (three small reads instead of copying every header into the VM); else
/// nothing (empty values no rule of this configuration looks at).
pub(crate) fn read_http(host: &impl Host, needs: Needs) -> Result<HttpRequest, String> {
    if needs.headers {
        return host.request_headers().map(http_request);
    }
    if !needs.request_line {
        return Ok(HttpRequest::default());
    }
    Ok(HttpRequest {
        method: host.request_header(":method")?,
        path: host.request_header(":path")?,
        host: host.request_header(":authority")?,
        ..HttpRequest::default()
    })
}

/// Builds the HTTP part from the full header map (every value of a repeated header is kept:
/// single-value reads would return only the first one).
pub(crate) fn http_request(mut headers: Vec<(String, String)>) -> HttpRequest {
    let mut method = String::new();
    let mut path = String::new();
    let mut host = String::new();
    for (name, value) in headers.iter_mut() {
        // Envoy already lower-cases names; this only guards against a host that does not.
        name.make_ascii_lowercase();
        match name.as_str() {
            ":method" => method.clone_from(value),
            ":path" => path.clone_from(value),
            ":authority" => host.clone_from(value),
            _ => {}
        }
    }
    HttpRequest {
        method,
        path,
        host,
        headers,
        // The codec has accepted the request already; the version no longer matters.
        version: Default::default(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    use crate::wasm::testing::FakeHost;
    /// A leaf with two URI SANs and a DNS SAN (openssl, throwaway CA).
    const TWO_SANS_PEM: &str = include_str!("testdata/two_uri_sans.pem");

    fn url_encode(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b);
            } else {
                out.extend(format!("%{b:02X}").bytes());
            }
        }
        out
    }

    fn plaintext_host() -> FakeHost {
        FakeHost::default()
            .with("source.address", "10.0.0.7:43512")
            .with("destination.address", "10.0.0.9:8080")
            .with("destination.port", 8080i64.to_le_bytes())
    }

    fn mtls_host() -> FakeHost {
        plaintext_host()
            .with("connection.mtls", [1u8])
            .with("connection.peer_certificate", url_encode(TWO_SANS_PEM))
            .with("connection.sha256_peer_certificate_digest", "abc123")
            .with("connection.requested_server_name", "httpbin.foo.svc")
    }

    #[test]
    fn plaintext_has_no_peer_and_reads_addresses() {
        let f = read_conn(&plaintext_host(), &mut SanCache::default(), &Needs::ALL).unwrap();
        assert_eq!(f.peer, None);
        assert_eq!(f.source_ip, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(f.destination_ip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(f.port, 8080);
        assert_eq!(f.sni, None);
        assert_eq!(f.cert_problem, None);
    }

    #[test]
    fn mtls_reads_every_uri_san_in_order() {
        let f = read_conn(&mtls_host(), &mut SanCache::default(), &Needs::ALL).unwrap();
        assert_eq!(
            f.peer.unwrap().uri_sans,
            vec![
                "spiffe://cluster.local/ns/foo/sa/sleep",
                "spiffe://other.td/ns/bar/sa/b"
            ]
        );
        assert_eq!(f.sni.as_deref(), Some("httpbin.foo.svc"));
    }

    #[test]
    fn certificate_is_parsed_once_per_digest() {
        let mut cache = SanCache::default();
        let host = mtls_host();
        read_conn(&host, &mut cache, &Needs::ALL).unwrap();
        let first = host
            .reads
            .borrow()
            .iter()
            .filter(|p| *p == "connection.peer_certificate")
            .count();
        let f = read_conn(&host, &mut cache, &Needs::ALL).unwrap();
        let second = host
            .reads
            .borrow()
            .iter()
            .filter(|p| *p == "connection.peer_certificate")
            .count();
        assert_eq!((first, second), (1, 1));
        assert_eq!(f.peer.unwrap().uri_sans.len(), 2);
    }

    #[test]
    fn unparsable_certificate_keeps_a_peer_without_sans() {
        let host = mtls_host().with(
            "connection.peer_certificate",
            url_encode("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        );
        let f = read_conn(&host, &mut SanCache::default(), &Needs::ALL).unwrap();
        assert_eq!(f.peer, Some(Peer { uri_sans: vec![] }));
        assert!(f
            .cert_problem
            .unwrap()
            .contains("Certificate: expected DER tag"));
    }

    #[test]
    fn mtls_without_certificate_is_a_peer_without_sans() {
        let mut host = mtls_host();
        host.props.remove("connection.peer_certificate");
        let f = read_conn(&host, &mut SanCache::default(), &Needs::ALL).unwrap();
        assert_eq!(f.peer, Some(Peer { uri_sans: vec![] }));
        assert!(f.cert_problem.is_some());
    }

    #[test]
    fn host_failure_on_mtls_is_an_error_not_plaintext() {
        let host = FakeHost {
            fail: Some("connection.mtls".into()),
            ..mtls_host()
        };
        assert!(matches!(
            read_conn(&host, &mut SanCache::default(), &Needs::ALL),
            Err(FactsError::Host(_))
        ));
    }

    #[test]
    fn missing_or_bad_port_is_an_error() {
        let mut host = plaintext_host();
        host.props.remove("destination.port");
        assert_eq!(
            read_conn(&host, &mut SanCache::default(), &Needs::ALL),
            Err(FactsError::Missing {
                path: "destination.port"
            })
        );
        let host = plaintext_host().with("destination.port", 70000i64.to_le_bytes());
        assert!(matches!(
            read_conn(&host, &mut SanCache::default(), &Needs::ALL),
            Err(FactsError::Malformed { .. })
        ));
        let host = plaintext_host().with("destination.port", [1u8, 2]);
        assert!(matches!(
            read_conn(&host, &mut SanCache::default(), &Needs::ALL),
            Err(FactsError::Malformed { .. })
        ));
    }

    #[test]
    fn ipv6_and_pipe_addresses() {
        assert_eq!(parse_ip(b"[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip(b"fd00::2"), Some("fd00::2".parse().unwrap()));
        assert_eq!(parse_ip(b"/var/run/sock"), None);
    }

    #[test]
    fn http_request_keeps_repeated_headers_and_pseudo_headers() {
        let h = http_request(vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/a?b".into()),
            (":authority".into(), "httpbin:8000".into()),
            ("X-Token".into(), "one".into()),
            ("x-token".into(), "two".into()),
            ("x-forwarded-client-cert".into(), "URI=spiffe://evil".into()),
        ]);
        assert_eq!(
            (h.method.as_str(), h.path.as_str(), h.host.as_str()),
            ("GET", "/a?b", "httpbin:8000")
        );
        let tokens: Vec<_> = h
            .headers
            .iter()
            .filter(|(n, _)| n == "x-token")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(tokens, vec!["one", "two"]);
    }

    #[test]
    fn identity_never_comes_from_headers() {
        // Only connection attributes feed `peer`; a plaintext connection with an XFCC header
        // still has no peer.
        let f = read_conn(&plaintext_host(), &mut SanCache::default(), &Needs::ALL).unwrap();
        let r = f.into_request(Some(http_request(vec![(
            "x-forwarded-client-cert".into(),
            "URI=spiffe://cluster.local/ns/foo/sa/admin".into(),
        )])));
        assert_eq!(r.peer, None);
    }

    #[test]
    fn unneeded_attributes_are_not_read() {
        let host = mtls_host();
        let f = read_conn(&host, &mut SanCache::default(), &Needs::default()).unwrap();
        assert_eq!((f.source_ip, f.destination_ip, f.sni), (None, None, None));
        assert_eq!(f.port, 8080);
        assert_eq!(f.peer.unwrap().uri_sans.len(), 2);
        let reads = host.reads.borrow();
        for p in ["source.address", "destination.address", "connection.requested_server_name"] {
            assert!(!reads.iter().any(|r| r == p), "read {p}");
        }
        drop(reads);
        let want = Needs {
            destination_ip: true,
            ..Needs::default()
        };
        let f = read_conn(&host, &mut SanCache::default(), &want).unwrap();
        assert_eq!(f.destination_ip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(f.source_ip, None);
    }

    #[test]
    fn needs_follow_the_policies() {
        use crate::schema::{Cidr, Field, Rule, Source, StrMatch};
        let base: WorkloadPolicy = serde_json::from_value(serde_json::json!({
            "schema": crate::schema::SCHEMA_VERSION,
            "workload": {"namespace": "ns", "name": "w"},
            "trust_domain": "cluster.local",
            "mtls": {"default": {"mode": "STRICT"}},
            "policies": [{"policy": {"namespace": "ns", "name": "p"}, "action": "ALLOW", "rules": []}]
        }))
        .unwrap();
        assert_eq!(Needs::of(&base), Needs::default());
        let with_rule = |rule: Rule| {
            let mut p = base.clone();
            p.policies[0].rules.push(rule);
            Needs::of(&p)
        };
        let cidr = Cidr {
            addr: "10.0.0.0".parse().unwrap(),
            prefix_len: 8,
        };
        fn field<T>(v: T) -> Field<T> {
            Field {
                values: vec![],
                not_values: vec![v],
            }
        }
        let from = |s: Source| Rule {
            from: Some(vec![s]),
            to: None,
            when: vec![],
        };
        let when = |c: Condition| Rule {
            from: None,
            to: None,
            when: vec![c],
        };
        let n = with_rule(from(Source {
            remote_ip_blocks: field(cidr),
            ..Source::default()
        }));
        assert_eq!(n, Needs { source_ip: true, ..Needs::default() });
        let n = with_rule(when(Condition::DestinationIp { field: field(cidr) }));
        assert_eq!(n, Needs { destination_ip: true, ..Needs::default() });
        let n = with_rule(when(Condition::ConnectionSni {
            field: field(StrMatch::Exact("a".into())),
        }));
        assert_eq!(n, Needs { sni: true, ..Needs::default() });
        let n = with_rule(when(Condition::RequestHeader {
            name: "x-a".into(),
            field: field(StrMatch::Exact("a".into())),
        }));
        assert_eq!(n, Needs { headers: true, ..Needs::default() });
        assert!(Needs::ALL.covers(&n) && !Needs::default().covers(&n));
        let n = with_rule(Rule {
            from: None,
            to: Some(vec![crate::schema::Operation {
                paths: field(crate::schema::PathMatch::Str(StrMatch::Prefix("/a".into()))),
                ..Default::default()
            }]),
            when: vec![],
        });
        assert_eq!(n, Needs { request_line: true, ..Needs::default() });
        // Ports alone need no request line.
        let n = with_rule(Rule {
            from: None,
            to: Some(vec![crate::schema::Operation {
                ports: field(8080),
                ..Default::default()
            }]),
            when: vec![],
        });
        assert_eq!(n, Needs::default());
    }

    #[test]
    fn connection_cache_is_bounded_and_respects_needs() {
        let facts = read_conn(&plaintext_host(), &mut SanCache::default(), &Needs::default()).unwrap();
        let mut c = ConnCache::default();
        c.put(1, Needs::default(), facts.clone());
        assert_eq!(c.get(1, &Needs::default()), Some(&facts));
        // Read without the source IP: not good enough for a configuration that needs it.
        let src = Needs { source_ip: true, ..Needs::default() };
        assert_eq!(c.get(1, &src), None);
        assert_eq!(c.get(2, &Needs::default()), None);
        for id in 2..1000u64 {
            c.put(id, Needs::ALL, facts.clone());
        }
        assert_eq!(c.len(), ConnCache::CAPACITY);
        assert!(c.get(999, &src).is_some());
        assert!(c.get(1, &Needs::default()).is_none());
        c.clear();
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn connection_id_is_an_8_byte_int() {
        let host = plaintext_host().with("connection.id", 42u64.to_le_bytes());
        assert_eq!(connection_id(&host), Some(42));
        assert_eq!(connection_id(&plaintext_host()), None);
        let host = plaintext_host().with("connection.id", [1u8, 2]);
        assert_eq!(connection_id(&host), None);
    }
}
