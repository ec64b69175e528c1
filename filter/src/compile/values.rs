//! Conversions of single policy values (strings as users write them) into schema values:
//! Istio string matches, ports, CIDRs, path templates, trust-domain alias expansion,
//! Go `strconv.ParseBool` and RFC 3339 timestamps.

use crate::schema::{Cidr, PathMatch, StrMatch};
use std::net::IpAddr;

/// Istio's string match, decided by the first and last character only (spec 4.8).
pub fn str_match(v: &str) -> StrMatch {
    if v == "*" {
        StrMatch::Presence
    } else if let Some(rest) = v.strip_prefix('*') {
        StrMatch::Suffix(rest.to_string())
    } else if let Some(rest) = v.strip_suffix('*') {
        StrMatch::Prefix(rest.to_string())
    } else {
        StrMatch::Exact(v.to_string())
    }
}

/// [`str_match`] reusing the allocation of `v`.
pub fn str_match_owned(mut v: String) -> StrMatch {
    if v == "*" {
        StrMatch::Presence
    } else if v.starts_with('*') {
        v.remove(0);
        StrMatch::Suffix(v)
    } else if v.ends_with('*') {
        v.pop();
        StrMatch::Prefix(v)
    } else {
        StrMatch::Exact(v)
    }
}

/// A decimal port 0–65535 (`convertToPort`).
pub fn port(v: &str) -> Result<u16, String> {
    v.trim()
        .parse::<u16>()
        .map_err(|_| format!("invalid port {v:?} (expected a decimal number 0-65535)"))
}

