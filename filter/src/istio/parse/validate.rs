//! Validation as Istio's admission webhook does it (`istio:pkg/config/validation/validation.go`,
//! `istio:pkg/config/security/security.go`; summarised in the spec, 2.4, 3.2, 4.3, 4.5–4.8).
//! Every finding is an error with a field path; the object is then kept as invalid.

use super::super::{
    AuthorizationPolicySpec, AuthzAction, AuthzCondition, AuthzOperation, AuthzSource,
    DestinationRuleSpec, LegacyPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
    WorkloadSelector,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

type Errors = Vec<(Option<String>, String)>;

fn push(errors: &mut Errors, field: impl Into<String>, message: impl Into<String>) {
    errors.push((Some(field.into()), message.into()));
}

/// `validateWorkloadSelector` and the CRD schema (`istio:pkg/config/validation/validation.go`,
/// `crd-all.gen.yaml`): keys non-empty, no `*` in keys or values, values at most 63
/// characters. An empty value is accepted, as Istio does: it selects workloads whose label
/// is present with an empty value (`labels.Instance.SubsetOf`).
fn selector(selector: Option<&WorkloadSelector>, path: &str, errors: &mut Errors) {
    if let Some(selector) = selector {
        match_labels(&selector.match_labels, path, errors);
    }
}

pub(super) fn match_labels(labels: &BTreeMap<String, String>, path: &str, errors: &mut Errors) {
    for (key, value) in labels {
        let field = format!("{path}.matchLabels.{key}");
        if key.is_empty() {
            push(
                errors,
                format!("{path}.matchLabels"),
                "empty key is not supported in selector",
            );
        } else if key.contains('*') || value.contains('*') {
            push(errors, field, "wildcard is not supported in selector");
        } else if value.chars().count() > 63 {
            push(
                errors,
                field,
                format!(
                    "label value is {} characters long, at most 63 are allowed",
                    value.chars().count()
                ),
            );
        }
    }
}

fn has_labels(selector: Option<&WorkloadSelector>) -> bool {
    selector.is_some_and(|s| !s.match_labels.is_empty())
}

pub(super) fn peer_authentication(spec: &PeerAuthenticationSpec, raw: &Value, errors: &mut Errors) {
    selector(spec.selector.as_ref(), "spec.selector", errors);
    let written = raw.get("portLevelMtls").is_some_and(|v| !v.is_null());
    if written && spec.port_level_mtls.is_empty() {
        push(
            errors,
            "spec.portLevelMtls",
            "portLevelMtls, if set, must have at least one port",
        );
    }
    if !spec.port_level_mtls.is_empty() && !has_labels(spec.selector.as_ref()) {
        push(errors, "spec.portLevelMtls", "portLevelMtls requires selector (mesh/namespace peer authentication cannot have port level mTLS)");
    }
    for port in spec.port_level_mtls.keys() {
        if !(1..=65535).contains(port) {
            push(
                errors,
                format!("spec.portLevelMtls.{port}"),
                format!("invalid port {port}: must be 1..65535"),
            );
        }
    }
}

pub(super) fn destination_rule(spec: &DestinationRuleSpec, errors: &mut Errors) {
    if spec.host.is_empty() {
        push(errors, "spec.host", "host must not be empty");
    }
    selector(
        spec.workload_selector.as_ref(),
        "spec.workloadSelector",
        errors,
    );
}

/// `ValidateAuthenticationPolicy` (Istio 1.4) naming rules.
pub(super) fn legacy(spec: &LegacyPolicySpec, mesh: bool, name: &str, errors: &mut Errors) {
    if mesh {
        if name != "default" {
            push(
                errors,
                "metadata.name",
                format!("MeshPolicy must be named \"default\", found {name:?}"),
            );
        }
        if !spec.targets.is_empty() {
            push(errors, "spec.targets", "MeshPolicy must not have targets");
        }
    } else if spec.targets.is_empty() {
        if name != "default" {
            push(
                errors,
                "metadata.name",
                format!("a Policy without targets must be named \"default\", found {name:?}"),
            );
        }
    } else if name == "default" {
        push(
            errors,
            "spec.targets",
            "the Policy named \"default\" must not have targets",
        );
    }
}

/// `validateOneOfSelectorType` and `targetRef`/`targetRefs` exclusivity.
fn one_target(spec_selector: bool, target_ref: bool, target_refs: bool, errors: &mut Errors) {
    if spec_selector && (target_ref || target_refs) {
        push(
            errors,
            "spec.selector",
            "only one of selector or targetRef/targetRefs can be set",
        );
    }
    if target_ref && target_refs {
        push(
            errors,
            "spec.targetRef",
            "only one of targetRef or targetRefs can be set",
        );
    }
}

/// Only what decides where the object applies is checked: its JWT rules are not enforced.
pub(super) fn request_authentication(spec: &RequestAuthenticationSpec, errors: &mut Errors) {
    selector(spec.selector.as_ref(), "spec.selector", errors);
    one_target(
        spec.selector.is_some(),
        spec.target_ref.is_some(),
        !spec.target_refs.is_empty(),
        errors,
    );
}

pub(super) fn authorization_policy(spec: &AuthorizationPolicySpec, errors: &mut Errors) {
    selector(spec.selector.as_ref(), "spec.selector", errors);
    one_target(
        spec.selector.is_some(),
        spec.target_ref.is_some(),
        !spec.target_refs.is_empty(),
        errors,
    );

    // `rules: []` is nil once Istio decodes the proto: the same as no rules.
    let no_rules = spec.rules.as_ref().is_none_or(Vec::is_empty);
    match spec.action {
        AuthzAction::Custom => {
            if no_rules {
                push(errors, "spec.rules", "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
            } else if spec
                .provider
                .as_ref()
                .and_then(|p| p.name.as_deref())
                .is_none_or(str::is_empty)
            {
                push(
                    errors,
                    "spec.provider.name",
                    "must not be empty with CUSTOM action",
                );
            }
        }
        action => {
            if spec.provider.is_some() {
                push(
                    errors,
                    "spec.provider",
                    format!(
                        "must not be set with non CUSTOM action, found {}",
                        action_name(action)
                    ),
                );
            }
            if action == AuthzAction::Deny && no_rules {
                push(errors, "spec.rules", "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
            }
        }
    }

    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let rule_path = format!("spec.rules[{i}]");
        if let Some(from) = &rule.from {
            if from.is_empty() {
                push(
                    errors,
                    format!("{rule_path}.from"),
                    "`from` must not be empty",
                );
            }
            for (j, entry) in from.iter().enumerate() {
                let path = format!("{rule_path}.from[{j}].source");
                match &entry.source {
                    None => push(errors, path, "`source` must be set"),
                    Some(source) => validate_source(source, &path, errors),
                }
            }
        }
        if let Some(to) = &rule.to {
            if to.is_empty() {
                push(errors, format!("{rule_path}.to"), "`to` must not be empty");
            }
            for (j, entry) in to.iter().enumerate() {
                let path = format!("{rule_path}.to[{j}].operation");
                match &entry.operation {
                    None => push(errors, path, "`operation` must be set"),
                    Some(operation) => validate_operation(operation, &path, errors),
                }
            }
        }
        for (j, condition) in rule.when.iter().flatten().enumerate() {
            validate_condition(condition, &format!("{rule_path}.when[{j}]"), errors);
        }
    }
}

fn action_name(action: AuthzAction) -> &'static str {
    match action {
        AuthzAction::Allow => "ALLOW",
        AuthzAction::Deny => "DENY",
        AuthzAction::Audit => "AUDIT",
        AuthzAction::Custom => "CUSTOM",
    }
}

fn set(list: &Option<Vec<String>>) -> bool {
    list.as_ref().is_some_and(|l| !l.is_empty())
}

/// Empty strings are refused in every list (`CheckEmptyValues`).
fn non_empty(list: &Option<Vec<String>>, path: &str, errors: &mut Errors) {
    for (i, value) in list.iter().flatten().enumerate() {
        if value.is_empty() {
            push(errors, format!("{path}[{i}]"), "empty value not allowed");
        }
    }
}

fn validate_source(s: &AuthzSource, path: &str, errors: &mut Errors) {
    let lists: [(&str, &Option<Vec<String>>); 14] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ];
    if !lists.iter().any(|(_, l)| set(l)) {
        push(errors, path, "`source` must not be empty");
    }
    for (name, list) in lists {
        non_empty(list, &format!("{path}.{name}"), errors);
    }
    for (name, list) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        for (i, value) in list.iter().flatten().enumerate() {
            if !value.is_empty() && !is_ip_or_cidr(value) {
                push(
                    errors,
                    format!("{path}.{name}[{i}]"),
                    format!("invalid IP address or CIDR {value:?}"),
                );
            }
        }
    }
    for (name, list) in [
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
    ] {
        let values = list.as_deref().unwrap_or_default();
        if values.len() > 16 {
            push(
                errors,
                format!("{path}.{name}"),
                format!(
                    "at most 16 service accounts are allowed, found {}",
                    values.len()
                ),
            );
        }
        for (i, value) in values.iter().enumerate() {
            let parts: Vec<&str> = value.split('/').collect();
            if value.contains('*') {
                push(
                    errors,
                    format!("{path}.{name}[{i}]"),
                    format!("wildcards are not allowed in service accounts, found {value:?}"),
                );
            } else if !value.is_empty() && (parts.len() > 2 || parts.iter().any(|p| p.is_empty())) {
                push(
                    errors,
                    format!("{path}.{name}[{i}]"),
                    format!("service account must be `namespace/name` or `name`, found {value:?}"),
                );
            }
        }
    }
    let accounts = set(&s.service_accounts) || set(&s.not_service_accounts);
    let identities = set(&s.principals)
        || set(&s.not_principals)
        || set(&s.namespaces)
        || set(&s.not_namespaces);
    if accounts && identities {
        push(
            errors,
            path,
            "serviceAccounts cannot be combined with principals or namespaces in the same source",
        );
    }
    for (name, list) in [
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ] {
        for (i, value) in list.iter().flatten().enumerate() {
            if let Err(message) = check_trust_domain(value) {
                push(errors, format!("{path}.{name}[{i}]"), message);
            }
        }
    }
}

