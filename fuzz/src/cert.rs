//! Certificates for target `peer_identity`.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// DER → the value of Envoy's `connection.peer_certificate` attribute: a PEM block,
/// URL-encoded (every byte outside RFC 3986's unreserved set as `%XX`).
pub fn envoy_peer_certificate(der: &[u8]) -> Vec<u8> {
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in base64(der).as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut out = Vec::with_capacity(pem.len() * 2);
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend(format!("%{b:02X}").bytes());
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648 §4), 3 bytes → 4 characters at a time.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What x509-parser says about one DER certificate.
#[derive(Debug, PartialEq, Eq)]
pub enum X509View {
    /// Not a certificate to x509-parser (or trailing bytes after it).
    Unparsable,
    /// A certificate whose subjectAltName x509-parser rejects (malformed, or duplicated).
    BadSan,
    /// Every URI SAN, in order (empty: no SAN extension, or no URI in it).
    UriSans(Vec<String>),
}

pub fn x509_view(der: &[u8]) -> X509View {
    let cert = match x509_parser::certificate::X509Certificate::from_der(der) {
        Ok((&[], cert)) => cert,
        _ => return X509View::Unparsable,
    };
    match cert.subject_alternative_name() {
        Err(_) => X509View::BadSan,
        Ok(None) => X509View::UriSans(Vec::new()),
        Ok(Some(san)) => X509View::UriSans(
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    /// The wrapping is what the filter reads as Envoy's attribute, and x509-parser agrees on
    /// the seed certificates.
    #[test]
    fn seed_certificates_read_alike_three_ways() {
        use peerguard_filter::fuzzing::{uri_sans_from_der, uri_sans_from_url_pem};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/peer_identity");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
            {
                continue;
            }
            let der = std::fs::read(&path).unwrap();
            let ours = uri_sans_from_der(&der).unwrap();
            assert_eq!(
                uri_sans_from_url_pem(&envoy_peer_certificate(&der)),
                Ok(ours.clone()),
                "{path:?}"
            );
            assert_eq!(x509_view(&der), X509View::UriSans(ours), "{path:?}");
            seen += 1;
        }
        assert!(seen >= 3, "seed certificates missing in {dir:?}");
    }
}
