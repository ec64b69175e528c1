//! PG2xx: AuthorizationPolicy pitfalls (Istio's security best practices, the
//! AuthorizationPolicy reference, and the dry-run and trust-domain migration tasks).
//!
//! - PG201 warning: DENY with positive `paths`, or ALLOW with `notPaths` (best practices:
//!   "use ALLOW-with-positive-matching and DENY-with-negative-match patterns").
//! - PG202 warning/info: `hosts`/`notHosts` values without their `:port` variant.
//! - PG203 warning/info: mTLS-only source fields on a workload that accepts plaintext.
//! - PG204 error/warning: JWT fields, which peerguard does not enforce.
//! - PG205 warning: a selector that matches no registered workload.
//! - PG206 warning: principals in a trust domain that is neither the mesh's nor an alias.
//! - PG207 error: CUSTOM without a provider.
//! - PG208 warning: CUSTOM (not supported by peerguard: it denies what it selects).
//! - PG209 warning: an `istio.io/dry-run` annotation that does not parse (enforced).

use super::mtls::accepts_plaintext;
use super::{key_of, namespace_of, Ctx, Finding, Severity};
use peerguard_filter::compile::values::parse_go_bool;
use peerguard_filter::compile::DRY_RUN_ANNOTATION;
use peerguard_filter::istio::{
    AuthorizationPolicySpec, AuthzAction, AuthzSource, Object, Resource,
};
use peerguard_filter::schema::PolicyRef;

const BEST_PRACTICES: &str = "Istio: security best practices";

pub(super) fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    for r in &ctx.inputs.resources {
        match r {
            Resource::AuthorizationPolicy(o) => policy(ctx, o, out),
            Resource::RequestAuthentication(o) => out.push(Finding {
                code: "PG204",
                severity: Severity::Warning,
                object: key_of("RequestAuthentication", o),
                file: o.origin.file.clone(),
                field: "spec.jwtRules".into(),
                message: "JWT is not enforced by peerguard: tokens are not validated (Istio answers 401 to an invalid token; here it passes), and no request has a request principal or claims".into(),
                hint: "validate tokens in the application or in an Envoy jwt_authn filter in front of peerguard's; do not rely on this object for access control".into(),
            }),
            Resource::Invalid(o) if o.kind == "AuthorizationPolicy" => {
                let action = o.raw.pointer("/spec/action").and_then(|a| a.as_str());
                let provider = o
                    .raw
                    .pointer("/spec/provider/name")
                    .and_then(|n| n.as_str())
                    .filter(|n| !n.is_empty());
                if action == Some("CUSTOM") && provider.is_none() {
                    let ns = o.metadata.namespace.as_deref().unwrap_or("?");
                    out.push(Finding {
                        code: "PG207",
                        severity: Severity::Error,
                        object: format!("AuthorizationPolicy {ns}/{}", o.metadata.name),
                        file: o.origin.file.clone(),
                        field: "spec.provider.name".into(),
                        message: "CUSTOM without a provider: Istio refuses it (AuthorizationPolicy reference, `provider` \"must be set with CUSTOM\"); peerguard reads the invalid CUSTOM as matching every request it selects, so they are all denied".into(),
                        hint: "name the extension provider (`provider: {name: my-ext-authz}`, declared in meshConfig.extensionProviders), or use ALLOW/DENY".into(),
                    });
                }
            }
            _ => {}
        }
    }
}

