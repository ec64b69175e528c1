//! A slow, obviously-correct model of what the filter decides for the rules [`crate::gen`]
//! generates: PERMISSIVE mTLS, ALLOW / DENY / AUDIT rules on principals, methods and paths,
//! with exact, prefix, suffix and presence values. Written from the documented semantics
//! (docs/istio-semantics.md; Istio's generated Envoy RBAC matchers), not from the engine:
//! no index, no fast path, every rule of every policy checked in order.

use peerguard_filter::schema::{
    Action, Field, MtlsMode, PathMatch, Peer, PolicyRef, Reason, Rule, RuleRef, StrMatch,
    WorkloadPolicy,
};

/// What the model decides; `audit` is the first AUDIT rule that matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reason: Reason,
    pub audit: Option<RuleRef>,
}

/// Istio's BASE path normalization of a raw `:path`, or `None` when the result would not be
/// an absolute path (Envoy refuses such requests before any filter, so they are not modelled).
///
/// 1. Authorization sees the path without query and fragment.
/// 2. `\` is `/`; `%XX` is decoded when it encodes an RFC 3986 unreserved character
///    (`A-Z a-z 0-9 - . _ ~`); every other escape stays as written (`%2F` too);
///    `"<>^`{|}` are percent-encoded.
/// 3. `.` and `..` segments are resolved as a stack of segments: `.` is dropped, `..` drops the
///    segment before it (none at the root), and a path ending in `.` or `..` keeps a trailing
///    `/`. Empty segments (`//`) are segments like any other (no slash merging in BASE).
pub fn normalize(raw: &str) -> Option<String> {
    let cut = raw.find(['?', '#']).unwrap_or(raw.len());
    let path = &raw.as_bytes()[..cut];

    let mut decoded = Vec::new();
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'\\' {
            decoded.push(b'/');
            i += 1;
            continue;
        }
        if b == b'%'
            && i + 2 < path.len()
            && path[i + 1].is_ascii_hexdigit()
            && path[i + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&path[i + 1..i + 3]).ok()?;
            let c = u8::from_str_radix(hex, 16).ok()?;
            if c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_' || c == b'~' {
                decoded.push(c);
                i += 3;
                continue;
            }
        }
        // Envoy's canonicalizer percent-encodes these (upper-case hex).
        if b"\"<>^`{|}".contains(&b) {
            decoded.extend_from_slice(format!("%{b:02X}").as_bytes());
            i += 1;
            continue;
        }
        decoded.push(b);
        i += 1;
    }
    let decoded = String::from_utf8(decoded).ok()?;
    let rest = decoded.strip_prefix('/')?;

    let segments: Vec<&str> = rest.split('/').collect();
    let mut stack: Vec<&str> = Vec::new();
    for (k, segment) in segments.iter().enumerate() {
        let last = k + 1 == segments.len();
        match *segment {
            "." => {}
            ".." => {
                stack.pop();
            }
            other => {
                stack.push(other);
                continue;
            }
        }
        if last {
            stack.push("");
        }
    }
    Some(format!("/{}", stack.join("/")))
}

const SPIFFE: &str = "spiffe://";

/// A `principals` value against one URI SAN, as the Envoy matcher Istio generates for it:
/// exact `spiffe://<v>`, prefix `spiffe://<v>`, regex `spiffe://.*<v>`, regex `.+`.
fn principal_matches(m: &StrMatch, san: &str) -> bool {
    match m {
        StrMatch::Exact(v) => san == format!("{SPIFFE}{v}"),
        StrMatch::Prefix(v) => san.starts_with(&format!("{SPIFFE}{v}")),
        StrMatch::Suffix(v) => san.starts_with(SPIFFE) && san[SPIFFE.len()..].ends_with(v.as_str()),
        StrMatch::Presence => !san.is_empty(),
    }
}

/// A header matcher (`:method`): `*` is Envoy's `present_match`, true for any present value.
fn method_matches(m: &StrMatch, method: &str) -> bool {
    match m {
        StrMatch::Exact(v) => method == v,
        StrMatch::Prefix(v) => method.starts_with(v.as_str()),
        StrMatch::Suffix(v) => method.ends_with(v.as_str()),
        StrMatch::Presence => true,
    }
}

/// A `paths` string value against the normalized path.
fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Str(StrMatch::Exact(v)) => path == v,
        PathMatch::Str(StrMatch::Prefix(v)) => path.starts_with(v.as_str()),
        PathMatch::Str(StrMatch::Suffix(v)) => path.ends_with(v.as_str()),
        PathMatch::Str(StrMatch::Presence) => !path.is_empty(),
        PathMatch::Template(_) => panic!("the reference does not model path templates"),
    }
}

/// `values`: at least one holds (or there are none); `not_values`: none holds.
fn field<T>(f: &Field<T>, holds: impl Fn(&T) -> bool) -> bool {
    let mut any_value = f.values.is_empty();
    for v in &f.values {
        if holds(v) {
            any_value = true;
        }
    }
    let mut any_not_value = false;
    for v in &f.not_values {
        if holds(v) {
            any_not_value = true;
        }
    }
    any_value && !any_not_value
}

struct Req<'a> {
    sans: &'a [String],
    method: &'a str,
    path: &'a str,
}

