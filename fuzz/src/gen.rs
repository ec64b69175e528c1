//! Target `decide_path`'s input: a small policy set (ALLOW / DENY / AUDIT rules on
//! principals, methods and paths with exact, prefix, suffix and presence values) and one raw
//! HTTP request (method, path bytes, headers) from a peer with any URI SANs.
//!
//! Values are drawn mostly from small pools of path pieces, principals and methods, so that
//! rules and requests meet often, with raw bytes and strings mixed in.

use arbitrary::Arbitrary;
use peerguard_filter::schema::{
    Action, AuthzPolicy, Field, ModeFrom, MtlsMode, MtlsPolicy, Operation, PathMatch, Peer,
    PolicyRef, Rule, Source, StrMatch, WorkloadPolicy, WorkloadRef, SCHEMA_VERSION,
};
use std::collections::BTreeMap;

/// The trust domain of the generated workload.
pub const TRUST_DOMAIN: &str = "cluster.local";

#[derive(Arbitrary, Debug)]
pub struct Case {
    pub policies: Vec<GenPolicy>,
    /// `None`: plaintext.
    pub peer: Option<Vec<Text>>,
    pub method: Text,
    pub path: Vec<PathPiece>,
    pub headers: Vec<(Text, Vec<u8>)>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum GenAction {
    Allow,
    Deny,
    Audit,
}

#[derive(Arbitrary, Debug)]
pub struct GenPolicy {
    pub action: GenAction,
    pub rules: Vec<GenRule>,
}

#[derive(Arbitrary, Debug)]
pub struct GenRule {
    pub from: Option<Vec<GenField<Text>>>,
    pub to: Option<Vec<GenOperation>>,
}

#[derive(Arbitrary, Debug)]
pub struct GenOperation {
    pub methods: GenField<Text>,
    pub paths: GenField<Vec<PathPiece>>,
}

#[derive(Arbitrary, Debug)]
pub struct GenField<T> {
    pub values: Vec<GenMatch<T>>,
    pub not_values: Vec<GenMatch<T>>,
}

#[derive(Arbitrary, Debug)]
pub enum GenMatch<T> {
    Exact(T),
    Prefix(T),
    Suffix(T),
    Presence,
}

/// A string from a pool of principals, SANs and methods, or any string.
#[derive(Arbitrary, Debug)]
pub enum Text {
    Pool(u8),
    Raw(String),
}

const POOL: &[&str] = &[
    "cluster.local/ns/foo/sa/sleep",
    "cluster.local/ns/foo/sa/",
    "cluster.local/",
    "cluster.local",
    "cluster.local/ns/bar/sa/b",
    "other.td/ns/foo/sa/sleep",
    "sa/sleep",
    "/ns/foo/",
    "spiffe://cluster.local/ns/foo/sa/sleep",
    "spiffe://cluster.local/ns/bar/sa/b",
    "spiffe://other.td/ns/foo/sa/sleep",
    "spiffe://cluster.local",
    "spiffe://cluster.local/",
    "https://cluster.local/ns/foo/sa/sleep",
    "",
    "GET",
    "POST",
    "get",
    "G",
    "ET",
    "DELETE",
    "x-role",
    "user-agent",
];

impl Text {
    pub fn text(&self) -> String {
        match self {
            Text::Pool(i) => POOL[usize::from(*i) % POOL.len()].to_string(),
            Text::Raw(s) => s.clone(),
        }
    }
}

/// A piece of a path, on both sides: request paths are the pieces' bytes, policy paths their
/// (lossy) text.
#[derive(Arbitrary, Debug)]
pub enum PathPiece {
    Slash,
    Backslash,
    Dot,
    DotDot,
    Query,
    Hash,
    Segment(u8),
    /// A whole path from the conformance cases or a known bypass attempt.
    Known(u8),
    /// `%XX` of any byte, upper- or lower-case hex.
    Escape {
        byte: u8,
        lower: bool,
    },
    Byte(u8),
    Raw(String),
}

const SEGMENTS: &[&str] = &[
    "a", "b", "admin", "public", "x.y", "..b", ".c", "%", "%2", "%zz", "%2F", "%2e", "~", "é",
];

const KNOWN: &[&str] = &[
    "/admin/x\\..\\..\\public",
    "/admin/%2e%2e/public",
    "/admin/%2E%2e/%2E/public",
    "/admin//public",
    "/admin%2Fpublic",
    "/deny/allow",
    "/global-deny?param=value",
    "/allow#frag",
    "/user/profile/",
    "/grpc.health.v1.Health/Check",
    "/a/b/../../..",
    "/./.././",
];

pub fn path_bytes(pieces: &[PathPiece]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            PathPiece::Slash => out.push(b'/'),
            PathPiece::Backslash => out.push(b'\\'),
            PathPiece::Dot => out.push(b'.'),
            PathPiece::DotDot => out.extend_from_slice(b".."),
            PathPiece::Query => out.push(b'?'),
            PathPiece::Hash => out.push(b'#'),
            PathPiece::Segment(i) => {
                out.extend_from_slice(SEGMENTS[usize::from(*i) % SEGMENTS.len()].as_bytes())
            }
            PathPiece::Known(i) => {
                out.extend_from_slice(KNOWN[usize::from(*i) % KNOWN.len()].as_bytes())
            }
            PathPiece::Escape { byte, lower } => {
                let hex = if *lower {
                    format!("%{byte:02x}")
                } else {
                    format!("%{byte:02X}")
                };
                out.extend_from_slice(hex.as_bytes());
            }
            PathPiece::Byte(b) => out.push(*b),
            PathPiece::Raw(s) => out.extend_from_slice(s.as_bytes()),
        }
    }
    out
}