/// An address (`/32`, `/128`) or a CIDR block; host bits are cleared as Envoy does.
pub fn cidr(v: &str) -> Result<Cidr, String> {
    let bad = || format!("invalid IP address or CIDR {v:?}");
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => {
            let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
            let len: u8 = l.trim().parse().map_err(|_| bad())?;
            (addr, len)
        }
        None => {
            let addr: IpAddr = v.trim().parse().map_err(|_| bad())?;
            (addr, if addr.is_ipv4() { 32 } else { 128 })
        }
    };
    let addr = match addr {
        IpAddr::V4(a) => {
            if len > 32 {
                return Err(bad());
            }
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            if len > 128 {
                return Err(bad());
            }
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    Ok(Cidr {
        addr,
        prefix_len: len,
    })
}

/// A path value: a URI template when it uses `{*}`/`{**}` (spec 4.6; tokens as
/// [`crate::path::parse_template`] builds them), else a string match.
pub fn path(v: &str) -> Result<PathMatch, String> {
    match crate::path::parse_template(v) {
        Ok(Some(t)) => Ok(PathMatch::Template(t)),
        Ok(None) => Ok(PathMatch::Str(str_match(v))),
        Err(e) => Err(e.to_string()),
    }
}

/// Go `strconv.ParseBool`.
pub fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The trust-domain bundle: `[trustDomain, aliases...]` (`trustdomain.NewBundle`).
#[derive(Debug, Clone)]
pub struct Bundle {
    pub domains: Vec<String>,
}

const CLUSTER_LOCAL: &str = "cluster.local";

impl Bundle {
    pub fn new(trust_domain: &str, aliases: &[String]) -> Self {
        let mut domains = vec![trust_domain.to_string()];
        domains.extend(aliases.iter().cloned());
        Bundle { domains }
    }

    /// `ReplaceTrustDomainAliases` (spec 4.9): a five-part principal whose trust domain is
    /// not `*` and is in the bundle (exact/prefix/suffix) or is `cluster.local` becomes one
    /// value per bundle member; anything else is kept as written.
    pub fn expand_principal(&self, principal: &str, out: &mut Vec<String>) {
        // Five `/` parts: `td/ns/<ns>/sa/<sa>`.
        let five_parts = principal.bytes().filter(|b| *b == b'/').count() == 4;
        let (td, rest) = principal.split_once('/').unwrap_or((principal, ""));
        if !five_parts
            || td == "*"
            || !(td == CLUSTER_LOCAL || self.domains.iter().any(|d| td_match(td, d)))
        {
            out.push(principal.to_string());
            return;
        }
        let start = out.len();
        for member in &self.domains {
            let value = if suffix_match(td, member) {
                principal.to_string()
            } else {
                let mut v = String::with_capacity(member.len() + 1 + rest.len());
                v.push_str(member);
                v.push('/');
                v.push_str(rest);
                v
            };
            if !out[start..].contains(&value) {
                out.push(value);
            }
        }
    }

    /// `ExpandTrustDomainAliases`: a trust-domain value equal to a bundle member stands for
    /// every member.
    pub fn expand_trust_domain(&self, td: &str, out: &mut Vec<String>) {
        if self.domains.iter().any(|d| d == td) {
            for d in &self.domains {
                if !out.contains(d) {
                    out.push(d.clone());
                }
            }
        } else {
            out.push(td.to_string());
        }
    }
}

/// Go `stringMatch` for one pattern: `a` may carry a leading or trailing `*`.
fn td_match(a: &str, member: &str) -> bool {
    a == member || member == "*" || prefix_match(a, member) || suffix_match(a, member)
}

fn prefix_match(a: &str, pattern: &str) -> bool {
    a.strip_suffix('*').is_some_and(|p| pattern.starts_with(p))
}

fn suffix_match(a: &str, pattern: &str) -> bool {
    a.strip_prefix('*').is_some_and(|s| pattern.ends_with(s))
}

/// RFC 3339 timestamps are read where metadata is validated; re-exported for callers here.
pub use crate::istio::time::rfc3339_seconds;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TemplateSegment;

    #[test]
    fn string_matches_by_first_and_last_character() {
        let cases = [
            ("abc", StrMatch::Exact("abc".into())),
            ("abc*", StrMatch::Prefix("abc".into())),
            ("*abc", StrMatch::Suffix("abc".into())),
            ("*", StrMatch::Presence),
            ("*/ns/foo/sa/*", StrMatch::Suffix("/ns/foo/sa/*".into())),
            ("a*b", StrMatch::Exact("a*b".into())),
        ];
        for (input, want) in cases {
            assert_eq!(str_match(input), want, "{input}");
            assert_eq!(str_match_owned(input.to_string()), want, "{input}");
        }
    }

    #[test]
    fn ports_and_cidrs() {
        assert_eq!(port("9000"), Ok(9000));
        assert!(port("65536").is_err());
        assert!(port("http").is_err());
        let c = cidr("127.6.7.9/24").unwrap();
        assert_eq!(c.addr, "127.6.7.0".parse::<IpAddr>().unwrap());
        assert_eq!(c.prefix_len, 24);
        assert_eq!(cidr("10.0.0.1").unwrap().prefix_len, 32);
        assert_eq!(cidr("::1").unwrap().prefix_len, 128);
        assert!(cidr("10.0.0.0/33").is_err());
        assert!(cidr("ten").is_err());
    }

    #[test]
    fn path_templates() {
        assert_eq!(
            path("/ip").unwrap(),
            PathMatch::Str(StrMatch::Exact("/ip".into()))
        );
        assert_eq!(
            path("/user/profile/*").unwrap(),
            PathMatch::Str(StrMatch::Prefix("/user/profile/".into()))
        );
        assert_eq!(
            path("/allow/admin/{**}").unwrap(),
            PathMatch::Template(vec![
                TemplateSegment::Literal("/allow/admin/".into()),
                TemplateSegment::Any
            ])
        );
        assert!(path("/a/{**}/{*}").is_err());
        assert!(path("/a/x{*}").is_err());
    }

    #[test]
    fn go_parse_bool() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false));
        }
        for bad in ["yes", "tRUE", "", " true"] {
            assert_eq!(parse_go_bool(bad), None);
        }
    }

    fn expand(b: &Bundle, p: &str) -> Vec<String> {
        let mut out = Vec::new();
        b.expand_principal(p, &mut out);
        out
    }

    #[test]
    fn trust_domain_alias_expansion() {
        let b = Bundle::new("new-td", &["old-td".to_string()]);
        let both = vec![
            "new-td/ns/a/sa/b".to_string(),
            "old-td/ns/a/sa/b".to_string(),
        ];
        assert_eq!(expand(&b, "old-td/ns/a/sa/b"), both);
        assert_eq!(expand(&b, "new-td/ns/a/sa/b"), both);
        assert_eq!(expand(&b, "cluster.local/ns/a/sa/b"), both);
        // Not in the bundle: kept as written.
        assert_eq!(expand(&b, "other/ns/a/sa/b"), vec!["other/ns/a/sa/b"]);
        // Wildcard trust domain and other shapes: untouched.
        assert_eq!(expand(&b, "*/ns/a/sa/b"), vec!["*/ns/a/sa/b"]);
        assert_eq!(expand(&b, "old-td/ns/a"), vec!["old-td/ns/a"]);
        assert_eq!(expand(&b, "*"), vec!["*"]);
        // A suffix trust domain is kept for the members it matches.
        assert_eq!(expand(&b, "*-td/ns/a/sa/b"), vec!["*-td/ns/a/sa/b"]);
        // No aliases: cluster.local points at the mesh trust domain.
        let single = Bundle::new("foo.bar", &[]);
        assert_eq!(
            expand(&single, "cluster.local/ns/a/sa/b"),
            vec!["foo.bar/ns/a/sa/b"]
        );
        let mut tds = Vec::new();
        b.expand_trust_domain("old-td", &mut tds);
        assert_eq!(tds, vec!["new-td", "old-td"]);
        let mut tds = Vec::new();
        b.expand_trust_domain("x", &mut tds);
        assert_eq!(tds, vec!["x"]);
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_seconds("2020-01-01T00:00:00Z"), Some(1_577_836_800));
        assert_eq!(
            rfc3339_seconds("2020-01-01T01:00:00+01:00"),
            Some(1_577_836_800)
        );
        assert_eq!(
            rfc3339_seconds("2020-01-01T00:00:00.5Z"),
            Some(1_577_836_800)
        );
        assert_eq!(rfc3339_seconds("yesterday"), None);
    }
}
