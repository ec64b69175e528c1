//! One case per check (each fails if its check is removed: the positive case must report the
//! code, the control, the same mesh fixed as the hint says, must not), and the shared
//! conformance cases as a false-alarm test.

use super::*;
use crate::registry::{PortSpec, Protocol, ServiceSpec, WorkloadKey, WorkloadSpec};
use crate::source::loader::Loader;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

const NOW: i64 = 1_800_000_000;

/// httpbin (foo, sidecar, Service httpbin 8000 → 80) and sleep (foo).
const WORKLOADS: &str = r#"
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: httpbin, namespace: foo, labels: {app: httpbin}}
spec:
  serviceAccount: httpbin
  services: [{name: httpbin, ports: [{name: http, port: 8000, targetPort: 80}]}]
---
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: sleep, namespace: foo, labels: {app: sleep}}
spec: {serviceAccount: sleep}
"#;

const NS_STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {mtls: {mode: STRICT}}\n";
const MESH_STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n";

fn load(files: &[(&str, &str)]) -> Inputs {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("pg-analyze-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let inputs = Loader::default().load_path(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    inputs
}

fn run_with(files: &[(&str, &str)], mesh: &MeshConfig, certs: &CertFacts) -> Vec<Finding> {
    analyze(&load(files), mesh, certs)
}

fn run(files: &[(&str, &str)]) -> Vec<Finding> {
    run_with(files, &MeshConfig::default(), &CertFacts::defaults(NOW))
}

fn codes(f: &[Finding]) -> Vec<&'static str> {
    f.iter().map(|f| f.code).collect()
}

fn find<'a>(f: &'a [Finding], code: &str) -> Option<&'a Finding> {
    f.iter().find(|f| f.code == code)
}

/// `(resources, code that must be reported, severity, object, field)` and the control.
struct Case {
    name: &'static str,
    bad: Vec<&'static str>,
    good: Vec<&'static str>,
    code: &'static str,
    severity: Severity,
    object: &'static str,
    field: &'static str,
}

fn as_refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

fn check_case(c: &Case) {
    let files = |docs: &[&'static str]| -> Vec<(String, String)> {
        let mut v = vec![("workloads.yaml".to_string(), WORKLOADS.to_string())];
        for (i, d) in docs.iter().enumerate() {
            v.push((format!("r{i}.yaml"), d.to_string()));
        }
        v
    };
    let bad = files(&c.bad);
    let found = run(&as_refs(&bad));
    let f =
        find(&found, c.code).unwrap_or_else(|| panic!("{}: no {} in {:#?}", c.name, c.code, found));
    assert_eq!(f.severity, c.severity, "{}: {f:#?}", c.name);
    assert_eq!(f.object, c.object, "{}: {f:#?}", c.name);
    assert_eq!(f.field, c.field, "{}: {f:#?}", c.name);
    if c.object != "mesh" {
        assert!(f.file.ends_with(".yaml"), "{}: {f:#?}", c.name);
    }
    assert!(!f.message.is_empty() && !f.hint.is_empty());
    let good = files(&c.good);
    let found = run(&as_refs(&good));
    assert!(
        find(&found, c.code).is_none(),
        "{}: control still reports {}: {:#?}",
        c.name,
        c.code,
        found
    );
}

const DR_DISABLE: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: httpbin, namespace: foo}\nspec: {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}\n";
const DR_SIMPLE_PORT: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: httpbin, namespace: foo}\nspec: {host: httpbin, trafficPolicy: {portLevelSettings: [{port: {number: 8000}, tls: {mode: SIMPLE}}]}}\n";
const DR_MUTUAL: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: httpbin, namespace: foo}\nspec: {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n";
const DR_MUTUAL_LEGACY: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: legacy, namespace: bar}\nspec: {host: httpbin.bar.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n";
const NOSIDECAR: &str = "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: httpbin, namespace: bar, labels: {app: httpbin}}\nspec: {serviceAccount: httpbin, sidecar: false, services: [{name: httpbin, ports: [{port: 8000, targetPort: 80}]}]}\n";
const WITHSIDECAR: &str = "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: httpbin, namespace: bar, labels: {app: httpbin}}\nspec: {serviceAccount: httpbin, services: [{name: httpbin, ports: [{port: 8000, targetPort: 80}]}]}\n";
const NS_DISABLE: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {mtls: {mode: DISABLE}}\n";
const NS_PERMISSIVE: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {mtls: {mode: PERMISSIVE}}\n";
const NS_STRICT_NEWER: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: another, namespace: foo, creationTimestamp: '2025-01-02T00:00:00Z'}\nspec: {mtls: {mode: PERMISSIVE}}\n";
const NS_STRICT_OLDER: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo, creationTimestamp: '2025-01-01T00:00:00Z'}\nspec: {mtls: {mode: STRICT}}\n";
const PORT_LEVEL_NO_SELECTOR: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {mtls: {mode: STRICT}, portLevelMtls: {80: {mode: PERMISSIVE}}}\n";
const PORT_LEVEL_SELECTOR: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}, portLevelMtls: {80: {mode: PERMISSIVE}}}\n";
const ROOT_SELECTOR: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: httpbin, namespace: istio-system}\nspec: {selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}}\n";
const FOO_SELECTOR: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: httpbin, namespace: foo}\nspec: {selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}}\n";
const FOO_SELECTOR_NONE: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: httpbin, namespace: foo}\nspec: {selector: {matchLabels: {app: httpbin-v2}}, mtls: {mode: STRICT}}\n";

