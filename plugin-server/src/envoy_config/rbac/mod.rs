//! AuthorizationPolicies → Envoy's native RBAC filters, as Istio's sidecar gets them
//! (`pilot/pkg/security/authz/builder/builder.go`): a DENY filter first, then an ALLOW
//! filter, each with its enforced `rules` and its dry-run `shadow_rules`; the HTTP filters
//! for HTTP ports, the network filters for TCP ports. `peerguard compile --envoy-rbac` prints
//! them; the differential harness (`integration/differential`) runs them in real Envoy next to
//! peerguard's filter.
//!
//! Written from Istio's code, not from peerguard's compiler (`peerguard_filter::compile`), so
//! that the two can disagree and the differential harness can tell.
//!
//! Two readings of what Istio's translation handles loosely:
//!
//! - [`translate`], the product form: what the native filters cannot express as peerguard
//!   enforces it is refused ([`TranslateError`], naming the object and the field), never
//!   emitted wider:
//!   - invalid objects (peerguard fails them closed; istiod would skip the values it cannot
//!     convert, which widens a DENY): any invalid resource in the workload's namespace or the
//!     root namespace;
//!   - CUSTOM (needs an external authorizer, `ext_authz`, outside these filters);
//!   - JWT attributes (`requestPrincipals`, `notRequestPrincipals`, `request.auth.*`): Istio
//!     reads them from `envoy.filters.http.jwt_authn` metadata; peerguard validates no token
//!     (a request never has a request principal), and the native filters would start matching
//!     as soon as the listener had a JWT filter;
//!   - Envoy-metadata conditions (`experimental.envoy.filters.*`), `when` keys Istio does not
//!     know, values that do not convert.
//!
//!   AUDIT policies only mark requests for logging (no decision): they are left out and listed
//!   in [`RbacFilters::omitted`]. Dry-run policies (`istio.io/dry-run`) become `shadow_rules`,
//!   as Istio emits them. The mTLS mode is not RBAC: Istio enforces it with the listener's
//!   filter chains ([`super::Chains::Istio`]), so these filters cover authorization only.
//! - [`translate_as_istiod`], the reference of the differential harness: an invalid object is
//!   translated as istiod does when one reaches it anyway (value by value, skipping what it
//!   cannot convert, see [`model`]); one that does not even decode is refused; JWT attributes
//!   become `jwt_authn` metadata matchers (which never match without a JWT filter). CUSTOM and
//!   Envoy-metadata conditions are refused there too.
//!
//! Trust-domain aliases are applied as Istio does ([`bundle`]). Whenever [`translate`]
//! succeeds, its filters equal [`translate_as_istiod`]'s.

mod bundle;
pub mod json;
mod model;

pub use model::RbacAction;

use super::{HTTP_RBAC_TYPE, NETWORK_RBAC_TYPE, RBAC_HTTP_FILTER, RBAC_NETWORK_FILTER};
use model::{GenError, Model, NewError, Strictness};
use peerguard_filter::compile::{MeshConfig, Workload};
use peerguard_filter::istio::{
    AuthorizationPolicySpec, AuthzAction, AuthzRule, InvalidObject, Object, ObjectMeta, Origin,
    Resource,
};
use serde_json::{json, Map, Value};

/// `annotation.IoIstioDryRun`.
const DRY_RUN: &str = "istio.io/dry-run";

/// Why the native form of a workload's policies is refused. `object` reads
/// `AuthorizationPolicy ns/name (file)`.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("{object}: invalid ({error}): peerguard enforces it fail-closed, which the native RBAC form cannot express; fix the object")]
    Invalid { object: String, error: String },
    #[error("{object}: spec.action: CUSTOM delegates to an external authorizer (ext_authz), which the native RBAC filters do not cover")]
    Custom { object: String },
    #[error("{object}: spec.rules[{rule}].{field}: JWT attributes are not enforced by peerguard (no request has a request principal or claims); the native RBAC form would read them from a jwt_authn filter, so it is refused")]
    Jwt {
        object: String,
        rule: usize,
        field: String,
    },
    #[error("{object}: spec.rules[{rule}]: {why}")]
    Unsupported {
        object: String,
        rule: usize,
        why: String,
    },
}

