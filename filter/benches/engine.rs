//! `Engine::decide` against workloads with 1, 100, 1,000 and 10,000 ALLOW policies, each
//! naming a distinct exact principal; the request matches the last one. The exact-principal
//! index should make the time independent of the policy count (goal: 10k ≤ 2× the 1-policy
//! time, and < 1 µs). Run: `cargo bench -p peerguard-filter --bench engine`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use peerguard_filter::schema::{
    Action, AuthzPolicy, Field, HttpRequest, ModeFrom, MtlsMode, MtlsPolicy, Peer, PolicyRef,
    Request, Rule, Source, StrMatch, WorkloadPolicy, WorkloadRef, SCHEMA_VERSION,
};
use peerguard_filter::Engine;
use std::collections::BTreeMap;
use std::time::Duration;

fn principal(i: usize) -> String {
    format!("cluster.local/ns/ns-{i}/sa/client-{i}")
}

fn workload(n: usize) -> WorkloadPolicy {
    let policies = (0..n)
        .map(|i| AuthzPolicy {
            policy: PolicyRef {
                namespace: "foo".into(),
                name: format!("allow-{i:05}"),
            },
            action: Action::Allow,
            dry_run: false,
            provider: None,
            invalid: None,
            rules: vec![Rule {
                from: Some(vec![Source {
                    principals: Field {
                        values: vec![StrMatch::Exact(principal(i))],
                        not_values: Vec::new(),
                    },
                    ..Default::default()
                }]),
                ..Default::default()
            }],
        })
        .collect();
    WorkloadPolicy {
        schema: SCHEMA_VERSION,
        workload: WorkloadRef {
            namespace: "foo".into(),
            name: "httpbin".into(),
        },
        trust_domain: "cluster.local".into(),
        trust_domain_aliases: Vec::new(),
        mtls: MtlsPolicy {
            default: ModeFrom::new(MtlsMode::Strict, None),
            ports: BTreeMap::new(),
        },
        policies,
        diagnostics: Vec::new(),
        path_normalization: Default::default(),
        num_trusted_proxies: 0,
        decision_log: None,
    }
}

fn request(principal: &str, http: bool) -> Request {
    Request {
        peer: Some(Peer::from_principal(principal)),
        source_ip: "127.0.0.7".parse().ok(),
        destination_ip: None,
        port: 8080,
        sni: None,
        http: http.then(|| HttpRequest {
            method: "GET".into(),
            path: "/api/v1/items?page=2".into(),
            host: "httpbin.foo:8000".into(),
            headers: vec![("user-agent".into(), "bench".into())],
            version: Default::default(),
        }),
    }
}

fn bench_decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in [1usize, 100, 1_000, 10_000] {
        let engine = match Engine::new(workload(n)) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("engine for {n} policies: {e}");
                return;
            }
        };
        let last = request(&principal(n - 1), true);
        // Fail loudly rather than time the wrong path.
        let d = engine.decide(&last);
        assert!(d.allowed, "{n}: {d:?}");
        group.bench_with_input(BenchmarkId::new("allow_last_http", n), &last, |b, r| {
            b.iter(|| engine.decide(black_box(r)))
        });
        let last_tcp = request(&principal(n - 1), false);
        group.bench_with_input(BenchmarkId::new("allow_last_tcp", n), &last_tcp, |b, r| {
            b.iter(|| engine.decide(black_box(r)))
        });
        let stranger = request("cluster.local/ns/other/sa/stranger", true);
        assert!(!engine.decide(&stranger).allowed);
        group.bench_with_input(BenchmarkId::new("no_match_http", n), &stranger, |b, r| {
            b.iter(|| engine.decide(black_box(r)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