fn policy(ctx: &Ctx, o: &Object<AuthorizationPolicySpec>, out: &mut Vec<Finding>) {
    let key = key_of("AuthorizationPolicy", o);
    let file = o.origin.file.clone();
    let mut push = |code, severity, field: String, message: String, hint: String| {
        out.push(Finding {
            code,
            severity,
            object: key.clone(),
            file: file.clone(),
            field,
            message,
            hint,
        })
    };
    let spec = &o.spec;
    let action = spec.action;
    let reference = PolicyRef {
        namespace: namespace_of(o).to_string(),
        name: o.metadata.name.clone(),
    };
    // What compile says: the registered workloads this policy applies to.
    let selected: Vec<&super::Compiled> = ctx
        .workloads
        .iter()
        .filter(|c| c.policy.policies.iter().any(|p| p.policy == reference))
        .collect();
    let targeted = spec.target_ref.is_some() || !spec.target_refs.is_empty();
    let has_selector = spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if ctx.has_registry() && has_selector && !targeted && selected.is_empty() {
        push(
            "PG205",
            Severity::Warning,
            "spec.selector.matchLabels".into(),
            format!("selects no registered workload (a selector matches workloads of the policy's namespace, or of every namespace from the root namespace {}, by exact labels; AuthorizationPolicy reference, `selector`)", ctx.mesh.root_namespace),
            "check the labels against the workloads' (`kubectl get pods --show-labels`); a policy that selects nothing protects nothing".into(),
        );
    }
    if let Some(v) = o.metadata.annotations.get(DRY_RUN_ANNOTATION) {
        if parse_go_bool(v).is_none() {
            push(
                "PG209",
                Severity::Warning,
                format!("metadata.annotations[{DRY_RUN_ANNOTATION}]"),
                format!("{v:?} is not a boolean (Go strconv.ParseBool: 1 t T TRUE true True / 0 f F FALSE false False): the policy is ENFORCED, not dry-run (Istio: dry-run task; istio-semantics 4.12)"),
                format!("write `{DRY_RUN_ANNOTATION}: \"true\"` to evaluate without enforcing, or remove the annotation"),
            );
        }
    }
    match action {
        AuthzAction::Custom => {
            let provider = spec.provider.as_ref().and_then(|p| p.name.clone());
            push(
                "PG208",
                Severity::Warning,
                "spec.action".into(),
                format!("CUSTOM (provider {}) is not supported by peerguard: it denies every request it selects (fail closed), where Istio would ask the external authorizer", provider.as_deref().unwrap_or("<none>")),
                "enforce the external authorization elsewhere (an ext_authz filter), or express the rule as ALLOW/DENY".into(),
            );
        }
        AuthzAction::Allow | AuthzAction::Deny | AuthzAction::Audit => {}
    }
    let plaintext_targets: Vec<String> = selected
        .iter()
        .filter(|c| accepts_plaintext(c))
        .map(|c| c.entry.key.to_string())
        .collect();
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        for (j, to) in rule.to.iter().flatten().enumerate() {
            let Some(op) = &to.operation else { continue };
            let at = format!("spec.rules[{i}].to[{j}].operation");
            if action == AuthzAction::Deny && op.paths.as_ref().is_some_and(|p| !p.is_empty()) {
                push(
                    "PG201",
                    Severity::Warning,
                    format!("{at}.paths"),
                    format!("DENY with positive path matching: a variant of the path the policy did not anticipate (case, `//`, `%2F`, a trailing `/`, depending on path normalization) is not denied ({BEST_PRACTICES}, \"use ALLOW-with-positive-matching and DENY-with-negative-match patterns\")"),
                    "use DENY with `notPaths` (deny everything but the known-good paths), or ALLOW with `paths`, so that an unexpected form fails closed; and set meshConfig.pathNormalization (--path-normalization) to at least BASE".into(),
                );
            }
            if action == AuthzAction::Allow && op.not_paths.as_ref().is_some_and(|p| !p.is_empty())
            {
                push(
                    "PG201",
                    Severity::Warning,
                    format!("{at}.notPaths"),
                    format!("ALLOW with negative path matching: any path variant not listed (case, `//`, `%2F`…) is allowed ({BEST_PRACTICES}, \"use ALLOW-with-positive-matching and DENY-with-negative-match patterns\")"),
                    "use ALLOW with positive `paths`, or a DENY with `paths` for the forbidden ones backed by an ALLOW of the rest".into(),
                );
            }
            for (name, values, risky) in [
                ("hosts", &op.hosts, action == AuthzAction::Deny),
                ("notHosts", &op.not_hosts, action == AuthzAction::Allow),
            ] {
                let Some(values) = values else { continue };
                let missing: Vec<&String> = values
                    .iter()
                    .filter(|h| !h.contains(':') && !h.ends_with('*'))
                    .filter(|h| !values.iter().any(|o| *o == format!("{h}:*")))
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                let list = missing
                    .iter()
                    .map(|h| format!("{h:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let effect = if risky {
                    "a request whose Host carries a port (`Host: example.com:80`) escapes this rule"
                } else {
                    "a request whose Host carries a port (`Host: example.com:80`) does not match"
                };
                push(
                    "PG202",
                    if risky { Severity::Warning } else { Severity::Info },
                    format!("{at}.{name}"),
                    format!("{list} without a port variant: {effect} (hosts are compared case-insensitively, the port is part of the value; {BEST_PRACTICES}, \"Host matching\")"),
                    format!("add the `:*` variant of each ({})", missing.iter().map(|h| format!("\"{h}:*\"")).collect::<Vec<_>>().join(", ")),
                );
            }
        }
        for (j, from) in rule.from.iter().flatten().enumerate() {
            let Some(src) = &from.source else { continue };
            let at = format!("spec.rules[{i}].from[{j}].source");
            mtls_only(&mut push, action, &plaintext_targets, &at, src);
            jwt_source(&mut push, action, &at, src);
            foreign_trust_domains(&mut push, ctx, &at, src);
        }
        for (j, cond) in rule.when.iter().flatten().enumerate() {
            let at = format!("spec.rules[{i}].when[{j}]");
            if cond.key.starts_with("request.auth.") {
                let positive = cond.values.as_ref().is_some_and(|v| !v.is_empty());
                jwt_field(&mut push, action, positive, format!("{at}.key"), &cond.key);
            }
            if matches!(cond.key.as_str(), "source.principal" | "source.namespace") {
                let positive = cond.values.as_ref().is_some_and(|v| !v.is_empty());
                let negative = cond.not_values.as_ref().is_some_and(|v| !v.is_empty());
                mtls_only_field(
                    &mut push,
                    action,
                    &plaintext_targets,
                    &format!("{at}.key"),
                    &cond.key,
                    positive,
                    negative,
                );
            }
            if cond.key == "source.principal" {
                for (name, values) in [("values", &cond.values), ("notValues", &cond.not_values)] {
                    for (k, v) in values.iter().flatten().enumerate() {
                        foreign(&mut push, ctx, format!("{at}.{name}[{k}]"), v);
                    }
                }
            }
        }
    }
}

