//! Envoy RBAC / matcher protos as JSON, one constructor per message Istio builds
//! (`pilot/pkg/security/authz/model/{permission,principal}.go`, `matcher/*.go`). Field names
//! are the proto names (snake_case), which Envoy's JSON loader reads.

use serde_json::{json, Value};

const URI_TEMPLATE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig";
/// `filters.EnvoyJwtFilterName` / `EnvoyJwtFilterPayload`.
const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
const JWT_PAYLOAD: &str = "payload";

// ------------------------------------------------------------------ string matchers

pub fn exact(v: &str, ignore_case: bool) -> Value {
    with_case(json!({"exact": v}), ignore_case)
}

pub fn prefix(v: &str, ignore_case: bool) -> Value {
    with_case(json!({"prefix": v}), ignore_case)
}

pub fn suffix(v: &str, ignore_case: bool) -> Value {
    with_case(json!({"suffix": v}), ignore_case)
}

pub fn regex(r: &str) -> Value {
    json!({"safe_regex": {"regex": r}})
}

fn with_case(mut m: Value, ignore_case: bool) -> Value {
    if ignore_case {
        m["ignore_case"] = Value::Bool(true);
    }
    m
}

/// Go `regexp.QuoteMeta`.
pub fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `matcher.StringMatcherWithPrefix`: decided by the first and last character; `*` alone is
/// the regex `.+` (the prefix is dropped), a suffix with a prefix becomes a regex.
pub fn string_with_prefix(v: &str, pfx: &str) -> Value {
    if v == "*" {
        regex(".+")
    } else if let Some(rest) = v.strip_prefix('*') {
        if pfx.is_empty() {
            suffix(rest, false)
        } else {
            regex(&format!("{pfx}.*{}", quote_meta(rest)))
        }
    } else if let Some(rest) = v.strip_suffix('*') {
        prefix(&format!("{pfx}{rest}"), false)
    } else {
        exact(&format!("{pfx}{v}"), false)
    }
}

/// `matcher.StringMatcher`.
pub fn string(v: &str) -> Value {
    string_with_prefix(v, "")
}

/// `matcher.HeaderMatcher` (`ignore_case` false) and `matcher.HostMatcher` (true): `*` is a
/// presence match, otherwise suffix / prefix / exact on the value.
pub fn header(name: &str, v: &str, ignore_case: bool) -> Value {
    if v == "*" {
        return json!({"name": name, "present_match": true});
    }
    let m = if let Some(rest) = v.strip_prefix('*') {
        suffix(rest, ignore_case)
    } else if let Some(rest) = v.strip_suffix('*') {
        prefix(rest, ignore_case)
    } else {
        exact(v, ignore_case)
    };
    json!({"name": name, "string_match": m})
}

pub fn cidr(address: &str, prefix_len: u8) -> Value {
    json!({"address_prefix": address, "prefix_len": prefix_len})
}

// ------------------------------------------------------------------ permissions

pub fn perm_any() -> Value {
    json!({"any": true})
}

pub fn perm_and(rules: Vec<Value>) -> Value {
    json!({"and_rules": {"rules": rules}})
}

pub fn perm_or(rules: Vec<Value>) -> Value {
    json!({"or_rules": {"rules": rules}})
}

pub fn perm_not(rule: Value) -> Value {
    json!({"not_rule": rule})
}

pub fn perm_header(h: Value) -> Value {
    json!({"header": h})
}

pub fn perm_url_path(m: Value) -> Value {
    json!({"url_path": {"path": m}})
}

/// `permissionPathTemplate` with `matcher.PathTemplateMatcher`: `{*}` → `*`, `{**}` → `**`.
pub fn perm_uri_template(template: &str) -> Value {
    let t = template.replace("{**}", "**").replace("{*}", "*");
    json!({"uri_template": {
        "name": "uri-template",
        "typed_config": {"@type": URI_TEMPLATE_TYPE, "path_template": t},
    }})
}

pub fn perm_destination_ip(c: Value) -> Value {
    json!({"destination_ip": c})
}

pub fn perm_destination_port(p: u16) -> Value {
    json!({"destination_port": p})
}

