//! The certificate authority behind SDS.
//!
//! Three modes:
//! - built-in: a self-signed root kept in `--state-dir` (`ca/root-cert.pem`, and
//!   `ca/root-key.pem` with mode 0600), generated on first start;
//! - bring your own: `--ca-cert`/`--ca-key` (typically an intermediate of your PKI) plus
//!   `--trust-bundle` (the roots Envoy should trust; defaults to `--ca-cert`);
//! - bundle only: `--trust-bundle` without a key. Only `ROOTCA` is served; workload
//!   certificates must come from elsewhere.
//!
//! Workload certificates carry exactly one URI SAN `spiffe://<td>/ns/<ns>/sa/<sa>` (Istio,
//! semantics spec 1.1). Lifetime: `--workload-cert-ttl` (24h), refused above
//! `--max-workload-cert-ttl` (90d) as Istio's CA does (spec 1.2), and cut to the CA's own
//! remaining life. Key material never reaches a log line or an error message.

pub mod duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("workload certificate TTL {ttl} is greater than the max allowed TTL {max} (--max-workload-cert-ttl)")]
    TtlTooLong { ttl: String, max: String },
    #[error("workload certificate TTL must be positive")]
    TtlZero,
    #[error(
        "no CA key: this server only distributes a trust bundle (--trust-bundle without --ca-key)"
    )]
    NoSigningKey,
    #[error("the CA certificate has expired or expires within a minute; renew it")]
    CaExpired,
    #[error("identity {0:?} is not a valid SPIFFE URI")]
    BadIdentity(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

fn file_err(path: &Path, message: impl Into<String>) -> CaError {
    CaError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn gen_err(e: rcgen::Error) -> CaError {
    CaError::Generate(e.to_string())
}

/// How the CA was configured.
#[derive(Debug, Clone)]
pub enum CaSource {
    Builtin {
        state_dir: PathBuf,
    },
    Provided {
        cert: PathBuf,
        key: PathBuf,
        bundle: Option<PathBuf>,
    },
    BundleOnly {
        bundle: PathBuf,
    },
}

/// An issued workload certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// Leaf first, then the CA chain up to (not including) the root when the CA is an
    /// intermediate.
    pub chain_pem: String,
    pub key_pem: String,
    pub spiffe: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// When it was issued (`not_before` is backdated for clock skew).
    pub issued_at: SystemTime,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("spiffe", &self.spiffe)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// When to replace it: at 80% of its life (counted from issuance).
    pub fn rotate_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.issued_at)
            .unwrap_or_default();
        self.issued_at + life.mul_f64(0.8)
    }
}

pub struct Ca {
    issuer: Option<Issuer<'static, KeyPair>>,
    /// PEM of the signing certificate, appended to leaf chains when it is not a root.
    chain_pem: String,
    bundle_pem: String,
    ca_not_after: Option<SystemTime>,
    pub trust_domain: String,
    pub ttl: Duration,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|e| file_err(path, format!("cannot read: {e}")))
}

/// The `not_after` of the first certificate of a PEM text.
fn pem_not_after(pem: &str, path: &Path) -> Result<SystemTime, CaError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| file_err(path, format!("not a PEM certificate: {e}")))?;
    let cert = p
        .parse_x509()
        .map_err(|e| file_err(path, format!("not an X.509 certificate: {e}")))?;
    let secs = cert.validity().not_after.timestamp();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

fn is_self_signed(pem: &str) -> bool {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .ok()
        .and_then(|(_, p)| p.parse_x509().ok().map(|c| c.subject() == c.issuer()))
        .unwrap_or(false)
}

/// Writes a file readable by the owner only, created with that mode (never world-readable,
/// not even for an instant).
fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| file_err(path, format!("cannot create: {e}")))?;
    f.write_all(text.as_bytes())
        .map_err(|e| file_err(path, format!("cannot write: {e}")))
}

/// Reads `path`, or creates it with `make()` (mode 0600).
pub fn load_or_create_private(
    path: &Path,
    make: impl FnOnce() -> Result<String, CaError>,
) -> Result<String, CaError> {
    if path.exists() {
        return read(path);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| file_err(dir, format!("cannot create directory: {e}")))?;
    }
    let text = make()?;
    write_private(path, &text)?;
    Ok(text)
}