fn ap(name: &str, body: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: foo}}\nspec:\n{body}")
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn mtls_checks() {
    let cases = vec![
        Case {
            name: "DR DISABLE to STRICT",
            bad: vec![NS_STRICT, DR_DISABLE],
            good: vec![NS_STRICT, DR_MUTUAL],
            code: "PG101",
            severity: Severity::Error,
            object: "DestinationRule foo/httpbin",
            field: "spec.trafficPolicy.tls.mode",
        },
        Case {
            name: "DR SIMPLE (port level) to STRICT",
            bad: vec![NS_STRICT, DR_SIMPLE_PORT],
            good: vec![NS_PERMISSIVE, DR_SIMPLE_PORT],
            code: "PG101",
            severity: Severity::Error,
            object: "DestinationRule foo/httpbin",
            field: "spec.trafficPolicy.portLevelSettings[0].tls.mode",
        },
        Case {
            name: "ISTIO_MUTUAL without sidecar",
            bad: vec![NOSIDECAR, DR_MUTUAL_LEGACY],
            good: vec![WITHSIDECAR, DR_MUTUAL_LEGACY],
            code: "PG102",
            severity: Severity::Error,
            object: "DestinationRule bar/legacy",
            field: "spec.trafficPolicy.tls.mode",
        },
        Case {
            name: "ISTIO_MUTUAL to DISABLE",
            bad: vec![NS_DISABLE, DR_MUTUAL],
            good: vec![NS_PERMISSIVE, DR_MUTUAL],
            code: "PG103",
            severity: Severity::Error,
            object: "DestinationRule foo/httpbin",
            field: "spec.trafficPolicy.tls.mode",
        },
        Case {
            name: "two namespace-wide",
            bad: vec![NS_STRICT_OLDER, NS_STRICT_NEWER],
            good: vec![NS_STRICT_OLDER],
            code: "PG104",
            severity: Severity::Warning,
            object: "PeerAuthentication foo/another",
            field: "metadata.name",
        },
        Case {
            name: "portLevelMtls without selector",
            bad: vec![PORT_LEVEL_NO_SELECTOR],
            good: vec![PORT_LEVEL_SELECTOR],
            code: "PG105",
            severity: Severity::Error,
            object: "PeerAuthentication foo/default",
            field: "spec.portLevelMtls",
        },
        Case {
            name: "selector in root namespace",
            bad: vec![ROOT_SELECTOR],
            good: vec![FOO_SELECTOR],
            code: "PG106",
            severity: Severity::Warning,
            object: "PeerAuthentication istio-system/httpbin",
            field: "spec.selector",
        },
        Case {
            name: "mesh still PERMISSIVE",
            bad: vec![NS_PERMISSIVE],
            good: vec![MESH_STRICT],
            code: "PG107",
            severity: Severity::Warning,
            object: "mesh",
            field: "spec.mtls.mode",
        },
        Case {
            name: "PA selector matches nothing",
            bad: vec![FOO_SELECTOR_NONE],
            good: vec![FOO_SELECTOR],
            code: "PG108",
            severity: Severity::Warning,
            object: "PeerAuthentication foo/httpbin",
            field: "spec.selector.matchLabels",
        },
    ];
    for c in &cases {
        check_case(c);
    }
}

