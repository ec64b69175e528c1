//! What `peerguard certs` says about a certificate chain: each certificate's fields, the SPIFFE
//! identity split into its parts, chain verification against a trust bundle, and findings with
//! stable codes. Pure: the clock, the bundle and the mesh settings are parameters.
//!
//! The first certificate is the leaf (the workload's); the rest are the chain it was sent with.
//! The findings follow what Istio's inbound handshake refuses (docs/istio-semantics.md 1.1 and
//! 1.3): the chain must verify against the mesh roots at the current time, some URI SAN must
//! start with `spiffe://<td>/` for an accepted trust domain; a CA certificate cannot be a leaf
//! (BoringSSL and webpki both refuse it).

use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InspectError {
    #[error(
        "{what}: no certificate found (expected PEM `CERTIFICATE` blocks or one DER certificate)"
    )]
    NoCertificate { what: String },
    #[error("{what}: PEM block {index}: {message}")]
    BadPem {
        what: String,
        index: usize,
        message: String,
    },
    #[error("{what}: certificate {index}: not an X.509 certificate: {message}")]
    BadCertificate {
        what: String,
        index: usize,
        message: String,
    },
}

/// The certificates of a PEM text (every `CERTIFICATE` block, in order; other blocks such as
/// keys are skipped and never echoed) or of one DER certificate. Each is checked to parse.
pub fn parse_certs(bytes: &[u8], what: &str) -> Result<Vec<Vec<u8>>, InspectError> {
    let mut ders = Vec::new();
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        for (index, pem) in Pem::iter_from_buffer(bytes).enumerate() {
            let pem = pem.map_err(|e| InspectError::BadPem {
                what: what.into(),
                index,
                message: e.to_string(),
            })?;
            if pem.label == "CERTIFICATE" {
                ders.push(pem.contents);
            }
        }
    } else if !bytes.is_empty() {
        ders.push(bytes.to_vec());
    }
    if ders.is_empty() {
        return Err(InspectError::NoCertificate { what: what.into() });
    }
    for (index, der) in ders.iter().enumerate() {
        match X509Certificate::from_der(der) {
            Ok(([], _)) => {}
            Ok(_) => {
                return Err(InspectError::BadCertificate {
                    what: what.into(),
                    index,
                    message: "trailing data after the certificate".into(),
                })
            }
            Err(e) => {
                return Err(InspectError::BadCertificate {
                    what: what.into(),
                    index,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(ders)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leaf,
    Intermediate,
    Root,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leaf => "leaf",
            Role::Intermediate => "intermediate",
            Role::Root => "root",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sans {
    pub uri: Vec<String>,
    pub dns: Vec<String>,
    pub ip: Vec<String>,
    pub email: Vec<String>,
}

/// A SPIFFE ID split as Istio writes it: `spiffe://<trust domain>/ns/<namespace>/sa/<sa>`.
/// `namespace` and `service_account` are absent when the path has another shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpiffeId {
    pub id: String,
    pub trust_domain: String,
    pub namespace: Option<String>,
    pub service_account: Option<String>,
}

impl SpiffeId {
    pub fn parse(uri: &str) -> Option<SpiffeId> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        let parts: Vec<&str> = path.split('/').collect();
        let (namespace, service_account) = match parts.as_slice() {
            ["ns", ns, "sa", sa] if !ns.is_empty() && !sa.is_empty() => {
                (Some(ns.to_string()), Some(sa.to_string()))
            }
            _ => (None, None),
        };
        Some(SpiffeId {
            id: uri.into(),
            trust_domain: td.into(),
            namespace,
            service_account,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// `RSA`, `EC`, `Ed25519`, `Ed448`, or the algorithm OID.
    #[serde(rename = "type")]
    pub kind: String,
    pub bits: Option<usize>,
    /// EC only: `P-256`, `P-384`, `P-521`, or the curve OID.
    pub curve: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub index: usize,
    pub role: Role,
    pub subject: String,
    pub issuer: String,
    /// Hex bytes, `:`-separated (as `openssl x509 -serial` with colons).
    pub serial: String,
    pub sha256_fingerprint: String,
    pub sans: Sans,
    /// The first `spiffe://` URI SAN, split.
    pub spiffe: Option<SpiffeId>,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// Seconds until `not_after` (negative: expired that long ago).
    pub remaining_seconds: i64,
    pub key: KeyInfo,
    /// basicConstraints `CA:TRUE`.
    pub ca: bool,
    pub path_len: Option<u32>,
    /// RFC 5280 names: `digitalSignature`, `keyEncipherment`, `keyCertSign`...
    pub key_usage: Vec<String>,
    /// `serverAuth`, `clientAuth`, ... or the OID.
    pub extended_key_usage: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier (see [`CODES`]).
    pub code: &'static str,
    pub severity: Severity,
    /// Index of the certificate it is about (`None`: the chain or the connection).
    pub certificate: Option<usize>,
    pub message: String,
}

/// Every finding code, its severity and what it means (`peerguard certs --help` and the
/// README list the same).
pub const CODES: &[(&str, Severity, &str)] = &[
    ("no-spiffe-id", Severity::Error, "the leaf has no spiffe:// URI SAN: Istio refuses it at the handshake"),
    ("trust-domain-not-accepted", Severity::Error, "no SPIFFE ID of the leaf is in the trust domain or its aliases: refused at the handshake"),
    ("multiple-uri-sans", Severity::Warning, "the leaf has more than one URI SAN: principals match any of them"),
    ("spiffe-id-not-istio-form", Severity::Warning, "the SPIFFE ID is not spiffe://<td>/ns/<ns>/sa/<sa>: namespace and service-account rules will not match it"),
    ("expired", Severity::Error, "a certificate of the chain is past not-after"),
    ("not-yet-valid", Severity::Error, "a certificate of the chain is before not-before"),
    ("expiring-soon", Severity::Warning, "a certificate expires within --warn-within"),
    ("ca-leaf", Severity::Error, "the leaf has basicConstraints CA:TRUE"),
    ("rsa-key-too-small", Severity::Error, "an RSA key of fewer than 2048 bits"),
    ("chain-not-verified", Severity::Error, "the chain does not verify against the trust bundle"),
    ("no-trust-bundle", Severity::Warning, "no trust bundle was given: the chain was not verified"),
    ("client-cert-rejected", Severity::Error, "--connect: the server refused the client certificate presented"),
    ("client-cert-required", Severity::Warning, "--connect: the server asked for a client certificate and none was presented"),
];

fn finding(code: &'static str, certificate: Option<usize>, message: String) -> Finding {
    let severity = CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, s, _)| *s)
        .unwrap_or(Severity::Error);
    Finding {
        code,
        severity,
        certificate,
        message,
    }
}

pub fn new_finding(code: &'static str, message: String) -> Finding {
    finding(code, None, message)
}

/// The mesh settings the findings are about.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `meshConfig.trustDomain` first, then its aliases.
    pub trust_domains: Vec<String>,
    /// Warn when a certificate expires within this many seconds.
    pub warn_within: i64,
    /// Extended key usages the chain is verified for.
    pub usages: Vec<Usage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Usage {
    #[serde(rename = "clientAuth")]
    ClientAuth,
    #[serde(rename = "serverAuth")]
    ServerAuth,
}

impl Usage {
    fn name(self) -> &'static str {
        match self {
            Usage::ClientAuth => "clientAuth",
            Usage::ServerAuth => "serverAuth",
        }
    }
    fn webpki(self) -> webpki::KeyUsage {
        match self {
            Usage::ClientAuth => webpki::KeyUsage::client_auth(),
            Usage::ServerAuth => webpki::KeyUsage::server_auth(),
        }
    }
}

/// The roots a chain is verified against, and where they came from (for the report).
#[derive(Debug, Clone)]
pub struct Bundle {
    pub origin: String,
    pub ders: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyStatus {
    Verified,
    NotVerified,
    NotChecked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub status: VerifyStatus,
    /// Where the trust bundle came from.
    pub trust_bundle: Option<String>,
    /// Roots in the bundle.
    pub roots: usize,
    pub usages: Vec<Usage>,
    /// Why not verified.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Analysis {
    pub certificates: Vec<CertInfo>,
    pub verification: Verification,
    pub findings: Vec<Finding>,
}

/// Describes `chain` (leaf first) at `now` (Unix seconds) and lists the findings.
pub fn analyze(
    chain: &[Vec<u8>],
    bundle: Option<&Bundle>,
    policy: &Policy,
    now: i64,
) -> Result<Analysis, InspectError> {
    let mut certificates = Vec::new();
    let mut findings = Vec::new();
    for (index, der) in chain.iter().enumerate() {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| InspectError::BadCertificate {
                what: "chain".into(),
                index,
                message: e.to_string(),
            })?;
        let info = describe(&cert, der, index, now);
        validity_findings(&info, policy, &mut findings);
        if info.key.kind == "RSA" && info.key.bits.is_some_and(|b| b < 2048) {
            findings.push(finding(
                "rsa-key-too-small",
                Some(index),
                format!(
                    "RSA key of {} bits (at least 2048 expected)",
                    info.key.bits.unwrap_or(0)
                ),
            ));
        }
        if index == 0 {
            leaf_findings(&info, policy, &mut findings);
        }
        certificates.push(info);
    }
    let verification = match bundle {
        None => {
            findings.push(finding(
                "no-trust-bundle",
                None,
                "no trust bundle: the chain was not verified (give --trust-bundle, --state-dir or --server)".into(),
            ));
            Verification {
                status: VerifyStatus::NotChecked,
                trust_bundle: None,
                roots: 0,
                usages: policy.usages.clone(),
                reason: Some("no trust bundle given".into()),
            }
        }
        Some(b) => {
            let result = verify(chain, &b.ders, now, &policy.usages);
            if let Err(why) = &result {
                findings.push(finding(
                    "chain-not-verified",
                    None,
                    format!("the chain does not verify against {}: {why}", b.origin),
                ));
            }
            Verification {
                status: if result.is_ok() {
                    VerifyStatus::Verified
                } else {
                    VerifyStatus::NotVerified
                },
                trust_bundle: Some(b.origin.clone()),
                roots: b.ders.len(),
                usages: policy.usages.clone(),
                reason: result.err(),
            }
        }
    };
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Ok(Analysis {
        certificates,
        verification,
        findings,
    })
}

fn validity_findings(info: &CertInfo, policy: &Policy, findings: &mut Vec<Finding>) {
    let i = Some(info.index);
    let now = info.not_after_unix - info.remaining_seconds;
    if info.remaining_seconds < 0 {
        findings.push(finding(
            "expired",
            i,
            format!(
                "expired {} ago (not after {})",
                human(-info.remaining_seconds),
                info.not_after
            ),
        ));
    } else if now < info.not_before_unix {
        findings.push(finding(
            "not-yet-valid",
            i,
            format!(
                "not valid for another {} (not before {})",
                human(info.not_before_unix - now),
                info.not_before
            ),
        ));
    } else if info.remaining_seconds < policy.warn_within {
        findings.push(finding(
            "expiring-soon",
            i,
            format!(
                "expires in {} (not after {}), within --warn-within {}",
                human(info.remaining_seconds),
                info.not_after,
                human(policy.warn_within)
            ),
        ));
    }
}

fn leaf_findings(info: &CertInfo, policy: &Policy, findings: &mut Vec<Finding>) {
    let i = Some(0);
    if info.ca {
        findings.push(finding(
            "ca-leaf",
            i,
            "the leaf certificate has basicConstraints CA:TRUE; a workload certificate must not be a CA".into(),
        ));
    }
    if info.sans.uri.len() > 1 {
        findings.push(finding(
            "multiple-uri-sans",
            i,
            format!(
                "{} URI SANs ({}); Istio issues exactly one, and principals match any of them",
                info.sans.uri.len(),
                info.sans.uri.join(", ")
            ),
        ));
    }
    let ids: Vec<SpiffeId> = info
        .sans
        .uri
        .iter()
        .filter_map(|u| SpiffeId::parse(u))
        .collect();
    if ids.is_empty() {
        findings.push(finding(
            "no-spiffe-id",
            i,
            "no spiffe:// URI SAN: Istio's handshake refuses a peer certificate without one".into(),
        ));
        return;
    }
    if !ids
        .iter()
        .any(|id| policy.trust_domains.contains(&id.trust_domain))
    {
        let tds: Vec<&str> = ids.iter().map(|id| id.trust_domain.as_str()).collect();
        findings.push(finding(
            "trust-domain-not-accepted",
            i,
            format!(
                "trust domain {} is not among the accepted ones ({}): Istio's handshake refuses it",
                tds.join(", "),
                policy.trust_domains.join(", ")
            ),
        ));
    }
    for id in &ids {
        if id.namespace.is_none() {
            findings.push(finding(
                "spiffe-id-not-istio-form",
                i,
                format!(
                    "{} is not spiffe://<trust domain>/ns/<namespace>/sa/<service account>",
                    id.id
                ),
            ));
        }
    }
}

fn verify(chain: &[Vec<u8>], bundle: &[Vec<u8>], now: i64, usages: &[Usage]) -> Result<(), String> {
    use rustls_pki_types::{CertificateDer, UnixTime};
    let Some(leaf) = chain.first() else {
        return Err("no certificate".into());
    };
    let roots: Vec<CertificateDer<'_>> = bundle
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let mut anchors = Vec::new();
    for (i, r) in roots.iter().enumerate() {
        anchors.push(
            webpki::anchor_from_trusted_cert(r)
                .map_err(|e| format!("trust bundle certificate {i} is unusable: {e:?}"))?,
        );
    }
    if anchors.is_empty() {
        return Err("the trust bundle holds no certificate".into());
    }
    let leaf = CertificateDer::from(leaf.as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| format!("the leaf cannot be used: {}", explain(&e)))?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or(0),
    ));
    for usage in usages {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            usage.webpki(),
            None,
            None,
        )
        .map_err(|e| format!("for {}: {}", usage.name(), explain(&e)))?;
    }
    Ok(())
}