fn path_text(pieces: &[PathPiece]) -> String {
    String::from_utf8_lossy(&path_bytes(pieces)).into_owned()
}

fn str_match<T>(m: &GenMatch<T>, text: impl Fn(&T) -> String) -> StrMatch {
    match m {
        GenMatch::Exact(v) => StrMatch::Exact(text(v)),
        GenMatch::Prefix(v) => StrMatch::Prefix(text(v)),
        GenMatch::Suffix(v) => StrMatch::Suffix(text(v)),
        GenMatch::Presence => StrMatch::Presence,
    }
}

fn field<T, U>(f: &GenField<T>, conv: impl Fn(&GenMatch<T>) -> U) -> Field<U> {
    Field {
        values: f.values.iter().map(&conv).collect(),
        not_values: f.not_values.iter().map(&conv).collect(),
    }
}

impl Case {
    /// The workload's compiled policy: PERMISSIVE, trust domain [`TRUST_DOMAIN`], policies
    /// `foo/p<i>` in input order.
    pub fn policy(&self) -> WorkloadPolicy {
        let policies = self
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| AuthzPolicy {
                policy: PolicyRef {
                    namespace: "foo".into(),
                    name: format!("p{i}"),
                },
                action: match p.action {
                    GenAction::Allow => Action::Allow,
                    GenAction::Deny => Action::Deny,
                    GenAction::Audit => Action::Audit,
                },
                dry_run: false,
                provider: None,
                invalid: None,
                rules: p.rules.iter().map(GenRule::rule).collect(),
            })
            .collect();
        WorkloadPolicy {
            schema: SCHEMA_VERSION,
            workload: WorkloadRef {
                namespace: "foo".into(),
                name: "httpbin".into(),
            },
            trust_domain: TRUST_DOMAIN.into(),
            trust_domain_aliases: Vec::new(),
            path_normalization: Default::default(),
            num_trusted_proxies: 0,
            decision_log: None,
            mtls: MtlsPolicy {
                default: ModeFrom::new(MtlsMode::Permissive, None),
                ports: BTreeMap::new(),
            },
            policies,
            diagnostics: Vec::new(),
        }
    }

    pub fn peer(&self) -> Option<Peer> {
        self.peer.as_ref().map(|sans| Peer {
            uri_sans: sans.iter().map(Text::text).collect(),
        })
    }

    /// The request's header map as Envoy holds it: the three pseudo-headers first, then the
    /// other headers. Names starting with `:` are dropped (Envoy's codecs refuse unknown or
    /// repeated pseudo-headers), as are empty names.
    pub fn raw_headers(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut h = vec![
            (b":method".to_vec(), self.method.text().into_bytes()),
            (b":path".to_vec(), path_bytes(&self.path)),
            (b":authority".to_vec(), b"httpbin.foo:8000".to_vec()),
        ];
        for (name, value) in &self.headers {
            let name = name.text().to_ascii_lowercase();
            if name.is_empty() || name.starts_with(':') {
                continue;
            }
            h.push((name.into_bytes(), value.clone()));
        }
        h
    }
}

impl GenRule {
    fn rule(&self) -> Rule {
        Rule {
            from: self.from.as_ref().map(|sources| {
                sources
                    .iter()
                    .map(|p| Source {
                        principals: field(p, |m| str_match(m, Text::text)),
                        ..Source::default()
                    })
                    .collect()
            }),
            to: self.to.as_ref().map(|ops| {
                ops.iter()
                    .map(|o| Operation {
                        methods: field(&o.methods, |m| str_match(m, Text::text)),
                        paths: field(&o.paths, |m| PathMatch::Str(str_match(m, |p| path_text(p)))),
                        ..Operation::default()
                    })
                    .collect()
            }),
            when: Vec::new(),
        }
    }
}
