//! AuthorizationPolicy: which policies apply to a workload (spec 4.1) and their conversion
//! into schema rules (4.4–4.9), with dry-run (4.12) and fail-closed invalid objects (4.11).

use super::select::{labels_subset, raw_selector, selector_labels};
use super::values::{self, Bundle};
use super::{Diagnostics, MeshConfig, Workload, UNREADABLE_NAMESPACE};
use crate::istio::{
    AuthorizationPolicySpec, AuthzAction, AuthzCondition, AuthzOperation, AuthzRule, AuthzSource,
    InvalidObject, Object, ObjectMeta, Resource,
};
use crate::schema::{
    Action, AuthzPolicy, Condition, Field, Operation, PolicyRef, Rule, Source, StrMatch,
};
use std::collections::BTreeMap;

pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Every AuthorizationPolicy (valid or invalid) that applies to `workload`, ordered by
/// (namespace, name).
pub(super) fn compile(
    resources: &[Resource],
    workload: &Workload,
    mesh: &MeshConfig,
    bundle: &Bundle,
    diags: &mut Diagnostics,
) -> Vec<AuthzPolicy> {
    let mut out = Vec::new();
    for r in resources {
        match r {
            Resource::AuthorizationPolicy(o) => {
                if let Some(p) = valid_policy(o, workload, mesh, bundle, diags) {
                    out.push(p);
                }
            }
            Resource::Invalid(o) if o.kind == "AuthorizationPolicy" => {
                if let Some(p) = invalid_policy(o, workload, mesh, diags) {
                    out.push(p);
                }
            }
            Resource::Invalid(o) if o.unknown_kind() => {
                if let Some(p) = unknown_kind_policy(o, workload, mesh, diags) {
                    out.push(p);
                }
            }
            _ => {}
        }
    }
    out.sort_by(|a, b| a.policy.cmp(&b.policy));
    out
}

fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_else(|| "default".into())
}

/// The namespace an invalid object counts in, and the one it is named with. An unreadable
/// namespace could be any, the workload's own included: it counts there (fail closed).
fn invalid_namespace(o: &InvalidObject, workload: &Workload) -> (String, String) {
    if o.namespace_unreadable() {
        (workload.namespace.clone(), UNREADABLE_NAMESPACE.to_string())
    } else {
        let ns = namespace_of(&o.metadata);
        (ns.clone(), ns)
    }
}

/// Candidate namespaces (root + own) and the selector (spec 4.1). A root-namespace selector
/// matches workloads of every namespace.
pub(super) fn selects(
    namespace: &str,
    selector: Option<&BTreeMap<String, String>>,
    workload: &Workload,
    mesh: &MeshConfig,
) -> bool {
    if namespace != mesh.root_namespace && namespace != workload.namespace {
        return false;
    }
    selector.is_none_or(|s| labels_subset(s, &workload.labels))
}

/// `istio.io/dry-run`, parsed like Go `strconv.ParseBool`; unparsable → enforced.
fn dry_run(meta: &ObjectMeta, policy: &PolicyRef, diags: &mut Diagnostics) -> bool {
    let Some(v) = meta.annotations.get(DRY_RUN_ANNOTATION) else {
        return false;
    };
    values::parse_go_bool(v).unwrap_or_else(|| {
        diags.push(format!(
            "AuthorizationPolicy {policy}: annotation {DRY_RUN_ANNOTATION}={v:?} is not a boolean; the policy is enforced"
        ));
        false
    })
}