fn explain(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => "unknown issuer (no root of the trust bundle signed this chain)".into(),
        E::CertExpired { .. } => "a certificate of the chain has expired".into(),
        E::CertNotValidYet { .. } => "a certificate of the chain is not valid yet".into(),
        E::CaUsedAsEndEntity => "the leaf is a CA certificate (CA:TRUE)".into(),
        E::EndEntityUsedAsCa => "a non-CA certificate is used as an issuer".into(),
        E::RequiredEkuNotFoundContext(_) => "the extended key usage does not allow it".into(),
        E::InvalidSignatureForPublicKey => "a signature in the chain does not verify".into(),
        other => format!("{other:?}"),
    }
}

fn describe(cert: &X509Certificate<'_>, der: &[u8], index: usize, now: i64) -> CertInfo {
    let mut sans = Sans::default();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::URI(u) => sans.uri.push(u.to_string()),
                GeneralName::DNSName(d) => sans.dns.push(d.to_string()),
                GeneralName::RFC822Name(m) => sans.email.push(m.to_string()),
                GeneralName::IPAddress(b) => sans.ip.push(ip(b)),
                _ => {}
            }
        }
    }
    let spiffe = sans.uri.iter().find_map(|u| SpiffeId::parse(u));
    let (ca, path_len) = match cert.basic_constraints() {
        Ok(Some(bc)) => (bc.value.ca, bc.value.path_len_constraint),
        _ => (false, None),
    };
    let not_before_unix = cert.validity().not_before.timestamp();
    let not_after_unix = cert.validity().not_after.timestamp();
    let role = if index == 0 {
        Role::Leaf
    } else if cert.subject() == cert.issuer() {
        Role::Root
    } else {
        Role::Intermediate
    };
    CertInfo {
        index,
        role,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        sha256_fingerprint: Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        sans,
        spiffe,
        not_before: rfc3339(not_before_unix),
        not_after: rfc3339(not_after_unix),
        not_before_unix,
        not_after_unix,
        remaining_seconds: not_after_unix - now,
        key: key_info(cert),
        ca,
        path_len,
        key_usage: key_usage(cert),
        extended_key_usage: extended_key_usage(cert),
    }
}

