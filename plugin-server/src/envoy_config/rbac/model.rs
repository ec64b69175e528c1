//! One AuthorizationPolicy rule → one Envoy RBAC `Policy`, as Istio's
//! `pilot/pkg/security/authz/model` does it (`model.go` `New`/`Generate`, `generator.go`).
//!
//! A rule becomes lists of (key, values, notValues, generator): one permission list per
//! `to` entry and one principal list per `from` entry, each starting with a copy of the
//! `when` conditions of its side. Each value goes through its generator; a generator error
//! (an HTTP-only attribute on a TCP chain, a value it cannot convert) drops the whole rule
//! for ALLOW and only that value for DENY/AUDIT (`checkError`), which is how Istio makes
//! ALLOW narrower and DENY wider on TCP.
//!
//! peerguard's product form ([`Strictness::Refuse`]) keeps the HTTP-only rule (narrower ALLOW,
//! wider DENY: both fail closed) but refuses a value that does not convert, which Istio would
//! silently drop (a DENY that drops a value matches more, but one that drops its only value
//! of a `not*` field matches less).

use super::json as j;
use peerguard_filter::istio::{AuthzCondition, AuthzRule};
use serde_json::Value;

/// The RBAC action a rule set is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RbacAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gen {
    DestIp,
    DestPort,
    ConnSni,
    SrcIp,
    RemoteIp,
    SrcNamespace,
    SrcTrustDomain,
    SrcServiceAccount,
    SrcPrincipal,
    RequestHeader,
    Host,
    Path,
    Method,
    // The "extended" generators: all values at once.
    RequestPrincipal,
    RequestClaims,
    RequestAudiences,
    RequestPresenter,
}

impl Gen {
    fn extended(self) -> bool {
        matches!(
            self,
            Gen::RequestPrincipal
                | Gen::RequestClaims
                | Gen::RequestAudiences
                | Gen::RequestPresenter
        )
    }
}

#[derive(Debug, Clone)]
struct Spec {
    key: String,
    values: Vec<String>,
    not_values: Vec<String>,
    gen: Gen,
}

#[derive(Debug, Clone, Default)]
struct List(Vec<Spec>);

impl List {
    fn insert_front(
        &mut self,
        gen: Gen,
        key: &str,
        values: &Option<Vec<String>>,
        nots: &Option<Vec<String>>,
    ) {
        let (values, not_values) = (
            values.clone().unwrap_or_default(),
            nots.clone().unwrap_or_default(),
        );
        if values.is_empty() && not_values.is_empty() {
            return;
        }
        self.0.insert(
            0,
            Spec {
                key: key.to_string(),
                values,
                not_values,
                gen,
            },
        );
    }

    fn append_last(&mut self, gen: Gen, c: &AuthzCondition) {
        let (values, not_values) = (
            c.values.clone().unwrap_or_default(),
            c.not_values.clone().unwrap_or_default(),
        );
        if values.is_empty() && not_values.is_empty() {
            return;
        }
        self.0.push(Spec {
            key: c.key.clone(),
            values,
            not_values,
            gen,
        });
    }
}

/// How values Istio cannot convert are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Istio's `checkError`: ALLOW drops the rule, DENY drops the value.
    AsIstiod,
    /// The error is returned whatever the action (the caller refuses the policy).
    Refuse,
}

/// Why `Generate` gave up on a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenError {
    /// An HTTP attribute on a TCP filter chain (Istio: "skipped rule on TCP filter chain").
    HttpOnly(String),
    /// A value that does not convert (a bad CIDR or port), or a rule without principals or
    /// permissions.
    Value(String),
}

impl std::fmt::Display for GenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GenError::HttpOnly(s) | GenError::Value(s) => f.write_str(s),
        }
    }
}

/// Why `model.New` refused a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewError {
    /// Istio logs "skipped invalid rule" and goes on without it.
    Unknown(String),
    /// Istio would translate it, this translator does not.
    Unsupported(String),
}

/// One rule, as `model.New` consolidates it.
#[derive(Debug, Clone)]
pub struct Model {
    permissions: Vec<List>,
    principals: Vec<List>,
    /// The policy's namespace: `serviceAccounts` values without `/` live there.
    policy_namespace: String,
}

const ATTR_REQUEST_HEADER: &str = "request.headers";
const ATTR_REQUEST_CLAIMS: &str = "request.auth.claims";

