//! Parse → compile → decide for inputs that used to fail open: a misspelt kind, an unknown
//! version, a selector Istio refuses, an unreadable namespace, a malformed creation
//! timestamp; and the JWT warnings.
// Tests assert by panicking.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::istio::parse::parse_str;
use crate::schema::{HttpRequest, MtlsMode, Peer, Request};

/// A workload with the labels `app=<app>` in `namespace`.
fn wl(namespace: &str, app: &str) -> Workload {
    Workload {
        namespace: namespace.into(),
        name: app.into(),
        service_account: app.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ..Default::default()
    }
}

fn compiled(yaml: &str, workload: &Workload) -> WorkloadPolicy {
    let parsed = parse_str(yaml, "mesh.yaml");
    compile(&parsed.resources, workload, &MeshConfig::default())
}

/// Whether an mTLS GET from `sleep` in `foo` is allowed on port 80.
fn allowed(yaml: &str, workload: &Workload) -> bool {
    let request = Request {
        peer: Some(Peer::from_principal("cluster.local/ns/foo/sa/sleep")),
        source_ip: None,
        destination_ip: None,
        port: 80,
        sni: None,
        http: Some(HttpRequest {
            method: "GET".into(),
            path: "/".into(),
            host: "h".into(),
            headers: Vec::new(),
            version: Default::default(),
        }),
    };
    crate::decide::decide(&compiled(yaml, workload), &request).allowed
}

fn mode(yaml: &str, workload: &Workload) -> MtlsMode {
    compiled(yaml, workload).mtls.for_port(80).mode
}

const ALLOW_ALL: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-all, namespace: foo}\nspec: {rules: [{}]}\n";

fn deny_all(api_version: &str, kind: &str, namespace: &str, selector: &str) -> String {
    format!("---\napiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: deny, namespace: {namespace}}}\nspec: {{action: DENY, rules: [{{}}]{selector}}}\n")
}

#[test]
fn a_misspelt_kind_denies_its_whole_namespace() {
    let typo = format!(
        "{ALLOW_ALL}{}",
        deny_all(
            "security.istio.io/v1",
            "AuthorisationPolicy",
            "foo",
            ", selector: {matchLabels: {app: other}}"
        )
    );
    assert!(
        allowed(ALLOW_ALL, &wl("foo", "httpbin")),
        "the baseline allows"
    );
    // Whatever its selector says: a misspelt kind's fields mean nothing known.
    assert!(!allowed(&typo, &wl("foo", "httpbin")));
    assert!(!allowed(&typo, &wl("foo", "other")));
    assert!(
        allowed(&typo, &wl("bar", "httpbin")),
        "another namespace is not touched"
    );
    let p = compiled(&typo, &wl("foo", "httpbin"));
    assert!(
        p.diagnostics.iter().any(|d| d.starts_with("mesh.yaml: AuthorisationPolicy foo/deny is invalid (kind: unknown kind \"AuthorisationPolicy\" in security.istio.io")),
        "{:?}",
        p.diagnostics
    );
    // In the root namespace: every workload of the mesh; in every Istio group.
    for (api_version, kind) in [
        ("security.istio.io/v1", "PeerAuthentications"),
        ("networking.istio.io/v1", "DestinatonRule"),
        ("authentication.istio.io/v1alpha1", "Polcy"),
        ("extensions.istio.io/v1alpha1", "WasmPlugn"),
    ] {
        let root = format!(
            "{ALLOW_ALL}{}",
            deny_all(api_version, kind, "istio-system", "")
        );
        assert!(!allowed(&root, &wl("foo", "httpbin")), "{kind}");
        assert!(!allowed(&root, &wl("bar", "x")), "{kind}");
    }
}