fn ip(b: &[u8]) -> String {
    match b.len() {
        4 => <[u8; 4]>::try_from(b)
            .map(|a| std::net::Ipv4Addr::from(a).to_string())
            .unwrap_or_default(),
        16 => <[u8; 16]>::try_from(b)
            .map(|a| std::net::Ipv6Addr::from(a).to_string())
            .unwrap_or_default(),
        _ => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

fn key_info(cert: &X509Certificate<'_>) -> KeyInfo {
    let spki = cert.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    match (oid.as_str(), spki.parsed()) {
        (_, Ok(PublicKey::RSA(k))) => KeyInfo {
            kind: "RSA".into(),
            bits: Some(k.key_size()),
            curve: None,
        },
        (_, Ok(PublicKey::EC(p))) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|a| a.as_oid().ok())
                .map(|o| match o.to_id_string().as_str() {
                    "1.2.840.10045.3.1.7" => "P-256".to_string(),
                    "1.3.132.0.34" => "P-384".to_string(),
                    "1.3.132.0.35" => "P-521".to_string(),
                    other => other.to_string(),
                });
            KeyInfo {
                kind: "EC".into(),
                bits: Some(p.key_size()),
                curve,
            }
        }
        ("1.3.101.112", _) => KeyInfo {
            kind: "Ed25519".into(),
            bits: Some(256),
            curve: None,
        },
        ("1.3.101.113", _) => KeyInfo {
            kind: "Ed448".into(),
            bits: Some(456),
            curve: None,
        },
        (other, _) => KeyInfo {
            kind: other.into(),
            bits: None,
            curve: None,
        },
    }
}

