//! Inputs that used to fail open (skipped, defaulted, or silently read): each is now an
//! error naming file, object and field, and the object is kept as `Invalid` so that
//! `compile` fails closed for it.

// Tests assert by panicking.
#![allow(clippy::panic)]

use super::*;
use crate::istio::AuthzAction;

fn error_lines(parsed: &Parsed) -> Vec<String> {
    parsed.errors.iter().map(ToString::to_string).collect()
}

fn only_invalid(parsed: &Parsed) -> &InvalidObject {
    match &parsed.resources[..] {
        [Resource::Invalid(o)] => o,
        other => panic!("expected one Resource::Invalid, got {other:?}"),
    }
}

const DENY_SPEC: &str = "spec: {action: DENY, rules: [{}]}\n";

#[test]
fn an_unknown_version_in_an_istio_group_is_invalid_not_skipped() {
    let text = format!("apiVersion: security.istio.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: deny-all, namespace: foo}}\n{DENY_SPEC}");
    let parsed = parse_str(&text, "p.yaml");
    assert_eq!(
        error_lines(&parsed),
        vec!["p.yaml: AuthorizationPolicy foo/deny-all: apiVersion: unknown version \"security.istio.io/v1alpha1\" for AuthorizationPolicy: Istio serves security.istio.io/v1, security.istio.io/v1beta1; the object is not skipped but fails closed"]
    );
    assert!(parsed.skipped.is_empty());
    let o = only_invalid(&parsed);
    // Kept under its own kind, so that compile reads its action and selector.
    assert_eq!(o.kind, "AuthorizationPolicy");
    assert!(!o.unknown_kind());

    for (api_version, kind, expected) in [
        ("networking.istio.io/v2", "DestinationRule", "p.yaml: DestinationRule foo/x: apiVersion: unknown version \"networking.istio.io/v2\" for DestinationRule: Istio serves networking.istio.io/v1, networking.istio.io/v1alpha3, networking.istio.io/v1beta1; the object is not skipped but fails closed"),
        ("authentication.istio.io/v1", "Policy", "p.yaml: Policy foo/x: apiVersion: unknown version \"authentication.istio.io/v1\" for Policy: Istio serves authentication.istio.io/v1alpha1; the object is not skipped but fails closed"),
        ("extensions.istio.io", "WasmPlugin", "p.yaml: WasmPlugin foo/x: apiVersion: unknown version \"extensions.istio.io\" for WasmPlugin: Istio serves extensions.istio.io/v1alpha1; the object is not skipped but fails closed"),
        ("Security.istio.io/v1", "PeerAuthentication", "p.yaml: PeerAuthentication foo/x: apiVersion: unknown version \"Security.istio.io/v1\" for PeerAuthentication: Istio serves security.istio.io/v1, security.istio.io/v1beta1; the object is not skipped but fails closed"),
        ("security.istio.io/v1", "PeerAuthentication", ""),
    ] {
        let text = format!("apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x, namespace: foo}}\n");
        let parsed = parse_str(&text, "p.yaml");
        let want: Vec<String> = [expected].iter().filter(|e| !e.is_empty()).map(|e| e.to_string()).collect();
        assert_eq!(error_lines(&parsed), want, "{api_version} {kind}");
    }
}

