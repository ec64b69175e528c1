//! Every finding, from certificates made for it with rcgen; each test also checks the
//! control case (the same certificate without the defect has no such finding), so removing a
//! check fails its test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::time::{Duration, SystemTime};

const RSA_1024: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDTFdqn4x6I3w3Vq+wfS8csW/mE
CrtSMb4SrX+N3NlHinC73ea3XoL4JSUIf9Zqkw8gsBGiRZhnVbzKT0YYB8lHy/qP
o1haoPuPdEqkdz3nX7P5amz+2DkQqvcmVGI+O+sOfL7vCK3hSvwYGj3FBVL7WUIX
KBi/b2CoivnjwhBi0wIDAQAB
-----END PUBLIC KEY-----
";
const RSA_2048: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA533zyuJQDUjNu4D8GNAG
QwPsnDqjEPMbjDYnQ/K7y6CSGbpgTERhhCLjg53lJOjTDWcMK4mqGRKApLHoXk3r
2SuNiPSJAbVS5NnswDyuUbM82j2+bFXQPDxw+g/0A0CxlPFLQOwFAecS+/nPnRTw
Iyeuf4E2mLBb2wSwEorZnqSPyKWjOYCK3FTzm8kgSYa4JXIzhMLCzhgiFYxARylM
eIPY48G+ONkU5n8GejWdSAMwujitSoNXSFuG8qYRWlnYjxEtp2hRXrmwoKlTAWBS
fuuf2CB7tc88aLhQg33tFy1Bg2zQiGJfRJeJmoFhtlpzbKVxtt+HgFCxNS7U2KXb
RQIDAQAB
-----END PUBLIC KEY-----
";
const ID: &str = "spiffe://cluster.local/ns/foo/sa/httpbin";
const HOUR: Duration = Duration::from_secs(3600);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
}

fn ca(name: &str, constraint: BasicConstraints, parent: Option<&Ca>) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(constraint);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = match parent {
        Some(parent) => p.signed_by(&key, &parent.issuer).unwrap(),
        None => p.self_signed(&key).unwrap(),
    };
    Ca {
        der: cert.der().to_vec(),
        issuer: Issuer::new(p, key),
    }
}

fn root() -> Ca {
    ca("test root", BasicConstraints::Unconstrained, None)
}

/// An Istio-shaped workload certificate (empty subject, one SPIFFE URI SAN, both EKUs,
/// valid from an hour ago for 24h), changed by `edit`.
fn leaf(by: &Ca, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    leaf_with_key(by, edit, None)
}

fn leaf_with_key(
    by: &Ca,
    edit: impl FnOnce(&mut CertificateParams),
    public_key_pem: Option<&str>,
) -> Vec<u8> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let t = SystemTime::now();
    p.not_before = (t - HOUR).into();
    p.not_after = (t + 23 * HOUR).into();
    edit(&mut p);
    let cert = match public_key_pem {
        Some(pem) => {
            let spki = rcgen::SubjectPublicKeyInfo::from_pem(pem).unwrap();
            p.signed_by(&spki, &by.issuer).unwrap()
        }
        None => p
            .signed_by(&KeyPair::generate().unwrap(), &by.issuer)
            .unwrap(),
    };
    cert.der().to_vec()
}

fn policy() -> Policy {
    Policy {
        trust_domains: vec!["cluster.local".into()],
        warn_within: 3600,
        usages: vec![Usage::ClientAuth, Usage::ServerAuth],
    }
}

fn bundle(r: &Ca) -> Bundle {
    Bundle {
        origin: "test root".into(),
        ders: vec![r.der.clone()],
    }
}

fn run(chain: &[Vec<u8>], r: &Ca, p: &Policy) -> Analysis {
    analyze(chain, Some(&bundle(r)), p, now()).unwrap()
}

fn codes(a: &Analysis) -> Vec<&'static str> {
    a.findings.iter().map(|f| f.code).collect()
}