/// The RBAC filters of one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct RbacFilters {
    /// `envoy.filters.http.rbac` filters, in HCM order (before the router).
    pub http: Vec<Value>,
    /// `envoy.filters.network.rbac` filters, in chain order (before `tcp_proxy`).
    pub network: Vec<Value>,
    /// Policies that apply but have no filter, and why (AUDIT).
    pub omitted: Vec<String>,
}

/// The product form: the policies that apply to `workload`, translated, or refused when the
/// native filters cannot express them as peerguard enforces them (module docs).
pub fn translate(
    resources: &[Resource],
    workload: &Workload,
    mesh: &MeshConfig,
) -> Result<RbacFilters, TranslateError> {
    translate_with(resources, workload, mesh, Strictness::Refuse)
}

/// The differential harness's reference: Istio's translation, including what istiod does
/// with objects its webhook would have rejected and with JWT attributes (module docs).
pub fn translate_as_istiod(
    resources: &[Resource],
    workload: &Workload,
    mesh: &MeshConfig,
) -> Result<RbacFilters, TranslateError> {
    translate_with(resources, workload, mesh, Strictness::AsIstiod)
}

fn translate_with(
    resources: &[Resource],
    workload: &Workload,
    mesh: &MeshConfig,
    strict: Strictness,
) -> Result<RbacFilters, TranslateError> {
    let mut deny: Vec<Object<AuthorizationPolicySpec>> = Vec::new();
    let mut allow = Vec::new();
    let mut omitted = Vec::new();
    for r in resources {
        let o = match r {
            Resource::AuthorizationPolicy(o) => o.clone(),
            Resource::Invalid(i) if strict == Strictness::Refuse => {
                let ns = i.metadata.namespace.as_deref().unwrap_or("default");
                if ns == workload.namespace || ns == mesh.root_namespace {
                    return Err(TranslateError::Invalid {
                        object: describe(&i.kind, &i.metadata, &i.origin),
                        error: i.error.clone(),
                    });
                }
                continue;
            }
            Resource::Invalid(i) if i.kind == "AuthorizationPolicy" => as_istiod_reads_it(i)?,
            _ => continue,
        };
        if !applies(&o, workload, mesh) {
            continue;
        }
        match o.spec.action {
            AuthzAction::Allow => allow.push(o),
            AuthzAction::Deny => deny.push(o),
            AuthzAction::Audit => omitted.push(format!(
                "{}: action AUDIT only marks requests for logging (no decision): no filter",
                object_of(&o)
            )),
            AuthzAction::Custom => {
                return Err(TranslateError::Custom {
                    object: object_of(&o),
                })
            }
        }
    }
    let mut bundle = vec![mesh.trust_domain.clone()];
    bundle.extend(mesh.trust_domain_aliases.iter().cloned());
    let mut out = RbacFilters {
        http: Vec::new(),
        network: Vec::new(),
        omitted,
    };
    for (policies, action) in [(&deny, RbacAction::Deny), (&allow, RbacAction::Allow)] {
        if policies.is_empty() {
            continue;
        }
        let http = build(policies, action, false, &bundle, strict)?;
        out.http.push(json!({
            "name": RBAC_HTTP_FILTER,
            "typed_config": typed(HTTP_RBAC_TYPE, &http, None),
        }));
        let tcp = build(policies, action, true, &bundle, strict)?;
        out.network.push(json!({
            "name": RBAC_NETWORK_FILTER,
            "typed_config": typed(NETWORK_RBAC_TYPE, &tcp, Some("tcp.")),
        }));
    }
    Ok(out)
}

/// An object that failed peerguard's validation, as istiod would read it without the
/// webhook: its spec decoded with no checks.
fn as_istiod_reads_it(
    i: &InvalidObject,
) -> Result<Object<AuthorizationPolicySpec>, TranslateError> {
    let invalid = || TranslateError::Invalid {
        object: describe(&i.kind, &i.metadata, &i.origin),
        error: i.error.clone(),
    };
    let spec = match i.raw.get("spec") {
        None | Some(serde_json::Value::Null) => AuthorizationPolicySpec::default(),
        Some(s) => serde_json::from_value(s.clone()).map_err(|_| invalid())?,
    };
    if i.metadata.name.is_empty() {
        return Err(invalid());
    }
    Ok(Object {
        api_version: i.api_version.clone(),
        metadata: i.metadata.clone(),
        spec,
        origin: i.origin.clone(),
    })
}