impl Model {
    /// `model.New`. Errors on a `when` key Istio does not know (the builder skips the rule)
    /// and on the keys this translator does not translate.
    pub fn new(policy_namespace: &str, r: &AuthzRule) -> Result<Model, NewError> {
        let mut base_permission = List::default();
        let mut base_principal = List::default();
        for c in r.when.iter().flatten() {
            let k = c.key.as_str();
            match k {
                "destination.ip" => base_permission.append_last(Gen::DestIp, c),
                "destination.port" => base_permission.append_last(Gen::DestPort, c),
                "connection.sni" => base_permission.append_last(Gen::ConnSni, c),
                "source.ip" => base_principal.append_last(Gen::SrcIp, c),
                "remote.ip" => base_principal.append_last(Gen::RemoteIp, c),
                "source.namespace" => base_principal.append_last(Gen::SrcNamespace, c),
                "source.trustDomain" => base_principal.append_last(Gen::SrcTrustDomain, c),
                "source.serviceAccount" => base_principal.append_last(Gen::SrcServiceAccount, c),
                "source.principal" => base_principal.append_last(Gen::SrcPrincipal, c),
                "request.auth.principal" => base_principal.append_last(Gen::RequestPrincipal, c),
                "request.auth.audiences" => base_principal.append_last(Gen::RequestAudiences, c),
                "request.auth.presenter" => base_principal.append_last(Gen::RequestPresenter, c),
                _ if k.starts_with(ATTR_REQUEST_HEADER) => {
                    base_principal.append_last(Gen::RequestHeader, c)
                }
                _ if k.starts_with(ATTR_REQUEST_CLAIMS) => {
                    base_principal.append_last(Gen::RequestClaims, c)
                }
                _ if k.starts_with("experimental.envoy.filters.") => {
                    return Err(NewError::Unsupported(format!(
                        "when key {k:?}: Envoy metadata conditions are not translated"
                    )))
                }
                _ => return Err(NewError::Unknown(format!("unknown attribute {k}"))),
            }
        }
        let mut principals = Vec::new();
        for from in r.from.iter().flatten() {
            let mut merged = base_principal.clone();
            if let Some(s) = &from.source {
                merged.insert_front(Gen::SrcIp, "source.ip", &s.ip_blocks, &s.not_ip_blocks);
                merged.insert_front(
                    Gen::RemoteIp,
                    "remote.ip",
                    &s.remote_ip_blocks,
                    &s.not_remote_ip_blocks,
                );
                merged.insert_front(
                    Gen::SrcNamespace,
                    "source.namespace",
                    &s.namespaces,
                    &s.not_namespaces,
                );
                merged.insert_front(
                    Gen::SrcTrustDomain,
                    "source.trustDomain",
                    &s.trust_domains,
                    &s.not_trust_domains,
                );
                merged.insert_front(
                    Gen::SrcServiceAccount,
                    "source.serviceAccount",
                    &s.service_accounts,
                    &s.not_service_accounts,
                );
                merged.insert_front(
                    Gen::RequestPrincipal,
                    "request.auth.principal",
                    &s.request_principals,
                    &s.not_request_principals,
                );
                merged.insert_front(
                    Gen::SrcPrincipal,
                    "source.principal",
                    &s.principals,
                    &s.not_principals,
                );
            }
            principals.push(merged);
        }
        if r.from.as_ref().is_none_or(Vec::is_empty) {
            principals.push(base_principal);
        }
        let mut permissions = Vec::new();
        for to in r.to.iter().flatten() {
            let mut merged = base_permission.clone();
            if let Some(o) = &to.operation {
                merged.insert_front(Gen::DestPort, "destination.port", &o.ports, &o.not_ports);
                merged.insert_front(Gen::Path, "path-matcher", &o.paths, &o.not_paths);
                merged.insert_front(Gen::Method, ":method", &o.methods, &o.not_methods);
                merged.insert_front(Gen::Host, ":authority", &o.hosts, &o.not_hosts);
            }
            permissions.push(merged);
        }
        if r.to.as_ref().is_none_or(Vec::is_empty) {
            permissions.push(base_permission);
        }
        Ok(Model {
            permissions,
            principals,
            policy_namespace: policy_namespace.to_string(),
        })
    }