#[test]
fn an_unknown_version_keeps_its_kind_and_fails_closed_as_that_kind() {
    let deny = format!(
        "{ALLOW_ALL}{}",
        deny_all(
            "security.istio.io/v2",
            "AuthorizationPolicy",
            "foo",
            ", selector: {matchLabels: {app: httpbin}}"
        )
    );
    assert!(!allowed(&deny, &wl("foo", "httpbin")));
    assert!(
        allowed(&deny, &wl("foo", "other")),
        "its readable selector still scopes it"
    );
    let strict = "apiVersion: security.istio.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {mtls: {mode: STRICT}}\n";
    assert_eq!(mode(strict, &wl("foo", "httpbin")), MtlsMode::Strict);
    let legacy = "apiVersion: authentication.istio.io/v1beta1\nkind: Policy\nmetadata: {name: default, namespace: foo}\nspec: {peers: [{mtls: {}}]}\n";
    assert_eq!(mode(legacy, &wl("foo", "httpbin")), MtlsMode::Strict);
}

#[test]
fn a_selector_istio_refuses_selects_the_whole_namespace() {
    for selector in [
        "{app: \"*\"}",
        "{\"*\": x}",
        "{\"\": httpbin}",
        "{app: 7}",
        "7",
    ] {
        let deny = format!(
            "{ALLOW_ALL}{}",
            deny_all(
                "security.istio.io/v1",
                "AuthorizationPolicy",
                "foo",
                &format!(", selector: {{matchLabels: {selector}}}")
            )
        );
        assert!(!allowed(&deny, &wl("foo", "httpbin")), "{selector}");
        assert!(!allowed(&deny, &wl("foo", "other")), "{selector}");
        let pa = format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: pa, namespace: foo}}\nspec: {{selector: {{matchLabels: {selector}}}, mtls: {{mode: DISABLE}}}}\n");
        assert_eq!(
            mode(&pa, &wl("foo", "httpbin")),
            MtlsMode::Strict,
            "{selector}"
        );
    }
    // An invalid object whose selector is fine keeps it.
    let narrow = format!(
        "{ALLOW_ALL}{}",
        deny_all(
            "security.istio.io/v1",
            "AuthorizationPolicy",
            "foo",
            ", selector: {matchLabels: {app: other}}, bogus: 1"
        )
    );
    assert!(allowed(&narrow, &wl("foo", "httpbin")));
    assert!(!allowed(&narrow, &wl("foo", "other")));
}

#[test]
fn an_empty_label_value_selects_as_in_istio() {
    let deny = format!(
        "{ALLOW_ALL}{}",
        deny_all(
            "security.istio.io/v1",
            "AuthorizationPolicy",
            "foo",
            ", selector: {matchLabels: {app: \"\"}}"
        )
    );
    assert!(parse_str(&deny, "mesh.yaml").errors.is_empty());
    assert!(allowed(&deny, &wl("foo", "httpbin")));
    assert!(
        !allowed(&deny, &wl("foo", "")),
        "the label present with an empty value"
    );
}

#[test]
fn an_unreadable_namespace_counts_in_every_namespace() {
    for ns in ["7", "[foo]", "Foo"] {
        let deny = format!(
            "{ALLOW_ALL}{}",
            deny_all("security.istio.io/v1", "AuthorizationPolicy", ns, "")
        );
        assert!(!allowed(&deny, &wl("foo", "httpbin")), "{ns}");
        let p = compiled(&deny, &wl("bar", "x"));
        assert_eq!(p.policies.len(), 1, "{ns}");
        assert_eq!(p.policies[0].policy.to_string(), "<unreadable>/deny");
        let pa = format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: pa, namespace: {ns}}}\nspec: {{mtls: {{mode: DISABLE}}}}\n");
        assert_eq!(mode(&pa, &wl("bar", "x")), MtlsMode::Strict, "{ns}");
        let legacy = format!("apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {{name: default, namespace: {ns}}}\nspec: {{}}\n");
        assert_eq!(mode(&legacy, &wl("bar", "x")), MtlsMode::Strict, "{ns}");
    }
    // Not the `default` namespace only, as before.
    let typo = format!(
        "{ALLOW_ALL}{}",
        deny_all("security.istio.io/v1", "AuthorizationPolicy", "7", "")
    );
    assert!(!allowed(&typo, &wl("foo", "httpbin")));
}