fn valid_policy(
    o: &Object<AuthorizationPolicySpec>,
    workload: &Workload,
    mesh: &MeshConfig,
    bundle: &Bundle,
    diags: &mut Diagnostics,
) -> Option<AuthzPolicy> {
    let namespace = namespace_of(&o.metadata);
    let spec = &o.spec;
    let selector = spec
        .selector
        .as_ref()
        .and_then(|s| selector_labels(&s.match_labels));
    if !selects(&namespace, selector.as_ref(), workload, mesh) {
        return None;
    }
    let policy = PolicyRef {
        namespace,
        name: o.metadata.name.clone(),
    };
    if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
        diags.push(format!(
            "AuthorizationPolicy {policy} ignored for this workload: targetRef/targetRefs attach it to gateways or waypoints, not sidecars"
        ));
        return None;
    }
    super::jwt::authorization_policy(o, &policy, diags);
    let dry_run = dry_run(&o.metadata, &policy, diags);
    let action = action(spec.action);
    let provider = spec.provider.as_ref().and_then(|p| p.name.clone());
    if action == Action::Custom {
        diags.push(format!(
            "AuthorizationPolicy {policy}: CUSTOM (provider {}) is not supported by peerguard; it denies every request it selects",
            provider.as_deref().unwrap_or("<none>")
        ));
    }
    let converter = Converter {
        bundle,
        policy_namespace: &policy.namespace,
    };
    let rules: Result<Vec<Rule>, String> = spec
        .rules
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            converter
                .rule(r)
                .map_err(|e| format!("spec.rules[{i}].{e}"))
        })
        .collect();
    match rules {
        Ok(rules) => Some(AuthzPolicy {
            policy,
            action,
            dry_run,
            provider,
            invalid: None,
            rules,
        }),
        Err(e) => {
            diags.push(format!(
                "AuthorizationPolicy {policy} is invalid ({e}); it fails closed"
            ));
            Some(AuthzPolicy {
                policy,
                action,
                dry_run,
                provider,
                invalid: Some(e),
                rules: Vec::new(),
            })
        }
    }
}

fn action(a: AuthzAction) -> Action {
    match a {
        AuthzAction::Allow => Action::Allow,
        AuthzAction::Deny => Action::Deny,
        AuthzAction::Audit => Action::Audit,
        AuthzAction::Custom => Action::Custom,
    }
}

