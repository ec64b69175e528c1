//! Hand-written cases: a YAML file with the policies and the raw requests, run exactly like
//! a generated set. The minimal reproducers of disagreements live in
//! `integration/differential/cases/` and run in the bounded test, so a class once found
//! stays covered.
//!
//! ```yaml
//! about: what this reproduces, what each side does and why
//! policies: |
//!   apiVersion: security.istio.io/v1
//!   kind: AuthorizationPolicy
//!   ...
//! requests:
//!   - peer: 0            # index into gen::PEERS (0: plaintext); default 0
//!     source: 127.10.0.1 # client address; default 127.10.0.1
//!     port: 8080         # 8080/8081 HTTP, 9000 TCP
//!     http: "GET /x HTTP/1.1\r\nhost: app.foo\r\nconnection: close\r\n\r\n"
//!     h2: false          # true: send it over HTTP/2
//!   - port: 9000
//!     tcp: true
//! ```

use crate::gen::{self, Case, Generated, Origin, Payload};
use anyhow::{bail, Context as _};
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    #[allow(dead_code)] // for the reader of the file
    about: Option<String>,
    policies: String,
    requests: Vec<RequestSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestSpec {
    #[serde(default)]
    peer: usize,
    #[serde(default)]
    source: Option<Ipv4Addr>,
    port: u16,
    #[serde(default)]
    http: Option<String>,
    #[serde(default)]
    tcp: bool,
    #[serde(default)]
    h2: bool,
}

/// `\xHH` (a backslash in the YAML value, `"\\xff"` in a double-quoted YAML string)
/// becomes the byte HH, so that a case can send bytes that are not UTF-8.
fn unescape_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            if let Some(v) = std::str::from_utf8(&b[i + 2..i + 4])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// One file.
pub fn load(path: &Path) -> anyhow::Result<Generated> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: CaseFile = serde_saphyr::from_str(&text)
        .with_context(|| format!("{}: not a case file", path.display()))?;
    let mut cases = Vec::new();
    for (i, r) in file.requests.iter().enumerate() {
        let at = || format!("{}: requests[{i}]", path.display());
        if r.peer >= gen::PEERS.len() {
            bail!(
                "{}: peer {} (there are {} peers)",
                at(),
                r.peer,
                gen::PEERS.len()
            );
        }
        let payload = match (&r.http, r.tcp) {
            (Some(h), false) => Payload::Http(unescape_bytes(h)),
            (None, true) => Payload::Tcp,
            _ => bail!("{}: exactly one of `http` and `tcp: true`", at()),
        };
        let tcp_port = r.port == gen::TCP_PORT;
        if tcp_port != matches!(payload, Payload::Tcp)
            || !(tcp_port || gen::HTTP_PORTS.contains(&r.port))
        {
            bail!(
                "{}: port {} does not serve this protocol (HTTP on {:?}, TCP on {})",
                at(),
                r.port,
                gen::HTTP_PORTS,
                gen::TCP_PORT
            );
        }
        if r.h2 {
            if let Payload::Http(h) = &payload {
                crate::client::h2_request(h, false)
                    .with_context(|| format!("{}: cannot be sent over HTTP/2", at()))?;
            }
        }
        cases.push(Case {
            h2: r.h2,
            peer: r.peer,
            source: r.source.unwrap_or(Ipv4Addr::new(127, 10, 0, 1)),
            port: r.port,
            payload,
        });
    }
    Ok(Generated {
        origin: Origin::File(path.display().to_string()),
        yaml: file.policies,
        cases,
    })
}

/// A file, or every `*.yaml` in a directory (sorted).
pub fn load_all(path: &Path) -> anyhow::Result<Vec<Generated>> {
    if !path.is_dir() {
        return Ok(vec![load(path)?]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files.iter().map(|f| load(f)).collect()
}

/// The reproducers kept with the harness.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cases")
}

/// Cases for the adaptive comparison only (`cases/adaptive/`): they carry
/// PeerAuthentications, which the comparison with Istio's RBAC (authorization only) cannot
/// take.
pub fn adaptive_corpus_dir() -> PathBuf {
    corpus_dir().join("adaptive")
}

/// The corpus a comparison runs: the adaptive one runs every case (both of its sides are
/// peerguard's, so every case must agree exactly), the Istio one the top directory.
pub fn corpus(comparison: crate::run::Comparison) -> anyhow::Result<Vec<Generated>> {
    let mut sets = load_all(&corpus_dir())?;
    if comparison == crate::run::Comparison::Adaptive {
        sets.extend(load_all(&adaptive_corpus_dir())?);
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_escapes() {
        assert_eq!(unescape_bytes("a\\xffb\\xzz"), b"a\xffb\\xzz".to_vec());
    }

    #[test]
    fn the_corpus_loads_and_each_case_prepares() -> anyhow::Result<()> {
        let sets = load_all(&corpus_dir())?;
        assert!(!sets.is_empty());
        for g in &sets {
            assert!(!g.cases.is_empty(), "{}", g.origin);
            crate::run::prepare(g, crate::envoy::SetAddrs::of(100, 0)?)?;
        }
        Ok(())
    }
}
