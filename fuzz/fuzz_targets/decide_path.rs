//! A generated policy and a raw request (method, path bytes, headers) → the filter's header
//! reading, path normalization and `decide`, compared with the reference model
//! (`src/reference.rs`): the normalized path and the decision. Any disagreement is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerguard_filter::fuzzing::http_request;
use peerguard_filter::path::normalize;
use peerguard_filter::schema::Request;
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
    let request = Request {
        peer: peer.clone(),
        source_ip: None,
        destination_ip: None,
        port: 8000,
        sni: None,
        http: Some(http_request(headers.clone())),
    };
    let engine = match Engine::new(policy.clone()) {
        Ok(e) => e,
        Err(e) => panic!("the engine refuses a generated policy: {e}"),
    };
    let decision = engine.decide(&request);
    // The path the engine matches against, from the same `:path` the engine was given.
    let raw_path = request
        .http
        .as_ref()
        .map(|h| h.path.as_str())
        .unwrap_or_default();
    let normalized = normalize(raw_path);
    let Some(want) = reference::decide(&policy, peer.as_ref(), &headers) else {
        return;
    };
    assert_eq!(
        Some(normalized.as_ref()),
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
