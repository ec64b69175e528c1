//! The adapter end to end against a fake proxy: configuration lifecycle, checks, counters.

#![allow(clippy::unwrap_used, clippy::panic)]

use super::check::{check, Kind, Verdict};
use super::config::{Active, Lifecycle};
use super::testing::FakeHost;
use crate::compile::{compile, MeshConfig, Workload};
use crate::istio::parse::parse_str;
use std::rc::Rc;

pub(super) fn config(yaml: &str) -> Vec<u8> {
    let workload = Workload {
        namespace: "foo".into(),
        name: "httpbin".into(),
        service_account: "httpbin".into(),
        labels: [("app".to_string(), "httpbin".to_string())].into(),
        ..Workload::default()
    };
    let parsed = parse_str(yaml, "mesh.yaml");
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    serde_json::to_vec(&compile(
        &parsed.resources,
        &workload,
        &MeshConfig::default(),
    ))
    .unwrap()
}

const STRICT: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
";

const DENY_ADMIN: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: [\"/admin*\"]}
";

/// A plaintext HTTP request on port 8080 of connection 7.
fn plaintext(path: &str) -> FakeHost {
    FakeHost {
        headers: vec![
            (":method".into(), "GET".into()),
            (":path".into(), path.into()),
            (":authority".into(), "httpbin.foo".into()),
        ],
        root_id: "peerguard_http".into(),
        ..FakeHost::default()
    }
    .with("source.address", "127.0.0.7:5000")
    .with("destination.port", 8080i64.to_le_bytes())
    .with("connection.id", 7u64.to_le_bytes())
}

pub(super) fn configured(host: &FakeHost, bytes: Option<Vec<u8>>) -> (Lifecycle, bool) {
    let mut life = Lifecycle::default();
    let h = FakeHost {
        config: bytes,
        ..FakeHost::default()
    };
    let ok = life.configure(&h, h.config_size());
    // Counters are defined on the host that configured; copy them for the checks.
    *host.counters.borrow_mut() = h.counters.borrow().clone();
    (life, ok)
}

pub(super) fn run(life: &Lifecycle, host: &FakeHost, kind: Kind) -> Verdict {
    check(host, &life.shared, &life.active, kind)
}

#[test]
fn no_configuration_denies_everything() {
    let host = plaintext("/");
    let (life, ok) = configured(&host, None);
    assert!(ok, "starts, fail closed");
    assert!(matches!(life.active, Active::DenyAll(_)));
    assert_eq!(run(&life, &host, Kind::Http), Verdict::Deny);
    assert_eq!(run(&life, &host, Kind::Tcp), Verdict::Deny);
    assert_eq!(host.counter("peerguard_denied"), Some(2));
}

#[test]
fn an_invalid_configuration_is_rejected_and_the_previous_one_stays() {
    let host = plaintext("/admin");
    let (mut life, ok) = configured(&host, Some(config(DENY_ADMIN)));
    assert!(ok);
    assert_eq!(run(&life, &host, Kind::Http), Verdict::Deny);
    let bad = FakeHost {
        config: Some(b"{\"schema\": 99}".to_vec()),
        ..FakeHost::default()
    };
    assert!(
        !life.configure(&bad, bad.config_size()),
        "rejected: Envoy NACKs it"
    );
    assert!(bad.logged("the previous configuration stays in force"));
    assert_eq!(
        run(&life, &host, Kind::Http),
        Verdict::Deny,
        "the DENY still holds"
    );
    assert_eq!(
        run(&life, &plaintext("/public"), Kind::Http),
        Verdict::Allow
    );
}

#[test]
fn strict_refuses_plaintext_and_counts_it() {
    let host = plaintext("/");
    let (life, _) = configured(&host, Some(config(STRICT)));
    assert_eq!(run(&life, &host, Kind::Http), Verdict::Refuse);
    assert_eq!(run(&life, &host, Kind::Tcp), Verdict::Refuse);
    assert_eq!(host.counter("peerguard_plaintext_refused"), Some(2));
    assert_eq!(host.counter("peerguard_denied"), Some(2));
}

#[test]
fn denials_count_per_policy_and_allows_wait_for_the_tick() {
    let host = plaintext("/admin/x");
    let (life, _) = configured(&host, Some(config(DENY_ADMIN)));
    assert_eq!(run(&life, &host, Kind::Http), Verdict::Deny);
    assert_eq!(
        host.counter("peerguard_policy_denied.foo.deny-admin"),
        Some(1)
    );
    let ok = plaintext("/ok");
    *ok.counters.borrow_mut() = host.counters.borrow().clone();
    assert_eq!(run(&life, &ok, Kind::Http), Verdict::Allow);
    assert_eq!(ok.counter("peerguard_allowed"), Some(0), "batched");
    life.tick(&ok);
    assert_eq!(ok.counter("peerguard_allowed"), Some(1), "flushed on tick");
}

#[test]
fn roots_with_the_same_bytes_share_one_engine() {
    let host = plaintext("/");
    let bytes = config(DENY_ADMIN);
    let (a, _) = configured(&host, Some(bytes.clone()));
    let (b, _) = configured(&host, Some(bytes));
    match (&a.active, &b.active) {
        (Active::Ready(x, _), Active::Ready(y, _)) => assert!(Rc::ptr_eq(x, y)),
        _ => panic!("both configured"),
    }
}

#[test]
fn keep_alive_requests_read_the_connection_once() {
    let host = plaintext("/a");
    let (life, _) = configured(&host, Some(config(DENY_ADMIN)));
    for _ in 0..3 {
        assert_eq!(run(&life, &host, Kind::Http), Verdict::Allow);
    }
    let mtls_reads = host
        .reads
        .borrow()
        .iter()
        .filter(|r| *r == "connection.mtls")
        .count();
    assert_eq!(mtls_reads, 1, "{:?}", host.reads.borrow());
}

#[test]
fn unreadable_connection_denies() {
    let host = FakeHost {
        fail: Some("connection.mtls".into()),
        ..plaintext("/")
    };
    let (life, _) = configured(&host, Some(config(DENY_ADMIN)));
    assert_eq!(run(&life, &host, Kind::Tcp), Verdict::Deny);
    assert!(host.logged("cannot read the connection"));
}

#[test]
fn the_root_id_chooses_the_filter() {
    let mut life = Lifecycle::default();
    let tcp = FakeHost {
        root_id: "peerguard_tcp".into(),
        ..FakeHost::default()
    };
    assert_eq!(life.cached_kind(), None);
    assert_eq!(life.kind(&tcp), Kind::Tcp);
    assert_eq!(life.cached_kind(), Some(Kind::Tcp));
    let mut life = Lifecycle::default();
    assert_eq!(
        life.kind(&FakeHost {
            root_id: "peerguard_http".into(),
            ..FakeHost::default()
        }),
        Kind::Http
    );
}

#[test]
fn log_levels_gate_in_order() {
    use super::seam::{enabled, Level::*};
    let order = [Trace, Debug, Info, Warn, Error, Critical];
    for (i, current) in order.iter().enumerate() {
        for (j, level) in order.iter().enumerate() {
            assert_eq!(enabled(*current, *level), j >= i, "{current:?} {level:?}");
        }
    }
    let life = Lifecycle::default();
    life.start(&FakeHost::default());
    assert_eq!(
        life.shared.log_level.get(),
        Debug,
        "the host's level is taken at start"
    );
}

const ALLOW_TOKEN: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: token, namespace: foo}
spec:
  action: ALLOW
  rules:
  - when:
    - key: request.headers[x-token]
      values: [\"yes\"]
";

#[test]
fn decision_log_writes_every_nth_decision_with_what_a_replay_needs() {
    use crate::schema::{DecisionLine, DecisionLog, WorkloadPolicy};
    let mut policy: WorkloadPolicy = serde_json::from_slice(&config(ALLOW_TOKEN)).unwrap();
    // Off by default: no line at all.
    let host = plaintext("/a");
    let (life, _) = configured(&host, Some(serde_json::to_vec(&policy).unwrap()));
    run(&life, &host, Kind::Http);
    assert!(!host.logged("peerguard-decision"));

    policy.decision_log = Some(DecisionLog { every: 2 });
    let mut host = plaintext("/a");
    host.headers.push(("x-token".into(), "yes".into()));
    host.headers.push(("cookie".into(), "secret".into()));
    let host = host
        .with("destination.address", "127.0.1.1:8080")
        .with("request.protocol", "HTTP/2");
    let (life, _) = configured(&host, Some(serde_json::to_vec(&policy).unwrap()));
    for _ in 0..5 {
        assert_eq!(run(&life, &host, Kind::Http), Verdict::Allow);
    }
    let lines: Vec<DecisionLine> = host
        .logs
        .borrow()
        .iter()
        .filter_map(|(level, m)| {
            DecisionLine::find(m).map(|l| {
                assert_eq!(*level, super::seam::Level::Info);
                assert!(
                    !m.contains("secret"),
                    "only the headers a policy reads: {m}"
                );
                l.unwrap()
            })
        })
        .collect();
    assert_eq!(lines.len(), 3, "decisions 1, 3 and 5 of 5");
    let l = &lines[0];
    assert_eq!(l.workload, "foo/httpbin");
    assert_eq!(
        (l.port, l.peer.is_none(), l.allowed),
        (8080, true, Some(true))
    );
    assert_eq!(l.src, "127.0.0.7".parse().ok());
    assert_eq!(l.dst, "127.0.1.1".parse().ok());
    let h = l.http.as_ref().unwrap();
    // The policy does not look at the request line; a sampled decision reads it anyway.
    assert_eq!((h.method.as_str(), h.path.as_str()), ("GET", "/a"));
    assert_eq!(h.version, Some(crate::schema::HttpVersion::Http2));
    assert_eq!(h.headers.get("x-token").map(Vec::len), Some(1));
    assert_eq!(
        l.reason.as_ref().unwrap().to_string(),
        "allowed by ALLOW policy foo/token[rule 0]"
    );

    // TCP: a line without an HTTP part.
    let tcp = FakeHost {
        root_id: "peerguard_tcp".into(),
        ..FakeHost::default()
    }
    .with("source.address", "127.0.0.8:5000")
    .with("destination.port", 9000i64.to_le_bytes());
    let (life, _) = configured(&tcp, Some(serde_json::to_vec(&policy).unwrap()));
    assert_eq!(run(&life, &tcp, Kind::Tcp), Verdict::Deny);
    let logs = tcp.logs.borrow();
    let line = logs
        .iter()
        .find_map(|(_, m)| DecisionLine::find(m))
        .unwrap()
        .unwrap();
    assert!(line.http.is_none() && line.allowed == Some(false));
    assert_eq!((line.port, line.src), (9000, "127.0.0.8".parse().ok()));
}

const PERMISSIVE: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: PERMISSIVE}}
";