fn name_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name
    )
}

/// `Kind ns/name (file)`.
fn describe(kind: &str, meta: &ObjectMeta, origin: &Origin) -> String {
    let kind = if kind.is_empty() { "object" } else { kind };
    if origin.file.is_empty() {
        format!("{kind} {}", name_of(meta))
    } else {
        format!("{kind} {} ({origin})", name_of(meta))
    }
}

fn object_of(o: &Object<AuthorizationPolicySpec>) -> String {
    describe("AuthorizationPolicy", &o.metadata, &o.origin)
}

/// `ListAuthorizationPolicies` + `ShouldAttachPolicy` for a sidecar: the root namespace and
/// the workload's namespace; no selector (or no labels) selects every workload, a selector
/// selects by label subset; `targetRef(s)` policies are for gateways and waypoints.
fn applies(o: &Object<AuthorizationPolicySpec>, w: &Workload, mesh: &MeshConfig) -> bool {
    let ns = o.metadata.namespace.as_deref().unwrap_or("default");
    if ns != mesh.root_namespace && ns != w.namespace {
        return false;
    }
    if o.spec.target_ref.is_some() || !o.spec.target_refs.is_empty() {
        return false;
    }
    match &o.spec.selector {
        None => true,
        Some(s) => s
            .match_labels
            .iter()
            .all(|(k, v)| w.labels.get(k) == Some(v)),
    }
}

/// The first JWT attribute of a rule, as a path below `spec.rules[i]`.
fn jwt_field(rule: &AuthzRule) -> Option<String> {
    let set = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    for (j, from) in rule.from.iter().flatten().enumerate() {
        if let Some(s) = &from.source {
            if set(&s.request_principals) {
                return Some(format!("from[{j}].source.requestPrincipals"));
            }
            if set(&s.not_request_principals) {
                return Some(format!("from[{j}].source.notRequestPrincipals"));
            }
        }
    }
    for (k, c) in rule.when.iter().flatten().enumerate() {
        if c.key.starts_with("request.auth.") {
            return Some(format!("when[{k}] ({})", c.key));
        }
    }
    None
}

/// Enforced and dry-run rule sets of one action (`Builder.build`).
struct Built {
    rules: Option<Value>,
    shadow: Option<Value>,
}

fn build(
    policies: &[Object<AuthorizationPolicySpec>],
    action: RbacAction,
    for_tcp: bool,
    bundle: &[String],
    strict: Strictness,
) -> Result<Built, TranslateError> {
    let mut enforce = Map::new();
    let mut shadow = Map::new();
    let (mut has_enforce, mut has_shadow) = (false, false);
    for o in policies {
        let ns = o.metadata.namespace.as_deref().unwrap_or("default");
        let dry_run = o
            .metadata
            .annotations
            .get(DRY_RUN)
            .and_then(|v| parse_go_bool(v))
            .unwrap_or(false);
        let target = if dry_run {
            has_shadow = true;
            &mut shadow
        } else {
            has_enforce = true;
            &mut enforce
        };
        let unsupported = |rule: usize, why: String| TranslateError::Unsupported {
            object: object_of(o),
            rule,
            why,
        };
        let rules = o.spec.rules.as_deref().unwrap_or_default();
        for (i, rule) in rules.iter().enumerate() {
            if strict == Strictness::Refuse {
                if let Some(field) = jwt_field(rule) {
                    return Err(TranslateError::Jwt {
                        object: object_of(o),
                        rule: i,
                        field,
                    });
                }
            }
            let name = format!("ns[{ns}]-policy[{}]-rule[{i}]", o.metadata.name);
            let mut m = match Model::new(ns, rule) {
                Ok(m) => m,
                // "skipped invalid rule" (a skipped DENY rule matches less: refused here).
                Err(NewError::Unknown(why)) if strict == Strictness::Refuse => {
                    return Err(unsupported(i, why))
                }
                Err(NewError::Unknown(_)) => continue,
                Err(NewError::Unsupported(why)) => return Err(unsupported(i, why)),
            };
            m.migrate_trust_domain(bundle);
            match m.generate(for_tcp, action, strict) {
                Ok(p) => {
                    target.insert(name, p);
                }
                // Istio's "skipped rule on TCP filter chain".
                Err(GenError::HttpOnly(_)) => {}
                Err(GenError::Value(why)) if strict == Strictness::Refuse => {
                    return Err(unsupported(i, why))
                }
                Err(GenError::Value(_)) => {}
            }
        }
        if rules.is_empty() {
            let name = format!("ns[{ns}]-policy[{}]-rule[0]", o.metadata.name);
            target.insert(name, json::policy_match_never());
        }
    }
    let action_name = match action {
        RbacAction::Allow => "ALLOW",
        RbacAction::Deny => "DENY",
    };
    let set = |policies: Map<String, Value>| json!({"action": action_name, "policies": policies});
    Ok(Built {
        rules: has_enforce.then(|| set(enforce)),
        shadow: has_shadow.then(|| set(shadow)),
    })
}

