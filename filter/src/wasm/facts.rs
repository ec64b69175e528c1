//! Host-independent half of the adapter: Envoy attribute bytes → the facts of a [`Request`].
//!
//! Everything here talks to Envoy only through the [`Host`] seam, so it is unit-tested natively
//! with a fake host. Identity only ever comes from the connection (`connection.*`), never from a
//! request header (x-forwarded-client-cert is ignored on purpose, spec 6).

use crate::schema::{Condition, HttpRequest, Peer, Request, WorkloadPolicy};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

/// The one thing the adapter needs from the proxy to describe a connection.
pub(crate) trait Host {
    /// An Envoy attribute (`["connection", "mtls"]`), in Envoy's serialised form: strings raw,
    /// ints 8 bytes little-endian, bools 1 byte. `Ok(None)`: the attribute does not exist.
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reading property {path}: host returned {status}")]
pub(crate) struct HostError {
    pub path: String,
    pub status: String,
}

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
    }
}

/// The URI SANs of one certificate, or why they cannot be read.
type Sans = Result<Vec<String>, String>;

/// A small cache of certificate digest → URI SANs. Bounded, so a client rotating
/// certificates (or an attacker presenting many) cannot grow it.
#[derive(Debug, Default)]
pub(crate) struct SanCache {
    entries: Vec<(Vec<u8>, Sans)>,
    next: usize,
}

impl SanCache {
    const CAPACITY: usize = 64;

    fn get(&self, digest: &[u8]) -> Option<&Sans> {
        self.entries
            .iter()
            .find(|(d, _)| d.as_slice() == digest)
            .map(|(_, v)| v)
    }

    fn put(&mut self, digest: Vec<u8>, value: Sans) {
        if self.entries.len() < Self::CAPACITY {
            self.entries.push((digest, value));
        } else if let Some(slot) = self.entries.get_mut(self.next) {
            *slot = (digest, value);
            self.next = (self.next + 1) % Self::CAPACITY;
        }
    }
}

/// `connection.peer_certificate` is the URL-encoded PEM of the leaf certificate.
pub(crate) fn uri_sans_from_url_pem(encoded: &[u8]) -> Result<Vec<String>, String> {
    let pem = percent_decode(encoded)?;
    let der = pem_certificate_der(&pem)?;
    uri_sans_from_der(&der)
}

fn percent_decode(input: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%' {
            let hi = input.get(i + 1).copied().and_then(hex_value);
            let lo = input.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(format!("bad percent escape at byte {i}")),
            }
            i += 3;
        } else {
            // `+` stays `+`: it is a base64 character here, not a space.
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The DER of the first `CERTIFICATE` block of a PEM text.
fn pem_certificate_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let start = find(pem, BEGIN).ok_or("no BEGIN CERTIFICATE line")? + BEGIN.len();
    let rest = pem.get(start..).unwrap_or_default();
    let end = find(rest, END).ok_or("no END CERTIFICATE line")?;
    base64_decode(rest.get(..end).unwrap_or_default())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Standard base64 (RFC 4648 §4), whitespace ignored, padding optional.
fn base64_decode(input: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut padding = false;
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding = true;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            other => return Err(format!("invalid base64 byte 0x{other:02x}")),
        };
        if padding {
            return Err("base64 data after padding".into());
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return Err("truncated base64".into());
    }
    Ok(out)
}

