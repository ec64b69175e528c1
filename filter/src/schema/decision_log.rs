//! The decision log: one compact line per sampled decision, written by the filter and read
//! back by `peerguard preview`, which replays it against another configuration. This is the
//! line format's only definition (both directions).
//!
//! A line is [`DECISION_LOG_PREFIX`] followed by one JSON [`DecisionLine`]; the filter writes
//! it with the proxy-wasm log call at info level, so in Envoy's log it follows Envoy's own
//! prefix (`... wasm log peerguard_http peerguard: peerguard-decision {...}`), and readers
//! look for the prefix anywhere in a line.
//!
//! What a line carries is what the decision depended on, so the decision can be taken again:
//! the workload, the port, the verified peer's URI SANs (or plaintext), the direct source
//! address (and the X-Forwarded-For derived remote address when a policy uses it), the
//! destination address, the SNI, the request line as the filter saw it (path already
//! normalized by Envoy), the HTTP version, and the decision with its reason. Of the request
//! headers it carries **only those the workload's policies read** ([`recorded_headers`]):
//! headers hold credentials, cookies and personal data that have no place in a log, and
//! copying every header would make each line kilobytes long. A replay against a
//! configuration that reads a header the line does not carry is therefore reported as
//! incomplete ([`DecisionLine::missing_for`]), never guessed.
//!
//! Sampling is deterministic ([`DecisionLog::sampled`]): every `every`-th decision of a
//! filter instance, starting with the first, so tests can count lines exactly.

use super::{Condition, Decision, HttpRequest, HttpVersion, Peer, Reason, Request, WorkloadPolicy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Starts the JSON of a decision log line.
pub const DECISION_LOG_PREFIX: &str = "peerguard-decision ";

/// Version of the [`DecisionLine`] format; readers refuse other versions.
pub const DECISION_LINE_VERSION: u32 = 1;

/// `WorkloadPolicy.decision_log`: absent (the default) means no decision log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionLog {
    /// One line per `every` decisions (1: every decision). Never 0.
    pub every: u32,
}

impl DecisionLog {
    /// Whether the decision numbered `n` (0 for a filter instance's first) gets a line.
    /// Counter based, not random: the same traffic always gives the same lines.
    pub fn sampled(&self, n: u64) -> bool {
        self.every != 0 && n.is_multiple_of(u64::from(self.every))
    }
}

impl std::fmt::Display for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "1/{}", self.every)
    }
}

/// `1` (every decision), `1/N` (one in N) or a fraction in (0, 1] (`0.01` = one in 100).
impl std::str::FromStr for DecisionLog {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "decision log sample {s:?}: expected 1 (every decision), 1/N (one in N) or a fraction in (0, 1]; leave the setting out to turn the log off"
            )
        };
        let t = s.trim();
        let every = if let Some(n) = t.strip_prefix("1/") {
            n.trim().parse::<u32>().map_err(|_| bad())?
        } else {
            let f: f64 = t.parse().map_err(|_| bad())?;
            if !(f > 0.0 && f <= 1.0) {
                return Err(bad());
            }
            let n = (1.0 / f).round();
            if n > f64::from(u32::MAX) {
                return Err(bad());
            }
            // In range (checked above), so the conversion is exact.
            n as u32
        };
        if every == 0 {
            return Err(bad());
        }
        Ok(DecisionLog { every })
    }
}

/// One logged decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionLine {
    /// [`DECISION_LINE_VERSION`].
    pub v: u32,
    /// `namespace/name` of the workload whose filter decided.
    pub workload: String,
    /// The workload (target) port the connection arrived on.
    pub port: u16,
    /// The verified peer certificate's URI SANs; absent for a plaintext connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Vec<String>>,
    /// The direct peer address (Envoy `source.address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    /// The client address per X-Forwarded-For and `numTrustedProxies`, written only when a
    /// policy of the workload uses `remoteIpBlocks`/`remote.ip` and hops are trusted (for
    /// people: a replay derives it again from the recorded X-Forwarded-For).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Absent for a TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<LineHttp>,
    /// The decision taken; absent in a line converted from an access log, which records
    /// the request but not the filter's decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    /// Why (rendered with `Reason`'s one `Display` for people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// The HTTP part of a logged request, as the filter saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LineHttp {
    pub method: String,
    /// `:path` after Envoy's normalization, query included.
    pub path: String,
    pub host: String,
    /// `None`: the version is unknown (it only matters for what Envoy's codec accepts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<HttpVersion>,
    /// Every header name the line records (lower-case), with its values in arrival order;
    /// an empty list records that the request did not carry the header. Names that are not
    /// keys here were not recorded: their presence is unknown.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
}

