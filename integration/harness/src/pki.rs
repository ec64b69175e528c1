//! A throw-away test PKI: a mesh root CA (the one Envoy trusts), an untrusted root CA (same
//! shape, different key: a client signed by it must fail the handshake), a server
//! certificate for Envoy and client certificates with arbitrary URI SANs.
//!
//! Client certificates look like Istio workload certificates: empty subject, URI SANs only
//! (so the SAN extension is critical), client and server auth.

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// The DNS name in Envoy's server certificate; clients verify it against the mesh root.
pub const SERVER_NAME: &str = "peerguard-e2e.local";

/// Which root signs a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaChoice {
    /// The mesh root, trusted by Envoy.
    Mesh,
    /// A root Envoy does not trust.
    Untrusted,
}

/// A certificate (DER and PEM) with its private key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    /// PKCS#8 DER.
    pub key_der: Vec<u8>,
    pub key_pem: String,
}

impl Issued {
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// What a client certificate should carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientCertSpec {
    /// URI SANs, in order (e.g. `spiffe://cluster.local/ns/foo/sa/sleep`).
    pub uri_sans: Vec<String>,
    pub ca: CaChoice,
    /// Validity window entirely in the past.
    pub expired: bool,
}

struct Root {
    issuer: Issuer<'static, KeyPair>,
    cert: Issued,
}

/// The two roots and Envoy's server certificate.
pub struct TestPki {
    mesh: Root,
    untrusted: Root,
    server: Issued,
}

impl TestPki {
    pub fn new() -> anyhow::Result<Self> {
        let mesh = new_root("peerguard e2e mesh root")?;
        let untrusted = new_root("peerguard e2e untrusted root")?;
        let server = {
            let mut params = leaf_params(false)?;
            params
                .distinguished_name
                .push(DnType::CommonName, SERVER_NAME);
            params.subject_alt_names = vec![SanType::DnsName(
                SERVER_NAME.try_into().context("server DNS name")?,
            )];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            sign(params, &mesh.issuer)?
        };
        Ok(TestPki {
            mesh,
            untrusted,
            server,
        })
    }

    /// The mesh root (PEM), Envoy's `trusted_ca`.
    pub fn mesh_root_pem(&self) -> &str {
        &self.mesh.cert.cert_pem
    }

    pub fn mesh_root_der(&self) -> &CertificateDer<'static> {
        &self.mesh.cert.cert_der
    }

    pub fn untrusted_root_pem(&self) -> &str {
        &self.untrusted.cert.cert_pem
    }

    /// Envoy's server certificate (signed by the mesh root, DNS SAN [`SERVER_NAME`]).
    pub fn server(&self) -> &Issued {
        &self.server
    }

    /// A sidecar's workload certificate (mesh root): URI SAN `uri` (its SPIFFE identity),
    /// and the DNS SAN [`SERVER_NAME`] the runner's clients verify; client and server use.
    pub fn sidecar(&self, uri: &str) -> anyhow::Result<Issued> {
        let mut params = leaf_params(false)?;
        params.subject_alt_names = vec![
            SanType::URI(
                uri.to_string()
                    .try_into()
                    .with_context(|| format!("URI SAN {uri:?} is not an IA5 string"))?,
            ),
            SanType::DnsName(SERVER_NAME.try_into().context("server DNS name")?),
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        sign(params, &self.mesh.issuer)
    }

    /// A client certificate as `spec` describes, signed directly by the chosen root.
    pub fn client(&self, spec: &ClientCertSpec) -> anyhow::Result<Issued> {
        let mut params = leaf_params(spec.expired)?;
        params.subject_alt_names = spec
            .uri_sans
            .iter()
            .map(|u| {
                let ia5 = u
                    .clone()
                    .try_into()
                    .with_context(|| format!("URI SAN {u:?} is not an IA5 string"))?;
                Ok(SanType::URI(ia5))
            })
            .collect::<anyhow::Result<_>>()?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let root = match spec.ca {
            CaChoice::Mesh => &self.mesh,
            CaChoice::Untrusted => &self.untrusted,
        };
        sign(params, &root.issuer)
    }
}

/// A client certificate for `uri` (Istio's shape), signed by a CA kept on disk (e.g. the
/// built-in CA of `peerguard serve`: `<state-dir>/ca/root-{cert,key}.pem`).
pub fn issue_with_ca_files(ca_cert: &Path, ca_key: &Path, uri: &str) -> anyhow::Result<Issued> {
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let key = KeyPair::from_pem(&read(ca_key)?)
        .with_context(|| format!("{}: not a private key", ca_key.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&read(ca_cert)?, key)
        .with_context(|| format!("{}: not a CA certificate", ca_cert.display()))?;
    let mut params = leaf_params(false)?;
    params.subject_alt_names = vec![SanType::URI(
        uri.try_into().with_context(|| format!("URI SAN {uri:?}"))?,
    )];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(params, &issuer)
}

fn new_root(name: &str) -> anyhow::Result<Root> {
    let key = KeyPair::generate().context("generating a CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(30);
    params.not_after = now + Duration::days(30);
    let cert = params.self_signed(&key).context("self-signing a CA")?;
    let issued = Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
        key_pem: key.serialize_pem(),
    };
    Ok(Root {
        issuer: Issuer::new(params, key),
        cert: issued,
    })
}

fn leaf_params(expired: bool) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    // Istio workload certificates have an empty subject.
    params.distinguished_name = DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - Duration::days(3);
        params.not_after = now - Duration::days(1);
    } else {
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(1);
    }
    Ok(params)
}

fn sign(params: CertificateParams, issuer: &Issuer<'static, KeyPair>) -> anyhow::Result<Issued> {
    let key = KeyPair::generate().context("generating a leaf key")?;
    let cert = params
        .signed_by(&key, issuer)
        .context("signing a leaf certificate")?;
    Ok(Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;

    fn uris(der: &[u8]) -> anyhow::Result<(Vec<String>, i64, i64, String)> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)?;
        let mut out = Vec::new();
        if let Some(san) = cert.subject_alternative_name()? {
            for n in &san.value.general_names {
                if let GeneralName::URI(u) = n {
                    out.push(u.to_string());
                }
            }
        }
        let v = cert.validity();
        Ok((
            out,
            v.not_before.timestamp(),
            v.not_after.timestamp(),
            cert.issuer().to_string(),
        ))
    }

    #[test]
    fn client_certificates_carry_the_requested_sans_issuer_and_window() -> anyhow::Result<()> {
        let pki = TestPki::new()?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let spec = ClientCertSpec {
            uri_sans: vec!["spiffe://td/ns/a/sa/b".into(), "https://x.example/".into()],
            ca: CaChoice::Mesh,
            expired: false,
        };
        let (sans, nb, na, issuer) = uris(&pki.client(&spec)?.cert_der)?;
        assert_eq!(sans, spec.uri_sans);
        assert!(nb < now && now < na);
        assert!(issuer.contains("mesh root"), "{issuer}");

        let expired = ClientCertSpec {
            expired: true,
            ca: CaChoice::Untrusted,
            ..spec
        };
        let (_, nb, na, issuer) = uris(&pki.client(&expired)?.cert_der)?;
        assert!(nb < na && na < now);
        assert!(issuer.contains("untrusted root"), "{issuer}");
        Ok(())
    }
}
