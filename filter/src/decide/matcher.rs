//! One rule against one request (spec 4.4–4.8). A rule is three clauses — any `from`
//! source, any `to` operation, every `when` condition — and each source/operation/condition
//! is a conjunction of fields, each field a list of alternatives (`values` OR-ed, minus
//! `not_values`).
//!
//! Absent attributes (plaintext: no principal; TCP: no host; no JWT ever) make every
//! positive alternative false, so `values` fails and `not_values` holds, as Envoy's
//! `not_id`/`not_rule` around matchers that fail on missing data.

use crate::identity::{
    namespace_matches, principal_matches, service_account_matches, str_matches,
    str_matches_ignore_case, trust_domain,
};
use crate::path::template_matches;
use crate::schema::{
    Cidr, Condition, Field, Operation, PathMatch, Request, Rule, Source, StrMatch,
};
use std::net::IpAddr;

/// The request attributes, extracted once per decision.
pub(crate) struct Ctx<'r> {
    /// Empty for plaintext.
    pub uri_sans: &'r [String],
    /// The connection's direct peer (Envoy `direct_remote_ip`).
    pub source_ip: Option<IpAddr>,
    /// The original client per X-Forwarded-For and the trusted hops (Envoy `remote_ip`).
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub port: u16,
    pub sni: Option<&'r str>,
    pub http: Option<HttpCtx<'r>>,
}

pub(crate) struct HttpCtx<'r> {
    pub method: &'r str,
    /// The full `:path` as the filter was given it (Envoy normalized it already).
    pub full_path: &'r str,
    /// `full_path` without query: what `paths` match.
    pub path: &'r str,
    pub host: &'r str,
    pub headers: &'r [(String, String)],
}

impl<'r> Ctx<'r> {
    /// `trusted_hops`: `numTrustedProxies`, used only when `want_remote_ip` (some rule looks
    /// at `remoteIpBlocks`/`remote.ip`), so other requests do not parse X-Forwarded-For.
    pub fn new(req: &'r Request, trusted_hops: u32, want_remote_ip: bool) -> Self {
        let http = req.http.as_ref().map(|h| HttpCtx {
            method: &h.method,
            full_path: &h.path,
            path: crate::path::url_path(&h.path),
            host: &h.host,
            headers: &h.headers,
        });
        let remote_ip = match (&http, want_remote_ip) {
            (Some(h), true) => forwarded_client(h.headers, trusted_hops).or(req.source_ip),
            _ => req.source_ip,
        };
        Ctx {
            uri_sans: req.peer.as_ref().map_or(&[][..], |p| p.uri_sans.as_slice()),
            source_ip: req.source_ip,
            remote_ip,
            destination_ip: req.destination_ip,
            port: req.port,
            sni: req.sni.as_deref(),
            http,
        }
    }

    /// Every value of a header, one per occurrence: Envoy's RBAC matches them one by one
    /// and a rule matches when any does (CVE-2026-26308); a value is never split at `,`.
    /// `host` is looked up as `:authority`, as Envoy does; `:path`, `:method` and
    /// `:authority` come from the request line.
    fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'r str> + 's {
        let http = self.http.as_ref();
        let pseudo = match name {
            "host" | ":authority" => http.map(|h| h.host),
            ":path" => http.map(|h| h.full_path),
            ":method" => http.map(|h| h.method),
            _ => None,
        };
        let is_pseudo = matches!(name, "host" | ":authority" | ":path" | ":method");
        let listed = http
            .map_or(&[][..], |h| h.headers)
            .iter()
            .filter(move |(n, _)| !is_pseudo && n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        pseudo.into_iter().chain(listed)
    }
}

/// Envoy's trusted client address with `use_remote_address: true` and `hops` trusted
/// proxies: the X-Forwarded-For entry `hops` from the right of the list Envoy built (the
/// client's entries, then the direct peer it appended). `None` — the direct peer — when
/// `hops` is 0, the list is too short, or the entry is not an IP.
pub(crate) fn forwarded_client(headers: &[(String, String)], hops: u32) -> Option<IpAddr> {
    if hops == 0 {
        return None;
    }
    let xff: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        .flat_map(|(_, v)| v.split(','))
        .collect();
    let index = xff.len().checked_sub(1 + usize::try_from(hops).ok()?)?;
    xff.get(index)?.trim().parse().ok()
}

/// `values` (any) and `not_values` (none), with one predicate per alternative.
fn field<T>(f: &Field<T>, mut pred: impl FnMut(&T) -> bool) -> bool {
    (f.values.is_empty() || f.values.iter().any(&mut pred)) && !f.not_values.iter().any(pred)
}

fn cidr_contains(c: &Cidr, ip: Option<IpAddr>) -> bool {
    match (c.addr, ip) {
        (IpAddr::V4(net), Some(IpAddr::V4(a))) => {
            let bits = u32::from(c.prefix_len.min(32));
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(net) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(net), Some(IpAddr::V6(a))) => {
            let bits = u32::from(c.prefix_len.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(net) & mask == u128::from(a) & mask
        }
        // Envoy's CIDR ranges never match across address families.
        _ => false,
    }
}

fn principal(ctx: &Ctx, m: &StrMatch) -> bool {
    ctx.uri_sans.iter().any(|san| principal_matches(m, san))
}

fn namespace(ctx: &Ctx, glob: &str) -> bool {
    ctx.uri_sans.iter().any(|san| namespace_matches(glob, san))
}

fn service_account(ctx: &Ctx, v: &str) -> bool {
    ctx.uri_sans
        .iter()
        .any(|san| service_account_matches(v, san))
}

fn trust_domain_is(ctx: &Ctx, m: &StrMatch) -> bool {
    ctx.uri_sans
        .iter()
        .filter_map(|san| trust_domain(san))
        .any(|td| str_matches(m, td))
}

fn source(ctx: &Ctx, s: &Source) -> bool {
    field(&s.principals, |m| principal(ctx, m))
        && field(&s.namespaces, |g| namespace(ctx, g))
        && field(&s.service_accounts, |v| service_account(ctx, v))
        && field(&s.trust_domains, |m| trust_domain_is(ctx, m))
        // No RequestAuthentication in peerguard: the request principal is always absent.
        && field(&s.request_principals, |_| false)
        && field(&s.ip_blocks, |c| cidr_contains(c, ctx.source_ip))
        && field(&s.remote_ip_blocks, |c| cidr_contains(c, ctx.remote_ip))
}

fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Str(s) => str_matches(s, path),
        PathMatch::Template(t) => template_matches(t, path),
    }
}

