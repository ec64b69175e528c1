//! The sandbox's mesh CA and one workload certificate per service account, written as
//! PEM files that the Envoy configs reference. (`peerguard serve` would deliver them over
//! SDS; see the sandbox README for why the sandbox writes files today.)

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// `certs/ca.pem` and `certs/<ns>-<sa>/{cert,key}.pem`.
pub fn cert_dir(state: &Path, namespace: &str, sa: &str) -> PathBuf {
    state.join("certs").join(format!("{namespace}-{sa}"))
}

pub fn ca_path(state: &Path) -> PathBuf {
    state.join("certs").join("ca.pem")
}

/// Creates the CA and a certificate for each `(namespace, service account, spiffe uri)`.
pub fn generate(state: &Path, identities: &[(String, String, String)]) -> anyhow::Result<()> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "peerguard sandbox mesh CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(30);
    let ca = params.self_signed(&key).context("self-signing the CA")?;
    let ca_file = ca_path(state);
    write(&ca_file, &ca.pem())?;
    let issuer = Issuer::new(params, key);
    for (ns, sa, uri) in identities {
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name = DistinguishedName::new();
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        leaf.use_authority_key_identifier_extension = true;
        leaf.not_before = now - Duration::hours(1);
        // Istio's default workload certificate lifetime (spec 1.2).
        leaf.not_after = now + Duration::hours(24);
        let ia5 = uri
            .clone()
            .try_into()
            .with_context(|| format!("URI SAN {uri:?}"))?;
        leaf.subject_alt_names = vec![SanType::URI(ia5)];
        let leaf_key = KeyPair::generate().context("generating a workload key")?;
        let cert = leaf
            .signed_by(&leaf_key, &issuer)
            .context("signing a workload certificate")?;
        let dir = cert_dir(state, ns, sa);
        write(&dir.join("cert.pem"), &cert.pem())?;
        write(&dir.join("key.pem"), &leaf_key.serialize_pem())?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