fn key_usage(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ku)) = cert.key_usage() else {
        return Vec::new();
    };
    let k = ku.value;
    [
        (k.digital_signature(), "digitalSignature"),
        (k.non_repudiation(), "nonRepudiation"),
        (k.key_encipherment(), "keyEncipherment"),
        (k.data_encipherment(), "dataEncipherment"),
        (k.key_agreement(), "keyAgreement"),
        (k.key_cert_sign(), "keyCertSign"),
        (k.crl_sign(), "cRLSign"),
        (k.encipher_only(), "encipherOnly"),
        (k.decipher_only(), "decipherOnly"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| n.to_string())
    .collect()
}

fn extended_key_usage(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(eku)) = cert.extended_key_usage() else {
        return Vec::new();
    };
    let e = eku.value;
    let mut out: Vec<String> = [
        (e.any, "anyExtendedKeyUsage"),
        (e.server_auth, "serverAuth"),
        (e.client_auth, "clientAuth"),
        (e.code_signing, "codeSigning"),
        (e.email_protection, "emailProtection"),
        (e.time_stamping, "timeStamping"),
        (e.ocsp_signing, "OCSPSigning"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| n.to_string())
    .collect();
    out.extend(e.other.iter().map(|o| o.to_id_string()));
    out
}

/// `2026-12-04T10:20:00Z` from Unix seconds (no time-zone database needed for UTC).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `3d 4h`, `23h 59m`, `5m 3s`, `42s`: the two largest units.
pub fn human(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let units = [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)];
    let mut parts = Vec::new();
    let mut left = s;
    for (name, size) in units {
        let q = left / size;
        if q > 0 || (!parts.is_empty() && parts.len() < 2) {
            if parts.len() < 2 {
                parts.push(format!("{q}{name}"));
            }
            left %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