/// Trust domains: no `/`, and `*` only as a leading/trailing wildcard (`CheckWildcardValues`).
fn check_trust_domain(value: &str) -> Result<(), String> {
    if value.contains('/') {
        return Err(format!(
            "trust domain must not contain '/', found {value:?}"
        ));
    }
    let inner = value.strip_prefix('*').unwrap_or(value);
    let inner = inner.strip_suffix('*').unwrap_or(inner);
    if value != "*" && inner.contains('*') {
        return Err(format!(
            "wildcard '*' is only allowed as the first or last character, found {value:?}"
        ));
    }
    Ok(())
}

fn validate_operation(o: &AuthzOperation, path: &str, errors: &mut Errors) {
    let lists: [(&str, &Option<Vec<String>>); 8] = [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("ports", &o.ports),
        ("notPorts", &o.not_ports),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ];
    if !lists.iter().any(|(_, l)| set(l)) {
        push(errors, path, "`operation` must not be empty");
    }
    for (name, list) in lists {
        non_empty(list, &format!("{path}.{name}"), errors);
    }
    for (name, list) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
        for (i, value) in list.iter().flatten().enumerate() {
            if let Err(message) = check_path_template(value) {
                push(errors, format!("{path}.{name}[{i}]"), message);
            }
        }
    }
    for (name, list) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
        for (i, value) in list.iter().flatten().enumerate() {
            if !value.is_empty() && !is_port(value) {
                push(
                    errors,
                    format!("{path}.{name}[{i}]"),
                    format!("invalid port {value:?}: must be a decimal number 0-65535"),
                );
            }
        }
    }
}