/// The header names a workload's policies read (lower-case): the `request.headers[...]`
/// conditions of every policy (dry-run and invalid ones too), and `x-forwarded-for` when a
/// policy uses the forwarded client address with trusted hops. `:authority`/`host`,
/// `:method` and `:path` come from the request line and are not listed.
pub fn recorded_headers(policy: &WorkloadPolicy) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rule in policy.policies.iter().flat_map(|p| &p.rules) {
        for c in &rule.when {
            if let Condition::RequestHeader { name, .. } = c {
                let name = name.to_ascii_lowercase();
                if !matches!(name.as_str(), "host" | ":authority" | ":method" | ":path") {
                    out.insert(name);
                }
            }
        }
    }
    if policy.num_trusted_proxies > 0 && crate::decide::uses_remote_ip(policy) {
        out.insert(XFF.into());
    }
    out
}

const XFF: &str = "x-forwarded-for";

impl DecisionLine {
    /// The line for one decision of `policy`'s filter on `request` (as the filter saw it).
    /// `version`: the HTTP version when the caller knows it.
    pub fn new(
        policy: &WorkloadPolicy,
        request: &Request,
        decision: &Decision,
        version: Option<HttpVersion>,
    ) -> DecisionLine {
        let wanted = recorded_headers(policy);
        let http = request.http.as_ref().map(|h| {
            let mut headers: BTreeMap<String, Vec<String>> =
                wanted.iter().map(|n| (n.clone(), Vec::new())).collect();
            for (name, value) in &h.headers {
                if let Some(values) = headers.get_mut(&name.to_ascii_lowercase()) {
                    values.push(value.clone());
                }
            }
            LineHttp {
                method: h.method.clone(),
                path: h.path.clone(),
                host: h.host.clone(),
                version,
                headers,
            }
        });
        let remote = match &request.http {
            Some(h) if wanted.contains(XFF) => {
                crate::decide::forwarded_client(&h.headers, policy.num_trusted_proxies)
                    .or(request.source_ip)
            }
            _ => None,
        };
        DecisionLine {
            v: DECISION_LINE_VERSION,
            workload: format!("{}/{}", policy.workload.namespace, policy.workload.name),
            port: request.port,
            peer: request.peer.as_ref().map(|p| p.uri_sans.clone()),
            src: request.source_ip,
            remote,
            dst: request.destination_ip,
            sni: request.sni.clone(),
            http,
            allowed: Some(decision.allowed),
            reason: Some(decision.reason.clone()),
        }
    }

    /// `peerguard-decision {...}`.
    pub fn render(&self) -> String {
        // Plain data: serializing cannot fail; an empty object would still be a parse error
        // for the reader, not a wrong decision.
        let json = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        format!("{DECISION_LOG_PREFIX}{json}")
    }

    /// The line in `text` (anything may precede the prefix: Envoy's log prefix, a
    /// timestamp). `None`: not a decision log line; `Some(Err)`: one that cannot be read.
    pub fn find(text: &str) -> Option<Result<DecisionLine, String>> {
        let at = text.find(DECISION_LOG_PREFIX)?;
        let json = text[at + DECISION_LOG_PREFIX.len()..].trim();
        Some(Self::from_json(json))
    }

    /// One line's JSON (without the prefix).
    pub fn from_json(json: &str) -> Result<DecisionLine, String> {
        let line: DecisionLine =
            serde_json::from_str(json).map_err(|e| format!("not a decision log line: {e}"))?;
        if line.v != DECISION_LINE_VERSION {
            return Err(format!(
                "decision log line version {} (this peerguard reads version {DECISION_LINE_VERSION})",
                line.v
            ));
        }
        Ok(line)
    }

    /// `(namespace, name)` of [`DecisionLine::workload`].
    pub fn workload_key(&self) -> Option<(&str, &str)> {
        self.workload
            .split_once('/')
            .filter(|(n, w)| !n.is_empty() && !w.is_empty() && !w.contains('/'))
    }