#[test]
fn workload_level_shadowing_and_mesh_mode_object() {
    let a = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a, namespace: foo, creationTimestamp: '2025-01-01T00:00:00Z'}\nspec: {selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}}\n";
    let b = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: b, namespace: foo, creationTimestamp: '2025-02-01T00:00:00Z'}\nspec: {selector: {matchLabels: {app: httpbin}}, mtls: {mode: DISABLE}}\n";
    let mesh = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: PERMISSIVE}}\n";
    let f = run(&[
        ("w.yaml", WORKLOADS),
        ("a.yaml", a),
        ("b.yaml", b),
        ("m.yaml", mesh),
    ]);
    let s = find(&f, "PG104").unwrap();
    assert_eq!(s.object, "PeerAuthentication foo/b");
    assert_eq!(s.field, "spec.selector");
    assert!(
        s.message
            .contains("PeerAuthentication foo/a is older at workload scope"),
        "{s:#?}"
    );
    let p = find(&f, "PG107").unwrap();
    assert_eq!(p.object, "PeerAuthentication istio-system/default");
    assert_eq!(p.file.rsplit('/').next(), Some("m.yaml"));
    assert!(p.message.contains("foo/sleep"), "{p:#?}");
}

#[test]
fn authz_checks() {
    let cases = vec![
        Case { name: "DENY positive paths", bad: vec![leak(ap("d", "  action: DENY\n  rules: [{to: [{operation: {paths: [/admin]}}]}]\n"))], good: vec![leak(ap("d", "  action: DENY\n  rules: [{to: [{operation: {notPaths: [/public]}}]}]\n"))], code: "PG201", severity: Severity::Warning, object: "AuthorizationPolicy foo/d", field: "spec.rules[0].to[0].operation.paths" },
        Case { name: "ALLOW notPaths", bad: vec![leak(ap("a", "  rules: [{to: [{operation: {notPaths: [/admin]}}]}]\n"))], good: vec![leak(ap("a", "  rules: [{to: [{operation: {paths: [/public]}}]}]\n"))], code: "PG201", severity: Severity::Warning, object: "AuthorizationPolicy foo/a", field: "spec.rules[0].to[0].operation.notPaths" },
        Case { name: "DENY hosts without port", bad: vec![leak(ap("h", "  action: DENY\n  rules: [{to: [{operation: {hosts: [admin.example.com]}}]}]\n"))], good: vec![leak(ap("h", "  action: DENY\n  rules: [{to: [{operation: {hosts: [admin.example.com, 'admin.example.com:*']}}]}]\n"))], code: "PG202", severity: Severity::Warning, object: "AuthorizationPolicy foo/h", field: "spec.rules[0].to[0].operation.hosts" },
        Case { name: "DENY principals under PERMISSIVE", bad: vec![leak(ap("p", "  action: DENY\n  rules: [{from: [{source: {principals: [cluster.local/ns/foo/sa/sleep]}}]}]\n"))], good: vec![NS_STRICT, leak(ap("p", "  action: DENY\n  rules: [{from: [{source: {principals: [cluster.local/ns/foo/sa/sleep]}}]}]\n"))], code: "PG203", severity: Severity::Warning, object: "AuthorizationPolicy foo/p", field: "spec.rules[0].from[0].source.principals" },
        Case { name: "ALLOW notNamespaces under PERMISSIVE", bad: vec![leak(ap("notns", "  rules: [{from: [{source: {notNamespaces: [bar]}}]}]\n"))], good: vec![NS_STRICT, leak(ap("notns", "  rules: [{from: [{source: {notNamespaces: [bar]}}]}]\n"))], code: "PG203", severity: Severity::Warning, object: "AuthorizationPolicy foo/notns", field: "spec.rules[0].from[0].source.namespaces" },
        Case { name: "DENY requestPrincipals", bad: vec![NS_STRICT, leak(ap("j", "  action: DENY\n  rules: [{from: [{source: {requestPrincipals: ['issuer/subject']}}]}]\n"))], good: vec![NS_STRICT, leak(ap("j", "  action: DENY\n  rules: [{from: [{source: {principals: ['cluster.local/ns/bar/sa/x']}}]}]\n"))], code: "PG204", severity: Severity::Error, object: "AuthorizationPolicy foo/j", field: "spec.rules[0].from[0].source.requestPrincipals" },
        Case { name: "ALLOW request.auth.claims", bad: vec![leak(ap("c", "  rules: [{when: [{key: 'request.auth.claims[iss]', values: [me]}]}]\n"))], good: vec![leak(ap("c", "  rules: [{when: [{key: 'request.headers[x-iss]', values: [me]}]}]\n"))], code: "PG204", severity: Severity::Warning, object: "AuthorizationPolicy foo/c", field: "spec.rules[0].when[0].key" },
        Case { name: "RequestAuthentication", bad: vec!["apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: foo}\nspec: {jwtRules: [{issuer: me}]}\n"], good: vec![], code: "PG204", severity: Severity::Warning, object: "RequestAuthentication foo/jwt", field: "spec.jwtRules" },
        Case { name: "selector matches nothing", bad: vec![leak(ap("s", "  selector: {matchLabels: {app: httbin}}\n  rules: [{}]\n"))], good: vec![leak(ap("s", "  selector: {matchLabels: {app: httpbin}}\n  rules: [{}]\n"))], code: "PG205", severity: Severity::Warning, object: "AuthorizationPolicy foo/s", field: "spec.selector.matchLabels" },
        Case { name: "foreign trust domain", bad: vec![NS_STRICT, leak(ap("t", "  rules: [{from: [{source: {principals: [other.td/ns/foo/sa/sleep]}}]}]\n"))], good: vec![NS_STRICT, leak(ap("t", "  rules: [{from: [{source: {principals: [cluster.local/ns/foo/sa/sleep, '*/ns/foo/sa/x']}}]}]\n"))], code: "PG206", severity: Severity::Warning, object: "AuthorizationPolicy foo/t", field: "spec.rules[0].from[0].source.principals[0]" },
        Case { name: "CUSTOM without provider", bad: vec![leak(ap("x", "  action: CUSTOM\n  rules: [{}]\n"))], good: vec![leak(ap("x", "  action: DENY\n  rules: [{}]\n"))], code: "PG207", severity: Severity::Error, object: "AuthorizationPolicy foo/x", field: "spec.provider.name" },
        Case { name: "CUSTOM unsupported", bad: vec![leak(ap("x", "  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]\n"))], good: vec![leak(ap("x", "  action: DENY\n  rules: [{}]\n"))], code: "PG208", severity: Severity::Warning, object: "AuthorizationPolicy foo/x", field: "spec.action" },
        Case { name: "dry-run annotation", bad: vec!["apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: dr, namespace: foo, annotations: {istio.io/dry-run: 'yes'}}\nspec: {action: DENY, rules: [{}]}\n"], good: vec!["apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: dr, namespace: foo, annotations: {istio.io/dry-run: 'true'}}\nspec: {action: DENY, rules: [{}]}\n"], code: "PG209", severity: Severity::Warning, object: "AuthorizationPolicy foo/dr", field: "metadata.annotations[istio.io/dry-run]" },
    ];
    for c in &cases {
        check_case(c);
    }
}

