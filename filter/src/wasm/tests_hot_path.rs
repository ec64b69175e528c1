//! What the common request costs in host calls, pinned: an allowed mTLS GET on a keep-alive
//! connection under STRICT with 10 principal ALLOW policies (the benchmark's shape). Every
//! host call is a VM crossing (and a result buffer allocated in the VM), which is where the
//! filter's per-request cost above a no-op module goes; a change that adds one to this path
//! must change these lists on purpose.

#![allow(clippy::unwrap_used, clippy::panic)]

use super::check::{Kind, Verdict};
use super::seam::Level;
use super::testing::FakeHost;
use super::tests::{config, configured, run, url_encode, TWO_SANS_PEM};

/// STRICT and 10 ALLOW policies of one exact principal each; the client
/// (`cluster.local/ns/foo/sa/sleep`, a URI SAN of `TWO_SANS_PEM`) is in the last one.
fn ten_principals() -> String {
    let mut yaml = String::from(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
",
    );
    for i in 0..10 {
        let sa = if i == 9 {
            "sleep".to_string()
        } else {
            format!("client-{i}")
        };
        yaml.push_str(&format!(
            "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-{i}, namespace: foo}}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {{principals: [\"cluster.local/ns/foo/sa/{sa}\"]}}
"
        ));
    }
    yaml
}

/// An mTLS GET of connection `id` presenting `TWO_SANS_PEM`.
fn mtls_get(id: u64) -> FakeHost {
    FakeHost {
        headers: vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/".into()),
            (":authority".into(), "httpbin.foo".into()),
        ],
        root_id: "peerguard_http".into(),
        ..FakeHost::default()
    }
    .with("connection.mtls", [1u8])
    .with("connection.sha256_peer_certificate_digest", [0xabu8; 32])
    .with("connection.peer_certificate", url_encode(TWO_SANS_PEM))
    .with("source.address", "10.0.0.7:5000")
    .with("destination.port", 8080i64.to_le_bytes())
    .with("connection.id", id.to_le_bytes())
}

#[test]
fn an_allowed_keep_alive_request_costs_one_host_call() {
    let host = mtls_get(7);
    let (life, ok) = configured(&host, Some(config(&ten_principals())));
    assert!(ok);
    // Envoy's default level (the fake host answers debug): no per-request line.
    life.shared.log_level.set(Level::Info);
    host.take_calls();

    assert_eq!(run(&life, &host, Kind::Http), Verdict::Allow);
    assert_eq!(
        host.take_calls(),
        [
            "property connection.id",
            "property connection.mtls",
            "property connection.sha256_peer_certificate_digest",
            "property connection.peer_certificate",
            "property destination.port",
        ],
        "the first request reads the connection once (no source, SNI or header: no policy \
         looks at them)"
    );
    for _ in 0..3 {
        assert_eq!(run(&life, &host, Kind::Http), Verdict::Allow);
        assert_eq!(
            host.take_calls(),
            ["property connection.id"],
            "a later request of the connection: its id, nothing else (counted in the VM)"
        );
    }

    // A new connection of the same client: the certificate is not read again.
    let other = mtls_get(8);
    super::tests::share_counters(&host, &other);
    assert_eq!(run(&life, &other, Kind::Http), Verdict::Allow);
    assert_eq!(
        other.take_calls(),
        [
            "property connection.id",
            "property connection.mtls",
            "property connection.sha256_peer_certificate_digest",
            "property destination.port",
        ]
    );

    // The tick adds the 5 allows to Envoy's counters: one increment per counter.
    life.tick(&other);
    let mut tick = other.take_calls();
    tick.sort();
    assert_eq!(
        tick,
        ["increment", "increment", "log_level"],
        "peerguard_allowed and peerguard_policy_allowed.foo.allow-9"
    );
    assert_eq!(other.counter("peerguard_allowed"), Some(5));
    assert_eq!(
        other.counter("peerguard_policy_allowed.foo.allow-9"),
        Some(5)
    );
}

/// The parsed configuration holds no spare list capacity: every VM keeps it (one per
/// Envoy worker), and a one-element list would otherwise hold room for four (measured:
/// 10,000 one-principal policies parsed to 20 MB natively, 6 MB exact).
#[test]
fn a_parsed_configuration_keeps_no_spare_capacity() {
    let bytes = config(&ten_principals());
    let policy: crate::schema::WorkloadPolicy = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(policy.policies.capacity(), policy.policies.len());
    for p in &policy.policies {
        assert_eq!(p.rules.capacity(), 1, "{}", p.policy);
        let from = p.rules[0].from.as_ref().unwrap();
        assert_eq!(from.capacity(), 1, "{}", p.policy);
    }
}