    /// `MigrateTrustDomain`: principals through the bundle's `ReplaceTrustDomainAliases`,
    /// trust domains through `ExpandTrustDomainAliases`.
    pub fn migrate_trust_domain(&mut self, bundle: &[String]) {
        for list in &mut self.principals {
            for s in &mut list.0 {
                match s.gen {
                    Gen::SrcPrincipal => {
                        s.values = super::bundle::replace_trust_domain_aliases(bundle, &s.values);
                        s.not_values =
                            super::bundle::replace_trust_domain_aliases(bundle, &s.not_values);
                    }
                    Gen::SrcTrustDomain => {
                        s.values = super::bundle::expand_trust_domain_aliases(bundle, &s.values);
                        s.not_values =
                            super::bundle::expand_trust_domain_aliases(bundle, &s.not_values);
                    }
                    _ => {}
                }
            }
        }
    }

    /// `Generate(forTCP, useAuthenticated=true, action)`: `Err` drops the rule (or, with
    /// [`Strictness::Refuse`] and a value that does not convert, the policy is refused).
    pub fn generate(
        &self,
        for_tcp: bool,
        action: RbacAction,
        strict: Strictness,
    ) -> Result<Value, GenError> {
        let g = Ctx {
            for_tcp,
            action,
            strict,
        };
        let mut permissions = Vec::new();
        for list in &self.permissions {
            let mut and = Vec::new();
            for s in &list.0 {
                and.extend(self.permission(s, g)?);
            }
            if and.is_empty() {
                and.push(j::perm_any());
            }
            permissions.push(j::perm_and(and));
        }
        let mut principals = Vec::new();
        for list in &self.principals {
            let mut and = Vec::new();
            for s in &list.0 {
                and.extend(self.principal(s, g)?);
            }
            if and.is_empty() {
                and.push(j::id_any());
            }
            principals.push(j::id_and(and));
        }
        if permissions.is_empty() || principals.is_empty() {
            return Err(GenError::Value(
                "must have at least 1 permission and 1 principal".into(),
            ));
        }
        Ok(serde_json::json!({"permissions": permissions, "principals": principals}))
    }

    fn permission(&self, s: &Spec, g: Ctx) -> Result<Vec<Value>, GenError> {
        let mut out = Vec::new();
        if s.gen.extended() {
            // Every extended generator is principal-only ("unimplemented" here).
            for vals in [&s.values, &s.not_values] {
                if !vals.is_empty() {
                    g.check::<Value>(Err(GenError::Value(format!("{}: unimplemented", s.key))))?;
                }
            }
            return Ok(out);
        }
        for (vals, negate) in [(&s.values, false), (&s.not_values, true)] {
            let mut or = Vec::new();
            for v in vals.iter() {
                if let Some(p) = g.check(permission_of(s.gen, &s.key, v, g.for_tcp))? {
                    or.push(p);
                }
            }
            if !or.is_empty() {
                let p = j::perm_or(or);
                out.push(if negate { j::perm_not(p) } else { p });
            }
        }
        Ok(out)
    }

    fn principal(&self, s: &Spec, g: Ctx) -> Result<Vec<Value>, GenError> {
        let mut out = Vec::new();
        for (vals, negate) in [(&s.values, false), (&s.not_values, true)] {
            if s.gen.extended() {
                if vals.is_empty() {
                    continue;
                }
                if let Some(p) = g.check(extended_principal(s.gen, &s.key, vals, g.for_tcp))? {
                    out.push(if negate { j::id_not(p) } else { p });
                }
                continue;
            }
            let mut or = Vec::new();
            for v in vals.iter() {
                if let Some(p) = g.check(self.principal_of(s.gen, &s.key, v, g.for_tcp))? {
                    or.push(p);
                }
            }
            if !or.is_empty() {
                let p = j::id_or(or);
                out.push(if negate { j::id_not(p) } else { p });
            }
        }
        Ok(out)
    }

