//! The peer certificate, from Envoy's `connection.peer_certificate` (URL-encoded PEM) to
//! its URI SANs: a small DER reader (cross-checked against x509-parser in the tests; the
//! crate itself would add ~120 KB to the module), and a bounded cache by certificate digest.

/// The URI SANs of one certificate, or why they cannot be read.
pub(crate) type Sans = Result<Vec<String>, String>;

/// A small cache of certificate digest → URI SANs. Bounded, so a client rotating
/// certificates (or an attacker presenting many) cannot grow it.
#[derive(Debug, Default)]
pub(crate) struct SanCache {
    entries: Vec<(Vec<u8>, Sans)>,
    next: usize,
}

impl SanCache {
    const CAPACITY: usize = 64;

    pub(crate) fn get(&self, digest: &[u8]) -> Option<&Sans> {
        self.entries
            .iter()
            .find(|(d, _)| d.as_slice() == digest)
            .map(|(_, v)| v)
    }

    pub(crate) fn put(&mut self, digest: Vec<u8>, value: Sans) {
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
    let (cert, rest) = tlv::expect(der, tlv::SEQUENCE, "Certificate")?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    let (tbs, _) = tlv::expect(cert, tlv::SEQUENCE, "tbsCertificate")?;
    // tbsCertificate fields are walked to the optional [3] extensions; earlier fields are
    // skipped by their lengths.
    let mut fields = tbs;
    let mut sans = Vec::new();
    let mut seen_san = false;
    let mut seen_extensions = false;
    while !fields.is_empty() {
        let (tag, body, rest) = tlv::next(fields)?;
        fields = rest;
        // Any other tag (e.g. a primitive `[3]`) is a malformed certificate: skipping it would
        // read "no SANs" where a lenient parser finds some (found by fuzz/peer_identity).
        match tag {
            tlv::EXTENSIONS if !seen_extensions => seen_extensions = true,
            tlv::EXTENSIONS => return Err("tbsCertificate: two extensions fields".into()),
            t if tlv::TBS_OTHER_FIELDS.contains(&t) => continue,
            other => return Err(format!("tbsCertificate: unexpected DER tag 0x{other:02x}")),
        }
        let (mut exts, _) = tlv::expect(body, tlv::SEQUENCE, "extensions")?;
        while !exts.is_empty() {
            let (ext, rest) = tlv::expect(exts, tlv::SEQUENCE, "Extension")?;
            exts = rest;
            let (oid, mut ext_rest) = tlv::expect(ext, tlv::OID, "extnID")?;
            if oid != SAN_OID {
                continue;
            }
            if seen_san {
                return Err("duplicate subjectAltName extension".into());
            }
            seen_san = true;
            if let Ok((_, after)) = tlv::expect(ext_rest, tlv::BOOLEAN, "critical") {
                ext_rest = after;
            }
            let (value, _) = tlv::expect(ext_rest, tlv::OCTET_STRING, "extnValue")?;
            let (mut names, trailing) = tlv::expect(value, tlv::SEQUENCE, "GeneralNames")?;
            if !trailing.is_empty() {
                return Err("trailing bytes after GeneralNames".into());
            }
            while !names.is_empty() {
                let (tag, body, rest) = tlv::next(names)?;
                names = rest;
                match tag {
                    tlv::URI => {
                        let uri = std::str::from_utf8(body)
                            .ok()
                            .filter(|s| s.is_ascii())
                            .ok_or("URI SAN is not IA5 (ASCII) text")?;
                        sans.push(uri.to_string());
                    }
                    t if tlv::OTHER_GENERAL_NAMES.contains(&t) => {}
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
mod tlv {
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
    /// A leaf with two URI SANs and a DNS SAN (openssl, throwaway CA).
    const TWO_SANS_PEM: &str = include_str!("testdata/two_uri_sans.pem");
    /// No subjectAltName extension at all.
    const NO_SAN_PEM: &str = include_str!("testdata/no_san.pem");
    /// A critical subjectAltName (the BOOLEAN is present) with one URI and an email.
    const CRITICAL_SAN_PEM: &str = include_str!("testdata/critical_san.pem");

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
        let primitive = retag(&[tlv::EXTENSIONS, 0x81, 164, tlv::SEQUENCE], 0x83);
        assert!(uri_sans_from_der(&primitive)
            .unwrap_err()
            .contains("tbsCertificate"));
        // The second URI SAN as a constructed `[6]` and as a universal tag 6.
        let second = b"spiffe://other.td";
        let len = u8::try_from(second.len() + "/ns/bar/sa/b".len()).unwrap();
        for to in [0xa6, 0x06] {
            let d = retag(&[&[tlv::URI, len][..], second].concat(), to);
            assert!(
                uri_sans_from_der(&d).unwrap_err().contains("GeneralName"),
                "{to:#x}"
            );
        }
    }
}
