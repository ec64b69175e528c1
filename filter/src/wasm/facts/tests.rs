#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;

use crate::wasm::testing::FakeHost;
/// A leaf with two URI SANs and a DNS SAN (openssl, throwaway CA).
const TWO_SANS_PEM: &str = include_str!("../testdata/two_uri_sans.pem");

fn url_encode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend(format!("%{b:02X}").bytes());
        }
    }
    out
}

fn plaintext_host() -> FakeHost {
    FakeHost::default()
        .with("source.address", "10.0.0.7:43512")
        .with("destination.address", "10.0.0.9:8080")
        .with("destination.port", 8080i64.to_le_bytes())
}

fn mtls_host() -> FakeHost {
    plaintext_host()
        .with("connection.mtls", [1u8])
        .with("connection.peer_certificate", url_encode(TWO_SANS_PEM))
        .with("connection.sha256_peer_certificate_digest", "abc123")
        .with("connection.requested_server_name", "httpbin.foo.svc")
}

#[test]
fn plaintext_has_no_peer_and_reads_addresses() {
    let f = read_conn(&plaintext_host(), &mut SanCache::default(), &Needs::ALL).unwrap();
    assert_eq!(f.peer, None);
    assert_eq!(f.source_ip, Some("10.0.0.7".parse().unwrap()));
    assert_eq!(f.destination_ip, Some("10.0.0.9".parse().unwrap()));
    assert_eq!(f.port, 8080);
    assert_eq!(f.sni, None);
    assert_eq!(f.cert_problem, None);
}

#[test]
fn mtls_reads_every_uri_san_in_order() {
    let f = read_conn(&mtls_host(), &mut SanCache::default(), &Needs::ALL).unwrap();
    assert_eq!(
        f.peer.unwrap().uri_sans,
        vec![
            "spiffe://cluster.local/ns/foo/sa/sleep",
            "spiffe://other.td/ns/bar/sa/b"
        ]
    );
    assert_eq!(f.sni.as_deref(), Some("httpbin.foo.svc"));
}

#[test]
fn certificate_is_parsed_once_per_digest() {
    let mut cache = SanCache::default();
    let host = mtls_host();
    read_conn(&host, &mut cache, &Needs::ALL).unwrap();
    let first = host
        .reads
        .borrow()
        .iter()
        .filter(|p| *p == "connection.peer_certificate")
        .count();
    let f = read_conn(&host, &mut cache, &Needs::ALL).unwrap();
    let second = host
        .reads
        .borrow()
        .iter()
        .filter(|p| *p == "connection.peer_certificate")
        .count();
    assert_eq!((first, second), (1, 1));
    assert_eq!(f.peer.unwrap().uri_sans.len(), 2);
}