    /// The per-value principal generators.
    fn principal_of(&self, gen: Gen, key: &str, v: &str, for_tcp: bool) -> Result<Value, GenError> {
        match gen {
            Gen::SrcIp => Ok(j::id_direct_remote_ip(cidr(v).map_err(GenError::Value)?)),
            Gen::RemoteIp => Ok(j::id_remote_ip(cidr(v).map_err(GenError::Value)?)),
            Gen::SrcNamespace => {
                let parts: Vec<String> = v.split('*').map(j::quote_meta).collect();
                Ok(j::id_authenticated(j::regex(&format!(
                    ".*/ns/{}/.*",
                    parts.join(".*")
                ))))
            }
            Gen::SrcServiceAccount => {
                let (ns, sa) = v
                    .split_once('/')
                    .unwrap_or((self.policy_namespace.as_str(), v));
                Ok(j::id_authenticated(j::regex(&format!(
                    "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
                    j::quote_meta(ns),
                    j::quote_meta(sa)
                ))))
            }
            Gen::SrcTrustDomain => Ok(j::id_authenticated(if v == "*" {
                j::prefix("spiffe://", false)
            } else if !v.contains('*') {
                j::prefix(&format!("spiffe://{v}/"), false)
            } else {
                let (a, b) = v.split_once('*').unwrap_or((v, ""));
                j::regex(&format!(
                    "spiffe://{}[^/]*{}/.*",
                    j::quote_meta(a),
                    j::quote_meta(b)
                ))
            })),
            Gen::SrcPrincipal => Ok(j::id_authenticated(j::string_with_prefix(v, "spiffe://"))),
            Gen::RequestHeader => {
                if for_tcp {
                    return Err(http_only(key));
                }
                let name = bracketed(key.trim_start_matches(ATTR_REQUEST_HEADER))
                    .map_err(GenError::Value)?;
                Ok(j::id_header(j::header(name, v, false)))
            }
            _ => Err(GenError::Value(format!("{key}: unimplemented"))),
        }
    }
}

/// The generation context of one rule.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    for_tcp: bool,
    action: RbacAction,
    strict: Strictness,
}

impl Ctx {
    /// `checkError`: ALLOW keeps the error (the rule is dropped), DENY/AUDIT drop the value;
    /// [`Strictness::Refuse`] keeps every error but an HTTP-only attribute's.
    fn check<T>(self, r: Result<T, GenError>) -> Result<Option<T>, GenError> {
        match (r, self.action, self.strict) {
            (Ok(v), _, _) => Ok(Some(v)),
            (Err(e), RbacAction::Allow, _) => Err(e),
            (Err(e @ GenError::Value(_)), RbacAction::Deny, Strictness::Refuse) => Err(e),
            (Err(_), RbacAction::Deny, _) => Ok(None),
        }
    }
}

fn http_only(key: &str) -> GenError {
    GenError::HttpOnly(format!("{key:?} is HTTP only"))
}

/// The per-value permission generators.
fn permission_of(gen: Gen, key: &str, v: &str, for_tcp: bool) -> Result<Value, GenError> {
    let http_only = || Err(http_only(key));
    match gen {
        Gen::DestIp => Ok(j::perm_destination_ip(cidr(v).map_err(GenError::Value)?)),
        Gen::DestPort => Ok(j::perm_destination_port(port(v).map_err(GenError::Value)?)),
        Gen::ConnSni => Ok(j::perm_sni(j::string(v))),
        Gen::Host if for_tcp => http_only(),
        Gen::Host => Ok(j::perm_header(j::header(":authority", v, true))),
        Gen::Method if for_tcp => http_only(),
        Gen::Method => Ok(j::perm_header(j::header(":method", v, false))),
        Gen::Path if for_tcp => http_only(),
        Gen::Path if v.contains("{*}") || v.contains("{**}") => Ok(j::perm_uri_template(v)),
        Gen::Path => Ok(j::perm_url_path(j::string(v))),
        _ => Err(GenError::Value(format!("{key}: unimplemented"))),
    }
}

fn extended_principal(
    gen: Gen,
    key: &str,
    values: &[String],
    for_tcp: bool,
) -> Result<Value, GenError> {
    if for_tcp {
        return Err(http_only(key));
    }
    match gen {
        Gen::RequestPrincipal => {
            let mut or: Vec<Value> = values.iter().map(|v| request_principal(v)).collect();
            Ok(if or.len() == 1 {
                or.remove(0)
            } else {
                j::id_or(or)
            })
        }
        Gen::RequestAudiences => Ok(j::id_jwt_claims(&["aud".to_string()], values)),
        Gen::RequestPresenter => Ok(j::id_jwt_claims(&["azp".to_string()], values)),
        Gen::RequestClaims => {
            let claims = nested_brackets(key.trim_start_matches(ATTR_REQUEST_CLAIMS))
                .map_err(GenError::Value)?;
            Ok(j::id_jwt_claims(&claims, values))
        }
        _ => Err(GenError::Value(format!("{key}: unimplemented"))),
    }
}

