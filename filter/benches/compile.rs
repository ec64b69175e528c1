//! `compile` of 10,000 AuthorizationPolicies selecting one workload, each naming distinct
//! principals (goal: well under 100 ms), plus the same with a PeerAuthentication stack.

use criterion::{criterion_group, criterion_main, Criterion};
use peerguard_filter::compile::{compile, MeshConfig, Workload};
use peerguard_filter::istio::*;
use std::collections::BTreeMap;
use std::hint::black_box;

fn workload() -> Workload {
    Workload {
        namespace: "foo".into(),
        name: "httpbin".into(),
        service_account: "httpbin".into(),
        labels: BTreeMap::from([("app".to_string(), "httpbin".to_string())]),
        services: vec!["httpbin".into()],
        service_ports: Vec::new(),
    }
}

fn policies(n: usize) -> Vec<Resource> {
    (0..n)
        .map(|i| {
            let source = AuthzSource {
                principals: Some(vec![
                    format!("cluster.local/ns/ns-{i}/sa/client-{i}"),
                    format!("cluster.local/ns/ns-{i}/sa/other-{i}"),
                ]),
                ..Default::default()
            };
            let operation = AuthzOperation {
                methods: Some(vec!["GET".into()]),
                paths: Some(vec![format!("/api/{i}/*")]),
                ..Default::default()
            };
            Resource::AuthorizationPolicy(Object {
                api_version: "security.istio.io/v1".into(),
                metadata: ObjectMeta {
                    name: format!("policy-{i:05}"),
                    namespace: Some("foo".into()),
                    ..Default::default()
                },
                spec: AuthorizationPolicySpec {
                    selector: Some(WorkloadSelector {
                        match_labels: BTreeMap::from([("app".to_string(), "httpbin".to_string())]),
                    }),
                    action: if i % 10 == 0 {
                        AuthzAction::Deny
                    } else {
                        AuthzAction::Allow
                    },
                    rules: Some(vec![AuthzRule {
                        from: Some(vec![RuleFrom {
                            source: Some(source),
                        }]),
                        to: Some(vec![RuleTo {
                            operation: Some(operation),
                        }]),
                        when: None,
                    }]),
                    ..Default::default()
                },
                origin: Origin::default(),
            })
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let resources = policies(10_000);
    let wl = workload();
    let mesh = MeshConfig {
        trust_domain_aliases: vec!["old-td".into()],
        ..MeshConfig::default()
    };
    c.bench_function("compile_10k_authorization_policies", |b| {
        b.iter(|| compile(black_box(&resources), black_box(&wl), black_box(&mesh)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
