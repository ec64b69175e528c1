//! `peerguard.dev/dry-run` on PeerAuthentication: a STRICT counted instead of enforced.

use super::*;
use crate::istio::parse::parse_str;
use crate::schema::{ModeFrom, MtlsMode};

fn compiled(yaml: &str) -> WorkloadPolicy {
    let parsed = parse_str(yaml, "mesh.yaml");
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    compiled_parsed(parsed)
}

fn compiled_parsed(parsed: crate::istio::parse::Parsed) -> WorkloadPolicy {
    let workload = Workload {
        namespace: "foo".into(),
        name: "httpbin".into(),
        service_account: "httpbin".into(),
        labels: [("app".to_string(), "httpbin".to_string())].into(),
        ..Workload::default()
    };
    compile(&parsed.resources, &workload, &MeshConfig::default())
}

fn pa(ns: &str, name: &str, annotation: Option<&str>, spec: &str) -> String {
    let annotations = annotation
        .map(|v| format!(", annotations: {{peerguard.dev/dry-run: {v:?}}}"))
        .unwrap_or_default();
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"2024-01-01T00:00:00Z\"{annotations}}}\nspec: {spec}\n---\n"
    )
}

fn port(p: &WorkloadPolicy, port: u16) -> (MtlsMode, bool, MtlsMode, Option<String>) {
    let m = p.mtls.for_port(port);
    (m.mode, m.dry_run, m.enforced(), m.from.clone())
}

#[test]
fn dry_run_strict_is_recorded_and_enforced_as_permissive() {
    let p = compiled(&pa("foo", "strict", Some("true"), "{mtls: {mode: STRICT}}"));
    assert_eq!(
        port(&p, 80),
        (
            MtlsMode::Strict,
            true,
            MtlsMode::Permissive,
            Some("PeerAuthentication foo/strict".into())
        )
    );
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
}

#[test]
fn the_annotation_covers_port_level_mtls() {
    let p = compiled(&pa(
        "foo",
        "ports",
        Some("True"),
        "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {8080: {mode: STRICT}, 9090: {mode: DISABLE}}}",
    ));
    assert_eq!(port(&p, 80).0, MtlsMode::Permissive);
    assert!(!port(&p, 80).1);
    assert_eq!(
        port(&p, 8080),
        (
            MtlsMode::Strict,
            true,
            MtlsMode::Permissive,
            Some("PeerAuthentication foo/ports portLevelMtls[8080]".into())
        )
    );
    // Only STRICT can be a dry-run: DISABLE (and PERMISSIVE) are enforced as written, and
    // the compile says so.
    assert_eq!(port(&p, 9090).2, MtlsMode::Disable);
    assert!(!port(&p, 9090).1);
    assert!(
        p.diagnostics
            .iter()
            .any(|d| d.contains("portLevelMtls[9090]") && d.contains("applies to STRICT only")),
        "{:?}",
        p.diagnostics
    );
    assert!(
        p.diagnostics.iter().any(|d| d
            .contains("foo/ports: peerguard.dev/dry-run applies to STRICT only; mode Permissive")),
        "{:?}",
        p.diagnostics
    );
}

#[test]
fn an_unparsable_value_enforces_the_strict() {
    for v in ["yes", "", "maybe"] {
        let p = compiled(&pa("foo", "strict", Some(v), "{mtls: {mode: STRICT}}"));
        assert_eq!(port(&p, 80).2, MtlsMode::Strict, "{v:?}");
        assert!(!port(&p, 80).1);
        assert!(
            p.diagnostics.iter().any(|d| d.contains(&format!(
                "PeerAuthentication foo/strict: annotation peerguard.dev/dry-run={v:?} is not a boolean; its mTLS mode is enforced"
            ))),
            "{v:?}: {:?}",
            p.diagnostics
        );
    }
    for v in ["false", "0", "F"] {
        let p = compiled(&pa("foo", "strict", Some(v), "{mtls: {mode: STRICT}}"));
        assert_eq!(port(&p, 80).2, MtlsMode::Strict, "{v:?}");
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    }
}

#[test]
fn a_dry_run_never_relaxes_an_enforced_strict_of_a_wider_scope() {
    let mesh = pa("istio-system", "default", None, "{mtls: {mode: STRICT}}");
    let ns = pa("foo", "default", Some("true"), "{mtls: {mode: STRICT}}");
    let p = compiled(&format!("{mesh}{ns}"));
    assert_eq!(port(&p, 80).2, MtlsMode::Strict);
    assert!(
        p.diagnostics.iter().any(|d| d.contains(
            "does not relax the enforced STRICT of PeerAuthentication istio-system/default"
        )),
        "{:?}",
        p.diagnostics
    );
    // Over a dry-run (or PERMISSIVE) wider scope it stays a dry-run; a narrower enforced
    // STRICT wins as usual.
    let mesh_dry = pa(
        "istio-system",
        "default",
        Some("true"),
        "{mtls: {mode: STRICT}}",
    );
    let p = compiled(&format!("{mesh_dry}{ns}"));
    assert_eq!(
        port(&p, 80),
        (
            MtlsMode::Strict,
            true,
            MtlsMode::Permissive,
            Some("PeerAuthentication foo/default".into())
        )
    );
    let wl = pa(
        "foo",
        "httpbin",
        None,
        "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}}",
    );
    let p = compiled(&format!("{mesh_dry}{wl}"));
    assert_eq!(port(&p, 80).2, MtlsMode::Strict);
    // A namespace dry-run STRICT inherited by a workload policy's UNSET stays a dry-run.
    let wl_unset = pa(
        "foo",
        "httpbin",
        None,
        "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: UNSET}}",
    );
    let p = compiled(&format!("{ns}{wl_unset}"));
    assert_eq!(port(&p, 80).2, MtlsMode::Permissive);
    assert!(port(&p, 80).1);
}

#[test]
fn an_invalid_peer_authentication_is_never_a_dry_run() {
    let parsed = parse_str(
        &pa("foo", "bad", Some("true"), "{mtls: {mode: STRICTER}}"),
        "mesh.yaml",
    );
    assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);
    let p = compiled_parsed(parsed);
    assert_eq!(port(&p, 80).2, MtlsMode::Strict);
    assert!(!port(&p, 80).1);
}

#[test]
fn configurations_without_the_annotation_are_unchanged() {
    let p = compiled(&pa("foo", "strict", None, "{mtls: {mode: STRICT}}"));
    let json = serde_json::to_string(&p.mtls).unwrap();
    assert!(!json.contains("dry_run"), "{json}");
    let back: crate::schema::MtlsPolicy = serde_json::from_str(&json).unwrap();
    assert_eq!(
        back.default,
        ModeFrom::new(
            MtlsMode::Strict,
            Some("PeerAuthentication foo/strict".into())
        )
    );
    let dry = compiled(&pa("foo", "strict", Some("true"), "{mtls: {mode: STRICT}}"));
    assert!(serde_json::to_string(&dry.mtls)
        .unwrap()
        .contains("\"dry_run\":true"));
}