impl Ca {
    pub fn load(
        source: &CaSource,
        trust_domain: &str,
        ttl: Duration,
        max_ttl: Duration,
    ) -> Result<Ca, CaError> {
        if ttl.is_zero() {
            return Err(CaError::TtlZero);
        }
        if ttl > max_ttl {
            return Err(CaError::TtlTooLong {
                ttl: duration::format(ttl),
                max: duration::format(max_ttl),
            });
        }
        let (issuer, chain_pem, bundle_pem, ca_not_after) = match source {
            CaSource::Builtin { state_dir } => {
                let dir = state_dir.join("ca");
                let key_path = dir.join("root-key.pem");
                let cert_path = dir.join("root-cert.pem");
                let key_pem = load_or_create_private(&key_path, || {
                    Ok(KeyPair::generate().map_err(gen_err)?.serialize_pem())
                })?;
                let key = KeyPair::from_pem(&key_pem)
                    .map_err(|_| file_err(&key_path, "not a valid private key"))?;
                let cert_pem = if cert_path.exists() {
                    read(&cert_path)?
                } else {
                    let pem = root_params(trust_domain)?
                        .self_signed(&key)
                        .map_err(gen_err)?
                        .pem();
                    std::fs::write(&cert_path, &pem)
                        .map_err(|e| file_err(&cert_path, format!("cannot write: {e}")))?;
                    tracing::info!(cert = %cert_path.display(), "generated a new root CA");
                    pem
                };
                let not_after = pem_not_after(&cert_pem, &cert_path)?;
                let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
                    .map_err(|e| file_err(&cert_path, e.to_string()))?;
                (Some(issuer), String::new(), cert_pem, Some(not_after))
            }
            CaSource::Provided { cert, key, bundle } => {
                let cert_pem = read(cert)?;
                let key = KeyPair::from_pem(&read(key)?)
                    .map_err(|_| file_err(key, "not a valid private key (PKCS#8 PEM expected)"))?;
                let not_after = pem_not_after(&cert_pem, cert)?;
                let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
                    .map_err(|e| file_err(cert, e.to_string()))?;
                let bundle_pem = match bundle {
                    Some(b) => read(b)?,
                    None => cert_pem.clone(),
                };
                // A root is not sent in the chain; an intermediate (and whatever follows it in
                // the file) is.
                let chain = if is_self_signed(&cert_pem) {
                    String::new()
                } else {
                    cert_pem
                };
                (Some(issuer), chain, bundle_pem, Some(not_after))
            }
            CaSource::BundleOnly { bundle } => {
                let pem = read(bundle)?;
                pem_not_after(&pem, bundle)?;
                (None, String::new(), pem, None)
            }
        };
        Ok(Ca {
            issuer,
            chain_pem,
            bundle_pem,
            ca_not_after,
            trust_domain: trust_domain.into(),
            ttl,
        })
    }

    pub fn can_issue(&self) -> bool {
        self.issuer.is_some()
    }

    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    pub fn ca_not_after(&self) -> Option<SystemTime> {
        self.ca_not_after
    }

    pub fn spiffe_id(&self, namespace: &str, service_account: &str) -> String {
        workload_spiffe_id(&self.trust_domain, namespace, service_account)
    }

