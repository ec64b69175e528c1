//! Host-independent half of the adapter: Envoy attribute bytes → the facts of a [`Request`].
//!
//! Everything here talks to Envoy only through the [`Host`] seam, so it is unit-tested natively
//! with a fake host. Identity only ever comes from the connection (`connection.*`), never from a
//! request header (x-forwarded-client-cert is ignored on purpose, spec 6).

use super::der::{uri_sans_from_url_pem, SanCache, Sans};
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

    /// Whether this connection was read before (whatever it was read for).
    pub fn knows(&self, id: u64) -> bool {
        self.map.contains_key(&id)
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

/// `source.address` as Envoy gives it (`ip:port`), for a log line; `None` when unreadable.
pub(crate) fn source_address(host: &impl Host) -> Option<String> {
    let b = host.property(SOURCE).ok()??;
    String::from_utf8(b).ok()
}

/// The source IP, read on its own (the configuration's `Needs` may have left it out).
pub(crate) fn source_ip(host: &impl Host) -> Option<IpAddr> {
    parse_ip(&host.property(SOURCE).ok()??)
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
mod tests;