type Push<'a> = dyn FnMut(&'static str, Severity, String, String, String) + 'a;

/// PG203 for the source fields that need a peer certificate.
fn mtls_only(
    push: &mut Push,
    action: AuthzAction,
    plaintext: &[String],
    at: &str,
    s: &AuthzSource,
) {
    let set = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    for (pos_name, pos, neg) in [
        ("principals", &s.principals, &s.not_principals),
        ("namespaces", &s.namespaces, &s.not_namespaces),
        (
            "serviceAccounts",
            &s.service_accounts,
            &s.not_service_accounts,
        ),
        ("trustDomains", &s.trust_domains, &s.not_trust_domains),
    ] {
        mtls_only_field(
            push,
            action,
            plaintext,
            &format!("{at}.{pos_name}"),
            pos_name,
            set(pos),
            set(neg),
        );
    }
}

fn mtls_only_field(
    push: &mut Push,
    action: AuthzAction,
    plaintext: &[String],
    field: &str,
    name: &str,
    positive: bool,
    negative: bool,
) {
    if plaintext.is_empty() || !(positive || negative) {
        return;
    }
    let on = plaintext.join(", ");
    let (severity, effect) = match (action, positive, negative) {
        (AuthzAction::Deny, true, _) => (Severity::Warning, "a plaintext request has no identity, so this DENY never applies to it: a client without a sidecar bypasses it"),
        (AuthzAction::Allow, _, true) => (Severity::Warning, "a plaintext request has no identity, so it matches the negation and this ALLOW admits it"),
        (AuthzAction::Allow, true, false) => (Severity::Info, "plaintext clients (no identity) are denied by it, including clients not migrated to a sidecar yet"),
        _ => return,
    };
    push(
        "PG203",
        severity,
        field.to_string(),
        format!("`{name}` needs mutual TLS (AuthorizationPolicy reference: \"This field requires mTLS enabled\"), but it selects workloads that also accept plaintext (PERMISSIVE or DISABLE): {on}; {effect}"),
        "make the selected workloads STRICT (PeerAuthentication), or deny plaintext explicitly with a DENY rule on `notPrincipals: [\"*\"]`".into(),
    );
}

