//! What Envoy's HTTP connection manager does to a request before any HTTP filter sees it,
//! for in-process runs (`peerguard test`, `explain`): the filter in Envoy only ever sees
//! requests the connection manager admitted and rewrote, so deciding on the client's raw
//! bytes would answer a different question.
//!
//! Modelled on Envoy 1.40 with the connection manager peerguard's Envoy configuration
//! writes (`use_remote_address: true`, `xff_num_trusted_hops: 0`, path normalization per
//! mesh setting, XFCC `SANITIZE_SET`), checked against the real binary:
//! - refused with 400: an HTTP/1.1 method outside the codec's list (case matters: `get` is
//!   refused), a request target that is not origin-form or absolute-form, a control,
//!   space or non-ASCII byte in it, any `#`, `%00` in the path (unless normalization is
//!   NONE), a pseudo-header or an
//!   invalid name/value among the headers, an unparsable `content-length`, a missing host;
//!   501: a `transfer-encoding` other than `chunked`;
//! - rewritten: the path normalized ([`crate::path::normalize`]); absolute-form split into
//!   `:authority` and `:path`; hop-by-hop headers, `x-envoy-*` and a client's
//!   `x-forwarded-client-cert` removed; `x-forwarded-for` gets the direct peer appended;
//!   `x-forwarded-proto`, `x-request-id` and `x-envoy-external-address` set.
//!
//! Values Envoy generates (`x-request-id`, the XFCC hash) are unknowable here: they get
//! placeholders, so a condition on their exact value is not modelled (only presence is).

use crate::decide::Engine;
use crate::path::normalize;
use crate::schema::{Decision, HttpRequest, HttpVersion, PathNormalization, Reason, Request};

/// Envoy answered the request itself; no filter ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} from the connection manager: {why}")]
pub struct Rejected {
    pub status: u16,
    pub why: String,
}

fn bad(why: impl Into<String>) -> Rejected {
    Rejected {
        status: 400,
        why: why.into(),
    }
}

/// The methods Envoy's HTTP/1 codec accepts (http-parser's list; BalsaParser enforces the
/// same one). HTTP/2 accepts any token.
const HTTP1_METHODS: &[&str] = &[
    "ACL",
    "BIND",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LINK",
    "LOCK",
    "M-SEARCH",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MOVE",
    "NOTIFY",
    "OPTIONS",
    "PATCH",
    "POST",
    "PROPFIND",
    "PROPPATCH",
    "PURGE",
    "PUT",
    "REBIND",
    "REPORT",
    "SEARCH",
    "SOURCE",
    "SUBSCRIBE",
    "TRACE",
    "UNBIND",
    "UNLINK",
    "UNLOCK",
    "UNSUBSCRIBE",
];

/// Headers that describe one hop and never reach a filter.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Placeholder for the `x-request-id` Envoy generates (it regenerates a client's one for
/// external requests).
pub const GENERATED_REQUEST_ID: &str = "00000000-0000-4000-8000-000000000000";

/// The request as the filter sees it, or the answer Envoy gives instead. TCP requests pass
/// unchanged.
pub fn admit(req: &Request, normalization: PathNormalization) -> Result<Request, Rejected> {
    let Some(http) = &req.http else {
        return Ok(req.clone());
    };
    check_method(&http.method, http.version)?;
    let (authority, target) = split_target(&http.path, &http.host)?;
    check_target(&target, normalization)?;
    if authority.is_empty() {
        return Err(bad("no host (:authority)"));
    }
    let path = normalize(&target, normalization);
    let headers = rewrite_headers(req, &http.headers)?;
    Ok(Request {
        http: Some(HttpRequest {
            method: http.method.clone(),
            path,
            host: authority,
            headers,
            version: http.version,
        }),
        ..req.clone()
    })
}

/// What Envoy with the filter answers to a request as the client sent it: the connection
/// manager first, then the engine on the request it passes on.
pub fn decide(engine: &Engine, client_request: &Request) -> Decision {
    match admit(client_request, engine.policy().path_normalization) {
        Ok(admitted) => engine.decide(&admitted),
        Err(r) => Decision::deny(Reason::Rejected {
            status: r.status,
            why: r.why,
        }),
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_method(method: &str, version: HttpVersion) -> Result<(), Rejected> {
    let ok = match version {
        HttpVersion::Http11 => HTTP1_METHODS.contains(&method),
        HttpVersion::Http2 => !method.is_empty() && method.bytes().all(is_tchar),
    };
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "method {method:?} is not accepted over HTTP/{}",
            version_word(version)
        )))
    }
}