const DRY_RUN_STRICT: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: foo, annotations: {peerguard.dev/dry-run: \"true\"}}
spec: {mtls: {mode: STRICT}}
";

const PLAIN_SERIES: &str = "peerguard_connections.port.8080.tls.plaintext.source.127.0.0.7";

/// The same request on another connection, from another address.
fn on_connection(host: FakeHost, id: u64, source: &str) -> FakeHost {
    host.with("connection.id", id.to_le_bytes())
        .with("source.address", source)
}

/// A leaf with URI SANs `spiffe://cluster.local/ns/foo/sa/sleep`, `spiffe://other.td/...`.
pub(super) const TWO_SANS_PEM: &str = include_str!("testdata/two_uri_sans.pem");

pub(super) fn url_encode(s: &str) -> Vec<u8> {
    s.bytes()
        .flat_map(
            |b| match b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                true => vec![b],
                false => format!("%{b:02X}").into_bytes(),
            },
        )
        .collect()
}

pub(super) fn share_counters(from: &FakeHost, to: &FakeHost) {
    *to.counters.borrow_mut() = from.counters.borrow().clone();
}

#[test]
fn permissive_counts_connections_not_requests() {
    let host = plaintext("/");
    let (life, _) = configured(&host, Some(config(PERMISSIVE)));
    for _ in 0..3 {
        assert_eq!(run(&life, &host, Kind::Http), Verdict::Allow);
    }
    life.tick(&host);
    assert_eq!(
        host.counter(PLAIN_SERIES),
        Some(1),
        "one keep-alive connection"
    );
    let other = on_connection(plaintext("/"), 8, "127.0.0.7:5001");
    share_counters(&host, &other);
    assert_eq!(run(&life, &other, Kind::Http), Verdict::Allow);
    life.tick(&other);
    assert_eq!(
        other.counter(PLAIN_SERIES),
        Some(1),
        "the second connection"
    );
    // The network filter checks once per connection: every check counts.
    let tcp = on_connection(plaintext("/"), 9, "10.1.2.3:4000");
    share_counters(&other, &tcp);
    run(&life, &tcp, Kind::Tcp);
    run(&life, &tcp, Kind::Tcp);
    life.tick(&tcp);
    assert_eq!(
        tcp.counter("peerguard_connections.port.8080.tls.plaintext.source.10.1.2.3"),
        Some(2)
    );
    assert_eq!(tcp.counter(crate::readiness::DRY_RUN_REFUSED), Some(0));
}

