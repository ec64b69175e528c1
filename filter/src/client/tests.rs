use super::*;
use crate::istio::parse::parse_str;

fn resources(yaml: &str) -> Vec<Resource> {
    let parsed = parse_str(yaml, "test.yaml");
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    parsed.resources
}

fn ctx(ns: &str) -> ClientContext {
    ClientContext {
        namespace: ns.into(),
        ..ClientContext::default()
    }
}

fn dest(svc: &str, ns: &str, port: u16) -> Destination {
    Destination {
        service: svc.into(),
        namespace: ns.into(),
        port,
        subset: None,
    }
}

const SIDECAR_PERMISSIVE: Endpoint = Endpoint {
    has_sidecar: true,
    server_mode: MtlsMode::Permissive,
};
const SIDECAR_STRICT: Endpoint = Endpoint {
    has_sidecar: true,
    server_mode: MtlsMode::Strict,
};
const SIDECAR_DISABLE: Endpoint = Endpoint {
    has_sidecar: true,
    server_mode: MtlsMode::Disable,
};

#[test]
fn auto_mtls_follows_the_endpoint() {
    let d = dest("httpbin", "partial", 8000);
    let c = ctx("full");
    assert_eq!(
        choose(&[], &c, &d, SIDECAR_PERMISSIVE).tls,
        ClientTls::IstioMutual
    );
    assert_eq!(
        choose(&[], &c, &d, SIDECAR_STRICT).tls,
        ClientTls::IstioMutual
    );
    assert_eq!(
        choose(&[], &c, &d, SIDECAR_DISABLE).tls,
        ClientTls::Plaintext
    );
    assert_eq!(
        choose(&[], &c, &d, Endpoint::no_sidecar()).tls,
        ClientTls::Plaintext
    );
    assert_eq!(
        choose(&[], &c, &d, SIDECAR_PERMISSIVE).source,
        ChoiceSource::AutoMtls
    );
}

#[test]
fn without_auto_mtls_the_client_sends_plaintext() {
    let c = ClientContext {
        auto_mtls: false,
        ..ctx("full")
    };
    let choice = choose(&[], &c, &dest("httpbin", "full", 8000), SIDECAR_STRICT);
    assert_eq!(choice.tls, ClientTls::Plaintext);
    assert_eq!(choice.source, ChoiceSource::Default);
}

const DR_ISTIO_MUTUAL_FULL: &str = "
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: httpbin-full-mtls, namespace: full}
spec:
  host: httpbin.full.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
";

#[test]
fn destination_rule_wins_over_auto_mtls() {
    let r = resources(DR_ISTIO_MUTUAL_FULL);
    let choice = choose(
        &r,
        &ctx("full"),
        &dest("httpbin", "full", 8000),
        SIDECAR_DISABLE,
    );
    assert_eq!(choice.tls, ClientTls::IstioMutual);
    assert!(
        matches!(&choice.source, ChoiceSource::DestinationRule { object, .. } if object == "DestinationRule full/httpbin-full-mtls")
    );
    // Other hosts are untouched.
    assert_eq!(
        choose(
            &r,
            &ctx("full"),
            &dest("httpbin", "partial", 8000),
            SIDECAR_DISABLE
        )
        .tls,
        ClientTls::Plaintext
    );
    // Visible from other namespaces too (no exportTo).
    assert_eq!(
        choose(
            &r,
            &ctx("legacy"),
            &dest("httpbin", "full", 8000),
            SIDECAR_DISABLE
        )
        .tls,
        ClientTls::IstioMutual
    );
}

#[test]
fn istio_mutual_to_an_endpoint_without_sidecar_is_flagged() {
    let r = resources(DR_ISTIO_MUTUAL_FULL);
    let choice = choose(
        &r,
        &ctx("full"),
        &dest("httpbin", "full", 8000),
        Endpoint::no_sidecar(),
    );
    assert_eq!(choice.tls, ClientTls::IstioMutual);
    assert_eq!(choice.diagnostics.len(), 1);
}