/// Every URI SAN, in certificate order. A certificate without a SAN extension has none.
///
/// A minimal DER walk (Certificate → tbsCertificate → extensions → subjectAltName →
/// GeneralName `[6]` uniformResourceIdentifier) instead of a full X.509 parser: x509-parser
/// and its OID tables added over 100 KB to the module, and nothing else of the certificate is
/// needed (Envoy already validated the chain, the dates and the trust-domain SAN prefix).
/// Malformed input is an error, never a partial list. Cross-checked against x509-parser in
/// the tests.
pub(crate) fn uri_sans_from_der(der: &[u8]) -> Result<Vec<String>, String> {
    const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11]; // 2.5.29.17
    let (cert, rest) = der::expect(der, der::SEQUENCE, "Certificate")?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    let (tbs, _) = der::expect(cert, der::SEQUENCE, "tbsCertificate")?;
    // tbsCertificate fields are walked to the optional [3] extensions; earlier fields are
    // skipped by their lengths.
    let mut fields = tbs;
    let mut sans = Vec::new();
    let mut seen_san = false;
    let mut seen_extensions = false;
    while !fields.is_empty() {
        let (tag, body, rest) = der::next(fields)?;
        fields = rest;
        // Any other tag (e.g. a primitive `[3]`) is a malformed certificate: skipping it would
        // read "no SANs" where a lenient parser finds some (found by fuzz/peer_identity).
        match tag {
            der::EXTENSIONS if !seen_extensions => seen_extensions = true,
            der::EXTENSIONS => return Err("tbsCertificate: two extensions fields".into()),
            t if der::TBS_OTHER_FIELDS.contains(&t) => continue,
            other => return Err(format!("tbsCertificate: unexpected DER tag 0x{other:02x}")),
        }
        let (mut exts, _) = der::expect(body, der::SEQUENCE, "extensions")?;
        while !exts.is_empty() {
            let (ext, rest) = der::expect(exts, der::SEQUENCE, "Extension")?;
            exts = rest;
            let (oid, mut ext_rest) = der::expect(ext, der::OID, "extnID")?;
            if oid != SAN_OID {
                continue;
            }
            if seen_san {
                return Err("duplicate subjectAltName extension".into());
            }
            seen_san = true;
            if let Ok((_, after)) = der::expect(ext_rest, der::BOOLEAN, "critical") {
                ext_rest = after;
            }
            let (value, _) = der::expect(ext_rest, der::OCTET_STRING, "extnValue")?;
            let (mut names, trailing) = der::expect(value, der::SEQUENCE, "GeneralNames")?;
            if !trailing.is_empty() {
                return Err("trailing bytes after GeneralNames".into());
            }
            while !names.is_empty() {
                let (tag, body, rest) = der::next(names)?;
                names = rest;
                match tag {
                    der::URI => {
                        let uri = std::str::from_utf8(body)
                            .ok()
                            .filter(|s| s.is_ascii())
                            .ok_or("URI SAN is not IA5 (ASCII) text")?;
                        sans.push(uri.to_string());
                    }
                    t if der::OTHER_GENERAL_NAMES.contains(&t) => {}
                    // Not a GeneralName (e.g. a constructed or universal tag 6): an error, not
                    // a shorter list.
                    other => return Err(format!("GeneralName: unexpected DER tag 0x{other:02x}")),
                }
            }
        }
    }
    Ok(sans)
}

/// Just enough DER to walk to the SAN extension: definite lengths only (DER forbids others).
mod der {
    pub const SEQUENCE: u8 = 0x30;
    pub const OID: u8 = 0x06;
    pub const BOOLEAN: u8 = 0x01;
    pub const OCTET_STRING: u8 = 0x04;
    /// `[3] EXPLICIT` in tbsCertificate.
    pub const EXTENSIONS: u8 = 0xa3;
    /// GeneralName `[6] IMPLICIT IA5String`.
    pub const URI: u8 = 0x86;

    /// The other fields of tbsCertificate: version `[0]`, serialNumber, the SEQUENCEs
    /// (signature, issuer, validity, subject, subjectPublicKeyInfo), issuerUniqueID `[1]` and
    /// subjectUniqueID `[2]` (IMPLICIT BIT STRING).
    pub const TBS_OTHER_FIELDS: &[u8] = &[0xa0, 0x02, 0x30, 0x81, 0x82];

    /// The GeneralName choices other than the URI (RFC 5280 4.2.1.6, implicit tagging):
    /// otherName `[0]`, rfc822Name `[1]`, dNSName `[2]`, x400Address `[3]`, directoryName
    /// `[4]` (explicit), ediPartyName `[5]`, iPAddress `[7]`, registeredID `[8]`.
    pub const OTHER_GENERAL_NAMES: &[u8] = &[0xa0, 0x81, 0x82, 0xa3, 0xa4, 0xa5, 0x87, 0x88];