/// Path templates (`CheckValidPathTemplate`): `{*}` and `{**}` only as whole segments, nothing
/// templated after `{**}`, no other braces, and literal segments made of RFC 3986 pchars.
fn check_path_template(value: &str) -> Result<(), String> {
    if !value.contains(['{', '}']) {
        return Ok(());
    }
    let mut match_any_seen = false;
    for segment in value.trim_matches('/').split('/') {
        match segment {
            "{*}" | "{**}" if match_any_seen => {
                return Err(format!(
                    "invalid path template {value:?}: {{**}} must be the last operator"
                ));
            }
            "{*}" => {}
            "{**}" => match_any_seen = true,
            _ if segment.contains(['{', '}']) => {
                return Err(format!(
                    "invalid path template {value:?}: '{{' or '}}' are only allowed in the whole-segment operators {{*}} and {{**}}"
                ));
            }
            _ if !segment.chars().all(is_pchar) => {
                return Err(format!(
                    "invalid path template {value:?}: segment {segment:?} is not a valid literal"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Istio's webhook admits `[a-zA-Z0-9-._~%!$&'()+,;:@=]` in template literals: no `*`,
/// which Envoy's URI-template matcher would not read as a literal character.
fn is_pchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~%!$&'()+,;=:@".contains(c)
}

/// Ports are decimal strings 0–65535 (`ValidatePorts`); signs and spaces are refused.
fn is_port(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 5
        && value.bytes().all(|b| b.is_ascii_digit())
        && value.parse::<u32>().is_ok_and(|p| p <= 65535)
}

/// An address or a CIDR whose prefix length fits the address family (`ValidateIPs`).
fn is_ip_or_cidr(value: &str) -> bool {
    match value.split_once('/') {
        None => value.parse::<IpAddr>().is_ok(),
        Some((addr, len)) => {
            let max = match addr.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            // Go's netip.ParsePrefix refuses a leading zero (`/016`): so does Istio.
            !len.is_empty()
                && len.len() <= 3
                && (len == "0" || !len.starts_with('0'))
                && len.bytes().all(|b| b.is_ascii_digit())
                && len.parse::<u32>().is_ok_and(|l| l <= max)
        }
    }
}

/// What a `when` key accepts as values.
#[derive(Clone, Copy)]
enum ValueKind {
    Any,
    Ip,
    Port,
    TrustDomain,
}

/// `ValidateAttribute`: the keys of spec 4.7, with map keys of the form `name[key]`.
fn check_key(key: &str) -> Result<ValueKind, String> {
    const EXACT: [(&str, ValueKind); 12] = [
        ("source.ip", ValueKind::Ip),
        ("remote.ip", ValueKind::Ip),
        ("source.namespace", ValueKind::Any),
        ("source.serviceAccount", ValueKind::Any),
        ("source.trustDomain", ValueKind::TrustDomain),
        ("source.principal", ValueKind::Any),
        ("request.auth.principal", ValueKind::Any),
        ("request.auth.audiences", ValueKind::Any),
        ("request.auth.presenter", ValueKind::Any),
        ("destination.ip", ValueKind::Ip),
        ("destination.port", ValueKind::Port),
        ("connection.sni", ValueKind::Any),
    ];
    if key.is_empty() {
        return Err("`key` must not be empty".to_string());
    }
    if let Some((_, kind)) = EXACT.iter().find(|(k, _)| *k == key) {
        return Ok(*kind);
    }
    let bad_map_key = || format!("bad key {key:?}: should have the format a[b]");
    if let Some(rest) = key.strip_prefix("request.headers") {
        return if bracket_groups(rest) == Some(1) {
            Ok(ValueKind::Any)
        } else {
            Err(bad_map_key())
        };
    }
    if let Some(rest) = key.strip_prefix("request.auth.claims") {
        return if bracket_groups(rest).is_some() {
            Ok(ValueKind::Any)
        } else {
            Err(bad_map_key())
        };
    }
    if let Some(rest) = key.strip_prefix("experimental.envoy.filters.") {
        let open = rest.find('[').unwrap_or(rest.len());
        return if open > 0 && bracket_groups(&rest[open..]).is_some() {
            Ok(ValueKind::Any)
        } else {
            Err(bad_map_key())
        };
    }
    match key {
        "destination.labels" => Err(format!("attribute {key} is no longer supported, migrate to use workload selector")),
        "destination.name" | "destination.namespace" | "destination.user" => {
            Err(format!("attribute {key} is not supported (deprecated: only supported in the Istio simulator)"))
        }
        _ => Err(format!(
            "unknown attribute {key:?}; accepted keys are request.headers[<name>], source.ip, remote.ip, source.namespace, source.serviceAccount, source.trustDomain, source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[<claim>], destination.ip, destination.port, connection.sni, experimental.envoy.filters.<filter>[<key>]"
        )),
    }
}

/// Number of `[x]` groups (x non-empty, no brackets) making up all of `s`, if well-formed.
fn bracket_groups(s: &str) -> Option<usize> {
    let mut rest = s;
    let mut count = 0;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let close = inner.find(']')?;
        let name = &inner[..close];
        if name.is_empty() || name.contains('[') {
            return None;
        }
        rest = &inner[close + 1..];
        count += 1;
    }
    (count > 0).then_some(count)
}

fn validate_condition(c: &AuthzCondition, path: &str, errors: &mut Errors) {
    let kind = match check_key(&c.key) {
        Ok(kind) => Some(kind),
        Err(message) => {
            push(errors, format!("{path}.key"), message);
            None
        }
    };
    if !set(&c.values) && !set(&c.not_values) {
        push(
            errors,
            path,
            format!(
                "at least one of `values` or `notValues` must be set for key {:?}",
                c.key
            ),
        );
    }
    for (name, list) in [("values", &c.values), ("notValues", &c.not_values)] {
        let field = format!("{path}.{name}");
        non_empty(list, &field, errors);
        for (i, value) in list
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
        {
            let problem = match kind {
                Some(ValueKind::Ip) if !is_ip_or_cidr(value) => {
                    Some(format!("invalid IP address or CIDR {value:?}"))
                }
                Some(ValueKind::Port) if !is_port(value) => Some(format!(
                    "invalid port {value:?}: must be a decimal number 0-65535"
                )),
                Some(ValueKind::TrustDomain) => check_trust_domain(value).err(),
                _ => None,
            };
            if let Some(problem) = problem {
                push(errors, format!("{field}[{i}]"), problem);
            }
        }
    }
}
