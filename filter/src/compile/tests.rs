//! Table tests for `compile`, one case per rule of the spec (sections 2, 3, 4.1, 4.9, 4.11, 4.12).

use super::*;
use crate::istio::*;
use crate::schema::{Action, MtlsMode, PathMatch, StrMatch};

fn meta(ns: Option<&str>, name: &str, ts: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: name.into(),
        namespace: ns.map(str::to_string),
        creation_timestamp: ts.map(str::to_string),
        ..Default::default()
    }
}

fn obj<S>(ns: Option<&str>, name: &str, ts: Option<&str>, spec: S) -> Object<S> {
    Object {
        api_version: "v1".into(),
        metadata: meta(ns, name, ts),
        spec,
        origin: Origin::default(),
    }
}

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pa(
    ns: &str,
    name: &str,
    ts: Option<&str>,
    sel: &[(&str, &str)],
    mode: PeerMode,
    ports: &[(u32, PeerMode)],
) -> Resource {
    Resource::PeerAuthentication(obj(
        Some(ns),
        name,
        ts,
        PeerAuthenticationSpec {
            selector: (!sel.is_empty()).then(|| WorkloadSelector {
                match_labels: labels(sel),
            }),
            mtls: Some(MutualTls { mode }),
            port_level_mtls: ports
                .iter()
                .map(|(p, m)| (*p, MutualTls { mode: *m }))
                .collect(),
        },
    ))
}

fn workload() -> Workload {
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
    }
}

/// (case name, resources, workload port, expected mode, expected `from`).
type ModeCase = (
    &'static str,
    Vec<Resource>,
    u16,
    MtlsMode,
    Option<&'static str>,
);

fn mode_of(resources: &[Resource], port: u16) -> (MtlsMode, Option<String>) {
    let p = compile(resources, &workload(), &MeshConfig::default());
    let m = p.mtls.for_port(port);
    (m.mode, m.from.clone())
}

use PeerMode::{Disable as D, Permissive as P, Strict as S, Unset as U};

#[test]
fn peer_authentication_scopes_and_precedence() {
    let old = Some("2020-01-01T00:00:00Z");
    let new = Some("2021-01-01T00:00:00Z");
    let cases: Vec<ModeCase> = vec![
        (
            "nothing configured → PERMISSIVE",
            vec![],
            80,
            MtlsMode::Permissive,
            None,
        ),
        (
            "mesh STRICT",
            vec![pa("istio-system", "default", None, &[], S, &[])],
            80,
            MtlsMode::Strict,
            Some("PeerAuthentication istio-system/default"),
        ),
        (
            "mesh UNSET → PERMISSIVE",
            vec![pa("istio-system", "default", None, &[], U, &[])],
            80,
            MtlsMode::Permissive,
            None,
        ),
        (
            "namespace overrides mesh",
            vec![
                pa("istio-system", "default", None, &[], S, &[]),
                pa("foo", "default", None, &[], P, &[]),
            ],
            80,
            MtlsMode::Permissive,
            Some("PeerAuthentication foo/default"),
        ),
        (
            "namespace UNSET inherits mesh",
            vec![
                pa("istio-system", "default", None, &[], S, &[]),
                pa("foo", "default", None, &[], U, &[]),
            ],
            80,
            MtlsMode::Strict,
            Some("PeerAuthentication istio-system/default"),
        ),
        (
            "other namespace's policy does not apply",
            vec![pa("bar", "default", None, &[], S, &[])],
            80,
            MtlsMode::Permissive,
            None,
        ),
        (
            "workload DISABLE overrides namespace STRICT",
            vec![
                pa("foo", "default", None, &[], S, &[]),
                pa("foo", "wl", None, &[("app", "httpbin")], D, &[]),
            ],
            80,
            MtlsMode::Disable,
            Some("PeerAuthentication foo/wl"),
        ),
        (
            "selector that is not a subset does not apply",
            vec![pa(
                "foo",
                "wl",
                None,
                &[("app", "httpbin"), ("x", "y")],
                S,
                &[],
            )],
            80,
            MtlsMode::Permissive,
            None,
        ),
        (
            "empty matchLabels = namespace scope",
            vec![pa("foo", "ns", None, &[], S, &[])],
            80,
            MtlsMode::Strict,
            Some("PeerAuthentication foo/ns"),
        ),
        (
            "root-namespace policy with a selector is ignored",
            vec![pa(
                "istio-system",
                "sel",
                None,
                &[("app", "httpbin")],
                S,
                &[],
            )],
            80,
            MtlsMode::Permissive,
            None,
        ),
        (
            "oldest namespace policy wins",
            vec![
                pa("foo", "a", new, &[], S, &[]),
                pa("foo", "b", old, &[], D, &[]),
            ],
            80,
            MtlsMode::Disable,
            Some("PeerAuthentication foo/b"),
        ),
        (
            "equal timestamps: smallest name wins",
            vec![
                pa("foo", "zz", old, &[], S, &[]),
                pa("foo", "aa", old, &[], D, &[]),
            ],
            80,
            MtlsMode::Disable,
            Some("PeerAuthentication foo/aa"),
        ),
        (
            "no timestamps: same instant, smallest name wins",
            vec![
                pa("foo", "b", None, &[], S, &[]),
                pa("foo", "a", None, &[], P, &[]),
            ],
            80,
            MtlsMode::Permissive,
            Some("PeerAuthentication foo/a"),
        ),
        (
            "port-level DISABLE on the workload port",
            vec![pa("foo", "wl", None, &[("app", "httpbin")], S, &[(80, D)])],
            80,
            MtlsMode::Disable,
            Some("PeerAuthentication foo/wl portLevelMtls[80]"),
        ),
        (
            "unlisted port keeps the workload mode",
            vec![pa("foo", "wl", None, &[("app", "httpbin")], S, &[(80, D)])],
            9090,
            MtlsMode::Strict,
            Some("PeerAuthentication foo/wl"),
        ),
        (
            "port-level UNSET inherits the resolved (namespace) mode",
            vec![
                pa("foo", "default", None, &[], S, &[]),
                pa("foo", "wl", None, &[("app", "httpbin")], U, &[(80, U)]),
            ],
            80,
            MtlsMode::Strict,
            Some("PeerAuthentication foo/default"),
        ),
    ];
    for (name, resources, port, want, from) in cases {
        let (mode, got_from) = mode_of(&resources, port);
        assert_eq!(mode, want, "{name}");
        assert_eq!(got_from.as_deref(), from, "{name}");
    }
}