#[test]
fn short_host_resolves_in_the_rule_namespace_only() {
    let r = resources(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: full}
spec: {host: httpbin, trafficPolicy: {tls: {mode: DISABLE}}}
",
    );
    assert_eq!(
        choose(
            &r,
            &ctx("full"),
            &dest("httpbin", "full", 8000),
            SIDECAR_STRICT
        )
        .tls,
        ClientTls::Plaintext
    );
    assert_eq!(
        choose(
            &r,
            &ctx("full"),
            &dest("httpbin", "partial", 8000),
            SIDECAR_STRICT
        )
        .tls,
        ClientTls::IstioMutual
    );
}

#[test]
fn dotted_host_is_taken_as_written() {
    // `httpbin.full` is not short (it has a dot), so it is not `httpbin.full.svc.cluster.local`.
    let r = resources(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: full}
spec: {host: httpbin.full, trafficPolicy: {tls: {mode: DISABLE}}}
",
    );
    assert_eq!(
        choose(
            &r,
            &ctx("full"),
            &dest("httpbin", "full", 8000),
            SIDECAR_STRICT
        )
        .tls,
        ClientTls::IstioMutual
    );
}

#[test]
fn port_level_settings_override_for_their_service_port() {
    let r = resources(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: full}
spec:
  host: httpbin.full.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 8000}
      tls: {mode: DISABLE}
    - port: {number: 9000}
      tls: {mode: SIMPLE}
    - port: {number: 9001}
      loadBalancer: {simple: ROUND_ROBIN}
",
    );
    let c = ctx("full");
    assert_eq!(
        choose(&r, &c, &dest("httpbin", "full", 8000), SIDECAR_STRICT).tls,
        ClientTls::Plaintext
    );
    assert_eq!(
        choose(&r, &c, &dest("httpbin", "full", 9000), SIDECAR_STRICT).tls,
        ClientTls::Simple
    );
    assert_eq!(
        choose(&r, &c, &dest("httpbin", "full", 7000), SIDECAR_DISABLE).tls,
        ClientTls::IstioMutual
    );
    // A port entry without tls does not inherit the top-level tls: auto mTLS decides.
    let choice = choose(&r, &c, &dest("httpbin", "full", 9001), SIDECAR_DISABLE);
    assert_eq!(
        (choice.tls, choice.source),
        (ClientTls::Plaintext, ChoiceSource::AutoMtls)
    );
}

#[test]
fn lookup_order_and_wildcards() {
    let r = resources(
            "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: default, namespace: istio-system}
spec: {host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ns-wide, namespace: partial}
spec: {host: '*.partial.svc.cluster.local', trafficPolicy: {tls: {mode: DISABLE}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mine, namespace: legacy}
spec: {host: httpbin.partial.svc.cluster.local, exportTo: ['.'], trafficPolicy: {tls: {mode: SIMPLE}}}
",
        );
    // Mesh-wide wildcard from the root namespace.
    assert_eq!(
        choose(
            &r,
            &ctx("full"),
            &dest("httpbin", "full", 8000),
            SIDECAR_DISABLE
        )
        .tls,
        ClientTls::IstioMutual
    );
    // The service namespace comes before the root namespace.
    assert_eq!(
        choose(
            &r,
            &ctx("full"),
            &dest("httpbin", "partial", 8000),
            SIDECAR_STRICT
        )
        .tls,
        ClientTls::Plaintext
    );
    // The client namespace comes first; exportTo '.' keeps it private to legacy.
    assert_eq!(
        choose(
            &r,
            &ctx("legacy"),
            &dest("httpbin", "partial", 8000),
            SIDECAR_STRICT
        )
        .tls,
        ClientTls::Simple
    );
}

#[test]
fn most_specific_host_in_a_namespace_wins() {
    let r = resources(
            "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a-wide, namespace: full}
spec: {host: '*.svc.cluster.local', trafficPolicy: {tls: {mode: DISABLE}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b-narrow, namespace: full}
spec: {host: '*.full.svc.cluster.local', trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}}
",
        );
    assert_eq!(
        choose(
            &r,
            &ctx("full"),
            &dest("httpbin", "full", 8000),
            SIDECAR_STRICT
        )
        .tls,
        ClientTls::Mutual
    );
    assert_eq!(
        choose(
            &r,
            &ctx("full"),
            &dest("httpbin", "other", 8000),
            SIDECAR_STRICT
        )
        .tls,
        ClientTls::Plaintext
    );
}

#[test]
fn subset_tls_overrides_and_falls_back() {
    let r = resources(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: full}
spec:
  host: httpbin
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {tls: {mode: DISABLE}}
  - name: v2
    labels: {version: v2}
",
    );
    let mut d = dest("httpbin", "full", 8000);
    d.subset = Some("v1".into());
    assert_eq!(
        choose(&r, &ctx("full"), &d, SIDECAR_STRICT).tls,
        ClientTls::Plaintext
    );
    d.subset = Some("v2".into());
    assert_eq!(
        choose(&r, &ctx("full"), &d, SIDECAR_STRICT).tls,
        ClientTls::IstioMutual
    );
}