/// Best effort for an object that failed to parse: namespace from metadata, selector and
/// action from the raw spec when readable. An unreadable selector (or one Istio would refuse)
/// selects every workload of the namespace; an unreadable namespace counts as the
/// workload's; an unreadable action is DENY. No rules: ALLOW/AUDIT match nothing,
/// DENY/CUSTOM match everything (decide reads `invalid`).
fn invalid_policy(
    o: &InvalidObject,
    workload: &Workload,
    mesh: &MeshConfig,
    diags: &mut Diagnostics,
) -> Option<AuthzPolicy> {
    let (namespace, shown) = invalid_namespace(o, workload);
    let spec = o.raw.get("spec");
    let selector = raw_selector(spec.and_then(|s| s.get("selector")));
    if !selects(&namespace, selector.as_ref(), workload, mesh) {
        return None;
    }
    let policy = PolicyRef {
        namespace: shown,
        name: o.metadata.name.clone(),
    };
    let has_target_refs = spec.is_some_and(|s| {
        s.get("targetRef").is_some_and(|t| t.is_object())
            || s.get("targetRefs")
                .and_then(|t| t.as_array())
                .is_some_and(|t| !t.is_empty())
    });
    if has_target_refs {
        diags.push(format!(
            "AuthorizationPolicy {policy} (invalid: {}) ignored for this workload: targetRef/targetRefs attach it to gateways or waypoints",
            o.error
        ));
        return None;
    }
    let action = match spec.and_then(|s| s.get("action")) {
        None | Some(serde_json::Value::Null) => Action::Allow,
        Some(serde_json::Value::String(a)) => match a.as_str() {
            "ALLOW" => Action::Allow,
            "DENY" => Action::Deny,
            "AUDIT" => Action::Audit,
            "CUSTOM" => Action::Custom,
            _ => Action::Deny,
        },
        Some(_) => Action::Deny,
    };
    let provider = spec
        .and_then(|s| s.pointer("/provider/name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let dry_run = dry_run(&o.metadata, &policy, diags);
    diags.push(format!(
        "AuthorizationPolicy {policy} is invalid ({}); treated as {} that fails closed{}",
        o.error,
        format!("{action:?}").to_uppercase(),
        match action {
            Action::Allow | Action::Audit => " (matches nothing)",
            Action::Deny | Action::Custom => " (matches every request)",
        }
    ));
    Some(AuthzPolicy {
        policy,
        action,
        dry_run,
        provider,
        invalid: Some(o.error.clone()),
        rules: Vec::new(),
    })
}

/// peerguard choice (fail closed): an object of one of Istio's groups whose kind Istio does
/// not have (a misspelling) could have been anything, a DENY or a STRICT included. It denies
/// every request to every workload of its namespace (every workload of the mesh in the root
/// namespace), whatever its spec says: what a misspelt kind's fields mean is unknown too.
fn unknown_kind_policy(
    o: &InvalidObject,
    workload: &Workload,
    mesh: &MeshConfig,
    diags: &mut Diagnostics,
) -> Option<AuthzPolicy> {
    let (namespace, shown) = invalid_namespace(o, workload);
    if !selects(&namespace, None, workload, mesh) {
        return None;
    }
    let policy = PolicyRef {
        namespace: shown,
        name: o.metadata.name.clone(),
    };
    diags.push(format!(
        "{}: {} {policy} is invalid ({}); an unknown kind is treated as a DENY of every request to the workloads of its namespace{} (fail closed)",
        o.origin.file,
        o.kind,
        o.error,
        if namespace == mesh.root_namespace { ", the root namespace: every workload of the mesh" } else { "" }
    ));
    Some(AuthzPolicy {
        policy,
        action: Action::Deny,
        dry_run: false,
        provider: None,
        invalid: Some(format!("{} {}: {}", o.kind, o.api_version, o.error)),
        rules: Vec::new(),
    })
}

struct Converter<'a> {
    bundle: &'a Bundle,
    policy_namespace: &'a str,
}

fn field<T>(
    values: &Option<Vec<String>>,
    not_values: &Option<Vec<String>>,
    mut conv: impl FnMut(&str, &mut Vec<T>) -> Result<(), String>,
) -> Result<Field<T>, String> {
    let mut f = Field::default();
    for v in values.iter().flatten() {
        conv(v, &mut f.values)?;
    }
    for v in not_values.iter().flatten() {
        conv(v, &mut f.not_values)?;
    }
    Ok(f)
}

fn plain(v: &str, out: &mut Vec<StrMatch>) -> Result<(), String> {
    out.push(values::str_match(v));
    Ok(())
}

impl Converter<'_> {
    fn rule(&self, r: &AuthzRule) -> Result<Rule, String> {
        let from = match &r.from {
            None => None,
            Some(fs) => Some(
                fs.iter()
                    .enumerate()
                    .map(|(i, f)| match &f.source {
                        Some(s) => self.source(s).map_err(|e| format!("from[{i}].source.{e}")),
                        None => Err(format!("from[{i}]: source is required")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let to = match &r.to {
            None => None,
            Some(ts) => Some(
                ts.iter()
                    .enumerate()
                    .map(|(i, t)| match &t.operation {
                        Some(o) => self
                            .operation(o)
                            .map_err(|e| format!("to[{i}].operation.{e}")),
                        None => Err(format!("to[{i}]: operation is required")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let when = r
            .when
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| self.condition(c).map_err(|e| format!("when[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rule { from, to, when })
    }

    fn principal(&self, v: &str, out: &mut Vec<StrMatch>) -> Result<(), String> {
        let mut expanded = Vec::with_capacity(self.bundle.domains.len());
        self.bundle.expand_principal(v, &mut expanded);
        out.extend(expanded.into_iter().map(values::str_match_owned));
        Ok(())
    }

    fn trust_domain(&self, v: &str, out: &mut Vec<StrMatch>) -> Result<(), String> {
        let mut expanded = Vec::new();
        self.bundle.expand_trust_domain(v, &mut expanded);
        out.extend(expanded.into_iter().map(values::str_match_owned));
        Ok(())
    }

    /// `sa` means `<policy namespace>/sa`.
    fn service_account(&self, v: &str, out: &mut Vec<String>) -> Result<(), String> {
        out.push(if v.contains('/') {
            v.to_string()
        } else {
            format!("{}/{v}", self.policy_namespace)
        });
        Ok(())
    }

    fn source(&self, s: &AuthzSource) -> Result<Source, String> {
        let cidr = |v: &str, out: &mut Vec<_>| values::cidr(v).map(|c| out.push(c));
        Ok(Source {
            principals: field(&s.principals, &s.not_principals, |v, o| {
                self.principal(v, o)
            })
            .map_err(|e| format!("principals: {e}"))?,
            namespaces: field(&s.namespaces, &s.not_namespaces, |v, o| {
                o.push(v.to_string());
                Ok(())
            })?,
            service_accounts: field(&s.service_accounts, &s.not_service_accounts, |v, o| {
                self.service_account(v, o)
            })?,
            trust_domains: field(&s.trust_domains, &s.not_trust_domains, |v, o| {
                self.trust_domain(v, o)
            })?,
            request_principals: field(&s.request_principals, &s.not_request_principals, plain)?,
            ip_blocks: field(&s.ip_blocks, &s.not_ip_blocks, cidr)
                .map_err(|e| format!("ipBlocks: {e}"))?,
            remote_ip_blocks: field(&s.remote_ip_blocks, &s.not_remote_ip_blocks, cidr)
                .map_err(|e| format!("remoteIpBlocks: {e}"))?,
        })
    }

    fn operation(&self, o: &AuthzOperation) -> Result<Operation, String> {
        Ok(Operation {
            hosts: field(&o.hosts, &o.not_hosts, |v, out| {
                plain(&v.to_ascii_lowercase(), out)
            })?,
            ports: field(&o.ports, &o.not_ports, |v, out| {
                values::port(v).map(|p| out.push(p))
            })
            .map_err(|e| format!("ports: {e}"))?,
            methods: field(&o.methods, &o.not_methods, plain)?,
            paths: field(&o.paths, &o.not_paths, |v, out| {
                values::path(v).map(|p| out.push(p))
            })
            .map_err(|e| format!("paths: {e}"))?,
        })
    }

    fn condition(&self, c: &AuthzCondition) -> Result<Condition, String> {
        let key = c.key.as_str();
        let (vals, nots) = (&c.values, &c.not_values);
        if vals.as_ref().is_none_or(Vec::is_empty) && nots.as_ref().is_none_or(Vec::is_empty) {
            return Err(format!("condition {key:?} needs values or notValues"));
        }
        let strs = || field(vals, nots, plain);
        let cidrs = || field(vals, nots, |v, out| values::cidr(v).map(|c| out.push(c)));
        let cond = if let Some(name) = bracketed(key, "request.headers") {
            Condition::RequestHeader {
                name: name.to_ascii_lowercase(),
                field: strs()?,
            }
        } else if let Some(claim) = key.strip_prefix("request.auth.") {
            let known = matches!(claim, "principal" | "audiences" | "presenter")
                || bracketed(claim, "claims").is_some();
            if !known {
                return Err(format!("unknown condition key {key:?}"));
            }
            Condition::RequestAuth {
                claim: claim.to_string(),
                field: strs()?,
            }
        } else if key.starts_with("experimental.envoy.filters.") {
            Condition::EnvoyMetadata {
                path: key.to_string(),
                field: strs()?,
            }
        } else {
            match key {
                "source.ip" => Condition::SourceIp { field: cidrs()? },
                "remote.ip" => Condition::RemoteIp { field: cidrs()? },
                "destination.ip" => Condition::DestinationIp { field: cidrs()? },
                "destination.port" => Condition::DestinationPort {
                    field: field(vals, nots, |v, out| values::port(v).map(|p| out.push(p)))?,
                },
                "source.principal" => Condition::SourcePrincipal {
                    field: field(vals, nots, |v, o| self.principal(v, o))?,
                },
                "source.namespace" => Condition::SourceNamespace {
                    field: field(vals, nots, |v, o| {
                        o.push(v.to_string());
                        Ok(())
                    })?,
                },
                "source.serviceAccount" => Condition::SourceServiceAccount {
                    field: field(vals, nots, |v, o| self.service_account(v, o))?,
                },
                "source.trustDomain" => Condition::SourceTrustDomain {
                    field: field(vals, nots, |v, o| self.trust_domain(v, o))?,
                },
                "connection.sni" => Condition::ConnectionSni { field: strs()? },
                _ => return Err(format!("unknown condition key {key:?}")),
            }
        };
        Ok(cond)
    }
}

/// `prefix[name]` → `name` (non-empty, no nested brackets).
fn bracketed<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    let inner = key
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    (!inner.is_empty()).then_some(inner)
}