#[test]
fn root_namespace_selector_is_reported() {
    let p = compile(
        &[pa(
            "istio-system",
            "sel",
            None,
            &[("app", "httpbin")],
            S,
            &[],
        )],
        &workload(),
        &MeshConfig::default(),
    );
    assert!(
        p.diagnostics
            .iter()
            .any(|d| d.contains("istio-system/sel") && d.contains("root namespace")),
        "{:?}",
        p.diagnostics
    );
}

#[test]
fn invalid_peer_authentication_is_strict_at_its_scope() {
    let invalid = |sel: serde_json::Value| {
        Resource::Invalid(InvalidObject {
            kind: "PeerAuthentication".into(),
            api_version: "security.istio.io/v1".into(),
            metadata: meta(Some("foo"), "broken", None),
            origin: Origin::default(),
            raw: serde_json::json!({"spec": {"selector": sel, "mtls": {"mode": "STRICTER"}}}),
            error: "spec.mtls.mode: unknown variant".into(),
        })
    };
    let (mode, from) = mode_of(
        &[invalid(
            serde_json::json!({"matchLabels": {"app": "httpbin"}}),
        )],
        80,
    );
    assert_eq!(
        (mode, from.as_deref()),
        (MtlsMode::Strict, Some("PeerAuthentication foo/broken"))
    );
    // A selector for another workload: does not apply.
    let (mode, _) = mode_of(
        &[invalid(
            serde_json::json!({"matchLabels": {"app": "other"}}),
        )],
        80,
    );
    assert_eq!(mode, MtlsMode::Permissive);
    // An unreadable selector: namespace scope.
    let (mode, _) = mode_of(&[invalid(serde_json::json!(42))], 80);
    assert_eq!(mode, MtlsMode::Strict);
}

fn legacy(
    ns: Option<&str>,
    name: &str,
    ts: Option<&str>,
    targets: &[(&str, Vec<LegacyPortSelector>)],
    peers: Option<LegacyMtlsMode>,
) -> Resource {
    let spec = LegacyPolicySpec {
        targets: targets
            .iter()
            .map(|(n, p)| LegacyTarget {
                name: n.to_string(),
                ports: p.clone(),
            })
            .collect(),
        peers: peers
            .map(|mode| {
                vec![LegacyPeer::Mtls(LegacyMtls {
                    mode,
                    allow_tls: false,
                })]
            })
            .unwrap_or_default(),
        peer_is_optional: false,
        has_origins: false,
    };
    match ns {
        Some(_) => Resource::LegacyPolicy(obj(ns, name, ts, spec)),
        None => Resource::MeshPolicy(obj(None, name, ts, spec)),
    }
}