/// `requestPrincipalGenerator`: `iss/sub` split at the last `/`, each side its own matcher.
fn request_principal(value: &str) -> Value {
    let any = || j::regex(".+");
    let (iss, sub, found) = match value.rfind('/') {
        Some(i) => (&value[..i], &value[i + 1..], true),
        None => (value, "", false),
    };
    let (m_iss, m_sub) = if value == "*" {
        (any(), any())
    } else if value.starts_with('*') {
        if found {
            let m_iss = if iss == "*" {
                any()
            } else {
                j::suffix(iss.trim_start_matches('*'), false)
            };
            (m_iss, j::exact(sub, false))
        } else {
            (any(), j::suffix(value.trim_start_matches('*'), false))
        }
    } else if value.ends_with('*') {
        if found {
            let m_sub = if sub == "*" {
                any()
            } else {
                j::prefix(sub.trim_end_matches('*'), false)
            };
            (j::exact(iss, false), m_sub)
        } else {
            (j::prefix(value.trim_end_matches('*'), false), any())
        }
    } else {
        (j::exact(iss, false), j::exact(sub, false))
    };
    j::id_and(vec![
        j::id_jwt_claim("iss", m_iss),
        j::id_jwt_claim("sub", m_sub),
    ])
}

/// `util.AddrStrToCidrRange`: the address as written (Envoy clears host bits), the length
/// given or the full length of the family.
fn cidr(v: &str) -> Result<Value, String> {
    let bad = || format!("invalid IP address or CIDR {v:?}");
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (v, None),
    };
    let ip: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => {
            // netip.ParsePrefix: decimal digits only, no sign, no leading zeros.
            if l.is_empty()
                || !l.bytes().all(|b| b.is_ascii_digit())
                || (l.len() > 1 && l.starts_with('0'))
            {
                return Err(bad());
            }
            let n: u8 = l.parse().map_err(|_| bad())?;
            if n > max {
                return Err(bad());
            }
            n
        }
    };
    Ok(j::cidr(&ip.to_string(), len))
}

/// `convertToPort`.
fn port(v: &str) -> Result<u16, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port {v}"));
    }
    v.parse::<u16>().map_err(|_| format!("invalid port {v}"))
}

/// `extractNameInBrackets`.
fn bracketed(s: &str) -> Result<&str, String> {
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("expecting format [<NAME>], but found {s}"))
}