#[test]
fn an_istio_workload_certificate_is_described_verified_and_clean() {
    let r = root();
    let a = run(&[leaf(&r, |_| {})], &r, &policy());
    assert_eq!(codes(&a), Vec::<&str>::new(), "{:#?}", a.findings);
    assert_eq!(a.verification.status, VerifyStatus::Verified);
    let c = &a.certificates[0];
    assert_eq!(c.role, Role::Leaf);
    assert_eq!(
        c.spiffe,
        Some(SpiffeId {
            id: ID.into(),
            trust_domain: "cluster.local".into(),
            namespace: Some("foo".into()),
            service_account: Some("httpbin".into()),
        })
    );
    assert_eq!(c.sans.uri, vec![ID.to_string()]);
    assert_eq!(
        (c.key.kind.as_str(), c.key.bits, c.key.curve.as_deref()),
        ("EC", Some(256), Some("P-256"))
    );
    assert!(!c.ca);
    assert_eq!(c.key_usage, vec!["digitalSignature", "keyEncipherment"]);
    assert_eq!(c.extended_key_usage, vec!["serverAuth", "clientAuth"]);
    assert!(
        (23 * 3600 - 5..=23 * 3600).contains(&c.remaining_seconds),
        "{}",
        c.remaining_seconds
    );
    assert_eq!(c.not_after, rfc3339(c.not_after_unix));
    assert!(c.serial.split(':').count() > 1, "{}", c.serial);
}

#[test]
fn no_spiffe_id() {
    let r = root();
    let dns = leaf(&r, |p| {
        p.subject_alt_names = vec![SanType::DnsName("httpbin.foo".try_into().unwrap())]
    });
    let a = run(&[dns], &r, &policy());
    assert!(codes(&a).contains(&"no-spiffe-id"), "{:?}", codes(&a));
    let https = leaf(&r, |p| {
        p.subject_alt_names = vec![SanType::URI("https://example.com/x".try_into().unwrap())]
    });
    assert_eq!(codes(&run(&[https], &r, &policy())), vec!["no-spiffe-id"]);
    assert!(!codes(&run(&[leaf(&r, |_| {})], &r, &policy())).contains(&"no-spiffe-id"));
}

#[test]
fn multiple_uri_sans() {
    let r = root();
    let two = leaf(&r, |p| {
        p.subject_alt_names.push(SanType::URI(
            "spiffe://cluster.local/ns/bar/sa/sleep".try_into().unwrap(),
        ))
    });
    let a = run(&[two], &r, &policy());
    assert_eq!(codes(&a), vec!["multiple-uri-sans"]);
    assert_eq!(a.findings[0].severity, Severity::Warning);
}

#[test]
fn trust_domain_other_than_the_mesh_and_its_aliases() {
    let r = root();
    let other = leaf(&r, |p| {
        p.subject_alt_names = vec![SanType::URI(
            "spiffe://old.example/ns/foo/sa/httpbin".try_into().unwrap(),
        )]
    });
    let a = run(std::slice::from_ref(&other), &r, &policy());
    assert_eq!(codes(&a), vec!["trust-domain-not-accepted"]);
    assert!(a.findings[0].message.contains("old.example"));
    let mut with_alias = policy();
    with_alias.trust_domains.push("old.example".into());
    assert_eq!(codes(&run(&[other], &r, &with_alias)), Vec::<&str>::new());
}

#[test]
fn spiffe_id_not_in_istio_form() {
    let r = root();
    let odd = leaf(&r, |p| {
        p.subject_alt_names = vec![SanType::URI(
            "spiffe://cluster.local/workload/httpbin"
                .try_into()
                .unwrap(),
        )]
    });
    let a = run(&[odd], &r, &policy());
    assert_eq!(codes(&a), vec!["spiffe-id-not-istio-form"]);
    assert_eq!(a.certificates[0].spiffe.as_ref().unwrap().namespace, None);
}