#[test]
fn trust_domain_aliases_are_known() {
    let t = ap(
        "t",
        "  rules: [{from: [{source: {principals: [old.td/ns/foo/sa/sleep]}}]}]\n",
    );
    let files = [
        ("w.yaml", WORKLOADS),
        ("s.yaml", NS_STRICT),
        ("t.yaml", t.as_str()),
    ];
    assert!(codes(&run(&files)).contains(&"PG206"));
    let mesh = MeshConfig {
        trust_domain_aliases: vec!["old.td".into()],
        ..MeshConfig::default()
    };
    assert!(!codes(&run_with(&files, &mesh, &CertFacts::defaults(NOW))).contains(&"PG206"));
}

#[test]
fn legacy_policies_get_their_peer_authentication() {
    let mesh_policy = "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec: {peers: [{mtls: {mode: PERMISSIVE}}]}\n";
    let policy = "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: httpbin, namespace: foo}\nspec: {targets: [{name: httpbin, ports: [{number: 8000}]}], peers: [{mtls: {}}]}\n";
    let f = run(&[
        ("w.yaml", WORKLOADS),
        ("m.yaml", mesh_policy),
        ("p.yaml", policy),
    ]);
    let legacy: Vec<&Finding> = f.iter().filter(|f| f.code == "PG301").collect();
    assert_eq!(legacy.len(), 2, "{f:#?}");
    let m = legacy
        .iter()
        .find(|f| f.object == "MeshPolicy default")
        .unwrap();
    assert!(m.hint.contains("kind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: PERMISSIVE"), "{}", m.hint);
    let p = legacy
        .iter()
        .find(|f| f.object == "Policy foo/httpbin")
        .unwrap();
    // The Service port 8000 is the workload port 80 (portLevelMtls is keyed by target port).
    assert!(p.hint.contains("selector:\n    matchLabels:\n      app: \"httpbin\"\n  portLevelMtls:\n    80:\n      mode: STRICT"), "{}", p.hint);
    assert_eq!(p.severity, Severity::Warning);
    // No legacy object, no PG301.
    assert!(!codes(&run(&[("w.yaml", WORKLOADS), ("s.yaml", NS_STRICT)])).contains(&"PG301"));
}