/// The filter's typed config; `shadow_rules_stat_prefix` as Istio names it per action.
fn typed(type_url: &str, b: &Built, stat_prefix: Option<&str>) -> Value {
    let mut c = json!({"@type": type_url});
    if let Some(p) = stat_prefix {
        c["stat_prefix"] = json!(p);
    }
    if let Some(r) = &b.rules {
        c["rules"] = r.clone();
    }
    if let Some(s) = &b.shadow {
        c["shadow_rules"] = s.clone();
        c["shadow_rules_stat_prefix"] = json!(match s["action"].as_str() {
            Some("ALLOW") => "istio_dry_run_allow_",
            _ => "istio_dry_run_deny_",
        });
    }
    c
}

/// Go `strconv.ParseBool` (an unparsable value leaves the policy enforced).
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerguard_filter::istio::parse::parse_str;
    use std::collections::BTreeMap;

    fn workload() -> Workload {
        Workload {
            namespace: "foo".into(),
            name: "httpbin".into(),
            service_account: "httpbin".into(),
            labels: BTreeMap::from([("app".to_string(), "httpbin".to_string())]),
            ..Workload::default()
        }
    }

    fn run(yaml: &str) -> Result<RbacFilters, TranslateError> {
        let parsed = parse_str(yaml, "test.yaml");
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        translate(&parsed.resources, &workload(), &MeshConfig::default())
    }

    const DENY_AND_ALLOW: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: foo}
