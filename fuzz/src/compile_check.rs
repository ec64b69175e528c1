//! Target `parse_compile`: text → Istio parser → `compile` for a few workloads → the filter.
//!
//! Nothing may panic, whatever the text; errors are expected. Beyond that, every compiled
//! policy must survive the trip the server makes it take: serialized to JSON, read back by the
//! filter unchanged, and indexed by the engine, which then decides a few fixed requests.

use peerguard_filter::compile::{compile, MeshConfig, ServicePort, Workload};
use peerguard_filter::istio::parse::parse_str;
use peerguard_filter::schema::{HttpRequest, Peer, Request};
use peerguard_filter::{Engine, WorkloadPolicy};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// The workloads every input is compiled for: a labelled workload behind a Service with a
/// port mapping (selectors, legacy targets, port-level mTLS), a workload in the root
/// namespace, and one without labels.
pub fn workloads() -> Vec<Workload> {
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    vec![
        Workload {
            namespace: "foo".into(),
            name: "httpbin".into(),
            service_account: "httpbin".into(),
            labels: labels(&[("app", "httpbin"), ("version", "v1")]),
            services: vec!["httpbin".into()],
            service_ports: vec![ServicePort {
                service: "httpbin".into(),
                name: Some("http".into()),
                port: 8000,
                target_port: 80,
            }],
        },
        Workload {
            namespace: "istio-system".into(),
            name: "ingressgateway".into(),
            service_account: "istio-ingressgateway".into(),
            labels: labels(&[("istio", "ingressgateway")]),
            services: vec!["istio-ingressgateway".into()],
            service_ports: Vec::new(),
        },
        Workload {
            namespace: "bar".into(),
            name: "tcp-echo".into(),
            service_account: "default".into(),
            labels: BTreeMap::new(),
            services: Vec::new(),
            service_ports: Vec::new(),
        },
    ]
}

/// The default mesh, and one with trust-domain aliases and another root namespace.
pub fn meshes() -> Vec<MeshConfig> {
    vec![
        MeshConfig::default(),
        MeshConfig {
            trust_domain: "td1".into(),
            trust_domain_aliases: vec!["cluster.local".into(), "old-td".into()],
            root_namespace: "mesh-root".into(),
            ..MeshConfig::default()
        },
    ]
}

/// A few requests that reach every stage of the engine: plaintext, mTLS with two SANs,
/// TCP, an odd path.
pub fn requests() -> Vec<Request> {
    let ip = |last| Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)));
    let http = |method: &str, path: &str, headers: &[(&str, &str)]| {
        Some(HttpRequest {
            method: method.into(),
            path: path.into(),
            host: "httpbin.foo:8000".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..HttpRequest::default()
        })
    };
    vec![
        Request {
            peer: None,
            source_ip: ip(7),
            destination_ip: ip(9),
            port: 80,
            sni: None,
            http: http("GET", "/ip", &[]),
        },
        Request {
            peer: Some(Peer {
                uri_sans: vec![
                    "spiffe://cluster.local/ns/foo/sa/sleep".into(),
                    "spiffe://old-td/ns/bar/sa/b".into(),
                ],
            }),
            source_ip: ip(8),
            destination_ip: ip(9),
            port: 8000,
            sni: Some("outbound_.8000_._.httpbin.foo.svc.cluster.local".into()),
            http: http(
                "POST",
                "/admin/%2e%2e/public?x=1",
                &[("x-role", "admin"), ("x-role", "user")],
            ),
        },
        Request {
            peer: Some(Peer::from_principal(
                "td1/ns/istio-system/sa/istio-ingressgateway",
            )),
            source_ip: ip(1),
            destination_ip: ip(9),
            port: 9000,
            sni: None,
            http: None,
        },
    ]
}

/// Parses `text` as the file `file` and checks every compiled policy (see the module docs).
pub fn check(text: &str, file: &str) {
    let parsed = parse_str(text, file);
    for e in &parsed.errors {
        assert_eq!(e.file, file, "a parse error does not name its file: {e}");
    }
    // Every workload in the default mesh, the first one also in the other mesh.
    let workloads = workloads();
    let pairs = meshes().into_iter().enumerate().flat_map(|(i, mesh)| {
        let n = if i == 0 { workloads.len() } else { 1 };
        workloads.iter().take(n).map(move |w| (mesh.clone(), w))
    });
    for (mesh, workload) in pairs {
        delivered(&compile(&parsed.resources, workload, &mesh));
    }
}

/// The server → filter trip: JSON, read back equal, indexed, decides.
fn delivered(policy: &WorkloadPolicy) {
    let json = match serde_json::to_vec(policy) {
        Ok(j) => j,
        Err(e) => panic!("a compiled policy does not serialize: {e}\n{policy:?}"),
    };
    let read: WorkloadPolicy = match serde_json::from_slice(&json) {
        Ok(p) => p,
        Err(e) => panic!(
            "the filter cannot read a compiled policy: {e}\n{}",
            String::from_utf8_lossy(&json)
        ),
    };
    assert_eq!(
        &read, policy,
        "a compiled policy changes on its way to the filter"
    );
    let engine = match Engine::new(read) {
        Ok(engine) => engine,
        Err(e) => panic!("the engine refuses a compiled policy: {e}"),
    };
    for request in requests() {
        let _ = engine.decide(&request);
    }
}