#[test]
fn expired() {
    let r = root();
    let t = SystemTime::now();
    let old = leaf(&r, |p| {
        p.not_before = (t - 48 * HOUR).into();
        p.not_after = (t - 2 * HOUR).into();
    });
    let a = run(&[old], &r, &policy());
    let c = codes(&a);
    assert!(c.contains(&"expired"), "{c:?}");
    let f = a.findings.iter().find(|f| f.code == "expired").unwrap();
    assert_eq!((f.severity, f.certificate), (Severity::Error, Some(0)));
    assert!(f.message.starts_with("expired 2h"), "{}", f.message);
    // webpki agrees: the chain does not verify either.
    assert!(c.contains(&"chain-not-verified"), "{c:?}");
    assert!(a.certificates[0].remaining_seconds < 0);
}

#[test]
fn an_expired_intermediate_is_found_too() {
    let r = root();
    let t = SystemTime::now();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "old intermediate");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.not_before = (t - 100 * HOUR).into();
    p.not_after = (t - HOUR).into();
    let der = p.signed_by(&key, &r.issuer).unwrap().der().to_vec();
    let int = Ca {
        issuer: Issuer::new(p, key),
        der,
    };
    let a = run(&[leaf(&int, |_| {}), int.der.clone()], &r, &policy());
    assert!(a
        .findings
        .iter()
        .any(|f| f.code == "expired" && f.certificate == Some(1)));
    assert_eq!(a.certificates[1].role, Role::Intermediate);
}

#[test]
fn not_yet_valid() {
    let r = root();
    let t = SystemTime::now();
    let future = leaf(&r, |p| {
        p.not_before = (t + 2 * HOUR).into();
        p.not_after = (t + 26 * HOUR).into();
    });
    let a = run(&[future], &r, &policy());
    let c = codes(&a);
    assert!(c.contains(&"not-yet-valid"), "{c:?}");
    assert!(!c.contains(&"expired"));
}

#[test]
fn expiring_within_warn_within() {
    let r = root();
    let t = SystemTime::now();
    let soon = leaf(&r, |p| p.not_after = (t + HOUR / 2).into());
    let a = run(std::slice::from_ref(&soon), &r, &policy());
    assert_eq!(codes(&a), vec!["expiring-soon"]);
    assert_eq!(a.findings[0].severity, Severity::Warning);
    let mut short = policy();
    short.warn_within = 600;
    assert_eq!(codes(&run(&[soon], &r, &short)), Vec::<&str>::new());
}

#[test]
fn ca_true_on_the_leaf() {
    let r = root();
    let ca_leaf = leaf(&r, |p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained));
    let a = run(&[ca_leaf], &r, &policy());
    let c = codes(&a);
    assert!(c.contains(&"ca-leaf"), "{c:?}");
    assert!(a.certificates[0].ca);
    // webpki refuses a CA as end entity as well.
    assert!(a
        .verification
        .reason
        .as_deref()
        .unwrap()
        .contains("CA certificate"));
}

#[test]
fn rsa_key_under_2048_bits() {
    let r = root();
    let small = leaf_with_key(&r, |_| {}, Some(RSA_1024));
    let a = run(&[small], &r, &policy());
    assert_eq!(codes(&a), vec!["rsa-key-too-small"]);
    assert_eq!(a.certificates[0].key.bits, Some(1024));
    let ok = leaf_with_key(&r, |_| {}, Some(RSA_2048));
    let a = run(&[ok], &r, &policy());
    assert_eq!(codes(&a), Vec::<&str>::new());
    assert_eq!(
        (
            a.certificates[0].key.kind.as_str(),
            a.certificates[0].key.bits
        ),
        ("RSA", Some(2048))
    );
}

#[test]
fn chain_against_another_root_does_not_verify() {
    let r = root();
    let other = ca("other root", BasicConstraints::Unconstrained, None);
    let a = run(&[leaf(&other, |_| {})], &r, &policy());
    assert_eq!(codes(&a), vec!["chain-not-verified"]);
    assert_eq!(a.verification.status, VerifyStatus::NotVerified);
    assert!(a
        .verification
        .reason
        .as_deref()
        .unwrap()
        .contains("unknown issuer"));
    // Same subject, another key: the signature does not verify.
    let twin = root();
    let a = run(&[leaf(&twin, |_| {})], &r, &policy());
    assert_eq!(codes(&a), vec!["chain-not-verified"]);
}

