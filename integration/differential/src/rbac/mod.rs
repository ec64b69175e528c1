//! The reference side: peerguard's parsed AuthorizationPolicies for one workload → the Envoy
//! RBAC filters Istio's sidecar would get (`pilot/pkg/security/authz/builder/builder.go`):
//! a DENY filter first, then an ALLOW filter, each with its enforced `rules` and its
//! dry-run `shadow_rules`; the HTTP filters for HTTP ports, the network filters for TCP ports.
//!
//! Written from Istio's code, not from peerguard's compiler, so that the two can disagree.
//! An object peerguard finds invalid (Istio's webhook would reject it) is translated as
//! istiod does when one reaches it anyway: value by value, skipping what it cannot convert
//! (see [`model`]); one that does not even decode is refused. Out of scope (refused with an
//! error): CUSTOM (needs an external authorizer), Envoy-metadata conditions. AUDIT only
//! logs, so it is left out. Trust-domain aliases are applied as Istio does, but the harness
//! runs with none.

mod bundle;
pub mod json;
mod model;

pub use model::RbacAction;

use model::{Model, NewError};
use peerguard_filter::compile::{MeshConfig, Workload};
use peerguard_filter::istio::{
    AuthorizationPolicySpec, AuthzAction, InvalidObject, Object, Resource,
};
use serde_json::{json, Map, Value};

/// `annotation.IoIstioDryRun`.
const DRY_RUN: &str = "istio.io/dry-run";

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("{object}: invalid ({error}) and its spec does not decode: nothing to compare")]
    Invalid { object: String, error: String },
    #[error("{object}: action CUSTOM is out of scope for the differential harness")]
    Custom { object: String },
    #[error("{object}: rule {rule}: {why}")]
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
}

/// The policies that apply to `workload`, translated.
pub fn translate(
    resources: &[Resource],
    workload: &Workload,
    mesh: &MeshConfig,
) -> Result<RbacFilters, TranslateError> {
    let mut deny: Vec<Object<AuthorizationPolicySpec>> = Vec::new();
    let mut allow = Vec::new();
    for r in resources {
        let o = match r {
            Resource::AuthorizationPolicy(o) => o.clone(),
            Resource::Invalid(i) if i.kind == "AuthorizationPolicy" => as_istiod_reads_it(i)?,
            _ => continue,
        };
        if !applies(&o, workload, mesh) {
            continue;
        }
        match o.spec.action {
            AuthzAction::Allow => allow.push(o),
            AuthzAction::Deny => deny.push(o),
            AuthzAction::Audit => {}
            AuthzAction::Custom => {
                return Err(TranslateError::Custom {
                    object: format!("AuthorizationPolicy {}", name_of(&o.metadata)),
                })
            }
        }
    }
    let mut bundle = vec![mesh.trust_domain.clone()];
    bundle.extend(mesh.trust_domain_aliases.iter().cloned());
    let mut out = RbacFilters {
        http: Vec::new(),
        network: Vec::new(),
    };
    for (policies, action) in [(&deny, RbacAction::Deny), (&allow, RbacAction::Allow)] {
        if policies.is_empty() {
            continue;
        }
        let http = build(policies, action, false, &bundle)?;
        out.http.push(json!({
            "name": "envoy.filters.http.rbac",
            "typed_config": typed(json::HTTP_RBAC_TYPE, &http, None),
        }));
        let tcp = build(policies, action, true, &bundle)?;
        out.network.push(json!({
            "name": "envoy.filters.network.rbac",
            "typed_config": typed(json::NETWORK_RBAC_TYPE, &tcp, Some("tcp.")),
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
        object: format!("AuthorizationPolicy {}", name_of(&i.metadata)),
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

/// Whether an AuthorizationPolicy peerguard refuses as invalid may apply to the workload
/// (what [`crate::compare::KNOWN_SAFER`] looks for): one in the workload's namespace or the
/// root namespace, whatever its selector says, since an unreadable selector is read
/// fail-closed as selecting the whole namespace.
pub fn has_invalid_policy_for(
    resources: &[Resource],
    workload: &Workload,
    mesh: &MeshConfig,
) -> bool {
    resources.iter().any(|r| match r {
        Resource::Invalid(i) if i.kind == "AuthorizationPolicy" => {
            let ns = i.metadata.namespace.as_deref().unwrap_or("default");
            ns == workload.namespace || ns == mesh.root_namespace
        }
        _ => false,
    })
}

fn name_of(meta: &peerguard_filter::istio::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name
    )
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
        let rules = o.spec.rules.as_deref().unwrap_or_default();
        for (i, rule) in rules.iter().enumerate() {
            let name = format!("ns[{ns}]-policy[{}]-rule[{i}]", o.metadata.name);
            let mut m = match Model::new(ns, rule) {
                Ok(m) => m,
                // "skipped invalid rule"
                Err(NewError::Unknown(_)) => continue,
                Err(NewError::Unsupported(why)) => {
                    return Err(TranslateError::Unsupported {
                        object: format!("AuthorizationPolicy {}", name_of(&o.metadata)),
                        rule: i,
                        why,
                    })
                }
            };
            m.migrate_trust_domain(bundle);
            // An error here is Istio's "skipped rule on TCP filter chain".
            if let Ok(p) = m.generate(for_tcp, action) {
                target.insert(name, p);
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
        assert!(matches!(run(custom), Err(TranslateError::Custom { .. })));
        let parsed = parse_str(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: b, namespace: foo}\nspec: {rules: [{to: 7}]}\n",
            "bad.yaml",
        );
        let r = translate(&parsed.resources, &workload(), &MeshConfig::default());
        assert!(matches!(r, Err(TranslateError::Invalid { .. })), "{r:?}");
    }

    #[test]
    fn invalid_values_and_rules_are_skipped_as_istiod_does() -> Result<(), TranslateError> {
        let yaml = r#"
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
        let parsed = parse_str(yaml, "bad.yaml");
        assert_eq!(parsed.errors.len(), 3, "{:?}", parsed.errors);
        assert!(has_invalid_policy_for(
            &parsed.resources,
            &workload(),
            &MeshConfig::default()
        ));
        let f = translate(&parsed.resources, &workload(), &MeshConfig::default())?;
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
}
