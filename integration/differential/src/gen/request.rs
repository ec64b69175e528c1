//! Raw requests: HTTP/1.1 written byte for byte (odd paths, methods, hosts and headers) or
//! a TCP connection, from one of [`super::SOURCES`] with one of [`super::PEERS`].

use super::policy::Hints;
use super::rng::Rng;
use super::{HTTP_PORTS, PEERS, SOURCES, TCP_PORT};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The complete request head, sent byte for byte.
    Http(Vec<u8>),
    /// Send a line, expect it echoed.
    Tcp,
}

impl Payload {
    /// For reports: the head as a quoted string with escapes (`\r\n`, `\xff`).
    pub fn describe(&self) -> String {
        match self {
            Payload::Http(h) => match std::str::from_utf8(h) {
                Ok(s) => format!("{s:?}"),
                Err(_) => format!("b\"{}\"", h.escape_ascii()),
            },
            Payload::Tcp => "TCP connection (payload, expect echo)".into(),
        }
    }

    /// The head as text (lossy), for inspection.
    pub fn text(&self) -> String {
        match self {
            Payload::Http(h) => String::from_utf8_lossy(h).into_owned(),
            Payload::Tcp => String::new(),
        }
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Index into [`super::PEERS`] (0: plaintext).
    pub peer: usize,
    pub source: Ipv4Addr,
    pub port: u16,
    pub payload: Payload,
    /// Send the HTTP request over HTTP/2 (ALPN `h2` with TLS, prior knowledge without).
    pub h2: bool,
}

const METHODS: &[&str] = &[
    "GET", "GET", "GET", "GET", "POST", "PUT", "DELETE", "HEAD", "get", "Get", "PURGE", "OPTIONS",
    "PATCH",
];
const SEGMENTS: &[&str] = &[
    "admin", "admin", "public", "api", "v1", "data", "x", "a", "b", "a.b", "ADMIN", "Admin",
    "%61dmin", "adm%69n", "%2e", "%2e%2e", "%2E%2E", ".", "..", "..", "", "a%2Fb", "a%2fb", "%5C",
    "[x]", "%5Bx%5D", "x;y", "%7E", "~", "%20", "sleep", "%00", "*",
];
const HOSTS: &[&str] = &[
    "app.foo",
    "app.foo",
    "APP.foo",
    "app.foo:8080",
    "app.foo:8081",
    "app.foo:80",
    "other.host",
    "127.0.0.1",
    "app.foo.",
    "App.Foo:8080",
    "",
];
const QUERIES: &[&str] = &[
    "?q=1",
    "?/admin",
    "?a=../admin",
    "#frag",
    "#/admin",
    "?",
    "?x#y",
];
const ROLE_VALUES: &[&str] = &["admin", "user", "Admin", "admin,user", " admin ", "x"];
const XFF_VALUES: &[&str] = &[
    "127.10.0.1",
    "10.1.2.3",
    "127.10.0.1, 10.1.2.3",
    "10.1.2.3, 127.10.0.1",
    "::1",
];

pub fn case(rng: &mut Rng, hints: &Hints) -> Case {
    let peer = if rng.chance(35) {
        0
    } else {
        rng.range(1, PEERS.len() - 1)
    };
    let source = *rng.pick(&SOURCES);
    if rng.chance(25) {
        return Case {
            peer,
            source,
            port: TCP_PORT,
            payload: Payload::Tcp,
            h2: false,
        };
    }
    let port = *rng.pick(&HTTP_PORTS);
    let mut head = http(rng, hints);
    // HTTP/2 when it can carry the request (one Host, a target the URI parser keeps).
    let h2 = rng.chance(25) && crate::client::h2_request(head.as_bytes(), false).is_ok();
    if !h2 && rng.chance(12) {
        // Two requests on one keep-alive connection: per-connection state must not leak
        // from the first decision into the second.
        let first = head.replace("connection: close\r\n", "");
        head = first + &http(rng, hints);
    }
    let head = head.into_bytes();
    Case {
        peer,
        source,
        port,
        payload: Payload::Http(head),
        h2,
    }
}

fn http(rng: &mut Rng, hints: &Hints) -> String {
    let method = rng.word(METHODS);
    let target = target(rng, hints);
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    match rng.below(40) {
        0 => {} // no Host at all
        1 => head.push_str("host: app.foo\r\nhost: other.host\r\n"),
        _ => {
            let host = if !hints.hosts.is_empty() && rng.chance(30) {
                hint_host(rng, &hints.hosts)
            } else {
                rng.pick(HOSTS).to_string()
            };
            let name = if rng.chance(15) { "Host" } else { "host" };
            head.push_str(&format!("{name}: {host}\r\n"));
        }
    }
    for (name, value) in headers(rng, hints) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    head
}

/// The request target: mostly an origin-form path built from odd segments.
fn target(rng: &mut Rng, hints: &Hints) -> String {
    match rng.below(50) {
        0 => return "*".into(),
        1 => return "http://app.foo:8080/admin".into(),
        2 => return "admin".into(),
        _ => {}
    }
    let mut path = if !hints.paths.is_empty() && rng.chance(35) {
        hint_path(rng, &hints.paths)
    } else {
        let n = rng.range(1, 4);
        let mut p = String::new();
        for _ in 0..n {
            p.push_str(match rng.below(12) {
                0 => "\\",
                1 => "//",
                _ => "/",
            });
            p.push_str(rng.word(SEGMENTS));
        }
        p
    };
    if rng.chance(20) {
        path.push_str(rng.word(QUERIES));
    }
    path
}

/// A path made from a policy's path value: templates filled in, wildcards replaced, and
/// sometimes disguised (encoded, dot segments, trailing slash).
fn hint_path(rng: &mut Rng, paths: &[String]) -> String {
    let v = rng.pick(paths);
    let fill = |rng: &mut Rng| {
        rng.pick(&["x", "data", "a.b", "[x]", "v1/x", "", "%41"])
            .to_string()
    };
    let mut out = String::new();
    let mut rest = v.as_str();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{**}") {
            out.push_str(&fill(rng));
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{*}") {
            out.push_str(&fill(rng));
            rest = r;
        } else if let Some(r) = rest.strip_prefix('*') {
            out.push_str(rng.word(&["", "x", "/y", "public", "admin"]));
            rest = r;
        } else {
            let c = rest.chars().next().unwrap_or('/');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    match rng.below(8) {
        0 => out.replacen('a', "%61", 1),
        1 => format!("/x/..{out}"),
        2 => format!("{out}/"),
        3 => out.replacen('/', "//", 1),
        4 => out.replace('/', "\\"),
        5 => format!("/.{out}"),
        _ => out,
    }
}

fn hint_host(rng: &mut Rng, hosts: &[String]) -> String {
    let v = rng
        .pick(hosts)
        .replace('*', rng.word(&["x", "", "app", "8080"]));
    match rng.below(4) {
        0 => v.to_ascii_uppercase(),
        1 => format!("{v}:8080"),
        _ => v,
    }
}

/// 0–3 extra headers; names and values from the set's conditions half of the time,
/// repeated and in odd case sometimes.
fn headers(rng: &mut Rng, hints: &Hints) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for _ in 0..rng.range(0, 3) {
        let real: Vec<&(String, Vec<String>)> = hints
            .headers
            .iter()
            .filter(|(n, _)| !n.starts_with(':'))
            .collect();
        let (name, value) = if !real.is_empty() && rng.chance(50) {
            let (name, values) = (*rng.pick(&real)).clone();
            let value = if values.is_empty() || rng.chance(25) {
                rng.pick(ROLE_VALUES).to_string()
            } else {
                rng.pick(&values)
                    .replace('*', rng.word(&["", "x", "admin"]))
            };
            (name, value)
        } else {
            match rng.below(5) {
                0 => ("x-role".to_string(), rng.pick(ROLE_VALUES).to_string()),
                1 => (
                    "x-forwarded-for".to_string(),
                    rng.pick(XFF_VALUES).to_string(),
                ),
                2 => (
                    "x-token".to_string(),
                    rng.pick(&["secret", "s3", ""]).to_string(),
                ),
                3 => (
                    "cookie".to_string(),
                    rng.pick(&["a=1", "b=2", "b=2; a=1"]).to_string(),
                ),
                _ => ("user-agent".to_string(), "differential".to_string()),
            }
        };
        let name = match rng.below(6) {
            0 => name.to_ascii_uppercase(),
            1 => capitalize(&name),
            _ => name,
        };
        out.push((name, value));
    }
    // Repeat one header with another value.
    if !out.is_empty() && rng.chance(25) {
        let (name, _) = out[rng.below(out.len())].clone();
        let value = rng.pick(ROLE_VALUES).to_string();
        out.push((name, value));
    }
    out
}

fn capitalize(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}