#[test]
fn an_intermediate_in_the_chain_is_used_and_needed() {
    let r = root();
    let int = ca("intermediate", BasicConstraints::Constrained(0), Some(&r));
    let l = leaf(&int, |_| {});
    let a = run(&[l.clone(), int.der.clone()], &r, &policy());
    assert_eq!(a.verification.status, VerifyStatus::Verified, "{a:#?}");
    assert_eq!(a.certificates[1].role, Role::Intermediate);
    assert_eq!(a.certificates[1].path_len, Some(0));
    let a = run(&[l], &r, &policy());
    assert_eq!(codes(&a), vec!["chain-not-verified"]);
}

#[test]
fn extended_key_usage_is_checked_for_the_usages_asked() {
    let r = root();
    let server_only = leaf(&r, |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
    });
    let a = run(std::slice::from_ref(&server_only), &r, &policy());
    assert_eq!(codes(&a), vec!["chain-not-verified"]);
    assert!(a
        .verification
        .reason
        .as_deref()
        .unwrap()
        .contains("clientAuth"));
    let mut server = policy();
    server.usages = vec![Usage::ServerAuth];
    assert_eq!(codes(&run(&[server_only], &r, &server)), Vec::<&str>::new());
}

#[test]
fn without_a_bundle_the_chain_is_not_checked() {
    let r = root();
    let a = analyze(&[leaf(&r, |_| {})], None, &policy(), now()).unwrap();
    assert_eq!(codes(&a), vec!["no-trust-bundle"]);
    assert_eq!(a.verification.status, VerifyStatus::NotChecked);
    assert_eq!(a.findings[0].severity, Severity::Warning);
}

#[test]
fn errors_sort_before_warnings() {
    let r = root();
    let t = SystemTime::now();
    let l = leaf(&r, |p| {
        p.not_after = (t + HOUR / 2).into();
        p.subject_alt_names = vec![SanType::DnsName("x".try_into().unwrap())];
    });
    let a = analyze(&[l], None, &policy(), now()).unwrap();
    let sev: Vec<Severity> = a.findings.iter().map(|f| f.severity).collect();
    let mut sorted = sev.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(sev, sorted);
    assert_eq!(sev[0], Severity::Error);
}

#[test]
fn pem_der_and_garbage() {
    let r = root();
    let l = leaf(&r, |_| {});
    let pem = |der: &[u8], label: &str| {
        let p = x509_parser::pem::Pem {
            label: label.into(),
            contents: der.to_vec(),
        };
        let _ = p;
        // rcgen's PEM writer via a fresh certificate is not reachable from DER; build it.
        let b64 = base64(der);
        format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
    };
    let text = format!(
        "{}{}{}",
        pem(&l, "CERTIFICATE"),
        pem(b"secret", "PRIVATE KEY"),
        pem(&r.der, "CERTIFICATE")
    );
    let got = parse_certs(text.as_bytes(), "t").unwrap();
    assert_eq!(got, vec![l.clone(), r.der.clone()]);
    assert_eq!(parse_certs(&l, "t").unwrap(), vec![l.clone()]);
    assert!(matches!(
        parse_certs(b"", "t"),
        Err(InspectError::NoCertificate { .. })
    ));
    assert!(matches!(
        parse_certs(pem(b"k", "PRIVATE KEY").as_bytes(), "t"),
        Err(InspectError::NoCertificate { .. })
    ));
    let e = parse_certs(b"not a certificate", "f.pem").unwrap_err();
    assert!(e.to_string().starts_with("f.pem: certificate 0:"), "{e}");
    // Key material never shows in an error.
    assert!(!format!("{:?}", parse_certs(text.as_bytes(), "t")).contains("secret"));
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn times_and_durations() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_796_386_800), "2026-12-04T12:20:00Z");
    assert_eq!(human(42), "42s");
    assert_eq!(human(3600 + 120), "1h 2m");
    assert_eq!(human(-(86400 * 3 + 3600 * 4 + 5)), "3d 4h");
    assert_eq!(human(86400), "1d 0h");
    assert_eq!(human(0), "0s");
}
