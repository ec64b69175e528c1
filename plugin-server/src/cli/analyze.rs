//! `peerguard analyze`: what is wrong or risky in a mesh's resources (the core is
//! [`crate::analyze`]), from a directory (`--config`) or a cluster (`--source kubernetes`),
//! read exactly as `serve` reads them.
//!
//! Exit code: 0 when no finding is an error, 1 when some is (invalid objects are errors),
//! 2 when the input cannot be used at all (no such directory, no cluster, an unreadable
//! `--ca-cert`, `--server` not answering).

use crate::analyze::{self, CaCert, CertFacts, Finding, Severity};
use crate::ca::duration;
use anyhow::{bail, Context};
use serde::Serialize;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub mesh: super::workload::MeshArgs,
    #[arg(long, value_enum, default_value_t = super::test::Format::Text)]
    pub output: super::test::Format,
    /// Leave out findings below this severity (the exit code still counts every error).
    #[arg(long, value_enum, default_value_t = Severity::Info)]
    pub min_severity: Severity,
    /// `serve --workload-cert-ttl` to check (same parser and default as `serve`).
    #[arg(long, default_value = "24h", value_parser = duration::parse)]
    pub workload_cert_ttl: Duration,
    /// `serve --max-workload-cert-ttl` to check against.
    #[arg(long, default_value = "90d", value_parser = duration::parse)]
    pub max_workload_cert_ttl: Duration,
    /// The signing CA certificate (PEM): flagged when it expires within --warn-within.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// A running `serve`'s ops address (`http://127.0.0.1:15014`): its `/metrics` give each
    /// workload's certificate expiry (and the CA's when --ca-cert is not given).
    #[arg(long)]
    pub server: Option<String>,
    /// How close to expiry the CA is flagged; workload certificates are flagged past serve's
    /// renewal point (80% of --workload-cert-ttl) when that is sooner.
    #[arg(long, default_value = "30d", value_parser = duration::parse)]
    pub warn_within: Duration,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    origin: &'a str,
    findings: Vec<&'a Finding>,
    summary: Summary,
}

#[derive(Debug, Serialize, Default)]
struct Summary {
    error: usize,
    warning: usize,
    info: usize,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let prepared = args
        .mesh
        .load()
        .and_then(|mesh| cert_facts(&args).map(|c| (mesh, c)));
    let (mesh, certs) = match prepared {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    let findings = analyze::analyze(&mesh.inputs, &mesh.config, &certs);
    let mut summary = Summary::default();
    for f in &findings {
        match f.severity {
            Severity::Error => summary.error += 1,
            Severity::Warning => summary.warning += 1,
            Severity::Info => summary.info += 1,
        }
    }
    let errors = summary.error;
    let shown: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity >= args.min_severity)
        .collect();
    let text = match args.output {
        super::test::Format::Json => {
            serde_json::to_string_pretty(&Report {
                origin: &mesh.origin,
                findings: shown,
                summary,
            })? + "\n"
        }
        super::test::Format::Text => render_text(&shown, &summary, &mesh.origin),
    };
    super::output::write_stdout(&text)?;
    Ok(if errors > 0 { 1 } else { 0 })
}

/// One group per object; one line per finding, its fix indented below.
fn render_text(findings: &[&Finding], s: &Summary, origin: &str) -> String {
    let mut out = String::new();
    let mut last: Option<(&str, &str)> = None;
    for f in findings {
        if last != Some((f.object.as_str(), f.file.as_str())) {
            if last.is_some() {
                out.push('\n');
            }
            out.push_str(&format!(
                "{}{}\n",
                f.object,
                if f.file.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", f.file)
                }
            ));
            last = Some((f.object.as_str(), f.file.as_str()));
        }
        let field = if f.field.is_empty() {
            String::new()
        } else {
            format!(" {}", f.field)
        };
        out.push_str(&format!(
            "  {} {} {}{field}: {}\n",
            f.severity.as_str(),
            f.code,
            f.object,
            f.message
        ));
        let mut lines = f.hint.lines();
        if let Some(first) = lines.next() {
            out.push_str(&format!("      fix: {first}\n"));
        }
        for l in lines {
            out.push_str(&format!("           {l}\n"));
        }
    }
    if !findings.is_empty() {
        out.push('\n');
    }
    out.push_str(&format!(
        "{} error(s), {} warning(s), {} info ({origin})\n",
        s.error, s.warning, s.info
    ));
    out
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn cert_facts(args: &Args) -> anyhow::Result<CertFacts> {
    let mut facts = CertFacts::defaults(now());
    facts.warn_within = args.warn_within;
    facts.workload_cert_ttl = args.workload_cert_ttl;
    facts.max_workload_cert_ttl = args.max_workload_cert_ttl;
    if let Some(path) = &args.ca_cert {
        facts.ca = Some(CaCert {
            source: path.display().to_string(),
            not_after: pem_not_after(path)?,
        });
    }
    if let Some(server) = &args.server {
        let url = metrics_url(server);
        let body = http_get(&url).with_context(|| format!("--server {server}: GET {url}"))?;
        let (certs, ca) = analyze::parse_metrics(&body);
        facts.workload_certs = certs;
        facts.workload_certs_source = url.clone();
        if facts.ca.is_none() {
            facts.ca = ca.map(|not_after| CaCert {
                source: url,
                not_after,
            });
        }
    }
    Ok(facts)
}

fn pem_not_after(path: &Path) -> anyhow::Result<i64> {
    let pem = std::fs::read(path).with_context(|| format!("--ca-cert {}", path.display()))?;
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("--ca-cert {}: not a PEM certificate: {e}", path.display()))?;
    let cert = p.parse_x509().map_err(|e| {
        anyhow::anyhow!(
            "--ca-cert {}: not an X.509 certificate: {e}",
            path.display()
        )
    })?;
    Ok(cert.validity().not_after.timestamp())
}

fn metrics_url(server: &str) -> String {
    let s = server.trim_end_matches('/');
    let after_scheme = s.split_once("://").map(|(_, r)| r).unwrap_or(s);
    if after_scheme.contains('/') {
        s.to_string()
    } else {
        format!("{s}/metrics")
    }
}

/// A plain HTTP/1.0 GET (serve's ops endpoint speaks plain HTTP on a local address).
fn http_get(url: &str) -> anyhow::Result<String> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("only http:// is supported (serve's ops endpoint)");
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    use std::net::ToSocketAddrs;
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("{hostport}: no address"))?;
    let timeout = Duration::from_secs(10);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    stream.take(64 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("not an HTTP response")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        bail!("answered {status:?}");
    }
    Ok(body.to_string())
}