spec:
  rules: [{to: [{operation: {methods: ["GET"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: istio-system}
spec:
  action: DENY
  selector: {matchLabels: {app: httpbin}}
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-workload, namespace: foo}
spec:
  selector: {matchLabels: {app: other}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-namespace, namespace: bar}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nothing, namespace: foo, annotations: {istio.io/dry-run: "true"}}
spec: {}
"#;

    #[test]
    fn deny_comes_first_then_allow_with_dry_run_in_shadow_rules() -> Result<(), TranslateError> {
        let f = run(DENY_AND_ALLOW)?;
        assert_eq!(f.http.len(), 2);
        let deny = &f.http[0]["typed_config"];
        assert_eq!(deny["rules"]["action"], "DENY");
        assert!(
            deny["rules"]["policies"]["ns[istio-system]-policy[deny-admin]-rule[0]"].is_object()
        );
        assert!(deny.get("shadow_rules").is_none());
        let allow = &f.http[1]["typed_config"];
        assert_eq!(allow["rules"]["action"], "ALLOW");
        let names: Vec<&String> = allow["rules"]["policies"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(names, ["ns[foo]-policy[allow-get]-rule[0]"]);
        assert_eq!(
            allow["shadow_rules"]["policies"]["ns[foo]-policy[nothing]-rule[0]"],
            json::policy_match_never()
        );
        assert_eq!(allow["shadow_rules_stat_prefix"], "istio_dry_run_allow_");
        Ok(())
    }

    #[test]
    fn on_tcp_the_method_only_allow_rule_is_gone_and_the_path_only_deny_matches_all(
    ) -> Result<(), TranslateError> {
        let f = run(DENY_AND_ALLOW)?;
        assert_eq!(f.network.len(), 2);
        let deny = &f.network[0]["typed_config"];
        assert_eq!(deny["stat_prefix"], "tcp.");
        assert_eq!(
            deny["rules"]["policies"]["ns[istio-system]-policy[deny-admin]-rule[0]"]["permissions"],
            json!([{"and_rules": {"rules": [{"any": true}]}}])
        );
        let allow = &f.network[1]["typed_config"];
        assert_eq!(allow["rules"]["policies"], json!({}));
        Ok(())
    }

    #[test]
    fn custom_and_undecodable_policies_are_refused() {
        let custom = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: c, namespace: foo}\nspec: {action: CUSTOM, provider: {name: x}, rules: [{}]}\n";
        let r = run(custom);
        assert!(matches!(r, Err(TranslateError::Custom { .. })), "{r:?}");
        let msg = r.map(|_| ()).unwrap_err().to_string();
        assert!(
            msg.starts_with("AuthorizationPolicy foo/c (test.yaml): spec.action: CUSTOM"),
            "{msg}"
        );
        let parsed = parse_str(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: b, namespace: foo}\nspec: {rules: [{to: 7}]}\n",
            "bad.yaml",
        );
        let r = translate_as_istiod(&parsed.resources, &workload(), &MeshConfig::default());
        assert!(matches!(r, Err(TranslateError::Invalid { .. })), "{r:?}");
    }

    const INVALID: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: foo}
spec:
  action: DENY
  rules:
  - from: [{source: {ipBlocks: ["10.0.0.0/33"]}}]
  - when: [{key: destination.name, values: ["x"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-rules, namespace: foo}
spec: {action: DENY}
"#;

    #[test]
    fn invalid_values_and_rules_are_skipped_as_istiod_does() -> Result<(), TranslateError> {
        let parsed = parse_str(INVALID, "bad.yaml");
        assert_eq!(parsed.errors.len(), 3, "{:?}", parsed.errors);
        let f = translate_as_istiod(&parsed.resources, &workload(), &MeshConfig::default())?;
        let policies = &f.http[0]["typed_config"]["rules"]["policies"];
        // The bad CIDR is dropped (a wider DENY), the unknown key drops its rule.
        assert_eq!(
            policies["ns[foo]-policy[bad]-rule[0]"]["principals"],
            json!([{"and_ids": {"ids": [{"any": true}]}}])
        );
        assert!(policies.get("ns[foo]-policy[bad]-rule[1]").is_none());
        assert_eq!(
            policies["ns[foo]-policy[no-rules]-rule[0]"],
            json::policy_match_never()
        );
        Ok(())
    }

    #[test]
    fn the_product_form_refuses_invalid_objects_of_the_workloads_namespaces_only() {
        let parsed = parse_str(INVALID, "bad.yaml");
        let r = translate(&parsed.resources, &workload(), &MeshConfig::default());
        let Err(TranslateError::Invalid { object, error }) = &r else {
            panic!("{r:?}")
        };
        assert_eq!(object, "AuthorizationPolicy foo/bad (bad.yaml)");
        assert!(error.contains("10.0.0.0/33"), "{error}");
        // The same objects in another namespace do not concern the workload.
        let other = Workload {
            namespace: "bar".into(),
            ..workload()
        };
        let f = translate(&parsed.resources, &other, &MeshConfig::default());
        assert!(
            matches!(&f, Ok(f) if f.http.is_empty() && f.network.is_empty()),
            "{f:?}"
        );
        // An invalid object of another kind in scope is refused too (peerguard fails the
        // whole object closed, whatever it is).
        let pa = parse_str(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: d, namespace: istio-system}\nspec: {mtls: {mode: STRICTER}}\n",
            "pa.yaml",
        );
        let r = translate(&pa.resources, &workload(), &MeshConfig::default());
        assert!(
            matches!(&r, Err(TranslateError::Invalid { object, .. }) if object == "PeerAuthentication istio-system/d (pa.yaml)"),
            "{r:?}"
        );
    }

    #[test]
    fn jwt_attributes_are_refused_by_the_product_form_and_translated_for_the_reference() {
        let cases = [
            ("from: [{source: {principals: [a/b]}}, {source: {requestPrincipals: [\"*\"]}}]", "spec.rules[0].from[1].source.requestPrincipals"),
            ("from: [{source: {notRequestPrincipals: [iss/sub]}}]", "spec.rules[0].from[0].source.notRequestPrincipals"),
            ("when: [{key: source.ip, values: [1.2.3.4]}, {key: \"request.auth.claims[groups]\", values: [admin]}]", "spec.rules[0].when[1] (request.auth.claims[groups])"),
        ];
        for (rule, field) in cases {
            let yaml = format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: j, namespace: foo}}\nspec:\n  action: DENY\n  rules:\n  - {rule}\n");
            let r = run(&yaml);
            let msg = match &r {
                Err(e @ TranslateError::Jwt { .. }) => e.to_string(),
                other => panic!("{rule}: {other:?}"),
            };
            assert!(
                msg.starts_with(&format!(
                    "AuthorizationPolicy foo/j (test.yaml): {field}: JWT"
                )),
                "{msg}"
            );
            let parsed = parse_str(&yaml, "test.yaml");
            let f = translate_as_istiod(&parsed.resources, &workload(), &MeshConfig::default());
            assert!(
                f.is_ok_and(|f| f.http.len() == 1 && f.http[0].to_string().contains("jwt_authn")),
                "{rule}"
            );
        }
    }

    #[test]
    fn audit_is_left_out_and_listed_dry_run_becomes_shadow_rules() -> Result<(), TranslateError> {
        let f = run("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: foo}\nspec: {action: AUDIT, rules: [{}]}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: d, namespace: foo, annotations: {istio.io/dry-run: \"true\"}}\nspec: {action: DENY, rules: [{to: [{operation: {ports: [\"9000\"]}}]}]}\n")?;
        assert_eq!(f.omitted.len(), 1);
        assert!(f.omitted[0].starts_with("AuthorizationPolicy foo/a (test.yaml): action AUDIT"));
        assert_eq!(f.http.len(), 1);
        let c = &f.network[0]["typed_config"];
        assert!(c.get("rules").is_none(), "{c}");
        assert_eq!(c["shadow_rules"]["action"], "DENY");
        assert_eq!(c["shadow_rules_stat_prefix"], "istio_dry_run_deny_");
        Ok(())
    }

    #[test]
    fn unconvertible_values_and_unknown_keys_in_a_valid_object_are_refused_not_skipped() {
        // Valid objects never carry them (the parser rejects them), but the library refuses
        // them anyway instead of emitting a wider DENY.
        use peerguard_filter::istio::{AuthzCondition, AuthzOperation, RuleTo};
        let mut o: Object<AuthorizationPolicySpec> = Object {
            api_version: "security.istio.io/v1".into(),
            metadata: ObjectMeta {
                name: "x".into(),
                namespace: Some("foo".into()),
                ..ObjectMeta::default()
            },
            spec: AuthorizationPolicySpec {
                action: AuthzAction::Deny,
                ..AuthorizationPolicySpec::default()
            },
            origin: Origin {
                file: "x.yaml".into(),
                index: 0,
            },
        };
        o.spec.rules = Some(vec![AuthzRule {
            to: Some(vec![RuleTo {
                operation: Some(AuthzOperation {
                    not_ports: Some(vec!["http".into()]),
                    ..AuthzOperation::default()
                }),
            }]),
            ..AuthzRule::default()
        }]);
        let bad_port = vec![Resource::AuthorizationPolicy(o.clone())];
        let r = translate(&bad_port, &workload(), &MeshConfig::default());
        assert!(
            matches!(&r, Err(TranslateError::Unsupported { rule: 0, why, .. }) if why.contains("invalid port http")),
            "{r:?}"
        );
        assert!(translate_as_istiod(&bad_port, &workload(), &MeshConfig::default()).is_ok());
        o.spec.rules = Some(vec![AuthzRule {
            when: Some(vec![AuthzCondition {
                key: "destination.name".into(),
                values: Some(vec!["x".into()]),
                not_values: None,
            }]),
            ..AuthzRule::default()
        }]);
        let r = translate(
            &[Resource::AuthorizationPolicy(o)],
            &workload(),
            &MeshConfig::default(),
        );
        assert!(
            matches!(&r, Err(TranslateError::Unsupported { .. })),
            "{r:?}"
        );
    }
}