    /// One TLV: (tag, contents, remaining input).
    pub fn next(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
        let (&tag, rest) = input.split_first().ok_or("truncated DER: no tag")?;
        if tag & 0x1f == 0x1f {
            return Err("multi-byte DER tags are not used in certificates".into());
        }
        let (&first, mut rest) = rest.split_first().ok_or("truncated DER: no length")?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(format!("unsupported DER length form 0x{first:02x}"));
            }
            let (bytes, after) = (rest.get(..n), rest.get(n..));
            let (Some(bytes), Some(after)) = (bytes, after) else {
                return Err("truncated DER length".into());
            };
            rest = after;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        match (rest.get(..len), rest.get(len..)) {
            (Some(body), Some(after)) => Ok((tag, body, after)),
            _ => Err(format!(
                "truncated DER: {len} bytes announced, {} present",
                rest.len()
            )),
        }
    }

    pub fn expect<'a>(
        input: &'a [u8],
        want: u8,
        what: &str,
    ) -> Result<(&'a [u8], &'a [u8]), String> {
        let (tag, body, rest) = next(input)?;
        if tag != want {
            return Err(format!(
                "{what}: expected DER tag 0x{want:02x}, found 0x{tag:02x}"
            ));
        }
        Ok((body, rest))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A leaf with two URI SANs and a DNS SAN (openssl, throwaway CA).
    const TWO_SANS_PEM: &str = include_str!("testdata/two_uri_sans.pem");
    /// No subjectAltName extension at all.
    const NO_SAN_PEM: &str = include_str!("testdata/no_san.pem");
    /// A critical subjectAltName (the BOOLEAN is present) with one URI and an email.
    const CRITICAL_SAN_PEM: &str = include_str!("testdata/critical_san.pem");

    #[derive(Default)]
    struct FakeHost {
        props: HashMap<String, Vec<u8>>,
        fail: Option<String>,
        reads: std::cell::RefCell<Vec<String>>,
    }

    impl FakeHost {
        fn with(mut self, path: &str, v: impl Into<Vec<u8>>) -> Self {
            self.props.insert(path.to_string(), v.into());
            self
        }
    }

    impl Host for FakeHost {
        fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
            let key = path.join(".");
            self.reads.borrow_mut().push(key.clone());
            if self.fail.as_deref() == Some(key.as_str()) {
                return Err(HostError {
                    path: key,
                    status: "InternalFailure".into(),
                });
            }
            Ok(self.props.get(&key).cloned())
        }
    }

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
    fn base64_and_percent_decoding() {
        assert_eq!(base64_decode(b"aGVs\nbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aGVsbG8").unwrap(), b"hello");
        assert!(base64_decode(b"aGV*").is_err());
        assert!(base64_decode(b"a").is_err());
        assert_eq!(percent_decode(b"a%2Bb%0a+").unwrap(), b"a+b\n+");
        assert!(percent_decode(b"%4").is_err());
        assert!(percent_decode(b"%zz").is_err());
    }

    fn x509_parser_uri_sans(der: &[u8]) -> Vec<String> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let san = cert.subject_alternative_name().unwrap();
        san.map(|e| {
            e.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
    }

    #[test]
    fn der_walk_agrees_with_x509_parser() {
        for pem in [TWO_SANS_PEM, NO_SAN_PEM, CRITICAL_SAN_PEM] {
            let der = pem_certificate_der(pem.as_bytes()).unwrap();
            assert_eq!(
                uri_sans_from_der(&der).unwrap(),
                x509_parser_uri_sans(&der),
                "{pem}"
            );
        }
        let der = pem_certificate_der(CRITICAL_SAN_PEM.as_bytes()).unwrap();
        assert_eq!(
            uri_sans_from_der(&der).unwrap(),
            vec!["spiffe://cluster.local/ns/a/sa/x"]
        );
        assert!(
            uri_sans_from_der(&pem_certificate_der(NO_SAN_PEM.as_bytes()).unwrap())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn der_walk_rejects_every_truncation() {
        let der = pem_certificate_der(TWO_SANS_PEM.as_bytes()).unwrap();
        for cut in 0..der.len() {
            assert!(
                uri_sans_from_der(&der[..cut]).is_err(),
                "accepted a certificate cut at {cut}"
            );
        }
        let mut longer = der.clone();
        longer.push(0);
        assert!(uri_sans_from_der(&longer).is_err());
    }

    /// Found by fuzz/peer_identity: a tag that DER does not allow where the walk looks for
    /// the extensions or a URI made the certificate read as having fewer (or no) URI SANs,
    /// where x509-parser reads them all. Such a certificate is malformed: an error.
    #[test]
    fn der_walk_rejects_misencoded_extensions_and_names() {
        let der = pem_certificate_der(TWO_SANS_PEM.as_bytes()).unwrap();
        let retag = |from: &[u8], to: u8| {
            let at = find(&der, from).unwrap();
            let mut d = der.clone();
            d[at] = to;
            d
        };
        // `[3]` extensions (164 bytes long in this certificate) as a primitive tag.
        let primitive = retag(&[der::EXTENSIONS, 0x81, 164, der::SEQUENCE], 0x83);
        assert!(uri_sans_from_der(&primitive)
            .unwrap_err()
            .contains("tbsCertificate"));
        // The second URI SAN as a constructed `[6]` and as a universal tag 6.
        let second = b"spiffe://other.td";
        let len = u8::try_from(second.len() + "/ns/bar/sa/b".len()).unwrap();
        for to in [0xa6, 0x06] {
            let d = retag(&[&[der::URI, len][..], second].concat(), to);
            assert!(
                uri_sans_from_der(&d).unwrap_err().contains("GeneralName"),
                "{to:#x}"
            );
        }
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

    #[test]
    fn san_cache_is_bounded() {
        let mut c = SanCache::default();
        for i in 0..200u32 {
            c.put(i.to_le_bytes().to_vec(), Ok(vec![]));
        }
        assert_eq!(c.entries.len(), SanCache::CAPACITY);
        assert!(c.get(&199u32.to_le_bytes()).is_some());
        assert!(c.get(&0u32.to_le_bytes()).is_none());
    }
}