#[test]
fn legacy_policy_precedence() {
    use LegacyMtlsMode::{Permissive as LP, Strict as LS};
    use LegacyPortSelector::{Name, Number};
    let old = Some("2019-01-01T00:00:00Z");
    let new = Some("2019-06-01T00:00:00Z");
    let mesh_permissive = legacy(None, "default", None, &[], Some(LP));
    let cases: Vec<ModeCase> = vec![
        (
            "MeshPolicy PERMISSIVE",
            vec![mesh_permissive.clone()],
            80,
            MtlsMode::Permissive,
            Some("MeshPolicy default"),
        ),
        (
            "MeshPolicy mtls {} = STRICT",
            vec![legacy(None, "default", None, &[], Some(LS))],
            80,
            MtlsMode::Strict,
            Some("MeshPolicy default"),
        ),
        (
            "MeshPolicy not named default is ignored",
            vec![legacy(None, "boo", None, &[], Some(LS))],
            80,
            MtlsMode::Permissive,
            None,
        ),
        (
            "nothing legacy → PERMISSIVE",
            vec![],
            80,
            MtlsMode::Permissive,
            None,
        ),
        (
            "namespace default beats mesh",
            vec![
                mesh_permissive.clone(),
                legacy(Some("foo"), "default", None, &[], Some(LS)),
            ],
            80,
            MtlsMode::Strict,
            Some("Policy foo/default"),
        ),
        (
            "service policy without peers (DISABLE) beats namespace STRICT",
            vec![
                legacy(Some("foo"), "default", None, &[], Some(LS)),
                legacy(Some("foo"), "svc", None, &[("httpbin", vec![])], None),
            ],
            80,
            MtlsMode::Disable,
            Some("Policy foo/svc"),
        ),
        (
            "service policy in another namespace does not apply",
            vec![
                mesh_permissive.clone(),
                legacy(
                    Some("bar"),
                    "httpbin",
                    None,
                    &[("httpbin", vec![])],
                    Some(LS),
                ),
            ],
            80,
            MtlsMode::Permissive,
            Some("MeshPolicy default"),
        ),
        (
            "policy for another service does not apply",
            vec![legacy(
                Some("foo"),
                "x",
                None,
                &[("other", vec![])],
                Some(LS),
            )],
            80,
            MtlsMode::Permissive,
            None,
        ),
        (
            "service port number maps to the target port",
            vec![legacy(
                Some("foo"),
                "p",
                None,
                &[("httpbin", vec![Number(8000)])],
                Some(LS),
            )],
            80,
            MtlsMode::Strict,
            Some("Policy foo/p"),
        ),
        (
            "service port name maps to the target port",
            vec![legacy(
                Some("foo"),
                "p",
                None,
                &[("httpbin", vec![Name("http".into())])],
                Some(LS),
            )],
            80,
            MtlsMode::Strict,
            Some("Policy foo/p"),
        ),
        (
            "a target-port number is not a service port",
            vec![legacy(
                Some("foo"),
                "p",
                None,
                &[("httpbin", vec![Number(80)])],
                Some(LS),
            )],
            80,
            MtlsMode::Permissive,
            None,
        ),
        (
            "port-specific beats port-less",
            vec![
                legacy(Some("foo"), "a", old, &[("httpbin", vec![])], Some(LS)),
                legacy(
                    Some("foo"),
                    "b",
                    new,
                    &[("httpbin", vec![Number(8000)])],
                    Some(LP),
                ),
            ],
            80,
            MtlsMode::Permissive,
            Some("Policy foo/b"),
        ),
        (
            "other ports use the port-less policy",
            vec![
                legacy(Some("foo"), "a", old, &[("httpbin", vec![])], Some(LS)),
                legacy(
                    Some("foo"),
                    "b",
                    new,
                    &[("httpbin", vec![Number(8000)])],
                    Some(LP),
                ),
            ],
            9090,
            MtlsMode::Strict,
            Some("Policy foo/a"),
        ),
        (
            "oldest of two port-less service policies",
            vec![
                legacy(Some("foo"), "a", new, &[("httpbin", vec![])], Some(LS)),
                legacy(Some("foo"), "b", old, &[("httpbin", vec![])], None),
            ],
            80,
            MtlsMode::Disable,
            Some("Policy foo/b"),
        ),
        (
            "any PeerAuthentication wins over legacy",
            vec![
                legacy(Some("foo"), "default", None, &[], Some(LS)),
                pa("foo", "default", None, &[], U, &[]),
            ],
            80,
            MtlsMode::Permissive,
            None,
        ),
    ];
    for (name, resources, port, want, from) in cases {
        let (mode, got_from) = mode_of(&resources, port);
        assert_eq!(mode, want, "{name}");
        assert_eq!(got_from.as_deref(), from, "{name}");
    }
}