#[test]
fn certificate_checks() {
    let mesh = MeshConfig::default();
    let files = [("w.yaml", WORKLOADS), ("m.yaml", MESH_STRICT)];
    let base = CertFacts::defaults(NOW);
    let day = 86400;
    let with = |f: CertFacts| run_with(&files, &mesh, &f);
    // TTL above the maximum: refused.
    let f = with(CertFacts {
        workload_cert_ttl: Duration::from_secs(100 * day as u64),
        ..base.clone()
    });
    let ttl = find(&f, "PG401").unwrap();
    assert_eq!(ttl.severity, Severity::Error);
    assert!(
        ttl.message
            .contains("100d is greater than the max allowed TTL 90d"),
        "{ttl:#?}"
    );
    assert!(find(&with(base.clone()), "PG401").is_none());
    // Workload certificates: past the renewal point (1h left of 24h) warns, expired is an
    // error, a fresh one (20h left) is fine.
    let cert = |ns: &str, left: i64| WorkloadCert {
        namespace: ns.into(),
        name: "httpbin".into(),
        not_after: NOW + left,
    };
    let f = with(CertFacts {
        workload_certs: vec![cert("a", 3600), cert("b", -60), cert("c", 20 * 3600)],
        workload_certs_source: "http://x/metrics".into(),
        ..base.clone()
    });
    let w: Vec<(&str, Severity)> = f
        .iter()
        .filter(|f| f.code == "PG402")
        .map(|f| (f.object.as_str(), f.severity))
        .collect();
    assert_eq!(
        w,
        vec![
            ("Workload a/httpbin", Severity::Warning),
            ("Workload b/httpbin", Severity::Error)
        ]
    );
    // The CA: 10 days left warns (within 30d), 100 days is fine, expired is an error.
    let ca = |left: i64| {
        Some(CaCert {
            source: "ca.pem".into(),
            not_after: NOW + left,
        })
    };
    let f = with(CertFacts {
        ca: ca(10 * day),
        ..base.clone()
    });
    assert_eq!(
        find(&f, "PG403").map(|f| f.severity),
        Some(Severity::Warning)
    );
    assert_eq!(
        find(
            &with(CertFacts {
                ca: ca(-1),
                ..base.clone()
            }),
            "PG403"
        )
        .map(|f| f.severity),
        Some(Severity::Error)
    );
    assert!(find(
        &with(CertFacts {
            ca: ca(100 * day),
            ..base.clone()
        }),
        "PG403"
    )
    .is_none());
}

#[test]
fn metrics_are_read() {
    let text = "# HELP peerguard_workload_cert_expiry_timestamp_seconds x\n# TYPE peerguard_workload_cert_expiry_timestamp_seconds gauge\npeerguard_workload_cert_expiry_timestamp_seconds{namespace=\"foo\",name=\"httpbin\"} 1800003600\npeerguard_ca_cert_expiry_timestamp_seconds 2100000000\npeerguard_ready 1\n";
    let (certs, ca) = parse_metrics(text);
    assert_eq!(
        certs,
        vec![WorkloadCert {
            namespace: "foo".into(),
            name: "httpbin".into(),
            not_after: 1_800_003_600
        }]
    );
    assert_eq!(ca, Some(2_100_000_000));
}

const PROBED: &str = r#"
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: web, namespace: foo, labels: {app: web}}
spec:
  serviceAccount: web
  services: [{name: web, ports: [{port: 8000, targetPort: 80}]}]
  probes:
  - {kind: liveness, type: http, port: 80, path: /healthz}
  - {kind: readiness, type: tcp, port: 80}
  - {kind: startup, type: exec}
"#;

