//! DER bytes → the filter's URI-SAN reader (directly, and wrapped as Envoy's URL-encoded PEM
//! attribute), cross-checked with x509-parser where both read the certificate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerguard_filter::fuzzing::{uri_sans_from_der, uri_sans_from_url_pem};
use peerguard_fuzz::cert::{envoy_peer_certificate, x509_view, X509View};

fuzz_target!(|data: &[u8]| {
    // The raw bytes as the attribute itself: percent-decoding, PEM and base64 must not panic.
    let _ = uri_sans_from_url_pem(data);

    let ours = uri_sans_from_der(data);
    // What the filter actually receives for this certificate must read the same.
    let via_envoy = uri_sans_from_url_pem(&envoy_peer_certificate(data));
    assert_eq!(
        via_envoy, ours,
        "the URL-encoded PEM form reads differently from the DER"
    );

    // Where both parsers read the certificate and its SAN, they must list the same URIs in
    // the same order. The filter's DER walk is deliberately narrower than a full X.509
    // parser (it reads only the path to the SAN), so either side refusing is not compared.
    if let (Ok(sans), X509View::UriSans(theirs)) = (&ours, x509_view(data)) {
        assert_eq!(
            sans, &theirs,
            "the filter and x509-parser read different URI SANs"
        );
    }
});