#[test]
fn a_sampled_request_does_not_count_its_connection_again() {
    use crate::schema::{DecisionLog, WorkloadPolicy};
    let mut policy: WorkloadPolicy = serde_json::from_slice(&config(PERMISSIVE)).unwrap();
    // Every other decision is sampled and reads more of the connection than the first one
    // did (a cache miss), yet it is the same connection.
    policy.decision_log = Some(DecisionLog { every: 2 });
    let first = on_connection(plaintext("/"), 20, "10.1.2.3:4000");
    let (life, _) = configured(&first, Some(serde_json::to_vec(&policy).unwrap()));
    // Decision 1 (sampled) on another connection; then decisions 2 (not sampled: the
    // connection is read narrowly) and 3 (sampled: read again, wider) on this one.
    assert_eq!(run(&life, &first, Kind::Http), Verdict::Allow);
    let host = on_connection(plaintext("/"), 21, "127.0.0.7:5000");
    share_counters(&first, &host);
    for _ in 0..3 {
        assert_eq!(run(&life, &host, Kind::Http), Verdict::Allow);
    }
    life.tick(&host);
    assert_eq!(
        host.counter(PLAIN_SERIES),
        Some(1),
        "one keep-alive connection"
    );
}

#[test]
fn mtls_connections_count_under_their_principal() {
    let host = plaintext("/")
        .with("connection.mtls", [1u8])
        .with("connection.peer_certificate", url_encode(TWO_SANS_PEM));
    let (life, _) = configured(&host, Some(config(PERMISSIVE)));
    assert_eq!(run(&life, &host, Kind::Http), Verdict::Allow);
    life.tick(&host);
    assert_eq!(
        host.counter(
            "peerguard_connections.port.8080.tls.mtls.source.cluster.local/ns/foo/sa/sleep"
        ),
        Some(1),
        "{:?}",
        host.counters.borrow()
    );
}

