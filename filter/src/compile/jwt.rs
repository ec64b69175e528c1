//! End-user (JWT) authentication is not enforced by peerguard: it validates no token, so no
//! request ever has a request principal or JWT claims. The reading stays fail closed where it
//! can (`requestPrincipals` and `request.auth.*` values never match, their negations always
//! match, spec 4.6/4.7), and every place that relies on JWT is reported, naming file, object
//! and field, so that nobody takes peerguard for a JWT gate.

use super::authz::selects;
use super::{Diagnostics, MeshConfig, Workload};
use crate::istio::{AuthorizationPolicySpec, Object, RequestAuthenticationSpec, Resource};
use crate::schema::PolicyRef;

/// Every JWT diagnostic starts with this, so that callers can single them out.
pub const JWT_NOT_ENFORCED: &str = "JWT is not enforced by peerguard";

/// RequestAuthentications that select `workload` (same scoping as AuthorizationPolicy).
pub(super) fn request_authentications(
    resources: &[Resource],
    workload: &Workload,
    mesh: &MeshConfig,
    diags: &mut Diagnostics,
) {
    for r in resources {
        let Resource::RequestAuthentication(o) = r else {
            continue;
        };
        if let Some(message) = request_authentication(o, workload, mesh) {
            diags.push(message);
        }
    }
}

fn request_authentication(
    o: &Object<RequestAuthenticationSpec>,
    workload: &Workload,
    mesh: &MeshConfig,
) -> Option<String> {
    let namespace = o.metadata.namespace.as_deref().unwrap_or("default");
    let selector = o
        .spec
        .selector
        .as_ref()
        .filter(|s| !s.match_labels.is_empty())
        .map(|s| &s.match_labels);
    let targeted = o.spec.target_ref.is_some() || !o.spec.target_refs.is_empty();
    if targeted || !selects(namespace, selector, workload, mesh) {
        return None;
    }
    Some(format!(
        "{JWT_NOT_ENFORCED}: {}: RequestAuthentication {namespace}/{}: spec.jwtRules: tokens are not validated, so a request with an invalid JWT is not refused (Istio answers 401), and no request has a request principal or claims (requestPrincipals and request.auth.* values never match, their negations always match)",
        o.origin.file, o.metadata.name
    ))
}

/// The fields of one applicable AuthorizationPolicy that depend on JWT.
pub(super) fn authorization_policy(
    o: &Object<AuthorizationPolicySpec>,
    policy: &PolicyRef,
    diags: &mut Diagnostics,
) {
    let report = |diags: &mut Diagnostics, field: String, reading: &str| {
        diags.push(format!(
            "{JWT_NOT_ENFORCED}: {}: AuthorizationPolicy {policy}: {field}: {reading}",
            o.origin.file
        ));
    };
    for (i, rule) in o.spec.rules.iter().flatten().enumerate() {
        for (j, from) in rule.from.iter().flatten().enumerate() {
            let Some(source) = &from.source else { continue };
            let path = format!("spec.rules[{i}].from[{j}].source");
            if source
                .request_principals
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            {
                report(
                    diags,
                    format!("{path}.requestPrincipals"),
                    "no request has a request principal here, so this never matches",
                );
            }
            if source
                .not_request_principals
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            {
                report(
                    diags,
                    format!("{path}.notRequestPrincipals"),
                    "no request has a request principal here, so this always matches",
                );
            }
        }
        for (j, condition) in rule.when.iter().flatten().enumerate() {
            if condition.key.starts_with("request.auth.") {
                report(
                    diags,
                    format!("spec.rules[{i}].when[{j}]"),
                    &format!(
                        "{}: no request has JWT claims here, so `values` never match and `notValues` always match",
                        condition.key
                    ),
                );
            }
        }
    }
}