pub fn perm_sni(m: Value) -> Value {
    json!({"requested_server_name": m})
}

// ------------------------------------------------------------------ principals

pub fn id_any() -> Value {
    json!({"any": true})
}

pub fn id_and(ids: Vec<Value>) -> Value {
    json!({"and_ids": {"ids": ids}})
}

pub fn id_or(ids: Vec<Value>) -> Value {
    json!({"or_ids": {"ids": ids}})
}

pub fn id_not(id: Value) -> Value {
    json!({"not_id": id})
}

/// `principalAuthenticated` with `useAuthenticated` (sidecars): the peer certificate's SANs.
pub fn id_authenticated(m: Value) -> Value {
    json!({"authenticated": {"principal_name": m}})
}

pub fn id_direct_remote_ip(c: Value) -> Value {
    json!({"direct_remote_ip": c})
}

pub fn id_remote_ip(c: Value) -> Value {
    json!({"remote_ip": c})
}

pub fn id_header(h: Value) -> Value {
    json!({"header": h})
}

/// `MetadataStringMatcherForJWTClaim`: a string claim of the JWT payload.
pub fn id_jwt_claim(claim: &str, m: Value) -> Value {
    json!({"metadata": {
        "filter": JWT_FILTER,
        "path": [{"key": JWT_PAYLOAD}, {"key": claim}],
        "value": {"string_match": m},
    }})
}

/// `MetadataListValueMatcherForJWTClaims` (extended form): the claim is a list holding one
/// of `values`, or is itself one of them.
pub fn id_jwt_claims(claims: &[String], values: &[String]) -> Value {
    let mut one: Vec<Value> = values
        .iter()
        .map(|v| json!({"string_match": string(v)}))
        .collect();
    let value = if one.len() == 1 {
        one.remove(0)
    } else {
        json!({"or_match": {"value_matchers": one}})
    };
    let mut path = vec![json!({"key": JWT_PAYLOAD})];
    path.extend(claims.iter().map(|c| json!({"key": c})));
    json!({"metadata": {
        "filter": JWT_FILTER,
        "path": path,
        "value": {"or_match": {"value_matchers": [
            {"list_match": {"one_of": value.clone()}},
            value,
        ]}},
    }})
}

/// `rbacPolicyMatchNever`: a policy without rules.
pub fn policy_match_never() -> Value {
    json!({
        "permissions": [perm_not(perm_any())],
        "principals": [id_not(id_any())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_forms_follow_string_matcher_with_prefix() {
        let p = "spiffe://";
        assert_eq!(
            string_with_prefix("td/ns/a/sa/b", p),
            json!({"exact": "spiffe://td/ns/a/sa/b"})
        );
        assert_eq!(
            string_with_prefix("td/ns/a/*", p),
            json!({"prefix": "spiffe://td/ns/a/"})
        );
        assert_eq!(
            string_with_prefix("*/sa/b.c", p),
            json!({"safe_regex": {"regex": r"spiffe://.*/sa/b\.c"}})
        );
        assert_eq!(
            string_with_prefix("*", p),
            json!({"safe_regex": {"regex": ".+"}})
        );
        assert_eq!(string("*-x"), json!({"suffix": "-x"}));
    }

    #[test]
    fn hosts_ignore_case_and_star_is_presence() {
        assert_eq!(
            header(":authority", "*.foo", true),
            json!({"name": ":authority", "string_match": {"suffix": ".foo", "ignore_case": true}})
        );
        assert_eq!(
            header(":authority", "*", true),
            json!({"name": ":authority", "present_match": true})
        );
        assert_eq!(
            header("x-role", "ad*", false),
            json!({"name": "x-role", "string_match": {"prefix": "ad"}})
        );
    }

    #[test]
    fn templates_become_envoy_uri_templates() {
        assert_eq!(
            perm_uri_template("/api/{*}/x/{**}")["uri_template"]["typed_config"]["path_template"],
            json!("/api/*/x/**")
        );
        assert_eq!(quote_meta("a.b*c[d]"), r"a\.b\*c\[d\]");
    }
}