#[test]
fn legacy_port_number_without_service_ports_is_the_request_port() {
    let mut wl = workload();
    wl.service_ports.clear();
    let r = [legacy(
        Some("foo"),
        "p",
        None,
        &[("httpbin", vec![LegacyPortSelector::Number(8000)])],
        Some(LegacyMtlsMode::Strict),
    )];
    let p = compile(&r, &wl, &MeshConfig::default());
    assert_eq!(p.mtls.for_port(8000).mode, MtlsMode::Strict);
    assert_eq!(p.mtls.for_port(80).mode, MtlsMode::Permissive);
    let r = [legacy(
        Some("foo"),
        "p",
        None,
        &[("httpbin", vec![LegacyPortSelector::Name("http".into())])],
        Some(LegacyMtlsMode::Strict),
    )];
    let p = compile(&r, &wl, &MeshConfig::default());
    assert!(p.mtls.ports.is_empty());
    assert_eq!(p.mtls.default.mode, MtlsMode::Permissive);
}

fn ap(ns: &str, name: &str, spec: AuthorizationPolicySpec) -> Resource {
    Resource::AuthorizationPolicy(obj(Some(ns), name, None, spec))
}

fn selector(kv: &[(&str, &str)]) -> Option<WorkloadSelector> {
    Some(WorkloadSelector {
        match_labels: labels(kv),
    })
}