#[test]
fn a_misspelt_kind_in_an_istio_group_is_invalid_not_skipped() {
    let cases = [
        ("security.istio.io/v1", "AuthorisationPolicy", "p.yaml: AuthorisationPolicy foo/deny-all: kind: unknown kind \"AuthorisationPolicy\" in security.istio.io: the group's kinds are AuthorizationPolicy, PeerAuthentication, RequestAuthentication; the object is not skipped but fails closed"),
        ("security.istio.io/v1beta1", "peerauthentication", "p.yaml: peerauthentication foo/deny-all: kind: unknown kind \"peerauthentication\" in security.istio.io: the group's kinds are AuthorizationPolicy, PeerAuthentication, RequestAuthentication; the object is not skipped but fails closed"),
        ("networking.istio.io/v1", "DestinationRules", "p.yaml: DestinationRules foo/deny-all: kind: unknown kind \"DestinationRules\" in networking.istio.io: the group's kinds are DestinationRule, EnvoyFilter, Gateway, ProxyConfig, ServiceEntry, Sidecar, VirtualService, WorkloadEntry, WorkloadGroup; the object is not skipped but fails closed"),
        ("authentication.istio.io/v1alpha1", "Policies", "p.yaml: Policies foo/deny-all: kind: unknown kind \"Policies\" in authentication.istio.io: the group's kinds are Policy, MeshPolicy; the object is not skipped but fails closed"),
        ("extensions.istio.io/v1alpha1", "WasmPlugins", "p.yaml: WasmPlugins foo/deny-all: kind: unknown kind \"WasmPlugins\" in extensions.istio.io: the group's kinds are WasmPlugin, TrafficExtension; the object is not skipped but fails closed"),
    ];
    for (api_version, kind, expected) in cases {
        let text = format!("apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: deny-all, namespace: foo}}\n{DENY_SPEC}");
        let parsed = parse_str(&text, "p.yaml");
        assert_eq!(error_lines(&parsed), vec![expected.to_string()], "{kind}");
        assert!(parsed.skipped.is_empty(), "{kind}");
        let o = only_invalid(&parsed);
        assert!(o.unknown_kind(), "{kind}");
        assert_eq!(o.metadata.namespace.as_deref(), Some("foo"));
    }
    // The same through parse_value, as a Kubernetes watch would deliver it.
    let outcome = parse_value(
        serde_json::json!({"apiVersion": "security.istio.io/v1", "kind": "AuthzPolicy", "metadata": {"name": "x"}}),
        Origin {
            file: "kube".into(),
            index: 0,
        },
    );
    let ValueOutcome::Resource {
        resource: Resource::Invalid(o),
        errors,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(o.metadata.namespace.as_deref(), Some("default"));
}

#[test]
fn request_authentication_is_read_not_skipped() {
    let text = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: foo}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  jwtRules: [{issuer: https://example.com, jwksUri: https://example.com/jwks}]\n";
    let parsed = parse_str(text, "ra.yaml");
    assert!(
        parsed.errors.is_empty() && parsed.skipped.is_empty(),
        "{parsed:?}"
    );
    let [Resource::RequestAuthentication(o)] = &parsed.resources[..] else {
        panic!("{parsed:?}")
    };
    assert_eq!(o.spec.jwt_rules.len(), 1);

    let bad = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: foo}\nspec:\n  selector: {matchLabels: {app: \"*\"}}\n  jwtRule: []\n";
    assert_eq!(
        error_lines(&parse_str(bad, "ra.yaml")),
        vec!["ra.yaml: RequestAuthentication foo/jwt: spec.jwtRule: unknown field `jwtRule`, expected one of `selector`, `targetRef`, `targetRefs`, `jwtRules`"]
    );
    let bad = bad.replace("jwtRule:", "jwtRules:");
    assert_eq!(
        error_lines(&parse_str(&bad, "ra.yaml")),
        vec!["ra.yaml: RequestAuthentication foo/jwt: spec.selector.matchLabels.app: wildcard is not supported in selector"]
    );
}

#[test]
fn an_unreadable_namespace_is_an_error_not_default() {
    let cases = [
        ("{name: p, namespace: 7}", "p.yaml: AuthorizationPolicy p: metadata.namespace: invalid type: integer `7`, expected a string"),
        ("{name: p, namespace: [foo]}", "p.yaml: AuthorizationPolicy p: metadata.namespace: invalid type: sequence, expected a string"),
        ("{name: p, namespace: Foo_Bar}", "p.yaml: AuthorizationPolicy p: metadata.namespace: invalid namespace \"Foo_Bar\": a namespace is a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters); the object is read as being in every namespace"),
        ("{name: p, namespace: \"foo \"}", "p.yaml: AuthorizationPolicy p: metadata.namespace: invalid namespace \"foo \": a namespace is a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters); the object is read as being in every namespace"),
        ("7", "p.yaml: AuthorizationPolicy <unnamed>: metadata: invalid type: integer `7`, expected struct ObjectMeta"),
    ];
    for (metadata, expected) in cases {
        let text = format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {metadata}\n{DENY_SPEC}");
        let parsed = parse_str(&text, "p.yaml");
        let lines = error_lines(&parsed);
        assert_eq!(
            lines.first().map(String::as_str),
            Some(expected),
            "{metadata}: {lines:?}"
        );
        let o = only_invalid(&parsed);
        assert!(o.namespace_unreadable(), "{metadata}");
        assert_eq!(o.metadata.namespace, None, "{metadata}");
    }
    // Absent, null or empty: `default`, as kubectl does; a MeshPolicy has none.
    for metadata in [
        "{name: p}",
        "{name: p, namespace: null}",
        "{name: p, namespace: \"\"}",
    ] {
        let text = format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {metadata}\n{DENY_SPEC}");
        let parsed = parse_str(&text, "p.yaml");
        let [Resource::AuthorizationPolicy(o)] = &parsed.resources[..] else {
            panic!("{metadata}: {parsed:?}")
        };
        assert_eq!(o.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(o.spec.action, AuthzAction::Deny);
    }
    let mesh = "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default, namespace: Whatever}\nspec: {peers: [{mtls: {}}]}\n";
    assert!(
        matches!(&parse_str(mesh, "m.yaml").resources[..], [Resource::MeshPolicy(o)] if o.metadata.namespace.is_none())
    );
}

#[test]
fn a_malformed_creation_timestamp_is_an_error_not_the_oldest() {
    let pa = |ts: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: pa, namespace: foo, creationTimestamp: {ts}}}\nspec: {{mtls: {{mode: DISABLE}}}}\n")
    };
    for (ts, expected) in [
        ("yesterday", "p.yaml: PeerAuthentication foo/pa: metadata.creationTimestamp: invalid timestamp \"yesterday\": expected RFC 3339, e.g. 2024-01-31T12:00:00Z"),
        ("\"2024-02-30T00:00:00Z\"", "p.yaml: PeerAuthentication foo/pa: metadata.creationTimestamp: invalid timestamp \"2024-02-30T00:00:00Z\": expected RFC 3339, e.g. 2024-01-31T12:00:00Z"),
        ("\"\"", "p.yaml: PeerAuthentication foo/pa: metadata.creationTimestamp: invalid timestamp \"\": expected RFC 3339, e.g. 2024-01-31T12:00:00Z"),
        ("12", "p.yaml: PeerAuthentication foo/pa: metadata.creationTimestamp: invalid type: integer `12`, expected a string"),
    ] {
        let parsed = parse_str(&pa(ts), "p.yaml");
        assert_eq!(error_lines(&parsed), vec![expected.to_string()], "{ts}");
        assert_eq!(only_invalid(&parsed).kind, "PeerAuthentication");
    }
    let parsed = parse_str(&pa("2024-02-29T10:00:00+02:00"), "p.yaml");
    assert!(parsed.errors.is_empty(), "{parsed:?}");
}

#[test]
fn json_duplicate_keys_are_refused_like_yaml_ones() {
    let text = "{\"apiVersion\": \"security.istio.io/v1\", \"kind\": \"AuthorizationPolicy\",\n \"metadata\": {\"name\": \"p\", \"namespace\": \"foo\"},\n \"spec\": {\"action\": \"DENY\", \"rules\": [{}], \"action\": \"ALLOW\"}}";
    for file in ["p.json", "p.yaml"] {
        let parsed = parse_str(text, file);
        assert!(parsed.resources.is_empty(), "{file}: {parsed:?}");
        let lines = error_lines(&parsed);
        assert_eq!(lines.len(), 1, "{file}: {lines:?}");
        let expected = if file == "p.json" {
            "p.json: invalid JSON at line 3, column 51: duplicate key \"action\""
        } else {
            "p.yaml: invalid YAML at line 3, column 44: duplicate mapping key: action"
        };
        assert!(lines[0].starts_with(expected), "{file}: {}", lines[0]);
    }
    // A List from `kubectl get -o json` with one duplicate loses the whole file, not one key.
    let list = "{\"kind\": \"List\", \"apiVersion\": \"v1\", \"items\": [], \"items\": []}";
    assert!(error_lines(&parse_str(list, "l.json"))[0].contains("duplicate key \"items\""));
}

#[test]
fn unattached_errors_are_those_no_invalid_object_carries() {
    let mut parsed = parse_str("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: foo}\nspec: {action: DENIED}\n", "a.yaml");
    assert_eq!(parsed.errors.len(), 1);
    assert!(parsed.unattached_errors().is_empty());
    parsed.extend(parse_str("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: foo\n", "b.yaml"));
    parsed.extend(parse_str("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: 7}\n", "c.yaml"));
    let unattached: Vec<String> = parsed
        .unattached_errors()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(unattached.len(), 1, "{unattached:?}");
    assert!(
        unattached[0].starts_with("b.yaml: invalid YAML"),
        "{unattached:?}"
    );
}

#[test]
fn selector_validity_follows_istio() {
    let labels = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert!(selector_is_valid(&labels(&[("app", "httpbin")])));
    assert!(selector_is_valid(&labels(&[("app", "")])));
    assert!(!selector_is_valid(&labels(&[("app", "*")])));
    assert!(!selector_is_valid(&labels(&[("app", "http*")])));
    assert!(!selector_is_valid(&labels(&[("*", "x")])));
    assert!(!selector_is_valid(&labels(&[("", "x")])));
    assert!(!selector_is_valid(&labels(&[("app", &"v".repeat(64))])));
}

/// Found by the differential harness against Envoy's RBAC: values Istio's webhook refuses
/// (and istiod drops) must not be read leniently.
#[test]
fn values_istio_refuses_make_the_policy_invalid() {
    let policy = |rule: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: foo}}\nspec: {{action: ALLOW, rules: [{rule}]}}\n")
    };
    for (rule, field) in [
        (
            "{from: [{source: {ipBlocks: [\"127.20.0.0/016\"]}}]}",
            "ipBlocks",
        ),
        (
            "{from: [{source: {notRemoteIpBlocks: [\"10.0.0.0/08\"]}}]}",
            "notRemoteIpBlocks",
        ),
        ("{to: [{operation: {paths: [\"/api/{*}/a*b\"]}}]}", "paths"),
    ] {
        let parsed = parse_str(&policy(rule), "p.yaml");
        let o = only_invalid(&parsed);
        assert!(o.error.contains(field), "{rule}: {}", o.error);
    }
    for rule in [
        "{from: [{source: {ipBlocks: [\"0.0.0.0/0\", \"10.0.0.0/8\"]}}]}",
        "{to: [{operation: {paths: [\"/a*b\", \"/api/{*}/ab\"]}}]}",
    ] {
        let parsed = parse_str(&policy(rule), "p.yaml");
        assert!(
            parsed.errors.is_empty(),
            "{rule}: {:?}",
            error_lines(&parsed)
        );
    }
}