/// `extractNameInNestedBrackets`.
fn nested_brackets(s: &str) -> Result<Vec<String>, String> {
    let b = s.as_bytes();
    let end_of = |begin: usize| -> Option<usize> {
        if begin >= b.len() || b[begin] != b'[' {
            return None;
        }
        for (i, c) in b.iter().enumerate().skip(begin + 1) {
            match c {
                b'[' => return None,
                b']' => return Some(i),
                _ => {}
            }
        }
        None
    };
    let mut claims = Vec::new();
    let mut begin = 0;
    while begin < b.len() {
        match end_of(begin) {
            Some(end) => {
                claims.push(s[begin + 1..end].to_string());
                begin = end + 1;
            }
            None => return Ok(vec![bracketed(s)?.to_string()]),
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerguard_filter::istio::{AuthzOperation, AuthzSource, RuleFrom, RuleTo};
    use serde_json::json;

    fn rule(
        from: Option<AuthzSource>,
        to: Option<AuthzOperation>,
        when: Vec<(&str, &[&str])>,
    ) -> AuthzRule {
        let strs = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        AuthzRule {
            from: from.map(|s| vec![RuleFrom { source: Some(s) }]),
            to: to.map(|o| vec![RuleTo { operation: Some(o) }]),
            when: (!when.is_empty()).then(|| {
                when.iter()
                    .map(|(k, v)| AuthzCondition {
                        key: k.to_string(),
                        values: strs(v),
                        not_values: None,
                    })
                    .collect()
            }),
        }
    }

    fn s(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn http_only_fields_drop_an_allow_rule_on_tcp_and_vanish_from_a_deny_rule() -> Result<(), String>
    {
        let op = AuthzOperation {
            methods: s(&["GET"]),
            ports: s(&["9000"]),
            ..Default::default()
        };
        let m = Model::new("foo", &rule(None, Some(op), vec![])).map_err(|e| format!("{e:?}"))?;
        assert!(m
            .generate(true, RbacAction::Allow, Strictness::AsIstiod)
            .is_err());
        let deny = m
            .generate(true, RbacAction::Deny, Strictness::AsIstiod)
            .map_err(|e| e.to_string())?;
        assert_eq!(
            deny["permissions"],
            json!([{"and_rules": {"rules": [{"or_rules": {"rules": [{"destination_port": 9000}]}}]}}])
        );
        assert_eq!(
            deny["principals"],
            json!([{"and_ids": {"ids": [{"any": true}]}}])
        );
        // HTTP: the method is kept, host first as Istio orders it.
        let http = m
            .generate(false, RbacAction::Allow, Strictness::AsIstiod)
            .map_err(|e| e.to_string())?;
        assert_eq!(
            http["permissions"][0]["and_rules"]["rules"][0]["or_rules"]["rules"][0]["header"]
                ["name"],
            ":method"
        );
        Ok(())
    }

    #[test]
    fn a_deny_rule_with_only_a_header_condition_matches_every_tcp_connection() -> Result<(), String>
    {
        let m = Model::new(
            "foo",
            &rule(None, None, vec![("request.headers[X-Role]", &["admin"])]),
        )
        .map_err(|e| format!("{e:?}"))?;
        let tcp = m
            .generate(true, RbacAction::Deny, Strictness::AsIstiod)
            .map_err(|e| e.to_string())?;
        assert_eq!(
            tcp["principals"],
            json!([{"and_ids": {"ids": [{"any": true}]}}])
        );
        let http = m
            .generate(false, RbacAction::Deny, Strictness::AsIstiod)
            .map_err(|e| e.to_string())?;
        assert_eq!(
            http["principals"][0]["and_ids"]["ids"][0],
            json!({"or_ids": {"ids": [{"header": {"name": "X-Role", "string_match": {"exact": "admin"}}}]}})
        );
        Ok(())
    }

    #[test]
    fn sources_use_direct_and_forwarded_addresses_and_the_san() -> Result<(), String> {
        let src = AuthzSource {
            ip_blocks: s(&["127.10.0.7/16"]),
            not_remote_ip_blocks: s(&["::1"]),
            namespaces: s(&["team-*"]),
            not_principals: s(&["*"]),
            service_accounts: s(&["sleep"]),
            ..Default::default()
        };
        let m = Model::new("foo", &rule(Some(src), None, vec![])).map_err(|e| format!("{e:?}"))?;
        let p = m
            .generate(false, RbacAction::Allow, Strictness::AsIstiod)
            .map_err(|e| e.to_string())?;
        let ids = &p["principals"][0]["and_ids"]["ids"];
        assert_eq!(
            ids[0],
            json!({"not_id": {"or_ids": {"ids": [{"authenticated": {"principal_name": {"safe_regex": {"regex": ".+"}}}}]}}})
        );
        assert_eq!(
            ids[1]["or_ids"]["ids"][0]["authenticated"]["principal_name"]["safe_regex"]["regex"],
            r"spiffe://.+/ns/foo/(.+/|)sa/sleep(/.+)?"
        );
        assert_eq!(
            ids[2]["or_ids"]["ids"][0]["authenticated"]["principal_name"]["safe_regex"]["regex"],
            ".*/ns/team-.*/.*"
        );
        assert_eq!(
            ids[3],
            json!({"not_id": {"or_ids": {"ids": [{"remote_ip": {"address_prefix": "::1", "prefix_len": 128}}]}}})
        );
        assert_eq!(
            ids[4],
            json!({"or_ids": {"ids": [{"direct_remote_ip": {"address_prefix": "127.10.0.7", "prefix_len": 16}}]}})
        );
        Ok(())
    }

    #[test]
    fn unknown_when_keys_are_refused() {
        assert!(matches!(
            Model::new("foo", &rule(None, None, vec![("destination.name", &["x"])])),
            Err(NewError::Unknown(_))
        ));
        assert!(matches!(
            Model::new(
                "foo",
                &rule(
                    None,
                    None,
                    vec![("experimental.envoy.filters.a[b]", &["x"])]
                )
            ),
            Err(NewError::Unsupported(_))
        ));
    }

    #[test]
    fn nested_claims_and_bad_cidrs() {
        assert_eq!(
            nested_brackets("[a][b]"),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(nested_brackets("[a]"), Ok(vec!["a".to_string()]));
        assert!(cidr("1.2.3.4/33").is_err());
        assert!(cidr("1.2.3.4/08").is_err());
        assert_eq!(port("65535"), Ok(65535));
        assert!(port("+80").is_err());
    }
}
