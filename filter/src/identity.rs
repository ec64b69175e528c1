//! SPIFFE identities and Istio's principal string matching.
//!
//! Authorization never parses a peer identity strictly: Envoy's RBAC `authenticated`
//! matcher compares regexes and string matchers with the raw URI SAN (spec 4.8, 4.9, 7.8).
//! The functions here reproduce the matchers Istio generates, on the raw SAN, without
//! building regexes:
//! - principals: `spiffe://<v>` exact/prefix, suffix → `spiffe://.*<v>`, `*` → `.+`;
//! - namespaces: `.*/ns/<glob>/.*` (the glob's `*` becomes `.*`);
//! - service accounts: `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`;
//! - trust domains: the part between `spiffe://` and the first `/`.
//!
//! All matches are full matches (RE2 `FullMatch`, as Envoy's `safe_regex`).

use crate::schema::StrMatch;
use std::fmt;
use std::str::FromStr;

pub const SPIFFE_SCHEME: &str = "spiffe://";

/// The principal of a URI SAN: the SAN without `spiffe://`, or `None` for a non-SPIFFE SAN.
pub fn strip_spiffe(uri_san: &str) -> Option<&str> {
    uri_san.strip_prefix(SPIFFE_SCHEME)
}

/// Istio's four string-match forms on a present attribute (spec 4.8).
pub fn str_matches(m: &StrMatch, s: &str) -> bool {
    match m {
        StrMatch::Exact(v) => s == v,
        StrMatch::Prefix(v) => s.starts_with(v.as_str()),
        StrMatch::Suffix(v) => s.ends_with(v.as_str()),
        StrMatch::Presence => !s.is_empty(),
    }
}

/// As [`str_matches`], ASCII case-insensitive; `m` holds lower-case values (hosts).
pub fn str_matches_ignore_case(m: &StrMatch, s: &str) -> bool {
    let s = s.as_bytes();
    match m {
        StrMatch::Exact(v) => s.eq_ignore_ascii_case(v.as_bytes()),
        StrMatch::Prefix(v) => {
            s.len() >= v.len() && s[..v.len()].eq_ignore_ascii_case(v.as_bytes())
        }
        StrMatch::Suffix(v) => {
            s.len() >= v.len() && s[s.len() - v.len()..].eq_ignore_ascii_case(v.as_bytes())
        }
        StrMatch::Presence => !s.is_empty(),
    }
}

/// Does one URI SAN satisfy a `principals` value? Istio prepends `spiffe://` to exact and
/// prefix values, turns a suffix into the regex `spiffe://.*<suffix>` and `*` into `.+`,
/// so a non-SPIFFE SAN can only satisfy the presence form.
pub fn principal_matches(m: &StrMatch, uri_san: &str) -> bool {
    match (m, strip_spiffe(uri_san)) {
        (StrMatch::Presence, _) => !uri_san.is_empty(),
        (_, None) => false,
        (m, Some(principal)) => str_matches(m, principal),
    }
}

/// `namespaces` value (a glob, `*` = any characters) against a URI SAN: the regex
/// `.*/ns/<glob>/.*` that Istio builds. The trust domain is not checked, and the SAN need
/// not be SPIFFE.
pub fn namespace_matches(glob: &str, uri_san: &str) -> bool {
    let literal = !glob.contains('*');
    for (i, _) in uri_san.match_indices("/ns/") {
        let rest = &uri_san[i + 4..];
        if literal {
            if rest.len() > glob.len()
                && rest.starts_with(glob)
                && rest.as_bytes()[glob.len()] == b'/'
            {
                return true;
            }
            continue;
        }
        for (j, _) in rest.match_indices('/') {
            if glob_match(glob, &rest[..j]) {
                return true;
            }
        }
    }
    false
}