#[test]
fn a_malformed_creation_timestamp_does_not_win_as_the_oldest() {
    let pa = |name: &str, ts: &str, mode: &str| {
        format!("---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: foo, creationTimestamp: \"{ts}\"}}\nspec: {{mtls: {{mode: {mode}}}}}\n")
    };
    let yaml = format!(
        "{}{}",
        pa("a-strict", "2020-01-01T00:00:00Z", "STRICT"),
        pa("b-open", "2020-13-01T00:00:00Z", "DISABLE")
    );
    assert_eq!(mode(&yaml, &wl("foo", "httpbin")), MtlsMode::Strict);
    // With a valid timestamp the older one wins, as in Istio.
    let yaml = format!(
        "{}{}",
        pa("a-strict", "2020-01-01T00:00:00Z", "STRICT"),
        pa("b-open", "2019-12-01T00:00:00Z", "DISABLE")
    );
    assert_eq!(mode(&yaml, &wl("foo", "httpbin")), MtlsMode::Disable);
}

#[test]
fn jwt_is_reported_wherever_it_is_relied_on() {
    let yaml = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: jwt, namespace: foo}
spec:
  rules:
  - from: [{source: {requestPrincipals: [\"*\"]}}, {source: {notRequestPrincipals: [a/b]}}]
    when: [{key: source.namespace, values: [foo]}, {key: \"request.auth.claims[groups]\", values: [admin]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec: {jwtRules: [{issuer: x}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: other, namespace: foo}
spec: {selector: {matchLabels: {app: other}}}
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: default, namespace: foo}
spec: {peers: [{mtls: {}}, {jwt: {issuer: x}}], origins: [{jwt: {issuer: x}}]}
";
    assert!(
        parse_str(yaml, "mesh.yaml").errors.is_empty(),
        "{:?}",
        parse_str(yaml, "mesh.yaml").errors
    );
    let p = compiled(yaml, &wl("foo", "httpbin"));
    let jwt: Vec<&str> = p
        .diagnostics
        .iter()
        .filter(|d| d.starts_with(JWT_NOT_ENFORCED))
        .map(String::as_str)
        .collect();
    assert_eq!(
        jwt,
        vec![
            "JWT is not enforced by peerguard: mesh.yaml: Policy foo/default: spec.peers[1].jwt: a jwt peer authenticates nobody here and is ignored",
            "JWT is not enforced by peerguard: mesh.yaml: Policy foo/default: spec.origins/principalBinding: end-user authentication is ignored",
            "JWT is not enforced by peerguard: mesh.yaml: AuthorizationPolicy foo/jwt: spec.rules[0].from[0].source.requestPrincipals: no request has a request principal here, so this never matches",
            "JWT is not enforced by peerguard: mesh.yaml: AuthorizationPolicy foo/jwt: spec.rules[0].from[1].source.notRequestPrincipals: no request has a request principal here, so this always matches",
            "JWT is not enforced by peerguard: mesh.yaml: AuthorizationPolicy foo/jwt: spec.rules[0].when[1]: request.auth.claims[groups]: no request has JWT claims here, so `values` never match and `notValues` always match",
            "JWT is not enforced by peerguard: mesh.yaml: RequestAuthentication istio-system/jwt: spec.jwtRules: tokens are not validated, so a request with an invalid JWT is not refused (Istio answers 401), and no request has a request principal or claims (requestPrincipals and request.auth.* values never match, their negations always match)",
        ]
    );
    // The reading stays fail closed: the ALLOW matches nobody.
    assert!(!allowed(yaml, &wl("foo", "httpbin")));
    // Nothing about JWT for a workload none of it applies to.
    let p = compiled(yaml, &wl("bar", "x"));
    assert!(
        p.diagnostics
            .iter()
            .filter(|d| d.starts_with(JWT_NOT_ENFORCED))
            .count()
            == 1,
        "only the mesh-wide RequestAuthentication: {:?}",
        p.diagnostics
    );
}