fn rule_matches(rule: &Rule, req: &Req) -> bool {
    assert!(rule.when.is_empty(), "the reference does not model `when`");
    let mut from_ok = true;
    if let Some(sources) = rule.from.as_ref().filter(|s| !s.is_empty()) {
        from_ok = false;
        for s in sources {
            let modelled = s.namespaces.is_empty()
                && s.service_accounts.is_empty()
                && s.trust_domains.is_empty()
                && s.request_principals.is_empty()
                && s.ip_blocks.is_empty()
                && s.remote_ip_blocks.is_empty();
            assert!(modelled, "the reference models principals only");
            // Envoy's `authenticated` matcher: some URI SAN of the peer matches the value.
            if field(&s.principals, |m| {
                req.sans.iter().any(|san| principal_matches(m, san))
            }) {
                from_ok = true;
            }
        }
    }
    let mut to_ok = true;
    if let Some(operations) = rule.to.as_ref().filter(|o| !o.is_empty()) {
        to_ok = false;
        for o in operations {
            assert!(
                o.hosts.is_empty() && o.ports.is_empty(),
                "the reference models methods and paths only"
            );
            if field(&o.methods, |m| method_matches(m, req.method))
                && field(&o.paths, |m| path_matches(m, req.path))
            {
                to_ok = true;
            }
        }
    }
    from_ok && to_ok
}

/// The first rule of a policy with `action` that matches, in policy order then rule order.
fn first_match(policy: &WorkloadPolicy, action: Action, req: &Req) -> Option<RuleRef> {
    for p in &policy.policies {
        assert!(
            !p.dry_run && p.invalid.is_none(),
            "the reference does not model dry-run or invalid policies"
        );
        if p.action != action {
            continue;
        }
        for (i, rule) in p.rules.iter().enumerate() {
            if rule_matches(rule, req) {
                return Some(RuleRef {
                    policy: PolicyRef {
                        namespace: p.policy.namespace.clone(),
                        name: p.policy.name.clone(),
                    },
                    rule: Some(i),
                });
            }
        }
    }
    None
}

/// The decision for an HTTP request with these (already decoded) headers from `peer`, or
/// `None` when the request is outside the model (its path does not normalize to an absolute
/// path).
pub fn decide(
    policy: &WorkloadPolicy,
    peer: Option<&Peer>,
    headers: &[(String, String)],
) -> Option<Verdict> {
    assert!(
        policy.mtls.default.mode == MtlsMode::Permissive && policy.mtls.ports.is_empty(),
        "the reference models PERMISSIVE only"
    );
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let method = header(":method").unwrap_or_default();
    let path = normalize(header(":path").unwrap_or_default())?;

    // The listener accepts plaintext (PERMISSIVE) and certificates with a URI SAN in the
    // trust domain (or an alias).
    let sans: &[String] = peer.map_or(&[], |p| p.uri_sans.as_slice());
    if let Some(peer) = peer {
        let trusted = std::iter::once(&policy.trust_domain)
            .chain(&policy.trust_domain_aliases)
            .any(|td| {
                peer.uri_sans
                    .iter()
                    .any(|san| san.starts_with(&format!("{SPIFFE}{td}/")))
            });
        if !trusted {
            let reason = Reason::UntrustedPeer {
                uri_sans: peer.uri_sans.clone(),
            };
            return Some(Verdict {
                allowed: false,
                reason,
                audit: None,
            });
        }
    }

    let req = Req {
        sans,
        method,
        path: &path,
    };
    let audit = first_match(policy, Action::Audit, &req);
    if let Some(matched) = first_match(policy, Action::Deny, &req) {
        return Some(Verdict {
            allowed: false,
            reason: Reason::Denied { matched },
            audit,
        });
    }
    if !policy.policies.iter().any(|p| p.action == Action::Allow) {
        return Some(Verdict {
            allowed: true,
            reason: Reason::NoAllowPolicies,
            audit,
        });
    }
    Some(match first_match(policy, Action::Allow, &req) {
        Some(matched) => Verdict {
            allowed: true,
            reason: Reason::Allowed { matched },
            audit,
        },
        None => Verdict {
            allowed: false,
            reason: Reason::NoAllowMatched,
            audit,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3986 5.4 examples (paths only) and Istio's normalization page examples.
    #[test]
    fn normalization_examples() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/a/b/c/./../../g", Some("/a/g")),
            ("/mid/content=5/../6", Some("/mid/6")),
            ("/a/b/c/..", Some("/a/b/")),
            ("/a/b/c/.", Some("/a/b/c/")),
            ("/a/../../../g", Some("/g")),
            ("/a//../b", Some("/a/b")),
            ("//a/../b", Some("//b")),
            ("/a/.//b", Some("/a//b")),
            ("/foo/..%2F", Some("/foo/..%2F")),
            ("/%2e%2E/%41%7e", Some("/A~")),
            ("/a%2fb/%252e", Some("/a%2fb/%252e")),
            ("\\a\\..\\b", Some("/b")),
            ("/x?/../y#z", Some("/x")),
            ("/..", Some("/")),
            ("/%", Some("/%")),
            ("/%4", Some("/%4")),
            ("/%+5", Some("/%+5")),
            ("a/../b", None),
            ("", None),
            ("?/x", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).as_deref(), *want, "normalize({raw:?})");
        }
    }

    #[test]
    fn principal_forms() {
        let san = "spiffe://cluster.local/ns/foo/sa/sleep";
        assert!(principal_matches(
            &StrMatch::Exact("cluster.local/ns/foo/sa/sleep".into()),
            san
        ));
        assert!(principal_matches(
            &StrMatch::Prefix("cluster.local/ns/".into()),
            san
        ));
        assert!(principal_matches(
            &StrMatch::Suffix("/sa/sleep".into()),
            san
        ));
        assert!(principal_matches(&StrMatch::Suffix("".into()), san));
        assert!(!principal_matches(
            &StrMatch::Suffix("sleep".into()),
            "https://x/sleep"
        ));
        assert!(principal_matches(&StrMatch::Presence, "https://x/sleep"));
        assert!(!principal_matches(
            &StrMatch::Exact("cluster.local/ns/foo/sa/sleep".into()),
            "cluster.local/ns/foo/sa/sleep"
        ));
    }
}