/// The walkthrough (spec 5.4) with the server mode compiled from the resources.
#[test]
fn walkthrough_with_compiled_server_modes() {
    use crate::compile::ServicePort;
    let mesh = MeshConfig::default();
    let httpbin = |ns: &str| Workload {
        namespace: ns.into(),
        name: "httpbin".into(),
        service_account: "httpbin".into(),
        labels: [
            ("app".to_string(), "httpbin".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]
        .into(),
        services: vec!["httpbin".into()],
        service_ports: vec![ServicePort {
            service: "httpbin".into(),
            name: Some("http".into()),
            port: 8000,
            target_port: 80,
        }],
    };
    let mesh_permissive = "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec: {peers: [{mtls: {mode: PERMISSIVE}}]}\n";
    let strict = "---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: httpbin, namespace: full}\nspec: {targets: [{name: httpbin}], peers: [{mtls: {}}]}\n";
    let plaintext = "---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: httpbin, namespace: full}\nspec: {targets: [{name: httpbin}]}\n";
    let dr = format!("---\n{DR_ISTIO_MUTUAL_FULL}");
    let c = ctx("full");
    let to = |yaml: &str, ns: &str| {
        let r = resources(yaml);
        let ep = Endpoint::sidecar(&r, &httpbin(ns), &mesh, 80);
        choose(&r, &c, &dest("httpbin", ns, 8000), ep).tls
    };
    // Stage 1 and 3: mTLS to every sidecar endpoint.
    assert_eq!(to(mesh_permissive, "full"), ClientTls::IstioMutual);
    assert_eq!(
        to(&format!("{mesh_permissive}{strict}"), "full"),
        ClientTls::IstioMutual
    );
    // Stage 4: the server only serves plaintext; auto mTLS follows. partial is untouched.
    assert_eq!(
        to(&format!("{mesh_permissive}{plaintext}"), "full"),
        ClientTls::Plaintext
    );
    assert_eq!(
        to(&format!("{mesh_permissive}{plaintext}"), "partial"),
        ClientTls::IstioMutual
    );
    // Stage 5: the DestinationRule forces mTLS anyway (the 503 of the walkthrough).
    assert_eq!(
        to(&format!("{mesh_permissive}{plaintext}{dr}"), "full"),
        ClientTls::IstioMutual
    );
}

#[test]
fn dr_without_tls_leaves_auto_mtls() {
    let r = resources(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: full}
spec: {host: httpbin, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}
",
    );
    let choice = choose(
        &r,
        &ctx("full"),
        &dest("httpbin", "full", 8000),
        SIDECAR_PERMISSIVE,
    );
    assert_eq!(
        (choice.tls, choice.source),
        (ClientTls::IstioMutual, ChoiceSource::AutoMtls)
    );
}