/// `serviceAccounts` value `ns/sa` against a URI SAN: Istio's
/// `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`, so `sleep` does not match `sleep-v2` and any
/// trust domain is accepted. A value without `/` matches nothing (compile qualifies it).
pub fn service_account_matches(ns_sa: &str, uri_san: &str) -> bool {
    let (Some((ns, sa)), Some(rest)) = (ns_sa.split_once('/'), strip_spiffe(uri_san)) else {
        return false;
    };
    for (i, _) in rest.match_indices("/ns/") {
        if i == 0 {
            continue; // `.+` before `/ns/` needs at least one character
        }
        let Some(after) = rest[i + 4..]
            .strip_prefix(ns)
            .and_then(|a| a.strip_prefix('/'))
        else {
            continue;
        };
        // `(.+/|)`: nothing, or at least one character followed by `/`.
        let starts = std::iter::once(0).chain(
            after
                .match_indices('/')
                .map(|(k, _)| k + 1)
                .filter(|&k| k >= 2),
        );
        for k in starts {
            let Some(tail) = after[k..]
                .strip_prefix("sa/")
                .and_then(|t| t.strip_prefix(sa))
            else {
                continue;
            };
            if tail.is_empty() || (tail.len() > 1 && tail.starts_with('/')) {
                return true;
            }
        }
    }
    false
}

/// The trust-domain part of a SPIFFE URI SAN (`spiffe://<td>/...`); `None` when the SAN is
/// not SPIFFE or has no path (then no trust-domain matcher can match, as Istio's matchers
/// all require `spiffe://<td>/`).
pub fn trust_domain(uri_san: &str) -> Option<&str> {
    strip_spiffe(uri_san)
        .and_then(|r| r.split_once('/'))
        .map(|(td, _)| td)
}