#[test]
fn probe_checks() {
    let f = run(&[("w.yaml", PROBED), ("s.yaml", NS_STRICT)]);
    let http = find(&f, "PG501").unwrap();
    assert_eq!(
        (http.severity, http.object.as_str(), http.field.as_str()),
        (Severity::Error, "Workload foo/web", "spec.probes[0]")
    );
    assert!(
        http.hint.contains("portLevelMtls") && http.hint.contains("exec"),
        "{http:#?}"
    );
    let tcp = find(&f, "PG502").unwrap();
    assert_eq!(
        (tcp.severity, tcp.field.as_str()),
        (Severity::Warning, "spec.probes[1]")
    );
    assert_eq!(
        f.iter().filter(|f| f.code.starts_with("PG5")).count(),
        2,
        "{f:#?}"
    );
    // The FAQ's fix: the health port PERMISSIVE through portLevelMtls.
    let fixed = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: web, namespace: foo}\nspec: {selector: {matchLabels: {app: web}}, portLevelMtls: {80: {mode: PERMISSIVE}}}\n";
    let f = run(&[("w.yaml", PROBED), ("s.yaml", NS_STRICT), ("f.yaml", fixed)]);
    assert!(find(&f, "PG501").is_none(), "{f:#?}");
    // Rewritten probes (Istio's injector) never reach the port.
    let rewritten = PROBED.replace("path: /healthz}", "path: /healthz, rewritten: true}");
    assert!(find(
        &run(&[("w.yaml", &rewritten), ("s.yaml", NS_STRICT)]),
        "PG501"
    )
    .is_none());
}

#[test]
fn invalid_objects_are_errors() {
    let bad = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: typo, namespace: foo}\nspec: {action: DENY, rulez: []}\n";
    let f = run(&[("w.yaml", WORKLOADS), ("b.yaml", bad)]);
    let e = find(&f, "PG001").unwrap();
    assert_eq!(e.severity, Severity::Error);
    assert_eq!(e.object, "AuthorizationPolicy foo/typo");
    assert!(e.file.ends_with("b.yaml"), "{e:#?}");
    let f = run(&[("w.yaml", WORKLOADS), ("b.yaml", "kind: [unclosed\n")]);
    assert!(codes(&f).contains(&"PG002"), "{f:#?}");
}

/// The registry entry a conformance scenario's workload stands for.
fn scenario_entry(s: &peerguard_filter::scenario::Scenario) -> crate::registry::WorkloadEntry {
    let w = &s.workload;
    let mut services: BTreeMap<String, Vec<PortSpec>> =
        w.services.iter().map(|n| (n.clone(), Vec::new())).collect();
    for p in &w.service_ports {
        services
            .entry(p.service.clone())
            .or_default()
            .push(PortSpec {
                name: p.name.clone(),
                port: p.port,
                target_port: Some(p.target_port),
                protocol: Protocol::Http,
            });
    }
    crate::registry::WorkloadEntry {
        key: WorkloadKey {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
        },
        labels: w.labels.clone(),
        spec: WorkloadSpec {
            service_account: w.service_account.clone(),
            services: services
                .into_iter()
                .map(|(name, ports)| ServiceSpec { name, ports })
                .collect(),
            sidecar: true,
            address: None,
            probes: Vec::new(),
        },
        file: s.file.display().to_string(),
    }
}

/// Errors a conformance case is about (the trap it demonstrates): not false alarms.
const EXPECTED_ERRORS: &[(&str, &str)] = &[
    // The auto mTLS task's DestinationRule override: ISTIO_MUTUAL towards a plaintext-only
    // server, the 503 the case itself expects (sleep.full to httpbin.full).
    (
        "010-automtls-plaintext-policy-and-dr-override.yaml",
        "PG103",
    ),
];

#[test]
fn conformance_cases_raise_no_false_alarm() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../integration/conformance/cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{}", files.len());
    let mut per_code: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    for file in &files {
        let s = peerguard_filter::scenario::load_file(file).unwrap();
        let entry = scenario_entry(&s);
        let (registry, errs) = crate::registry::Registry::build(vec![entry]);
        assert!(errs.is_empty());
        let inputs = Inputs {
            resources: s.resources.clone(),
            registry,
            ..Inputs::default()
        };
        let found = analyze(&inputs, &s.mesh(), &CertFacts::defaults(NOW));
        let case = file.file_name().unwrap().to_string_lossy().to_string();
        for f in &found {
            *per_code.entry(f.code).or_default() += 1;
            println!(
                "{case}: {} {} {} {}: {}",
                f.severity.as_str(),
                f.code,
                f.object,
                f.field,
                f.message
            );
            if f.severity == Severity::Error && !EXPECTED_ERRORS.contains(&(case.as_str(), f.code))
            {
                errors.push(format!("{case}: {} {} {}", f.code, f.object, f.message));
            }
        }
    }
    println!("findings per code over {} cases: {per_code:?}", files.len());
    assert!(
        errors.is_empty(),
        "error-level findings on conformance cases:\n{}",
        errors.join("\n")
    );
}