fn version_word(v: HttpVersion) -> &'static str {
    match v {
        HttpVersion::Http11 => "1.1",
        HttpVersion::Http2 => "2",
    }
}

/// Absolute-form (`http://host/path`) carries its own authority, which replaces the
/// Host header; origin-form keeps the given host.
fn split_target(target: &str, host: &str) -> Result<(String, String), Rejected> {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return Ok((host.to_string(), target.to_string()));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return Err(bad(format!("absolute URL {target:?} has no authority")));
    }
    // `http://h` and `http://h?q` name the root path.
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok((authority.to_string(), path))
}

fn check_target(target: &str, normalization: PathNormalization) -> Result<(), Rejected> {
    if !target.starts_with('/') {
        return Err(bad(format!("request target {target:?} is not a path")));
    }
    if let Some(b) = target.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        return Err(bad(format!("request target contains byte 0x{b:02x}")));
    }
    if target.contains('#') {
        return Err(bad("request target contains a fragment (#)"));
    }
    // The canonicalizer refuses an encoded NUL; without normalization it passes.
    let path = target.split('?').next().unwrap_or_default();
    if normalization != PathNormalization::None && path.contains("%00") {
        return Err(bad("path contains %00"));
    }
    Ok(())
}

fn check_header(name: &str, value: &str) -> Result<(), Rejected> {
    if name.starts_with(':') {
        return Err(bad(format!("pseudo-header {name:?} sent as a header")));
    }
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(bad(format!("invalid header name {name:?}")));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(bad(format!("invalid value of header {name:?}")));
    }
    if name == "content-length" && (value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad(format!("invalid content-length {value:?}")));
    }
    if name == "transfer-encoding" && !value.eq_ignore_ascii_case("chunked") {
        return Err(Rejected {
            status: 501,
            why: format!("transfer-encoding {value:?} is not implemented"),
        });
    }
    Ok(())
}