/// PG204 for `requestPrincipals`/`notRequestPrincipals`.
fn jwt_source(push: &mut Push, action: AuthzAction, at: &str, s: &AuthzSource) {
    if s.request_principals.as_ref().is_some_and(|v| !v.is_empty()) {
        jwt_field(
            push,
            action,
            true,
            format!("{at}.requestPrincipals"),
            "requestPrincipals",
        );
    }
    if s.not_request_principals
        .as_ref()
        .is_some_and(|v| !v.is_empty())
    {
        jwt_field(
            push,
            action,
            false,
            format!("{at}.notRequestPrincipals"),
            "notRequestPrincipals",
        );
    }
}

fn jwt_field(push: &mut Push, action: AuthzAction, positive: bool, field: String, name: &str) {
    let (severity, effect) = match (action, positive) {
        (AuthzAction::Deny, true) => (Severity::Error, "its values never match, so this DENY rule never applies"),
        (AuthzAction::Deny, false) => (Severity::Warning, "its negation always matches, so this DENY rule applies to every request it otherwise matches"),
        (_, true) => (Severity::Warning, "its values never match, so this rule never allows"),
        (_, false) => (Severity::Warning, "its negation always matches, so this rule does not check the token"),
    };
    push(
        "PG204",
        severity,
        field,
        format!("`{name}` needs a validated JWT, and JWT is not enforced by peerguard (no RequestAuthentication is applied): {effect} (istio-semantics 4.6/4.7)"),
        "check the token in the application or an Envoy jwt_authn filter; keep peerguard's rules to peer identity (principals, namespaces)".into(),
    );
}

/// PG206 for `principals`/`notPrincipals` and `trustDomains` values.
fn foreign_trust_domains(push: &mut Push, ctx: &Ctx, at: &str, s: &AuthzSource) {
    for (name, values) in [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
    ] {
        for (k, v) in values.iter().flatten().enumerate() {
            foreign(push, ctx, format!("{at}.{name}[{k}]"), v);
        }
    }
    for (name, values) in [
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ] {
        for (k, td) in values.iter().flatten().enumerate() {
            if !td.contains('*') && !known_trust_domain(ctx, td) {
                push(
                    "PG206",
                    Severity::Warning,
                    format!("{at}.{name}[{k}]"),
                    format!("trust domain {td:?} is neither the mesh's ({}) nor an alias: the handshake refuses certificates of other trust domains, so it can never match (istio-semantics 1.3, 4.9; Istio: trust domain migration task)", ctx.mesh.trust_domain),
                    format!("correct it, or add it to meshConfig.trustDomainAliases (--trust-domain-alias {td})"),
                );
            }
        }
    }
}

fn known_trust_domain(ctx: &Ctx, td: &str) -> bool {
    td == ctx.mesh.trust_domain
        || ctx.mesh.trust_domain_aliases.iter().any(|a| a == td)
        // Istio rewrites `cluster.local` principals to the mesh's trust domain (spec 4.9).
        || td == "cluster.local"
}

fn foreign(push: &mut Push, ctx: &Ctx, field: String, principal: &str) {
    let p = principal.strip_prefix("spiffe://").unwrap_or(principal);
    let five_parts = p.bytes().filter(|b| *b == b'/').count() == 4;
    let td = p.split('/').next().unwrap_or_default();
    if !five_parts || td.contains('*') || known_trust_domain(ctx, td) {
        return;
    }
    push(
        "PG206",
        Severity::Warning,
        field,
        format!("principal {principal:?} is in trust domain {td:?}, neither the mesh's ({}) nor an alias: its certificates are refused at the handshake, so it can never match (istio-semantics 1.3, 4.9; Istio: trust domain migration task)", ctx.mesh.trust_domain),
        format!("correct the trust domain, or add {td:?} to meshConfig.trustDomainAliases (--trust-domain-alias {td}) if those workloads are being migrated"),
    );
}