/// Glob with `*` only (any run of characters, possibly empty); everything else literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A well-formed Istio workload identity `td/ns/<ns>/sa/<sa>` (Istio's `ParseIdentity`).
/// For display and tools; authorization matches raw SANs (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("identity {0:?} does not start with spiffe://")]
    NotSpiffe(String),
    #[error("identity {0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")]
    Malformed(String),
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = strip_spiffe(s).ok_or_else(|| SpiffeIdError::NotSpiffe(s.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] if !td.is_empty() && !ns.is_empty() && !sa.is_empty() => {
                Ok(SpiffeId {
                    trust_domain: (*td).to_string(),
                    namespace: (*ns).to_string(),
                    service_account: (*sa).to_string(),
                })
            }
            _ => Err(SpiffeIdError::Malformed(s.to_string())),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SPIFFE_SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(s: &str) -> StrMatch {
        StrMatch::Exact(s.into())
    }
    fn pre(s: &str) -> StrMatch {
        StrMatch::Prefix(s.into())
    }
    fn suf(s: &str) -> StrMatch {
        StrMatch::Suffix(s.into())
    }

    #[test]
    fn principal_forms_on_uri_sans() {
        let sleep = "spiffe://cluster.local/ns/foo/sa/sleep";
        let cases: &[(StrMatch, &str, bool)] = &[
            (ex("cluster.local/ns/foo/sa/sleep"), sleep, true),
            (ex("cluster.local/ns/foo/sa/slee"), sleep, false),
            (ex("spiffe://cluster.local/ns/foo/sa/sleep"), sleep, false),
            (pre("cluster.local/ns/foo/"), sleep, true),
            (pre("cluster.local/ns/bar/"), sleep, false),
            (suf("/sa/sleep"), sleep, true),
            (suf("/sa/sleep"), "spiffe:///sa/sleep", true),
            (suf("/sa/sleep"), "https://x/sa/sleep", false),
            // A leading * is a suffix match on the literal text, not "contains".
            (suf("/ns/foo/sa/*"), sleep, false),
            (StrMatch::Presence, sleep, true),
            // `.+` on the raw SAN: presence accepts a non-SPIFFE SAN too.
            (StrMatch::Presence, "https://sleep.example/", true),
            (ex("sleep.example/"), "https://sleep.example/", false),
            (
                pre("cluster.local/ns/foo"),
                "https://cluster.local/ns/foo/sa/sleep",
                false,
            ),
            // Extra path segments do not break string matchers.
            (
                pre("cluster.local/ns/foo/"),
                "spiffe://cluster.local/ns/foo",
                false,
            ),
            (StrMatch::Presence, "spiffe://cluster.local/ns/foo", true),
        ];
        for (m, san, want) in cases {
            assert_eq!(principal_matches(m, san), *want, "{m:?} vs {san}");
        }
    }

    #[test]
    fn namespace_globs_on_ns_segment() {
        let cases: &[(&str, &str, bool)] = &[
            ("foo", "spiffe://cluster.local/ns/foo/sa/sleep", true),
            ("foo", "spiffe://cluster.local/ns/foobar/sa/sleep", false),
            ("fo", "spiffe://cluster.local/ns/foo/sa/sleep", false),
            ("team-*", "spiffe://td/ns/team-a/sa/x", true),
            ("team-*", "spiffe://td/ns/other/sa/x", false),
            ("*-prod", "spiffe://td/ns/web-prod/sa/x", true),
            ("*", "spiffe://td/ns/anything/sa/x", true),
            // Any trust domain; the segment must be followed by `/`.
            ("foo", "spiffe://other-td/ns/foo/sa/x", true),
            ("foo", "spiffe://cluster.local/ns/foo", false),
            ("foo", "spiffe://cluster.local/sa/foo/ns/bar/", false),
        ];
        for (glob, san, want) in cases {
            assert_eq!(namespace_matches(glob, san), *want, "{glob} vs {san}");
        }
    }

    #[test]
    fn service_account_regex() {
        let cases: &[(&str, &str, bool)] = &[
            ("foo/sleep", "spiffe://cluster.local/ns/foo/sa/sleep", true),
            (
                "foo/sleep",
                "spiffe://cluster.local/ns/foo/sa/sleep-v2",
                false,
            ),
            ("foo/sleep", "spiffe://cluster.local/ns/bar/sa/sleep", false),
            ("foo/sleep", "spiffe://any-td/ns/foo/sa/sleep", true),
            ("foo/sleep", "spiffe://td/ns/foo/x/sa/sleep", true),
            ("foo/sleep", "spiffe://td/ns/foo/sa/sleep/extra", true),
            ("foo/sleep", "spiffe://td/ns/foo/sa/sleep/", false),
            ("foo/sleep", "spiffe:///ns/foo/sa/sleep", false),
            ("foo/sleep", "https://td/ns/foo/sa/sleep", false),
            ("sleep", "spiffe://td/ns/foo/sa/sleep", false),
        ];
        for (v, san, want) in cases {
            assert_eq!(service_account_matches(v, san), *want, "{v} vs {san}");
        }
    }

    #[test]
    fn trust_domain_part() {
        assert_eq!(trust_domain("spiffe://td/ns/a/sa/b"), Some("td"));
        assert_eq!(trust_domain("spiffe://td"), None);
        assert_eq!(trust_domain("https://td/ns/a"), None);
    }

    #[test]
    fn glob() {
        let cases: &[(&str, &str, bool)] = &[
            ("a*c", "abbc", true),
            ("a*c", "abbd", false),
            ("*", "", true),
            ("a", "a", true),
            ("a*", "b", false),
            ("*a*b", "xaab", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p, t), *want, "{p} vs {t}");
        }
    }

    #[test]
    fn host_case_insensitive() {
        assert!(str_matches_ignore_case(&ex("example.com"), "Example.COM"));
        assert!(str_matches_ignore_case(
            &pre("example.com:"),
            "EXAMPLE.com:80"
        ));
        assert!(str_matches_ignore_case(&suf(".com"), "a.COM"));
        assert!(!str_matches_ignore_case(
            &ex("example.com"),
            "example.com:80"
        ));
        assert!(!str_matches(&ex("GET"), "get"));
    }

    #[test]
    fn spiffe_id_roundtrip() {
        let id: Result<SpiffeId, _> = "spiffe://td/ns/a/sa/b".parse();
        assert_eq!(
            id.as_ref().map(|i| i.to_string()).ok(),
            Some("spiffe://td/ns/a/sa/b".to_string())
        );
        assert!(matches!(
            "td/ns/a/sa/b".parse::<SpiffeId>(),
            Err(SpiffeIdError::NotSpiffe(_))
        ));
        assert!(matches!(
            "spiffe://td/ns/a".parse::<SpiffeId>(),
            Err(SpiffeIdError::Malformed(_))
        ));
    }
}
