//! Table-driven tests, one group per rule of spec 1.3, 2.5 and 4.2–4.13.

use super::*;
use crate::schema::{
    Cidr, Field, HttpRequest, ModeFrom, MtlsPolicy, Operation, PathMatch, Peer, PolicyRef, Rule,
    Source, StrMatch, TemplateSegment, WorkloadRef,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

// ---------- fixtures ----------

fn wp_mode(mode: MtlsMode, policies: Vec<AuthzPolicy>) -> WorkloadPolicy {
    WorkloadPolicy {
        schema: SCHEMA_VERSION,
        workload: WorkloadRef {
            namespace: "foo".into(),
            name: "httpbin".into(),
        },
        trust_domain: "cluster.local".into(),
        trust_domain_aliases: vec!["old-td".into()],
        mtls: MtlsPolicy {
            default: ModeFrom::new(mode, None),
            ports: BTreeMap::new(),
        },
        policies,
        diagnostics: Vec::new(),
        path_normalization: Default::default(),
        num_trusted_proxies: 0,
        decision_log: None,
    }
}

fn wp(policies: Vec<AuthzPolicy>) -> WorkloadPolicy {
    wp_mode(MtlsMode::Permissive, policies)
}

fn pol(name: &str, action: Action, rules: Vec<Rule>) -> AuthzPolicy {
    AuthzPolicy {
        policy: PolicyRef {
            namespace: "foo".into(),
            name: name.into(),
        },
        action,
        dry_run: false,
        provider: None,
        invalid: None,
        rules,
    }
}

fn dry(mut p: AuthzPolicy) -> AuthzPolicy {
    p.dry_run = true;
    p
}

fn invalid(mut p: AuthzPolicy) -> AuthzPolicy {
    p.invalid = Some("spec.rules[0]: broken".into());
    p.rules.clear();
    p
}

fn allow(rules: Vec<Rule>) -> AuthzPolicy {
    pol("allow", Action::Allow, rules)
}

fn deny(rules: Vec<Rule>) -> AuthzPolicy {
    pol("deny", Action::Deny, rules)
}

fn any_rule() -> Rule {
    Rule::default()
}

fn from(s: Source) -> Rule {
    Rule {
        from: Some(vec![s]),
        ..Rule::default()
    }
}

fn to(o: Operation) -> Rule {
    Rule {
        to: Some(vec![o]),
        ..Rule::default()
    }
}

fn when(c: Condition) -> Rule {
    Rule {
        when: vec![c],
        ..Rule::default()
    }
}

fn yes<T>(v: Vec<T>) -> Field<T> {
    Field {
        values: v,
        not_values: Vec::new(),
    }
}

fn no<T>(v: Vec<T>) -> Field<T> {
    Field {
        values: Vec::new(),
        not_values: v,
    }
}

fn ex(s: &str) -> StrMatch {
    StrMatch::Exact(s.into())
}

fn pre(s: &str) -> StrMatch {
    StrMatch::Prefix(s.into())
}

fn suf(s: &str) -> StrMatch {
    StrMatch::Suffix(s.into())
}

fn cidr(s: &str) -> Cidr {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    Cidr {
        addr: a.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        prefix_len: l.parse().unwrap_or(0),
    }
}

fn http_req(peer: Option<Peer>) -> Request {
    Request {
        peer,
        source_ip: "127.0.0.7".parse().ok(),
        destination_ip: "10.0.0.1".parse().ok(),
        port: 8000,
        sni: None,
        http: Some(HttpRequest {
            method: "GET".into(),
            path: "/ip".into(),
            host: "httpbin.foo:8000".into(),
            headers: Vec::new(),
            version: Default::default(),
        }),
    }
}

fn mtls(principal: &str) -> Request {
    http_req(Some(Peer::from_principal(principal)))
}

fn plain() -> Request {
    http_req(None)
}

fn sleep() -> Request {
    mtls("cluster.local/ns/foo/sa/sleep")
}

fn tcp(mut r: Request) -> Request {
    r.http = None;
    r
}

fn with_http(mut r: Request, f: impl FnOnce(&mut HttpRequest)) -> Request {
    if let Some(h) = r.http.as_mut() {
        f(h);
    }
    r
}

fn path(r: Request, p: &str) -> Request {
    with_http(r, |h| h.path = p.into())
}

fn port(mut r: Request, p: u16) -> Request {
    r.port = p;
    r
}

fn engine(p: WorkloadPolicy) -> Engine {
    let built = Engine::new(p);
    assert!(built.is_ok(), "engine: {:?}", built.as_ref().err());
    built.unwrap_or_else(|_| unreachable_engine())
}

// Only reached after a failed assertion above; keeps the helper total without `panic!`.
fn unreachable_engine() -> Engine {
    Engine {
        policy: wp(vec![]),
        trusted_prefixes: Vec::new(),
        stages: Stages::default(),
        narrowed: Vec::new(),
        want_remote_ip: false,
    }
}

fn rref(name: &str, rule: Option<usize>) -> RuleRef {
    RuleRef {
        policy: PolicyRef {
            namespace: "foo".into(),
            name: name.into(),
        },
        rule,
    }
}

/// One ALLOW policy with `rule`: is the request allowed? (The policy being the only ALLOW,
/// "allowed" means the rule matched.)
/// `req` is the request as the client sent it: Envoy's connection manager (modelled by
/// `crate::hcm`) normalizes it before the engine sees it.
fn rule_allows(rule: Rule, req: &Request) -> bool {
    crate::hcm::decide(&engine(wp(vec![allow(vec![rule])])), req).allowed
}

// ---------- 2.5 / 1.3: listener ----------

#[test]
fn listener_modes_and_trust_domain() {
    let strict_with_disable_port = {
        let mut p = wp_mode(MtlsMode::Strict, vec![]);
        p.mtls
            .ports
            .insert(9000, ModeFrom::new(MtlsMode::Disable, None));
        p
    };
    let raw = |sans: &[&str]| {
        http_req(Some(Peer {
            uri_sans: sans.iter().map(|s| s.to_string()).collect(),
        }))
    };
    let untrusted = |sans: &[&str]| Reason::UntrustedPeer {
        uri_sans: sans.iter().map(|s| s.to_string()).collect(),
    };
    let cases: Vec<(&str, WorkloadPolicy, Request, Reason)> = vec![
        (
            "strict refuses plaintext",
            wp_mode(MtlsMode::Strict, vec![]),
            plain(),
            Reason::PlaintextRefused,
        ),
        (
            "strict accepts mTLS",
            wp_mode(MtlsMode::Strict, vec![]),
            sleep(),
            Reason::NoAllowPolicies,
        ),
        (
            "strict refuses plaintext TCP",
            wp_mode(MtlsMode::Strict, vec![]),
            tcp(plain()),
            Reason::PlaintextRefused,
        ),
        (
            "permissive accepts plaintext",
            wp(vec![]),
            plain(),
            Reason::NoAllowPolicies,
        ),
        (
            "permissive accepts mTLS",
            wp(vec![]),
            sleep(),
            Reason::NoAllowPolicies,
        ),
        (
            "disable refuses mTLS",
            wp_mode(MtlsMode::Disable, vec![]),
            sleep(),
            Reason::MtlsRefused,
        ),
        (
            "disable accepts plaintext",
            wp_mode(MtlsMode::Disable, vec![]),
            plain(),
            Reason::NoAllowPolicies,
        ),
        (
            "port override DISABLE refuses mTLS",
            strict_with_disable_port.clone(),
            port(sleep(), 9000),
            Reason::MtlsRefused,
        ),
        (
            "port override DISABLE accepts plaintext",
            strict_with_disable_port.clone(),
            port(plain(), 9000),
            Reason::NoAllowPolicies,
        ),
        (
            "other ports keep STRICT",
            strict_with_disable_port,
            port(plain(), 9001),
            Reason::PlaintextRefused,
        ),
        (
            "alias trust domain accepted",
            wp(vec![]),
            mtls("old-td/ns/foo/sa/sleep"),
            Reason::NoAllowPolicies,
        ),
        (
            "foreign trust domain refused",
            wp(vec![]),
            mtls("evil.example/ns/foo/sa/sleep"),
            untrusted(&["spiffe://evil.example/ns/foo/sa/sleep"]),
        ),
        (
            "trust domain prefix needs the slash",
            wp(vec![]),
            mtls("cluster.localx/ns/foo/sa/sleep"),
            untrusted(&["spiffe://cluster.localx/ns/foo/sa/sleep"]),
        ),
        (
            "non-SPIFFE SAN refused",
            wp(vec![]),
            raw(&["https://sleep.example/"]),
            untrusted(&["https://sleep.example/"]),
        ),
        ("no URI SAN refused", wp(vec![]), raw(&[]), untrusted(&[])),
        (
            "one trusted SAN among several is enough",
            wp(vec![]),
            raw(&["https://x/", "spiffe://cluster.local/ns/a/sa/b"]),
            Reason::NoAllowPolicies,
        ),
    ];
    for (about, p, req, want) in cases {
        let d = decide(&p, &req);
        assert_eq!(d.reason, want, "{about}");
        assert_eq!(d.allowed, want == Reason::NoAllowPolicies, "{about}");
    }
}

#[test]
fn listener_refusals_have_no_audit_or_shadow_results() {
    let p = wp_mode(
        MtlsMode::Strict,
        vec![
            pol("audit", Action::Audit, vec![any_rule()]),
            dry(deny(vec![any_rule()])),
            dry(allow(vec![any_rule()])),
        ],
    );
    for req in [plain(), mtls("evil.example/ns/foo/sa/sleep")] {
        let d = decide(&p, &req);
        assert!(!d.allowed);
        assert_eq!(d.audit, None);
        assert_eq!(d.dry_run, DryRun::default());
    }
    // Same policies, accepted connection: every report is present.
    let d = decide(&p, &sleep());
    assert_eq!(d.audit, Some(rref("audit", Some(0))));
    assert_eq!(d.dry_run.deny, Some(ShadowResult::Denied));
    assert_eq!(d.dry_run.allow, Some(ShadowResult::Allowed));
}

// ---------- 4.2 / 4.3: actions and empty policies ----------

#[test]
fn actions_and_order() {
    let custom = |rules| AuthzPolicy {
        provider: Some("ext-authz".into()),
        ..pol("custom", Action::Custom, rules)
    };
    let cases: Vec<(&str, Vec<AuthzPolicy>, Reason)> = vec![
        (
            "no policies: allowed by default",
            vec![],
            Reason::NoAllowPolicies,
        ),
        (
            "ALLOW without rules: allow-nothing",
            vec![allow(vec![])],
            Reason::NoAllowMatched,
        ),
        (
            "ALLOW with an empty rule: allow-all",
            vec![allow(vec![any_rule()])],
            Reason::Allowed {
                matched: rref("allow", Some(0)),
            },
        ),
        (
            "ALLOW policies are OR-ed: allow-nothing does not veto allow-all",
            vec![
                pol("nothing", Action::Allow, vec![]),
                pol("all", Action::Allow, vec![any_rule()]),
            ],
            Reason::Allowed {
                matched: rref("all", Some(0)),
            },
        ),
        (
            "DENY wins over ALLOW",
            vec![allow(vec![any_rule()]), deny(vec![any_rule()])],
            Reason::Denied {
                matched: rref("deny", Some(0)),
            },
        ),
        (
            "DENY without rules never matches",
            vec![deny(vec![])],
            Reason::NoAllowPolicies,
        ),
        (
            "CUSTOM denies what it matches, before DENY",
            vec![deny(vec![any_rule()]), custom(vec![any_rule()])],
            Reason::CustomDenied {
                matched: rref("custom", Some(0)),
                provider: Some("ext-authz".into()),
            },
        ),
        (
            "CUSTOM not matching lets the rest decide",
            vec![custom(vec![to(Operation {
                paths: yes(vec![PathMatch::Str(ex("/admin"))]),
                ..Default::default()
            })])],
            Reason::NoAllowPolicies,
        ),
        (
            "AUDIT never decides",
            vec![pol("audit", Action::Audit, vec![any_rule()])],
            Reason::NoAllowPolicies,
        ),
        (
            "dry-run CUSTOM is ignored",
            vec![dry(custom(vec![any_rule()]))],
            Reason::NoAllowPolicies,
        ),
        (
            "dry-run ALLOW does not make the ALLOW set non-empty",
            vec![dry(allow(vec![]))],
            Reason::NoAllowPolicies,
        ),
        (
            "dry-run DENY never denies",
            vec![dry(deny(vec![any_rule()]))],
            Reason::NoAllowPolicies,
        ),
    ];
    for (about, policies, want) in cases {
        let d = decide(&wp(policies), &sleep());
        assert_eq!(d.reason, want, "{about}");
    }
}

#[test]
fn audit_is_reported_whatever_the_decision() {
    let audit = pol(
        "audit",
        Action::Audit,
        vec![from(Source {
            principals: yes(vec![ex("cluster.local/ns/foo/sa/sleep")]),
            ..Default::default()
        })],
    );
    let d = decide(&wp(vec![audit.clone(), deny(vec![any_rule()])]), &sleep());
    assert!(!d.allowed);
    assert_eq!(d.audit, Some(rref("audit", Some(0))));
    let d = decide(&wp(vec![audit.clone()]), &plain());
    assert!(d.allowed);
    assert_eq!(d.audit, None);
    let d = decide(&wp(vec![dry(audit)]), &sleep());
    assert_eq!(d.audit, None, "dry-run AUDIT does not mark requests");
}

// ---------- 4.11: invalid policies ----------

#[test]
fn invalid_policies_fail_closed() {
    let cases: Vec<(&str, Vec<AuthzPolicy>, bool, Reason)> = vec![
        (
            "invalid ALLOW allows nothing",
            vec![invalid(allow(vec![any_rule()]))],
            false,
            Reason::NoAllowMatched,
        ),
        (
            "invalid ALLOW next to a matching ALLOW",
            vec![
                invalid(pol("bad", Action::Allow, vec![])),
                allow(vec![any_rule()]),
            ],
            true,
            Reason::Allowed {
                matched: rref("allow", Some(0)),
            },
        ),
        (
            "invalid DENY denies everything",
            vec![invalid(deny(vec![]))],
            false,
            Reason::Denied {
                matched: rref("deny", None),
            },
        ),
        (
            "invalid CUSTOM denies everything",
            vec![invalid(pol("custom", Action::Custom, vec![]))],
            false,
            Reason::CustomDenied {
                matched: rref("custom", None),
                provider: None,
            },
        ),
        (
            "invalid AUDIT matches nothing",
            vec![invalid(pol("audit", Action::Audit, vec![]))],
            true,
            Reason::NoAllowPolicies,
        ),
    ];
    for (about, policies, allowed, want) in cases {
        for req in [sleep(), plain(), tcp(sleep())] {
            let d = decide(&wp(policies.clone()), &req);
            assert_eq!((d.allowed, &d.reason), (allowed, &want), "{about}: {req:?}");
            assert_eq!(d.audit, None, "{about}");
        }
    }
    let d = decide(&wp(vec![dry(invalid(deny(vec![])))]), &sleep());
    assert_eq!(
        (d.allowed, d.dry_run.deny),
        (true, Some(ShadowResult::Denied)),
        "invalid dry-run DENY shadow-denies"
    );
}

#[test]
fn policies_the_engine_cannot_read_fail_closed_alone() {
    let bad_cidr = Source {
        ip_blocks: yes(vec![Cidr {
            addr: IpAddr::from([10, 0, 0, 0]),
            prefix_len: 33,
        }]),
        ..Default::default()
    };
    let bad_sa = Source {
        service_accounts: yes(vec!["sleep".into()]),
        ..Default::default()
    };
    let p = wp(vec![
        pol("bad-deny", Action::Deny, vec![from(bad_cidr.clone())]),
        allow(vec![any_rule()]),
    ]);
    let e = engine(p);
    assert_eq!(
        e.decide(&sleep()).reason,
        Reason::Denied {
            matched: rref("bad-deny", None)
        }
    );
    assert_eq!(
        e.policy().diagnostics.len(),
        1,
        "{:?}",
        e.policy().diagnostics
    );
    let p = wp(vec![
        pol("bad-allow", Action::Allow, vec![from(bad_sa)]),
        pol(
            "ok",
            Action::Allow,
            vec![from(Source {
                principals: yes(vec![StrMatch::Presence]),
                ..Default::default()
            })],
        ),
    ]);
    let e = engine(p);
    assert_eq!(
        e.decide(&sleep()).reason,
        Reason::Allowed {
            matched: rref("ok", Some(0))
        }
    );
    assert_eq!(e.decide(&plain()).reason, Reason::NoAllowMatched);
}

#[test]
fn schema_version_is_checked() {
    let mut p = wp(vec![]);
    p.schema = SCHEMA_VERSION + 1;
    assert!(matches!(
        Engine::new(p.clone()),
        Err(EngineError::SchemaVersion { .. })
    ));
    assert!(matches!(
        decide(&p, &sleep()).reason,
        Reason::NoConfig { .. }
    ));
}

// ---------- 4.12: dry run ----------

#[test]
fn dry_run_shadow_keys() {
    let on_headers = to(Operation {
        paths: yes(vec![PathMatch::Str(ex("/headers"))]),
        ..Default::default()
    });
    let headers = path(sleep(), "/headers");
    use ShadowResult::{Allowed as A, Denied as D};
    type Case = (
        &'static str,
        Vec<AuthzPolicy>,
        Request,
        bool,
        Option<ShadowResult>,
        Option<ShadowResult>,
    );
    let cases: Vec<Case> = vec![
        (
            "dry DENY matches",
            vec![dry(deny(vec![on_headers.clone()]))],
            headers.clone(),
            true,
            Some(D),
            None,
        ),
        (
            "dry DENY does not match",
            vec![dry(deny(vec![on_headers.clone()]))],
            sleep(),
            true,
            Some(A),
            None,
        ),
        (
            "dry DENY matches plaintext too",
            vec![dry(deny(vec![on_headers.clone()]))],
            path(plain(), "/headers"),
            true,
            Some(D),
            None,
        ),
        (
            "dry ALLOW matches",
            vec![dry(allow(vec![on_headers.clone()]))],
            headers.clone(),
            true,
            None,
            Some(A),
        ),
        (
            "dry ALLOW does not match, still allowed",
            vec![dry(allow(vec![on_headers.clone()]))],
            sleep(),
            true,
            None,
            Some(D),
        ),
        (
            "enforced DENY stops before the ALLOW stage",
            vec![
                deny(vec![on_headers.clone()]),
                dry(allow(vec![any_rule()])),
                dry(pol("dd", Action::Deny, vec![on_headers.clone()])),
            ],
            headers.clone(),
            false,
            Some(D),
            None,
        ),
        (
            "enforced DENY not matching: both stages reached",
            vec![
                deny(vec![on_headers.clone()]),
                dry(allow(vec![any_rule()])),
                dry(pol("dd", Action::Deny, vec![on_headers.clone()])),
            ],
            sleep(),
            true,
            Some(A),
            Some(A),
        ),
        (
            "CUSTOM refusal stops before the DENY stage",
            vec![
                pol("custom", Action::Custom, vec![any_rule()]),
                dry(deny(vec![any_rule()])),
            ],
            sleep(),
            false,
            None,
            None,
        ),
        (
            "enforced ALLOW deciding deny still reports the ALLOW shadow",
            vec![
                allow(vec![on_headers.clone()]),
                dry(pol("da", Action::Allow, vec![any_rule()])),
            ],
            sleep(),
            false,
            None,
            Some(A),
        ),
    ];
    for (about, policies, req, allowed, deny_key, allow_key) in cases {
        let d = decide(&wp(policies), &req);
        assert_eq!(d.allowed, allowed, "{about}");
        assert_eq!(d.dry_run.deny, deny_key, "{about}: deny");
        assert_eq!(d.dry_run.allow, allow_key, "{about}: allow");
        assert_eq!(
            d.dry_run.deny_matched.is_some(),
            deny_key == Some(D),
            "{about}"
        );
        assert_eq!(
            d.dry_run.allow_matched.is_some(),
            allow_key == Some(A),
            "{about}"
        );
    }
}

// ---------- 4.4–4.8: rule matching ----------

fn src(f: impl FnOnce(&mut Source)) -> Rule {
    let mut s = Source::default();
    f(&mut s);
    from(s)
}

fn op(f: impl FnOnce(&mut Operation)) -> Rule {
    let mut o = Operation::default();
    f(&mut o);
    to(o)
}

#[test]
fn source_fields() {
    let raw = |sans: &[&str]| {
        http_req(Some(Peer {
            uri_sans: sans.iter().map(|s| s.to_string()).collect(),
        }))
    };
    let ip = |r: Request, s: &str| Request {
        source_ip: s.parse().ok(),
        ..r
    };
    let no_ip = |r: Request| Request {
        source_ip: None,
        ..r
    };
    let cases: Vec<(&str, Rule, Request, bool)> = vec![
        (
            "principal exact",
            src(|s| s.principals = yes(vec![ex("cluster.local/ns/foo/sa/sleep")])),
            sleep(),
            true,
        ),
        (
            "principal exact, other peer",
            src(|s| s.principals = yes(vec![ex("cluster.local/ns/foo/sa/sleep")])),
            mtls("cluster.local/ns/foo/sa/other"),
            false,
        ),
        (
            "principal values are OR-ed",
            src(|s| s.principals = yes(vec![ex("x"), ex("cluster.local/ns/foo/sa/sleep")])),
            sleep(),
            true,
        ),
        (
            "principal prefix",
            src(|s| s.principals = yes(vec![pre("cluster.local/ns/foo/")])),
            sleep(),
            true,
        ),
        (
            "principal suffix",
            src(|s| s.principals = yes(vec![suf("/sa/sleep")])),
            sleep(),
            true,
        ),
        (
            "principal presence",
            src(|s| s.principals = yes(vec![StrMatch::Presence])),
            sleep(),
            true,
        ),
        (
            "positive principal on plaintext is false",
            src(|s| s.principals = yes(vec![StrMatch::Presence])),
            plain(),
            false,
        ),
        (
            "notPrincipals on plaintext is true",
            src(|s| s.principals = no(vec![StrMatch::Presence])),
            plain(),
            true,
        ),
        (
            "notPrincipals * on mTLS is false",
            src(|s| s.principals = no(vec![StrMatch::Presence])),
            sleep(),
            false,
        ),
        (
            "principal and notPrincipals both hold",
            src(|s| {
                s.principals = Field {
                    values: vec![pre("cluster.local/ns/foo/")],
                    not_values: vec![suf("/sa/sleep")],
                }
            }),
            sleep(),
            false,
        ),
        (
            "any URI SAN may match",
            src(|s| s.principals = yes(vec![ex("cluster.local/ns/a/sa/b")])),
            raw(&[
                "spiffe://cluster.local/ns/x/sa/y",
                "spiffe://cluster.local/ns/a/sa/b",
            ]),
            true,
        ),
        (
            "non-SPIFFE SAN only matches presence",
            src(|s| s.principals = yes(vec![suf("sleep.example/")])),
            raw(&["spiffe://cluster.local/ns/x/sa/y", "https://sleep.example/"]),
            false,
        ),
        (
            "namespace",
            src(|s| s.namespaces = yes(vec!["foo".into()])),
            sleep(),
            true,
        ),
        (
            "namespace other",
            src(|s| s.namespaces = yes(vec!["bar".into()])),
            sleep(),
            false,
        ),
        (
            "namespace glob",
            src(|s| s.namespaces = yes(vec!["f*".into()])),
            sleep(),
            true,
        ),
        (
            "namespace on malformed SPIFFE path",
            src(|s| s.namespaces = yes(vec!["foo".into()])),
            raw(&["spiffe://cluster.local/ns/foo"]),
            false,
        ),
        (
            "namespace on plaintext",
            src(|s| s.namespaces = yes(vec!["*".into()])),
            plain(),
            false,
        ),
        (
            "notNamespaces on plaintext",
            src(|s| s.namespaces = no(vec!["foo".into()])),
            plain(),
            true,
        ),
        (
            "notNamespaces on mTLS",
            src(|s| s.namespaces = no(vec!["foo".into()])),
            sleep(),
            false,
        ),
        (
            "service account",
            src(|s| s.service_accounts = yes(vec!["foo/sleep".into()])),
            sleep(),
            true,
        ),
        (
            "service account is not a prefix",
            src(|s| s.service_accounts = yes(vec!["foo/slee".into()])),
            sleep(),
            false,
        ),
        (
            "notServiceAccounts on plaintext",
            src(|s| s.service_accounts = no(vec!["foo/sleep".into()])),
            plain(),
            true,
        ),
        (
            "trust domain",
            src(|s| s.trust_domains = yes(vec![ex("cluster.local")])),
            sleep(),
            true,
        ),
        (
            "trust domain alias peer",
            src(|s| s.trust_domains = yes(vec![ex("cluster.local")])),
            mtls("old-td/ns/foo/sa/sleep"),
            false,
        ),
        (
            "notTrustDomains on plaintext",
            src(|s| s.trust_domains = no(vec![ex("cluster.local")])),
            plain(),
            true,
        ),
        (
            "request principals never present",
            src(|s| s.request_principals = yes(vec![StrMatch::Presence])),
            sleep(),
            false,
        ),
        (
            "notRequestPrincipals always hold",
            src(|s| s.request_principals = no(vec![StrMatch::Presence])),
            sleep(),
            true,
        ),
        (
            "ipBlocks",
            src(|s| s.ip_blocks = yes(vec![cidr("127.0.0.0/24")])),
            plain(),
            true,
        ),
        (
            "ipBlocks other",
            src(|s| s.ip_blocks = yes(vec![cidr("10.0.0.0/8")])),
            plain(),
            false,
        ),
        (
            "ipBlocks single address",
            src(|s| s.ip_blocks = yes(vec![cidr("127.0.0.8")])),
            ip(plain(), "127.0.0.8"),
            true,
        ),
        (
            "notIpBlocks without source ip",
            src(|s| s.ip_blocks = no(vec![cidr("127.0.0.0/8")])),
            no_ip(plain()),
            true,
        ),
        (
            "ipBlocks without source ip",
            src(|s| s.ip_blocks = yes(vec![cidr("0.0.0.0/0")])),
            no_ip(plain()),
            false,
        ),
        (
            "remoteIpBlocks = source ip",
            src(|s| s.remote_ip_blocks = yes(vec![cidr("127.0.0.7")])),
            plain(),
            true,
        ),
        (
            "notRemoteIpBlocks = source ip",
            src(|s| s.remote_ip_blocks = no(vec![cidr("127.0.0.7")])),
            plain(),
            false,
        ),
        (
            "fields of one source are AND-ed",
            src(|s| {
                s.principals = yes(vec![StrMatch::Presence]);
                s.ip_blocks = yes(vec![cidr("10.0.0.0/8")]);
            }),
            sleep(),
            false,
        ),
        (
            "from entries are OR-ed",
            Rule {
                from: Some(vec![
                    Source {
                        ip_blocks: yes(vec![cidr("10.0.0.0/8")]),
                        ..Default::default()
                    },
                    Source {
                        namespaces: yes(vec!["foo".into()]),
                        ..Default::default()
                    },
                ]),
                ..Rule::default()
            },
            sleep(),
            true,
        ),
        (
            "empty from list is no constraint",
            Rule {
                from: Some(vec![]),
                ..Rule::default()
            },
            plain(),
            true,
        ),
    ];
    for (about, rule, req, want) in cases {
        assert_eq!(rule_allows(rule, &req), want, "{about}");
    }
}

#[test]
fn operation_fields() {
    let host = |r: Request, h: &str| with_http(r, |x| x.host = h.into());
    let method = |r: Request, m: &str| with_http(r, |x| x.method = m.into());
    let p = |s: &str| PathMatch::Str(ex(s));
    let tpl = |t: Vec<TemplateSegment>| PathMatch::Template(t);
    let cases: Vec<(&str, Rule, Request, bool)> = vec![
        (
            "host includes the port",
            op(|o| o.hosts = yes(vec![ex("httpbin.foo")])),
            sleep(),
            false,
        ),
        (
            "host with port",
            op(|o| o.hosts = yes(vec![ex("httpbin.foo:8000")])),
            sleep(),
            true,
        ),
        (
            "host case-insensitive",
            op(|o| o.hosts = yes(vec![ex("httpbin.foo:8000")])),
            host(sleep(), "HTTPBIN.Foo:8000"),
            true,
        ),
        (
            "host prefix",
            op(|o| o.hosts = yes(vec![pre("httpbin.foo:")])),
            sleep(),
            true,
        ),
        (
            "notHosts",
            op(|o| o.hosts = no(vec![suf(":8000")])),
            sleep(),
            false,
        ),
        ("port", op(|o| o.ports = yes(vec![8000])), sleep(), true),
        (
            "port other",
            op(|o| o.ports = yes(vec![9000])),
            sleep(),
            false,
        ),
        ("notPorts", op(|o| o.ports = no(vec![9000])), sleep(), true),
        (
            "method",
            op(|o| o.methods = yes(vec![ex("GET")])),
            sleep(),
            true,
        ),
        (
            "method case-sensitive",
            op(|o| o.methods = yes(vec![ex("GET")])),
            method(sleep(), "get"),
            false,
        ),
        (
            "notMethods",
            op(|o| o.methods = no(vec![ex("GET"), ex("HEAD")])),
            sleep(),
            false,
        ),
        (
            "path exact",
            op(|o| o.paths = yes(vec![p("/ip")])),
            sleep(),
            true,
        ),
        (
            "path case-sensitive",
            op(|o| o.paths = yes(vec![p("/IP")])),
            sleep(),
            false,
        ),
        (
            "path without query",
            op(|o| o.paths = yes(vec![p("/allow")])),
            path(sleep(), "/allow?param=value"),
            true,
        ),
        (
            "path normalized ..",
            op(|o| o.paths = yes(vec![p("/admin")])),
            path(sleep(), "/public/../admin"),
            true,
        ),
        (
            "path normalized .",
            op(|o| o.paths = yes(vec![p("/a/b")])),
            path(sleep(), "/a/./b"),
            true,
        ),
        (
            "path normalized backslash",
            op(|o| o.paths = yes(vec![p("/admin")])),
            path(sleep(), "/x\\..\\admin"),
            true,
        ),
        (
            "path normalized %41",
            op(|o| o.paths = yes(vec![p("/Admin")])),
            path(sleep(), "/%41dmin"),
            true,
        ),
        (
            "notPaths sees the normalized path",
            op(|o| o.paths = no(vec![p("/admin")])),
            path(sleep(), "/x/../admin"),
            false,
        ),
        (
            "%2F is not decoded",
            op(|o| o.paths = yes(vec![p("/a/b")])),
            path(sleep(), "/a%2Fb"),
            false,
        ),
        (
            "slashes are not merged",
            op(|o| o.paths = yes(vec![p("/a/b")])),
            path(sleep(), "/a//b"),
            false,
        ),
        (
            "path prefix",
            op(|o| o.paths = yes(vec![PathMatch::Str(pre("/api/"))])),
            path(sleep(), "/api/x"),
            true,
        ),
        (
            "path template {**}",
            op(|o| {
                o.paths = yes(vec![tpl(vec![
                    TemplateSegment::Literal("/allow/admin/".into()),
                    TemplateSegment::Any,
                ])])
            }),
            path(sleep(), "/allow/admin/x/y"),
            true,
        ),
        (
            "path template {**} needs the slash",
            op(|o| {
                o.paths = yes(vec![tpl(vec![
                    TemplateSegment::Literal("/allow/admin/".into()),
                    TemplateSegment::Any,
                ])])
            }),
            path(sleep(), "/allow/admin"),
            false,
        ),
        (
            "path template {*} is one segment",
            op(|o| {
                o.paths = yes(vec![tpl(vec![
                    TemplateSegment::Literal("/a/".into()),
                    TemplateSegment::One,
                    TemplateSegment::Literal("/c".into()),
                ])])
            }),
            path(sleep(), "/a/b/b/c"),
            false,
        ),
        (
            "fields of one operation are AND-ed",
            op(|o| {
                o.methods = yes(vec![ex("GET")]);
                o.paths = yes(vec![p("/other")]);
            }),
            sleep(),
            false,
        ),
        (
            "to entries are OR-ed",
            Rule {
                to: Some(vec![
                    Operation {
                        methods: yes(vec![ex("POST")]),
                        ..Default::default()
                    },
                    Operation {
                        paths: yes(vec![p("/ip")]),
                        ..Default::default()
                    },
                ]),
                ..Rule::default()
            },
            sleep(),
            true,
        ),
        (
            "from AND to",
            Rule {
                to: op(|o| o.methods = yes(vec![ex("GET")])).to,
                ..src(|s| s.namespaces = yes(vec!["bar".into()]))
            },
            sleep(),
            false,
        ),
    ];
    for (about, rule, req, want) in cases {
        assert_eq!(rule_allows(rule, &req), want, "{about}");
    }
}

#[test]
fn conditions() {
    let hdr = |name: &str, f: Field<StrMatch>| Condition::RequestHeader {
        name: name.into(),
        field: f,
    };
    let headers = |r: Request, hs: &[(&str, &str)]| {
        with_http(r, |h| {
            h.headers = hs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        })
    };
    let sni = |r: Request, s: &str| Request {
        sni: Some(s.into()),
        ..r
    };
    let cases: Vec<(&str, Rule, Request, bool)> = vec![
        (
            "header exact",
            when(hdr("x-token", yes(vec![ex("admin")]))),
            headers(sleep(), &[("x-token", "admin")]),
            true,
        ),
        (
            "header name case-insensitive",
            when(hdr("x-token", yes(vec![ex("admin")]))),
            headers(sleep(), &[("X-Token", "admin")]),
            true,
        ),
        (
            "header value case-sensitive",
            when(hdr("x-token", yes(vec![ex("admin")]))),
            headers(sleep(), &[("x-token", "Admin")]),
            false,
        ),
        // Repeated headers, as Envoy's RBAC matches them since CVE-2026-26308 (observed on
        // Envoy 1.40): each occurrence on its own, never joined, never split at ",".
        (
            "repeated header: values are not joined",
            when(hdr("x-a", yes(vec![ex("1,2")]))),
            headers(sleep(), &[("x-a", "1"), ("x-b", "z"), ("x-a", "2")]),
            false,
        ),
        (
            "repeated header: any occurrence matches",
            when(hdr("x-a", yes(vec![ex("2")]))),
            headers(sleep(), &[("x-a", "1"), ("x-a", "2")]),
            true,
        ),
        (
            "one value with a comma is one value",
            when(hdr("x-a", yes(vec![ex("2")]))),
            headers(sleep(), &[("x-a", "1,2")]),
            false,
        ),
        (
            "repeated header: notValues excludes when any occurrence matches",
            when(hdr("x-a", no(vec![ex("admin")]))),
            headers(sleep(), &[("x-a", "user"), ("x-a", "admin")]),
            false,
        ),
        (
            "host is :authority",
            when(hdr("host", yes(vec![pre("httpbin.foo")]))),
            sleep(),
            true,
        ),
        (
            ":authority",
            when(hdr(":authority", yes(vec![suf(":8000")]))),
            sleep(),
            true,
        ),
        (
            ":path is the normalized path with query",
            when(hdr(":path", yes(vec![ex("/admin?x=1")]))),
            path(sleep(), "/x/../admin?x=1"),
            true,
        ),
        (
            ":method",
            when(hdr(":method", yes(vec![ex("GET")]))),
            sleep(),
            true,
        ),
        (
            "Envoy sets x-forwarded-proto",
            when(hdr("x-forwarded-proto", yes(vec![ex("https")]))),
            headers(sleep(), &[("x-forwarded-proto", "http")]),
            true,
        ),
        (
            "a client's XFCC never reaches the filter on plaintext",
            when(hdr(
                "x-forwarded-client-cert",
                yes(vec![StrMatch::Presence]),
            )),
            headers(
                plain(),
                &[(
                    "x-forwarded-client-cert",
                    "URI=spiffe://cluster.local/ns/foo/sa/admin",
                )],
            ),
            false,
        ),
        (
            "header presence: empty value counts",
            when(hdr("x-a", yes(vec![StrMatch::Presence]))),
            headers(sleep(), &[("x-a", "")]),
            true,
        ),
        (
            "header presence: absent",
            when(hdr("x-a", yes(vec![StrMatch::Presence]))),
            sleep(),
            false,
        ),
        (
            "header notValues on absent header",
            when(hdr("x-a", no(vec![ex("bad")]))),
            sleep(),
            true,
        ),
        (
            "header notValues matching",
            when(hdr("x-a", no(vec![pre("ba")]))),
            headers(sleep(), &[("x-a", "bad")]),
            false,
        ),
        (
            "source.ip",
            when(Condition::SourceIp {
                field: yes(vec![cidr("127.0.0.0/8")]),
            }),
            plain(),
            true,
        ),
        (
            "remote.ip = source ip",
            when(Condition::RemoteIp {
                field: no(vec![cidr("127.0.0.0/8")]),
            }),
            plain(),
            false,
        ),
        (
            "destination.ip",
            when(Condition::DestinationIp {
                field: yes(vec![cidr("10.0.0.1")]),
            }),
            plain(),
            true,
        ),
        (
            "destination.port",
            when(Condition::DestinationPort {
                field: yes(vec![9000]),
            }),
            plain(),
            false,
        ),
        (
            "source.principal",
            when(Condition::SourcePrincipal {
                field: yes(vec![ex("cluster.local/ns/foo/sa/sleep")]),
            }),
            sleep(),
            true,
        ),
        (
            "source.principal notValues on plaintext",
            when(Condition::SourcePrincipal {
                field: no(vec![StrMatch::Presence]),
            }),
            plain(),
            true,
        ),
        (
            "source.namespace",
            when(Condition::SourceNamespace {
                field: yes(vec!["foo".into()]),
            }),
            sleep(),
            true,
        ),
        (
            "source.namespace notValues on plaintext",
            when(Condition::SourceNamespace {
                field: no(vec!["foo".into()]),
            }),
            plain(),
            true,
        ),
        (
            "source.serviceAccount",
            when(Condition::SourceServiceAccount {
                field: yes(vec!["foo/sleep".into()]),
            }),
            sleep(),
            true,
        ),
        (
            "source.trustDomain",
            when(Condition::SourceTrustDomain {
                field: yes(vec![pre("cluster")]),
            }),
            sleep(),
            true,
        ),
        (
            "connection.sni",
            when(Condition::ConnectionSni {
                field: yes(vec![suf(".svc")]),
            }),
            sni(sleep(), "httpbin.foo.svc"),
            true,
        ),
        (
            "connection.sni absent",
            when(Condition::ConnectionSni {
                field: yes(vec![StrMatch::Presence]),
            }),
            sleep(),
            false,
        ),
        (
            "request.auth positive never",
            when(Condition::RequestAuth {
                claim: "iss".into(),
                field: yes(vec![StrMatch::Presence]),
            }),
            sleep(),
            false,
        ),
        (
            "request.auth negative always",
            when(Condition::RequestAuth {
                claim: "iss".into(),
                field: no(vec![ex("x")]),
            }),
            sleep(),
            true,
        ),
        (
            "envoy metadata absent",
            when(Condition::EnvoyMetadata {
                path: "f[k]".into(),
                field: yes(vec![StrMatch::Presence]),
            }),
            sleep(),
            false,
        ),
        (
            "every condition must hold",
            Rule {
                when: vec![
                    Condition::DestinationPort {
                        field: yes(vec![8000]),
                    },
                    Condition::SourceIp {
                        field: yes(vec![cidr("10.0.0.0/8")]),
                    },
                ],
                ..Rule::default()
            },
            plain(),
            false,
        ),
    ];
    for (about, rule, req, want) in cases {
        assert_eq!(rule_allows(rule, &req), want, "{about}");
    }
}

// ---------- 4.10: TCP versus HTTP ----------

#[test]
fn tcp_drops_allow_rules_and_strips_deny_rules() {
    let get = Operation {
        methods: yes(vec![ex("GET")]),
        ..Default::default()
    };
    let get_9000 = Operation {
        ports: yes(vec![9000]),
        ..get.clone()
    };
    let hdr = Condition::RequestHeader {
        name: "x".into(),
        field: yes(vec![StrMatch::Presence]),
    };
    let r_get = Rule {
        to: Some(vec![get.clone()]),
        ..Rule::default()
    };
    let r_ports = Rule {
        to: Some(vec![Operation {
            ports: yes(vec![8000]),
            ..Default::default()
        }]),
        ..Rule::default()
    };
    let r_not_hosts = op(|o| o.hosts = no(vec![ex("x")]));
    let r_not_req_principals = src(|s| s.request_principals = no(vec![StrMatch::Presence]));
    let sleep_tcp = tcp(sleep());
    let cases: Vec<(&str, Vec<AuthzPolicy>, Request, Reason)> = vec![
        (
            "ALLOW with methods is dropped on TCP",
            vec![allow(vec![r_get.clone()])],
            sleep_tcp.clone(),
            Reason::NoAllowMatched,
        ),
        (
            "ALLOW with methods works on HTTP",
            vec![allow(vec![r_get.clone()])],
            sleep(),
            Reason::Allowed {
                matched: rref("allow", Some(0)),
            },
        ),
        (
            "other rules of the policy still work",
            vec![allow(vec![r_get.clone(), r_ports.clone()])],
            sleep_tcp.clone(),
            Reason::Allowed {
                matched: rref("allow", Some(1)),
            },
        ),
        (
            "ALLOW with a negative HTTP field is dropped too",
            vec![allow(vec![r_not_hosts.clone()])],
            sleep_tcp.clone(),
            Reason::NoAllowMatched,
        ),
        (
            "ALLOW with notRequestPrincipals is dropped",
            vec![allow(vec![r_not_req_principals.clone()])],
            sleep_tcp.clone(),
            Reason::NoAllowMatched,
        ),
        (
            "ALLOW with a header condition is dropped",
            vec![allow(vec![when(hdr.clone())])],
            sleep_tcp.clone(),
            Reason::NoAllowMatched,
        ),
        (
            "DENY with methods only denies every TCP connection",
            vec![deny(vec![r_get.clone()])],
            sleep_tcp.clone(),
            Reason::Denied {
                matched: rref("deny", Some(0)),
            },
        ),
        (
            "DENY methods only, HTTP POST not denied",
            vec![deny(vec![r_get.clone()])],
            with_http(sleep(), |h| h.method = "POST".into()),
            Reason::NoAllowPolicies,
        ),
        (
            "DENY methods+ports denies TCP on that port",
            vec![deny(vec![Rule {
                to: Some(vec![get_9000.clone()]),
                ..Rule::default()
            }])],
            port(sleep_tcp.clone(), 9000),
            Reason::Denied {
                matched: rref("deny", Some(0)),
            },
        ),
        (
            "DENY methods+ports keeps other ports",
            vec![deny(vec![Rule {
                to: Some(vec![get_9000.clone()]),
                ..Rule::default()
            }])],
            sleep_tcp.clone(),
            Reason::NoAllowPolicies,
        ),
        (
            "DENY with a header condition only denies TCP",
            vec![deny(vec![when(hdr.clone())])],
            tcp(plain()),
            Reason::Denied {
                matched: rref("deny", Some(0)),
            },
        ),
        (
            "DENY with a header condition on HTTP needs the header",
            vec![deny(vec![when(hdr.clone())])],
            plain(),
            Reason::NoAllowPolicies,
        ),
        (
            "CUSTOM is stripped like DENY",
            vec![pol("custom", Action::Custom, vec![r_get.clone()])],
            sleep_tcp.clone(),
            Reason::CustomDenied {
                matched: rref("custom", Some(0)),
                provider: None,
            },
        ),
        (
            "stripped DENY keeps its TCP fields",
            vec![deny(vec![Rule {
                from: Some(vec![Source {
                    namespaces: yes(vec!["bar".into()]),
                    request_principals: yes(vec![StrMatch::Presence]),
                    ..Default::default()
                }]),
                ..Rule::default()
            }])],
            sleep_tcp.clone(),
            Reason::NoAllowPolicies,
        ),
        (
            "an emptied from entry matches anything",
            vec![deny(vec![Rule {
                from: Some(vec![
                    Source {
                        namespaces: yes(vec!["bar".into()]),
                        ..Default::default()
                    },
                    Source {
                        request_principals: yes(vec![StrMatch::Presence]),
                        ..Default::default()
                    },
                ]),
                ..Rule::default()
            }])],
            sleep_tcp.clone(),
            Reason::Denied {
                matched: rref("deny", Some(0)),
            },
        ),
    ];
    for (about, policies, req, want) in cases {
        assert_eq!(decide(&wp(policies), &req).reason, want, "{about}");
    }
    // AUDIT is stripped like DENY.
    let d = decide(
        &wp(vec![pol("audit", Action::Audit, vec![r_get])]),
        &sleep_tcp,
    );
    assert_eq!(d.audit, Some(rref("audit", Some(0))));
}

#[test]
fn tcp_variants_are_built_once() {
    let e = engine(wp(vec![
        allow(vec![
            op(|o| o.methods = yes(vec![ex("GET")])),
            src(|s| s.principals = yes(vec![ex("a")])),
        ]),
        deny(vec![op(|o| o.methods = yes(vec![ex("GET")]))]),
    ]));
    assert_eq!(e.stages.allow.http.indexed_and_scanned(), (1, 1));
    assert_eq!(e.stages.allow.tcp().indexed_and_scanned(), (1, 0));
    assert_eq!(e.stages.deny.tcp().indexed_and_scanned(), (0, 1));
}

#[test]
fn a_stage_without_http_only_rules_keeps_one_index_for_both() {
    let e = engine(wp(vec![allow(vec![src(|s| {
        s.principals = yes(vec![ex("a")])
    })])]));
    assert_eq!(e.stages.allow.http.indexed_and_scanned(), (1, 0));
    assert_eq!(
        e.stages.allow.tcp.indexed_and_scanned(),
        (0, 0),
        "not built"
    );
    assert_eq!(e.stages.allow.tcp().indexed_and_scanned(), (1, 0));
}

// ---------- 4.9 (engine side) and identity wiring ----------

#[test]
fn expanded_alias_principals_match_both_trust_domains() {
    // compile expands `old-td/ns/a/sa/b` into one value per bundle member.
    let rule = src(|s| {
        s.principals = yes(vec![
            ex("cluster.local/ns/foo/sa/sleep"),
            ex("old-td/ns/foo/sa/sleep"),
        ])
    });
    assert!(rule_allows(rule.clone(), &sleep()));
    assert!(rule_allows(rule.clone(), &mtls("old-td/ns/foo/sa/sleep")));
    assert!(!rule_allows(rule, &mtls("old-td/ns/foo/sa/other")));
}

// ---------- index and ordering ----------

#[test]
fn first_match_in_policy_order_across_index_and_scan() {
    let exact = src(|s| s.principals = yes(vec![ex("cluster.local/ns/foo/sa/sleep")]));
    let prefix = src(|s| s.principals = yes(vec![pre("cluster.local/")]));
    let cases: Vec<(&str, Vec<AuthzPolicy>, RuleRef)> = vec![
        (
            "indexed rule first",
            vec![
                pol("a", Action::Allow, vec![exact.clone()]),
                pol("b", Action::Allow, vec![prefix.clone()]),
            ],
            rref("a", Some(0)),
        ),
        (
            "scanned rule first",
            vec![
                pol("a", Action::Allow, vec![prefix.clone()]),
                pol("b", Action::Allow, vec![exact.clone()]),
            ],
            rref("a", Some(0)),
        ),
        (
            "rule index within a policy",
            vec![pol(
                "a",
                Action::Allow,
                vec![
                    src(|s| s.principals = yes(vec![ex("x")])),
                    prefix.clone(),
                    exact.clone(),
                ],
            )],
            rref("a", Some(1)),
        ),
        (
            "indexed rule that does not fully match is skipped",
            vec![
                pol(
                    "a",
                    Action::Allow,
                    vec![Rule {
                        to: op(|o| o.ports = yes(vec![1])).to,
                        ..exact.clone()
                    }],
                ),
                pol("b", Action::Allow, vec![exact.clone()]),
            ],
            rref("b", Some(0)),
        ),
    ];
    for (about, policies, want) in cases {
        assert_eq!(
            decide(&wp(policies), &sleep()).reason,
            Reason::Allowed { matched: want },
            "{about}"
        );
    }
}

/// The index must give exactly the answer of a linear scan: compare with one on a grid of
/// generated policies and peers.
#[test]
fn index_agrees_with_linear_scan() {
    let principals = [
        "cluster.local/ns/a/sa/x",
        "cluster.local/ns/a/sa/y",
        "cluster.local/ns/b/sa/x",
        "old-td/ns/a/sa/x",
    ];
    let matchers = |k: usize| -> Vec<StrMatch> {
        match k % 5 {
            0 => vec![ex(principals[k % 4])],
            1 => vec![ex(principals[k % 4]), ex(principals[(k + 1) % 4])],
            2 => vec![pre("cluster.local/ns/a/")],
            3 => vec![suf("/sa/x")],
            _ => vec![StrMatch::Presence],
        }
    };
    let mut policies = Vec::new();
    for i in 0..40usize {
        let mut rule = src(|s| s.principals = yes(matchers(i * 7 + 3)));
        if i % 3 == 0 {
            rule.to = Some(vec![Operation {
                ports: yes(vec![8000 + (i % 2) as u16]),
                ..Default::default()
            }]);
        }
        if i % 4 == 1 {
            if let Some(f) = rule.from.as_mut() {
                f.push(Source {
                    principals: yes(matchers(i)),
                    ..Default::default()
                });
            }
        }
        policies.push(pol(&format!("p{i:02}"), Action::Allow, vec![rule]));
    }
    let e = engine(wp(policies.clone()));
    let (indexed, scanned) = e.stages.allow.http.indexed_and_scanned();
    assert!(
        indexed > 0 && scanned > 0,
        "the grid exercises both buckets: {indexed} {scanned}"
    );
    for p in principals {
        for prt in [8000u16, 8001] {
            let req = port(mtls(p), prt);
            let ctx = Ctx::new(&req, 0, false);
            let linear = policies.iter().find_map(|pol| {
                pol.rules
                    .iter()
                    .position(|r| matcher::rule_matches(&ctx, r))
                    .map(|i| rref(&pol.policy.name, Some(i)))
            });
            let got = match e.decide(&req).reason {
                Reason::Allowed { matched } => Some(matched),
                _ => None,
            };
            assert_eq!(got, linear, "{p} port {prt}");
        }
    }
}

#[test]
fn decision_names_policy_and_rule() {
    let d = decide(
        &wp(vec![deny(vec![op(|o| o.ports = yes(vec![1])), any_rule()])]),
        &sleep(),
    );
    let named = match &d.reason {
        Reason::Denied { matched } => matched.to_string(),
        other => format!("{other:?}"),
    };
    assert_eq!(named, "foo/deny[rule 1]");
}

// ---------- source addresses: direct peer versus X-Forwarded-For ----------

/// `ipBlocks`/`source.ip` are the direct peer (Envoy `direct_remote_ip`); `remoteIpBlocks`
/// /`remote.ip` the client X-Forwarded-For names `num_trusted_proxies` hops from the right
/// of the list Envoy built (client entries, then the peer). Observed on Envoy 1.40 with
/// `use_remote_address: true`: an XFF of 10.9.9.9 from 127.0.0.5 does not match
/// `remote_ip: 10.9.9.9/32` with 0 trusted hops.
#[test]
fn source_addresses_follow_the_connection_not_the_header() {
    let xff = |r: Request, v: &str| {
        with_http(r, |h| {
            h.headers = vec![("x-forwarded-for".into(), v.into())]
        })
    };
    let ip_block = |c: &str| src(|s| s.ip_blocks = yes(vec![cidr(c)]));
    let remote_block = |c: &str| src(|s| s.remote_ip_blocks = yes(vec![cidr(c)]));
    let outside = |r: Request| Request {
        source_ip: "192.0.2.9".parse().ok(),
        ..r
    };
    let decide_hops = |hops: u32, rule: Rule, req: &Request| {
        let mut p = wp(vec![allow(vec![rule])]);
        p.num_trusted_proxies = hops;
        crate::hcm::decide(&engine(p), req).allowed
    };
    let cases: Vec<(&str, u32, Rule, Request, bool)> = vec![
        (
            "ipBlocks: outside client claiming an inside address",
            0,
            ip_block("127.0.0.0/8"),
            xff(outside(plain()), "127.0.0.7"),
            false,
        ),
        (
            "ipBlocks: inside client claiming an outside address",
            0,
            ip_block("127.0.0.0/8"),
            xff(plain(), "192.0.2.9"),
            true,
        ),
        (
            "ipBlocks ignore XFF even with trusted hops",
            1,
            ip_block("127.0.0.0/8"),
            xff(outside(plain()), "127.0.0.7"),
            false,
        ),
        (
            "remoteIpBlocks, 0 hops: the peer",
            0,
            remote_block("127.0.0.0/8"),
            xff(outside(plain()), "127.0.0.7"),
            false,
        ),
        (
            "remoteIpBlocks, 0 hops: the peer, inside",
            0,
            remote_block("127.0.0.0/8"),
            xff(plain(), "192.0.2.9"),
            true,
        ),
        (
            "remoteIpBlocks, 1 hop: the last client entry",
            1,
            remote_block("10.0.0.0/8"),
            xff(plain(), "192.0.2.1, 10.1.2.3"),
            true,
        ),
        (
            "remoteIpBlocks, 2 hops",
            2,
            remote_block("192.0.2.1/32"),
            xff(plain(), "192.0.2.1, 10.1.2.3"),
            true,
        ),
        (
            "remoteIpBlocks, too few entries: the peer",
            3,
            remote_block("127.0.0.7/32"),
            xff(plain(), "192.0.2.1"),
            true,
        ),
        (
            "remoteIpBlocks, unparsable entry: the peer",
            1,
            remote_block("127.0.0.7/32"),
            xff(plain(), "bogus"),
            true,
        ),
        (
            "remoteIpBlocks, 1 hop, no XFF: the peer",
            1,
            remote_block("127.0.0.7/32"),
            plain(),
            true,
        ),
        (
            "remote.ip IPv6",
            1,
            when(Condition::RemoteIp {
                field: yes(vec![cidr("2001:db8::/32")]),
            }),
            xff(plain(), "2001:db8::1"),
            true,
        ),
        (
            "CIDR host bits are ignored",
            0,
            ip_block("127.0.0.99/8"),
            plain(),
            true,
        ),
        (
            "TCP: remoteIpBlocks is the peer",
            1,
            remote_block("127.0.0.7/32"),
            tcp(plain()),
            true,
        ),
    ];
    for (about, hops, rule, req, want) in cases {
        assert_eq!(decide_hops(hops, rule, &req), want, "{about}");
    }
}

/// What Envoy refuses before any filter is a denial in-process too.
#[test]
fn connection_manager_refusals_deny() {
    let e = engine(wp(vec![]));
    for raw in ["/a%00b", "/a#frag", "/a b"] {
        let d = crate::hcm::decide(&e, &path(sleep(), raw));
        assert!(
            matches!(d.reason, Reason::Rejected { status: 400, .. }),
            "{raw}: {:?}",
            d.reason
        );
    }
    let lower = with_http(sleep(), |h| h.method = "get".into());
    assert!(
        !crate::hcm::decide(&e, &lower).allowed,
        "lower-case method over HTTP/1.1"
    );
    let h2 = with_http(lower, |h| h.version = crate::schema::HttpVersion::Http2);
    assert!(
        crate::hcm::decide(&e, &h2).allowed,
        "lower-case method over HTTP/2"
    );
}

// ---------- peerguard.dev/dry-run on PeerAuthentication ----------

fn dry_run_strict(policies: Vec<AuthzPolicy>) -> WorkloadPolicy {
    let mut p = wp_mode(MtlsMode::Strict, policies);
    p.mtls.default.from = Some("PeerAuthentication foo/strict".into());
    p.mtls.default.dry_run = true;
    p
}

#[test]
fn dry_run_strict_accepts_plaintext_and_reports_the_would_be_refusal() {
    let p = dry_run_strict(vec![]);
    for r in [plain(), tcp(plain())] {
        let d = decide(&p, &r);
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.reason, Reason::NoAllowPolicies);
        assert_eq!(
            d.dry_run.strict_refused.as_deref(),
            Some("PeerAuthentication foo/strict")
        );
    }
    // mTLS is no would-be refusal.
    let d = decide(&p, &sleep());
    assert!(d.allowed);
    assert_eq!(d.dry_run.strict_refused, None);
    // Enforced STRICT refuses as before and reports no dry-run.
    let d = decide(&wp_mode(MtlsMode::Strict, vec![]), &plain());
    assert_eq!(d.reason, Reason::PlaintextRefused);
    assert_eq!(d.dry_run.strict_refused, None);
    // A dry_run flag on another mode (hand-written configuration) changes nothing.
    let mut disable = wp_mode(MtlsMode::Disable, vec![]);
    disable.mtls.default.dry_run = true;
    assert_eq!(decide(&disable, &sleep()).reason, Reason::MtlsRefused);
    assert_eq!(decide(&disable, &plain()).dry_run.strict_refused, None);
}

#[test]
fn dry_run_strict_still_authorizes() {
    // The refusal is only counted; authorization runs as under PERMISSIVE, and a denial
    // still reports the would-be refusal.
    let deny_plain = pol(
        "deny-plain",
        Action::Deny,
        vec![src(|s| s.principals.not_values = vec![StrMatch::Presence])],
    );
    let d = decide(&dry_run_strict(vec![deny_plain]), &plain());
    assert!(!d.allowed);
    assert!(matches!(d.reason, Reason::Denied { .. }), "{d:?}");
    assert!(d.dry_run.strict_refused.is_some());
}

#[test]
fn dry_run_strict_per_port() {
    let mut p = wp(vec![]);
    p.mtls.ports.insert(
        9000,
        ModeFrom {
            mode: MtlsMode::Strict,
            from: Some("PeerAuthentication foo/p portLevelMtls[9000]".into()),
            dry_run: true,
        },
    );
    let mut on_9000 = plain();
    on_9000.port = 9000;
    assert!(decide(&p, &on_9000).dry_run.strict_refused.is_some());
    assert_eq!(decide(&p, &plain()).dry_run.strict_refused, None);
}