#[test]
fn unparsable_certificate_keeps_a_peer_without_sans() {
    let host = mtls_host().with(
        "connection.peer_certificate",
        url_encode("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
    );
    let f = read_conn(&host, &mut SanCache::default(), &Needs::ALL).unwrap();
    assert_eq!(f.peer, Some(Peer { uri_sans: vec![] }));
    assert!(f
        .cert_problem
        .unwrap()
        .contains("Certificate: expected DER tag"));
}

#[test]
fn mtls_without_certificate_is_a_peer_without_sans() {
    let mut host = mtls_host();
    host.props.remove("connection.peer_certificate");
    let f = read_conn(&host, &mut SanCache::default(), &Needs::ALL).unwrap();
    assert_eq!(f.peer, Some(Peer { uri_sans: vec![] }));
    assert!(f.cert_problem.is_some());
}

#[test]
fn host_failure_on_mtls_is_an_error_not_plaintext() {
    let host = FakeHost {
        fail: Some("connection.mtls".into()),
        ..mtls_host()
    };
    assert!(matches!(
        read_conn(&host, &mut SanCache::default(), &Needs::ALL),
        Err(FactsError::Host(_))
    ));
}

#[test]
fn missing_or_bad_port_is_an_error() {
    let mut host = plaintext_host();
    host.props.remove("destination.port");
    assert_eq!(
        read_conn(&host, &mut SanCache::default(), &Needs::ALL),
        Err(FactsError::Missing {
            path: "destination.port"
        })
    );
    let host = plaintext_host().with("destination.port", 70000i64.to_le_bytes());
    assert!(matches!(
        read_conn(&host, &mut SanCache::default(), &Needs::ALL),
        Err(FactsError::Malformed { .. })
    ));
    let host = plaintext_host().with("destination.port", [1u8, 2]);
    assert!(matches!(
        read_conn(&host, &mut SanCache::default(), &Needs::ALL),
        Err(FactsError::Malformed { .. })
    ));
}

#[test]
fn ipv6_and_pipe_addresses() {
    assert_eq!(parse_ip(b"[::1]:80"), Some("::1".parse().unwrap()));
    assert_eq!(parse_ip(b"fd00::2"), Some("fd00::2".parse().unwrap()));
    assert_eq!(parse_ip(b"/var/run/sock"), None);
}

#[test]
fn http_request_keeps_repeated_headers_and_pseudo_headers() {
    let h = http_request(vec![
        (":method".into(), "GET".into()),
        (":path".into(), "/a?b".into()),
        (":authority".into(), "httpbin:8000".into()),
        ("X-Token".into(), "one".into()),
        ("x-token".into(), "two".into()),
        ("x-forwarded-client-cert".into(), "URI=spiffe://evil".into()),
    ]);
    assert_eq!(
        (h.method.as_str(), h.path.as_str(), h.host.as_str()),
        ("GET", "/a?b", "httpbin:8000")
    );
    let tokens: Vec<_> = h
        .headers
        .iter()
        .filter(|(n, _)| n == "x-token")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(tokens, vec!["one", "two"]);
}

#[test]
fn identity_never_comes_from_headers() {
    // Only connection attributes feed `peer`; a plaintext connection with an XFCC header
    // still has no peer.
    let f = read_conn(&plaintext_host(), &mut SanCache::default(), &Needs::ALL).unwrap();
    let r = f.into_request(Some(http_request(vec![(
        "x-forwarded-client-cert".into(),
        "URI=spiffe://cluster.local/ns/foo/sa/admin".into(),
    )])));
    assert_eq!(r.peer, None);
}

#[test]
fn unneeded_attributes_are_not_read() {
    let host = mtls_host();
    let f = read_conn(&host, &mut SanCache::default(), &Needs::default()).unwrap();
    assert_eq!((f.source_ip, f.destination_ip, f.sni), (None, None, None));
    assert_eq!(f.port, 8080);
    assert_eq!(f.peer.unwrap().uri_sans.len(), 2);
    let reads = host.reads.borrow();
    for p in [
        "source.address",
        "destination.address",
        "connection.requested_server_name",
    ] {
        assert!(!reads.iter().any(|r| r == p), "read {p}");
    }
    drop(reads);
    let want = Needs {
        destination_ip: true,
        ..Needs::default()
    };
    let f = read_conn(&host, &mut SanCache::default(), &want).unwrap();
    assert_eq!(f.destination_ip, Some("10.0.0.9".parse().unwrap()));
    assert_eq!(f.source_ip, None);
}

#[test]
fn needs_follow_the_policies() {
    use crate::schema::{Cidr, Field, Rule, Source, StrMatch};
    let base: WorkloadPolicy = serde_json::from_value(serde_json::json!({
        "schema": crate::schema::SCHEMA_VERSION,
        "workload": {"namespace": "ns", "name": "w"},
        "trust_domain": "cluster.local",
        "mtls": {"default": {"mode": "STRICT"}},
        "policies": [{"policy": {"namespace": "ns", "name": "p"}, "action": "ALLOW", "rules": []}]
    }))
    .unwrap();
    assert_eq!(Needs::of(&base), Needs::default());
    let with_rule = |rule: Rule| {
        let mut p = base.clone();
        p.policies[0].rules.push(rule);
        Needs::of(&p)
    };
    let cidr = Cidr {
        addr: "10.0.0.0".parse().unwrap(),
        prefix_len: 8,
    };
    fn field<T>(v: T) -> Field<T> {
        Field {
            values: vec![],
            not_values: vec![v],
        }
    }
    let from = |s: Source| Rule {
        from: Some(vec![s]),
        to: None,
        when: vec![],
    };
    let when = |c: Condition| Rule {
        from: None,
        to: None,
        when: vec![c],
    };
    let n = with_rule(from(Source {
        remote_ip_blocks: field(cidr),
        ..Source::default()
    }));
    assert_eq!(
        n,
        Needs {
            source_ip: true,
            ..Needs::default()
        }
    );
    let n = with_rule(when(Condition::DestinationIp { field: field(cidr) }));
    assert_eq!(
        n,
        Needs {
            destination_ip: true,
            ..Needs::default()
        }
    );
    let n = with_rule(when(Condition::ConnectionSni {
        field: field(StrMatch::Exact("a".into())),
    }));
    assert_eq!(
        n,
        Needs {
            sni: true,
            ..Needs::default()
        }
    );
    let n = with_rule(when(Condition::RequestHeader {
        name: "x-a".into(),
        field: field(StrMatch::Exact("a".into())),
    }));
    assert_eq!(
        n,
        Needs {
            headers: true,
            ..Needs::default()
        }
    );
    assert!(Needs::ALL.covers(&n) && !Needs::default().covers(&n));
    let n = with_rule(Rule {
        from: None,
        to: Some(vec![crate::schema::Operation {
            paths: field(crate::schema::PathMatch::Str(StrMatch::Prefix("/a".into()))),
            ..Default::default()
        }]),
        when: vec![],
    });
    assert_eq!(
        n,
        Needs {
            request_line: true,
            ..Needs::default()
        }
    );
    // Ports alone need no request line.
    let n = with_rule(Rule {
        from: None,
        to: Some(vec![crate::schema::Operation {
            ports: field(8080),
            ..Default::default()
        }]),
        when: vec![],
    });
    assert_eq!(n, Needs::default());
}

#[test]
fn connection_cache_is_bounded_and_respects_needs() {
    let facts = read_conn(
        &plaintext_host(),
        &mut SanCache::default(),
        &Needs::default(),
    )
    .unwrap();
    let mut c = ConnCache::default();
    c.put(1, Needs::default(), facts.clone());
    assert_eq!(c.get(1, &Needs::default()), Some(&facts));
    // Read without the source IP: not good enough for a configuration that needs it.
    let src = Needs {
        source_ip: true,
        ..Needs::default()
    };
    assert_eq!(c.get(1, &src), None);
    assert_eq!(c.get(2, &Needs::default()), None);
    for id in 2..1000u64 {
        c.put(id, Needs::ALL, facts.clone());
    }
    assert_eq!(c.len(), ConnCache::CAPACITY);
    assert!(c.get(999, &src).is_some());
    assert!(c.get(1, &Needs::default()).is_none());
    c.clear();
    assert_eq!(c.len(), 0);
}

#[test]
fn connection_id_is_an_8_byte_int() {
    let host = plaintext_host().with("connection.id", 42u64.to_le_bytes());
    assert_eq!(connection_id(&host), Some(42));
    assert_eq!(connection_id(&plaintext_host()), None);
    let host = plaintext_host().with("connection.id", [1u8, 2]);
    assert_eq!(connection_id(&host), None);
}
