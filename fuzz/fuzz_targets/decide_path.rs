//! A generated policy and a raw request (method, path bytes, headers) → the filter's header
//! reading, the connection manager's model (`hcm::admit`: refusal or BASE normalization) and
//! `decide`, compared with the reference model (`src/reference.rs`): the normalized path and
//! the decision. Any disagreement is a crash; requests Envoy refuses are not compared.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerguard_filter::fuzzing::http_request;
use peerguard_filter::hcm::admit;
use peerguard_filter::path::url_path;
use peerguard_filter::schema::{HttpVersion, PathNormalization, Request};
use peerguard_filter::Engine;
use peerguard_fuzz::gen::Case;
use peerguard_fuzz::reference;

fuzz_target!(|case: Case| {
    let policy = case.policy();
    let peer = case.peer();
    // As the filter's host seam reads Envoy's header map: bytes that are not UTF-8 lossily.
    let headers: Vec<(String, String)> = case
        .raw_headers()
        .into_iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(&n).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    // The request as the client sent it: the pseudo-headers become the request line; HTTP/2,
    // so that any method token reaches the engine.
    let mut http = http_request(headers.clone());
    http.headers.retain(|(n, _)| !n.starts_with(':'));
    http.version = HttpVersion::Http2;
    let client = Request {
        peer: peer.clone(),
        source_ip: None,
        destination_ip: None,
        port: 8000,
        sni: None,
        http: Some(http),
    };
    let raw_path = client
        .http
        .as_ref()
        .map(|h| h.path.clone())
        .unwrap_or_default();
    let Ok(request) = admit(&client, PathNormalization::Base) else {
        return;
    };
    let engine = match Engine::new(policy.clone()) {
        Ok(e) => e,
        Err(e) => panic!("the engine refuses a generated policy: {e}"),
    };
    let decision = engine.decide(&request);
    // The path the engine matches against: the `:path` the connection manager passed on.
    let normalized = url_path(
        request
            .http
            .as_ref()
            .map(|h| h.path.as_str())
            .unwrap_or_default(),
    );
    let raw_path = raw_path.as_str();
    let Some(want) = reference::decide(&policy, peer.as_ref(), &headers) else {
        return;
    };
    assert_eq!(
        Some(normalized),
        reference::normalize(raw_path).as_deref(),
        "normalization of {raw_path:?}"
    );
    let got = (decision.allowed, &decision.reason, &decision.audit);
    assert_eq!(
        got,
        (want.allowed, &want.reason, &want.audit),
        "engine and reference disagree\npath {:?} → reference {:?}\npolicy {}",
        headers.get(1).map(|h| &h.1),
        headers.get(1).and_then(|h| reference::normalize(&h.1)),
        serde_json::to_string(&policy).unwrap_or_default()
    );
});