#[test]
fn authorization_policy_selection() {
    let wl = workload();
    let cases: Vec<(&str, Resource, bool)> = vec![
        (
            "own namespace, no selector",
            ap("foo", "a", AuthorizationPolicySpec::default()),
            true,
        ),
        (
            "own namespace, matching selector",
            ap(
                "foo",
                "a",
                AuthorizationPolicySpec {
                    selector: selector(&[("app", "httpbin")]),
                    ..Default::default()
                },
            ),
            true,
        ),
        (
            "own namespace, extra label",
            ap(
                "foo",
                "a",
                AuthorizationPolicySpec {
                    selector: selector(&[("app", "httpbin"), ("foo", "bla")]),
                    ..Default::default()
                },
            ),
            false,
        ),
        (
            "empty matchLabels = namespace-wide",
            ap(
                "foo",
                "a",
                AuthorizationPolicySpec {
                    selector: selector(&[]),
                    ..Default::default()
                },
            ),
            true,
        ),
        (
            "other namespace",
            ap("bar", "a", AuthorizationPolicySpec::default()),
            false,
        ),
        (
            "root namespace, no selector",
            ap("istio-system", "a", AuthorizationPolicySpec::default()),
            true,
        ),
        (
            "root namespace selector spans namespaces",
            ap(
                "istio-system",
                "a",
                AuthorizationPolicySpec {
                    selector: selector(&[("app", "httpbin")]),
                    ..Default::default()
                },
            ),
            true,
        ),
        (
            "root namespace, other app",
            ap(
                "istio-system",
                "a",
                AuthorizationPolicySpec {
                    selector: selector(&[("app", "c")]),
                    ..Default::default()
                },
            ),
            false,
        ),
        (
            "targetRefs are for gateways",
            ap(
                "foo",
                "a",
                AuthorizationPolicySpec {
                    target_refs: vec![PolicyTargetReference {
                        kind: Some("Gateway".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ),
            false,
        ),
    ];
    for (name, r, applies) in cases {
        let p = compile(&[r], &wl, &MeshConfig::default());
        assert_eq!(p.policies.len() == 1, applies, "{name}");
    }
}

#[test]
fn policies_are_ordered_by_namespace_then_name() {
    let rs = [
        ap("foo", "b", Default::default()),
        ap("istio-system", "z", Default::default()),
        ap("foo", "a", Default::default()),
    ];
    let p = compile(&rs, &workload(), &MeshConfig::default());
    let names: Vec<String> = p.policies.iter().map(|p| p.policy.to_string()).collect();
    assert_eq!(names, ["foo/a", "foo/b", "istio-system/z"]);
}

#[test]
fn dry_run_annotation_parses_like_go() {
    for (value, dry, diag) in [
        ("true", true, false),
        ("1", true, false),
        ("False", false, false),
        ("yes", false, true),
    ] {
        let mut o = obj(
            Some("foo"),
            "d",
            None,
            AuthorizationPolicySpec {
                action: AuthzAction::Deny,
                ..Default::default()
            },
        );
        o.metadata
            .annotations
            .insert(DRY_RUN_ANNOTATION.into(), value.into());
        let p = compile(
            &[Resource::AuthorizationPolicy(o)],
            &workload(),
            &MeshConfig::default(),
        );
        assert_eq!(p.policies[0].dry_run, dry, "{value}");
        assert_eq!(
            p.diagnostics.iter().any(|d| d.contains("dry-run")),
            diag,
            "{value}"
        );
    }
}

fn one_rule(
    source: AuthzSource,
    operation: AuthzOperation,
    when: Vec<AuthzCondition>,
) -> AuthorizationPolicySpec {
    AuthorizationPolicySpec {
        rules: Some(vec![AuthzRule {
            from: Some(vec![RuleFrom {
                source: Some(source),
            }]),
            to: Some(vec![RuleTo {
                operation: Some(operation),
            }]),
            when: Some(when),
        }]),
        ..Default::default()
    }
}

fn strs(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn rule_conversion() {
    let mesh = MeshConfig {
        trust_domain: "new-td".into(),
        trust_domain_aliases: vec!["old-td".into()],
        ..Default::default()
    };
    let spec = one_rule(
        AuthzSource {
            principals: strs(&["old-td/ns/a/sa/b", "*/ns/x/sa/y", "other/ns/a/sa/*"]),
            not_principals: strs(&["*"]),
            service_accounts: strs(&["sleep", "bar/sleep"]),
            trust_domains: strs(&["old-td", "x.example"]),
            ip_blocks: strs(&["10.0.0.0/8", "1.2.3.4"]),
            ..Default::default()
        },
        AuthzOperation {
            hosts: strs(&["Example.COM", "*.Example.com"]),
            ports: strs(&["9000"]),
            paths: strs(&["/allow/{*}", "/exact"]),
            ..Default::default()
        },
        vec![AuthzCondition {
            key: "request.headers[X-Token]".into(),
            values: None,
            not_values: strs(&["admin"]),
        }],
    );
    let p = compile(&[ap("foo", "r", spec)], &workload(), &mesh);
    let pol = &p.policies[0];
    assert_eq!(pol.invalid, None, "{:?}", p.diagnostics);
    let rule = &pol.rules[0];
    let src = &rule.from.as_ref().unwrap()[0];
    assert_eq!(
        src.principals.values,
        vec![
            StrMatch::Exact("new-td/ns/a/sa/b".into()),
            StrMatch::Exact("old-td/ns/a/sa/b".into()),
            StrMatch::Suffix("/ns/x/sa/y".into()),
            StrMatch::Prefix("other/ns/a/sa/".into()),
        ]
    );
    assert_eq!(src.principals.not_values, vec![StrMatch::Presence]);
    assert_eq!(
        src.service_accounts.values,
        vec!["foo/sleep".to_string(), "bar/sleep".to_string()]
    );
    assert_eq!(
        src.trust_domains.values,
        vec![
            StrMatch::Exact("new-td".into()),
            StrMatch::Exact("old-td".into()),
            StrMatch::Exact("x.example".into())
        ]
    );
    assert_eq!(src.ip_blocks.values.len(), 2);
    let op = &rule.to.as_ref().unwrap()[0];
    assert_eq!(
        op.hosts.values,
        vec![
            StrMatch::Exact("example.com".into()),
            StrMatch::Suffix(".example.com".into())
        ]
    );
    assert_eq!(op.ports.values, vec![9000]);
    assert!(matches!(op.paths.values[0], PathMatch::Template(_)));
    assert_eq!(
        op.paths.values[1],
        PathMatch::Str(StrMatch::Exact("/exact".into()))
    );
    match &rule.when[0] {
        crate::schema::Condition::RequestHeader { name, field } => {
            assert_eq!(name, "x-token");
            assert_eq!(field.not_values, vec![StrMatch::Exact("admin".into())]);
        }
        other => panic!("unexpected condition {other:?}"),
    }
}

#[test]
fn unconvertible_values_fail_closed() {
    let cases = [
        (
            "bad port",
            one_rule(
                AuthzSource::default(),
                AuthzOperation {
                    ports: strs(&["http"]),
                    ..Default::default()
                },
                vec![],
            ),
        ),
        (
            "bad cidr",
            one_rule(
                AuthzSource {
                    ip_blocks: strs(&["10.0.0.0/40"]),
                    ..Default::default()
                },
                AuthzOperation::default(),
                vec![],
            ),
        ),
        (
            "unknown when key",
            one_rule(
                AuthzSource::default(),
                AuthzOperation::default(),
                vec![AuthzCondition {
                    key: "destination.name".into(),
                    values: strs(&["x"]),
                    not_values: None,
                }],
            ),
        ),
    ];
    for (name, mut spec) in cases {
        spec.action = AuthzAction::Deny;
        let p = compile(&[ap("foo", "x", spec)], &workload(), &MeshConfig::default());
        let pol = &p.policies[0];
        assert!(pol.invalid.is_some(), "{name}");
        assert!(pol.rules.is_empty(), "{name}");
        assert_eq!(pol.action, Action::Deny, "{name}");
    }
}

fn invalid_ap(ns: &str, raw: serde_json::Value) -> Resource {
    Resource::Invalid(InvalidObject {
        kind: "AuthorizationPolicy".into(),
        api_version: "security.istio.io/v1".into(),
        metadata: meta(Some(ns), "broken", None),
        origin: Origin::default(),
        raw,
        error: "spec.rules[0].from[0].source.principals: invalid type".into(),
    })
}

#[test]
fn invalid_authorization_policies_fail_closed() {
    use serde_json::json;
    let cases: Vec<(&str, Resource, Option<Action>)> = vec![
        (
            "readable ALLOW",
            invalid_ap("foo", json!({"spec": {"action": "ALLOW", "rules": 5}})),
            Some(Action::Allow),
        ),
        (
            "default action ALLOW",
            invalid_ap("foo", json!({"spec": {"rules": 5}})),
            Some(Action::Allow),
        ),
        (
            "readable DENY",
            invalid_ap("foo", json!({"spec": {"action": "DENY"}})),
            Some(Action::Deny),
        ),
        (
            "unreadable action → DENY",
            invalid_ap("foo", json!({"spec": {"action": "DENYY"}})),
            Some(Action::Deny),
        ),
        (
            "action not a string → DENY",
            invalid_ap("foo", json!({"spec": {"action": 3}})),
            Some(Action::Deny),
        ),
        (
            "CUSTOM",
            invalid_ap(
                "foo",
                json!({"spec": {"action": "CUSTOM", "provider": {"name": "ext"}}}),
            ),
            Some(Action::Custom),
        ),
        (
            "selector for another app",
            invalid_ap(
                "foo",
                json!({"spec": {"selector": {"matchLabels": {"app": "x"}}}}),
            ),
            None,
        ),
        (
            "unreadable selector selects the namespace",
            invalid_ap(
                "foo",
                json!({"spec": {"selector": {"matchLabels": 7}, "action": "DENY"}}),
            ),
            Some(Action::Deny),
        ),
        (
            "other namespace",
            invalid_ap("bar", json!({"spec": {"action": "DENY"}})),
            None,
        ),
    ];
    for (name, r, want) in cases {
        let p = compile(&[r], &workload(), &MeshConfig::default());
        match want {
            None => assert!(p.policies.is_empty(), "{name}"),
            Some(a) => {
                assert_eq!(p.policies.len(), 1, "{name}");
                assert_eq!(p.policies[0].action, a, "{name}");
                assert!(p.policies[0].invalid.is_some(), "{name}");
                assert!(p.policies[0].rules.is_empty(), "{name}");
                assert!(
                    p.diagnostics.iter().any(|d| d.contains("foo/broken")),
                    "{name}"
                );
            }
        }
    }
    let p = compile(
        &[invalid_ap(
            "foo",
            json!({"spec": {"action": "CUSTOM", "provider": {"name": "ext"}}}),
        )],
        &workload(),
        &MeshConfig::default(),
    );
    assert_eq!(p.policies[0].provider.as_deref(), Some("ext"));
}