fn rewrite_headers(
    req: &Request,
    given: &[(String, String)],
) -> Result<Vec<(String, String)>, Rejected> {
    let mut out = Vec::with_capacity(given.len() + 4);
    let mut xff: Vec<&str> = Vec::new();
    for (name, value) in given {
        let name = name.to_ascii_lowercase();
        check_header(&name, value)?;
        if name == "x-forwarded-for" {
            xff.push(value);
            continue;
        }
        let dropped = HOP_BY_HOP.contains(&name.as_str())
            || name.starts_with("x-envoy-")
            || matches!(
                name.as_str(),
                "x-forwarded-client-cert" | "x-forwarded-proto" | "x-request-id" | "host"
            );
        if !dropped {
            out.push((name, value.clone()));
        }
    }
    // XFF is an inline header: occurrences are coalesced with ",", then the peer appended.
    let mut chain = xff.join(",");
    if let Some(ip) = req.source_ip {
        if !chain.is_empty() {
            chain.push(',');
        }
        chain.push_str(&ip.to_string());
        out.push(("x-envoy-external-address".into(), ip.to_string()));
    }
    if !chain.is_empty() {
        out.push(("x-forwarded-for".into(), chain));
    }
    let scheme = if req.peer.is_some() { "https" } else { "http" };
    out.push((":scheme".into(), scheme.into()));
    out.push(("x-forwarded-proto".into(), scheme.into()));
    out.push(("x-request-id".into(), GENERATED_REQUEST_ID.into()));
    if let Some(peer) = &req.peer {
        // SANITIZE_SET with `uri: true`: Envoy's own value (its hash is not modelled).
        let uris: String = peer.uri_sans.iter().map(|u| format!(";URI={u}")).collect();
        out.push((
            "x-forwarded-client-cert".into(),
            format!("Hash=unmodelled{uris}"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use crate::schema::Peer;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            peer: None,
            source_ip: "127.0.0.5".parse().ok(),
            destination_ip: None,
            port: 80,
            sni: None,
            http: Some(HttpRequest {
                method: method.into(),
                path: path.into(),
                host: "h".into(),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                version: HttpVersion::Http11,
            }),
        }
    }

    fn status(r: &Request) -> u16 {
        match admit(r, PathNormalization::Base) {
            Ok(_) => 0,
            Err(e) => e.status,
        }
    }

    /// Each row was observed on Envoy 1.40 (raw HTTP/1.1 bytes, the connection manager
    /// above): 0 = reached the filters.
    #[test]
    fn what_envoy_refuses() {
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16);
        let cases: &[Case] = &[
            ("GET", "/a", &[], 0),
            ("get", "/a", &[], 400),
            ("FOO", "/a", &[], 400),
            ("PURGE", "/a", &[], 0),
            ("GET", "/a%00b", &[], 400),
            ("GET", "/a?x=%00", &[], 0),
            ("GET", "/a#frag", &[], 400),
            ("GET", "/a?b#", &[], 400),
            ("GET", "*", &[], 400),
            ("GET", "a/b", &[], 400),
            ("GET", "/a b", &[], 400),
            ("GET", "/é", &[], 400),
            ("GET", "/a\x7fb", &[], 400),
            ("GET", "/a", &[(":scheme", "v")], 400),
            ("GET", "/a", &[("content-length", "v")], 400),
            ("GET", "/a", &[("transfer-encoding", "v")], 501),
        ];
        for (m, p, h, want) in cases {
            assert_eq!(status(&req(m, p, h)), *want, "{m} {p:?} {h:?}");
        }
        let mut h2 = req("get", "/a", &[]);
        if let Some(h) = h2.http.as_mut() {
            h.version = HttpVersion::Http2;
        }
        assert_eq!(status(&h2), 0, "HTTP/2 accepts any token as method");
    }

    fn admitted(r: &Request) -> HttpRequest {
        match admit(r, PathNormalization::Base) {
            Ok(Request { http: Some(h), .. }) => h,
            other => panic!("not admitted: {other:?}"),
        }
    }

    fn header<'a>(h: &'a HttpRequest, name: &str) -> Vec<&'a str> {
        h.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn headers_as_filters_see_them() {
        let h = admitted(&req(
            "GET",
            "/x/../a",
            &[
                ("X-Forwarded-For", "1.2.3.4"),
                ("x-forwarded-for", "5.6.7.8"),
                ("connection", "keep-alive"),
                ("x-envoy-internal", "true"),
                ("x-forwarded-client-cert", "URI=spiffe://forged"),
                ("x-request-id", "mine"),
                ("x-role", "a"),
                ("x-role", "b"),
            ],
        ));
        assert_eq!(h.path, "/a");
        assert_eq!(header(&h, "x-forwarded-for"), ["1.2.3.4,5.6.7.8,127.0.0.5"]);
        assert_eq!(header(&h, "x-role"), ["a", "b"]);
        assert!(header(&h, "connection").is_empty());
        assert!(header(&h, "x-envoy-internal").is_empty());
        assert!(
            header(&h, "x-forwarded-client-cert").is_empty(),
            "plaintext: XFCC stripped"
        );
        assert_eq!(header(&h, "x-request-id"), [GENERATED_REQUEST_ID]);
        assert_eq!(header(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(header(&h, "x-envoy-external-address"), ["127.0.0.5"]);

        let mut mtls = req(
            "GET",
            "/",
            &[("x-forwarded-client-cert", "URI=spiffe://forged")],
        );
        mtls.peer = Some(Peer::from_principal("td/ns/a/sa/b"));
        let h = admitted(&mtls);
        assert_eq!(
            header(&h, "x-forwarded-client-cert"),
            ["Hash=unmodelled;URI=spiffe://td/ns/a/sa/b"]
        );
        assert_eq!(header(&h, "x-forwarded-proto"), ["https"]);
    }

    #[test]
    fn absolute_form_sets_the_authority() {
        let h = admitted(&req("GET", "http://other:8080/abs/./x?q", &[]));
        assert_eq!(
            (h.host.as_str(), h.path.as_str()),
            ("other:8080", "/abs/x?q")
        );
    }
}