fn operation(ctx: &Ctx, o: &Operation) -> bool {
    let http = ctx.http.as_ref();
    field(&o.hosts, |m| http.is_some_and(|h| host_matches(m, h.host)))
        && field(&o.ports, |p| *p == ctx.port)
        && field(&o.methods, |m| {
            http.is_some_and(|h| header_value_matches(m, h.method))
        })
        && field(&o.paths, |m| http.is_some_and(|h| path_matches(m, h.path)))
}

/// Hosts: `*` is Envoy's `present_match` on `:authority`, present on every HTTP request.
fn host_matches(m: &StrMatch, host: &str) -> bool {
    matches!(m, StrMatch::Presence) || str_matches_ignore_case(m, host)
}

/// Header matchers: `*` is `present_match` (an empty value is still present).
fn header_value_matches(m: &StrMatch, v: &str) -> bool {
    matches!(m, StrMatch::Presence) || str_matches(m, v)
}

fn condition(ctx: &Ctx, c: &Condition) -> bool {
    match c {
        Condition::RequestHeader { name, field: f } => field(f, |m| {
            ctx.header_values(name).any(|v| header_value_matches(m, v))
        }),
        Condition::SourceIp { field: f } => field(f, |c| cidr_contains(c, ctx.source_ip)),
        Condition::RemoteIp { field: f } => field(f, |c| cidr_contains(c, ctx.remote_ip)),
        Condition::DestinationIp { field: f } => field(f, |c| cidr_contains(c, ctx.destination_ip)),
        Condition::DestinationPort { field: f } => field(f, |p| *p == ctx.port),
        Condition::SourcePrincipal { field: f } => field(f, |m| principal(ctx, m)),
        Condition::SourceNamespace { field: f } => field(f, |g| namespace(ctx, g)),
        Condition::SourceServiceAccount { field: f } => field(f, |v| service_account(ctx, v)),
        Condition::SourceTrustDomain { field: f } => field(f, |m| trust_domain_is(ctx, m)),
        Condition::ConnectionSni { field: f } => {
            field(f, |m| ctx.sni.is_some_and(|s| str_matches(m, s)))
        }
        // Attributes peerguard never has (no JWT, no foreign dynamic metadata): absent.
        Condition::RequestAuth { field: f, .. } | Condition::EnvoyMetadata { field: f, .. } => {
            field(f, |_| false)
        }
    }
}

/// An empty `from`/`to` list is the same as an absent one (proto3 cannot tell them apart,
/// and Istio's model treats both as "any").
pub(crate) fn rule_matches(ctx: &Ctx, r: &Rule) -> bool {
    r.from
        .as_deref()
        .is_none_or(|f| f.is_empty() || f.iter().any(|s| source(ctx, s)))
        && r.to
            .as_deref()
            .is_none_or(|t| t.is_empty() || t.iter().any(|o| operation(ctx, o)))
        && r.when.iter().all(|c| condition(ctx, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cidr(s: &str, len: u8) -> Cidr {
        Cidr {
            addr: s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            prefix_len: len,
        }
    }

    #[test]
    fn cidrs() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let cases: &[(Cidr, Option<IpAddr>, bool)] = &[
            (cidr("10.0.0.0", 8), ip("10.1.2.3"), true),
            (cidr("10.0.0.0", 8), ip("11.1.2.3"), false),
            (cidr("127.0.0.7", 32), ip("127.0.0.7"), true),
            (cidr("127.0.0.7", 32), ip("127.0.0.8"), false),
            (cidr("0.0.0.0", 0), ip("1.2.3.4"), true),
            (cidr("0.0.0.0", 0), ip("::1"), false),
            (cidr("fd00::", 8), ip("fd12::1"), true),
            (cidr("fd00::", 8), ip("fe00::1"), false),
            (cidr("10.0.0.0", 8), None, false),
        ];
        for (c, ip, want) in cases {
            assert_eq!(cidr_contains(c, *ip), *want, "{c:?} {ip:?}");
        }
    }
}