    /// What the line lacks for a decision under `policy`: the header names the policies read
    /// that the line did not record. Empty: the line can be replayed against `policy`.
    pub fn missing_for(&self, policy: &WorkloadPolicy) -> Vec<String> {
        let Some(h) = &self.http else {
            return Vec::new();
        };
        recorded_headers(policy)
            .into_iter()
            .filter(|n| !h.headers.contains_key(n))
            .collect()
    }

    /// The request as the client sent it, for `hcm::decide` (which applies Envoy's
    /// connection manager again, as `explain` does): the recorded path is already
    /// normalized (normalizing it again changes nothing), and the direct peer Envoy appended
    /// to X-Forwarded-For is taken off again, since the connection manager appends it anew.
    pub fn client_request(&self) -> Request {
        let http = self.http.as_ref().map(|h| {
            let mut headers = Vec::new();
            for (name, values) in &h.headers {
                for value in values {
                    let value = if name == XFF {
                        strip_appended(value, self.src)
                    } else {
                        Some(value.clone())
                    };
                    if let Some(v) = value {
                        headers.push((name.clone(), v));
                    }
                }
            }
            HttpRequest {
                method: h.method.clone(),
                path: h.path.clone(),
                host: h.host.clone(),
                headers,
                version: h.version.unwrap_or_default(),
            }
        });
        Request {
            peer: self.peer.as_ref().map(|sans| Peer {
                uri_sans: sans.clone(),
            }),
            source_ip: self.src,
            destination_ip: self.dst,
            port: self.port,
            sni: self.sni.clone(),
            http,
        }
    }
}