#[test]
fn dry_run_strict_accepts_plaintext_counts_and_logs_each_connection_once() {
    let host = plaintext("/");
    let (life, _) = configured(&host, Some(config(DRY_RUN_STRICT)));
    for _ in 0..2 {
        assert_eq!(run(&life, &host, Kind::Http), Verdict::Allow);
    }
    assert_eq!(host.counter(crate::readiness::DRY_RUN_REFUSED), Some(1));
    assert_eq!(host.counter("peerguard_plaintext_refused"), Some(0));
    let lines: Vec<String> = host
        .logs
        .borrow()
        .iter()
        .filter(|(l, m)| *l == super::seam::Level::Info && m.starts_with("dry-run STRICT"))
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(
        lines,
        vec!["dry-run STRICT: would refuse plaintext connection from 127.0.0.7:5000 to port 8080 (STRICT set by PeerAuthentication foo/strict, annotation peerguard.dev/dry-run); accepted as PERMISSIVE".to_string()]
    );
    life.tick(&host);
    assert_eq!(host.counter(PLAIN_SERIES), Some(1));
    let tcp = on_connection(plaintext("/"), 11, "127.0.0.8:6000");
    share_counters(&host, &tcp);
    assert_eq!(run(&life, &tcp, Kind::Tcp), Verdict::Allow);
    assert_eq!(tcp.counter(crate::readiness::DRY_RUN_REFUSED), Some(1));
    assert!(tcp.logged("from 127.0.0.8:6000 to port 8080"));
}

#[test]
fn enforced_strict_counts_no_readiness_series() {
    let host = plaintext("/");
    let (life, _) = configured(&host, Some(config(STRICT)));
    assert_eq!(run(&life, &host, Kind::Tcp), Verdict::Refuse);
    life.tick(&host);
    assert_eq!(host.counter(PLAIN_SERIES), None);
    assert_eq!(host.counter(crate::readiness::DRY_RUN_REFUSED), Some(0));
}

#[test]
fn sources_per_port_are_bounded() {
    let first = plaintext("/");
    let (life, _) = configured(&first, Some(config(PERMISSIVE)));
    let n = crate::readiness::MAX_SOURCES + 5;
    let mut last = first;
    for i in 0..n {
        let h = on_connection(plaintext("/"), 100 + i as u64, &format!("10.9.0.{i}:1"));
        share_counters(&last, &h);
        run(&life, &h, Kind::Tcp);
        last = h;
    }
    life.tick(&last);
    let series: Vec<String> = last
        .counters
        .borrow()
        .keys()
        .filter(|k| k.starts_with("peerguard_connections."))
        .cloned()
        .collect();
    assert_eq!(
        series.len(),
        crate::readiness::MAX_SOURCES + 1,
        "{series:?}"
    );
    assert_eq!(
        last.counter("peerguard_connections.port.8080.tls.plaintext.source.other"),
        Some(5)
    );
}