    /// A new key and certificate for `ns/sa`, valid from now for the configured TTL.
    pub fn issue(
        &self,
        namespace: &str,
        service_account: &str,
        now: SystemTime,
    ) -> Result<IssuedCert, CaError> {
        let issuer = self.issuer.as_ref().ok_or(CaError::NoSigningKey)?;
        let spiffe = self.spiffe_id(namespace, service_account);
        let mut not_after = now + self.ttl;
        if let Some(ca_end) = self.ca_not_after {
            if ca_end <= now + Duration::from_secs(60) {
                return Err(CaError::CaExpired);
            }
            // Never outlive the CA (spec 1.2, `minTTL`).
            not_after = not_after.min(ca_end);
        }
        // Backdate a little for clock skew between this host and peers.
        let not_before = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "peerguard");
        let uri = spiffe
            .as_str()
            .try_into()
            .map_err(|_| CaError::BadIdentity(spiffe.clone()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = params.signed_by(&key, issuer).map_err(gen_err)?;
        let mut chain_pem = cert.pem();
        chain_pem.push_str(&self.chain_pem);
        Ok(IssuedCert {
            chain_pem,
            key_pem: key.serialize_pem(),
            spiffe,
            not_before,
            not_after,
            issued_at: now,
        })
    }
}

fn root_params(trust_domain: &str) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "peerguard");
    params.distinguished_name.push(
        DnType::CommonName,
        format!("peerguard root CA ({trust_domain})"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = now
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or(now)
        .into();
    // Ten years, as Istio's self-signed root (spec 1.2).
    params.not_after = (now + Duration::from_secs(10 * 365 * 86400)).into();
    Ok(params)
}

/// The SPIFFE ID a workload's certificate carries.
pub fn workload_spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    // Istio replaces `@` in the trust domain (spec 1.1).
    format!(
        "spiffe://{}/ns/{namespace}/sa/{service_account}",
        trust_domain.replace('@', ".")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pg-ca-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    const DAY: Duration = Duration::from_secs(86400);

    #[test]
    fn builtin_root_is_persisted_with_a_private_key_file() {
        let dir = tmp("root");
        let src = CaSource::Builtin {
            state_dir: dir.clone(),
        };
        let a = Ca::load(&src, "cluster.local", DAY, 90 * DAY).unwrap();
        let b = Ca::load(&src, "cluster.local", DAY, 90 * DAY).unwrap();
        assert_eq!(
            a.bundle_pem(),
            b.bundle_pem(),
            "the root must survive a restart"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("ca/root-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{a:?}").contains("PRIVATE"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn workload_cert_has_the_spiffe_uri_and_ttl() {
        let dir = tmp("leaf");
        let ca = Ca::load(
            &CaSource::Builtin {
                state_dir: dir.clone(),
            },
            "example.org",
            DAY,
            90 * DAY,
        )
        .unwrap();
        let now = SystemTime::now();
        let c = ca.issue("foo", "httpbin", now).unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(c.chain_pem.as_bytes()).unwrap();
        let x = p.parse_x509().unwrap();
        let san = x.subject_alternative_name().unwrap().unwrap();
        let uris: Vec<String> = san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(uris, vec!["spiffe://example.org/ns/foo/sa/httpbin"]);
        let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
        assert_eq!(life, 86400 + 60);
        assert!(c.rotate_at() > now && c.rotate_at() < c.not_after);
        assert!(!format!("{c:?}").contains("PRIVATE"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ttl_above_max_is_refused_not_clamped() {
        let dir = tmp("ttl");
        let err = Ca::load(
            &CaSource::Builtin {
                state_dir: dir.clone(),
            },
            "td",
            91 * DAY,
            90 * DAY,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("greater than the max allowed TTL"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn provided_intermediate_is_appended_to_the_chain() {
        let dir = tmp("byo");
        std::fs::create_dir_all(&dir).unwrap();
        let root_key = KeyPair::generate().unwrap();
        let root_params = root_params("td").unwrap();
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let int_key = KeyPair::generate().unwrap();
        let mut ip = root_params_for_intermediate();
        ip.use_authority_key_identifier_extension = true;
        let int = ip.signed_by(&int_key, &root_issuer).unwrap();
        std::fs::write(dir.join("int.pem"), int.pem()).unwrap();
        std::fs::write(dir.join("int.key"), int_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("root.pem"), root.pem()).unwrap();
        let src = CaSource::Provided {
            cert: dir.join("int.pem"),
            key: dir.join("int.key"),
            bundle: Some(dir.join("root.pem")),
        };
        let ca = Ca::load(&src, "td", DAY, 90 * DAY).unwrap();
        let c = ca.issue("ns", "sa", SystemTime::now()).unwrap();
        assert_eq!(c.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(ca.bundle_pem(), root.pem());
        let only = Ca::load(
            &CaSource::BundleOnly {
                bundle: dir.join("root.pem"),
            },
            "td",
            DAY,
            90 * DAY,
        )
        .unwrap();
        assert!(matches!(
            only.issue("ns", "sa", SystemTime::now()),
            Err(CaError::NoSigningKey)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn root_params_for_intermediate() -> CertificateParams {
        let mut p = root_params("td").unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, "intermediate");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p
    }
}