/// X-Forwarded-For without the last entry when that entry is the direct peer (what Envoy's
/// connection manager appended); `None` when nothing is left.
fn strip_appended(xff: &str, src: Option<IpAddr>) -> Option<String> {
    let Some(src) = src else {
        return Some(xff.to_string());
    };
    let (head, last) = match xff.rsplit_once(',') {
        Some((head, last)) => (Some(head), last),
        None => (None, xff),
    };
    if last.trim().parse::<IpAddr>().ok() != Some(src) {
        return Some(xff.to_string());
    }
    head.map(|h| h.trim_end().to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{PolicyRef, RuleRef};

    fn policy(json: serde_json::Value) -> WorkloadPolicy {
        let mut base = serde_json::json!({
            "schema": 1,
            "workload": {"namespace": "foo", "name": "httpbin"},
            "trust_domain": "cluster.local",
            "mtls": {"default": {"mode": "PERMISSIVE"}},
        });
        if let (Some(b), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            for (k, v) in extra {
                b.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(base).unwrap()
    }

    fn header_policy() -> WorkloadPolicy {
        policy(serde_json::json!({
            "num_trusted_proxies": 1,
            "policies": [{
                "policy": {"namespace": "foo", "name": "p"},
                "action": "ALLOW",
                "rules": [{
                    "from": [{"remote_ip_blocks": {"values": [{"addr": "10.0.0.0", "prefix_len": 8}]}}],
                    "when": [{"attribute": "request_header", "name": "X-Token", "field": {"values": [{"exact": "a"}]}}],
                }],
            }],
        }))
    }

    fn request() -> Request {
        Request {
            peer: Some(Peer::from_principal("cluster.local/ns/foo/sa/sleep")),
            source_ip: "127.0.0.9".parse().ok(),
            destination_ip: "127.0.1.1".parse().ok(),
            port: 8000,
            sni: Some("outbound_.8000_._.httpbin.foo.svc.cluster.local".into()),
            http: Some(HttpRequest {
                method: "GET".into(),
                path: "/ip?q=1".into(),
                host: "httpbin.foo:8000".into(),
                headers: vec![
                    ("x-token".into(), "a".into()),
                    ("cookie".into(), "secret".into()),
                    ("x-forwarded-for".into(), "10.1.2.3,127.0.0.9".into()),
                    ("x-token".into(), "b".into()),
                ],
                version: HttpVersion::Http11,
            }),
        }
    }

    fn decision() -> Decision {
        Decision::deny(Reason::Denied {
            matched: RuleRef {
                policy: PolicyRef {
                    namespace: "foo".into(),
                    name: "deny".into(),
                },
                rule: Some(0),
            },
        })
    }

    #[test]
    fn round_trip_and_only_the_read_headers() {
        let p = header_policy();
        let line = DecisionLine::new(&p, &request(), &decision(), Some(HttpVersion::Http2));
        let text = line.render();
        assert!(text.starts_with(DECISION_LOG_PREFIX));
        assert!(
            !text.contains("secret"),
            "unread headers are not logged: {text}"
        );
        let envoy = format!("[2026-12-04 10:00:00.000][12][info][wasm] [context.cc:1192] wasm log peerguard_http peerguard: {text}");
        let back = DecisionLine::find(&envoy).unwrap().unwrap();
        assert_eq!(back, line);
        let h = back.http.as_ref().unwrap();
        assert_eq!(
            h.headers.keys().collect::<Vec<_>>(),
            ["x-forwarded-for", "x-token"]
        );
        assert_eq!(h.headers["x-token"], ["a", "b"]);
        assert_eq!(back.remote, "10.1.2.3".parse().ok());
        assert_eq!(back.workload_key(), Some(("foo", "httpbin")));
        assert!(back.missing_for(&p).is_empty());
        // A configuration reading another header cannot be replayed on this line.
        let mut other = p.clone();
        if let Condition::RequestHeader { name, .. } = &mut other.policies[0].rules[0].when[0] {
            *name = "x-other".into();
        }
        assert_eq!(back.missing_for(&other), ["x-other"]);
        assert!(DecisionLine::find("unrelated log line").is_none());
        assert!(DecisionLine::find("peerguard-decision {broken")
            .unwrap()
            .is_err());
        let v2 = text.replace("\"v\":1", "\"v\":2");
        assert!(DecisionLine::find(&v2)
            .unwrap()
            .unwrap_err()
            .contains("version 2"));
    }

    #[test]
    fn replays_the_request_the_filter_saw() {
        let p = header_policy();
        let line = DecisionLine::new(&p, &request(), &decision(), None);
        let client = line.client_request();
        // Envoy appended the direct peer; the connection manager model appends it again.
        let admitted = crate::hcm::admit(&client, p.path_normalization).unwrap();
        let xff: Vec<_> = admitted
            .http
            .as_ref()
            .unwrap()
            .headers
            .iter()
            .filter(|(n, _)| n == XFF)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(xff, ["10.1.2.3,127.0.0.9"]);
        let h = client.http.unwrap();
        assert_eq!((h.method.as_str(), h.path.as_str()), ("GET", "/ip?q=1"));
        assert_eq!(client.peer, request().peer);
        assert_eq!(client.sni, request().sni);
        // A TCP line carries no HTTP part.
        let mut tcp = request();
        tcp.http = None;
        let t = DecisionLine::new(&p, &tcp, &decision(), None);
        assert!(t.http.is_none() && t.remote.is_none());
        assert!(!t.render().contains("\"http\""));
        assert_eq!(strip_appended("127.0.0.9", "127.0.0.9".parse().ok()), None);
        assert_eq!(
            strip_appended("1.1.1.1, 127.0.0.9", "127.0.0.9".parse().ok()).as_deref(),
            Some("1.1.1.1")
        );
        assert_eq!(
            strip_appended("1.1.1.1", "127.0.0.9".parse().ok()).as_deref(),
            Some("1.1.1.1")
        );
    }

    #[test]
    fn sampling_is_counted() {
        let one_in_3 = DecisionLog { every: 3 };
        let hits: Vec<u64> = (0..10).filter(|n| one_in_3.sampled(*n)).collect();
        assert_eq!(hits, [0, 3, 6, 9]);
        assert!((0..5).all(|n| DecisionLog { every: 1 }.sampled(n)));
        assert!(!(DecisionLog { every: 0 }).sampled(0));
        for (text, every) in [("1", 1), ("1/100", 100), ("0.25", 4), ("0.01", 100)] {
            assert_eq!(
                text.parse::<DecisionLog>(),
                Ok(DecisionLog { every }),
                "{text}"
            );
        }
        for bad in ["0", "1/0", "2", "-1", "off", "", "1/x", "NaN"] {
            assert!(bad.parse::<DecisionLog>().is_err(), "{bad}");
        }
    }

    #[test]
    fn off_by_default_and_not_serialized() {
        let p = header_policy();
        assert_eq!(p.decision_log, None);
        assert!(!serde_json::to_string(&p).unwrap().contains("decision_log"));
        let mut on = p.clone();
        on.decision_log = Some(DecisionLog { every: 10 });
        let json = serde_json::to_string(&on).unwrap();
        assert!(json.contains("\"decision_log\":{\"every\":10}"), "{json}");
        assert_eq!(serde_json::from_str::<WorkloadPolicy>(&json).unwrap(), on);
    }
}
