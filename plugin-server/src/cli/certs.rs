//! `peerguard certs`: one command instead of `kubectl get secret | base64 -d | openssl x509`.
//! Reads a chain from a file, a Kubernetes Secret, a live TLS endpoint or what `peerguard serve`
//! issues to a workload, prints each certificate (SPIFFE ID split into trust domain, namespace
//! and service account), verifies the chain against the mesh's trust bundle and flags what
//! Istio would refuse.
//!
//! Exit code: 0 without error findings, 1 with some, 2 for unusable input (bad arguments,
//! unreadable or unparsable certificates, an unreachable endpoint or server).

mod connect;
pub mod fetch;
pub mod inspect;

use crate::ca::duration;
use inspect::{Analysis, Bundle, Finding, Policy, Severity, Usage, VerifyStatus};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// `--help`'s epilogue: the findings (from [`inspect::CODES`]), the bundle order, exit codes.
fn after_help() -> String {
    let mut s = String::from("Findings (code, severity):\n");
    for (code, sev, what) in inspect::CODES {
        let sev = match sev {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        s.push_str(&format!("  {code:<27}{sev:<9}{what}\n"));
    }
    s.push_str(AFTER_HELP);
    s
}

const AFTER_HELP: &str = "
Trust bundle: --trust-bundle, else <--state-dir>/ca/root-cert.pem, else --server's /trust-bundle,
else the Secret's ca.crt / root-cert.pem.
Exit code: 0 without error findings, 1 with some, 2 for unusable input or an unreachable endpoint.";

#[derive(clap::Args, Debug)]
#[command(after_help = after_help())]
pub struct Args {
    #[command(flatten)]
    pub input: Input,
    /// `--secret`: the kubeconfig to use (default: in-cluster, then `$KUBECONFIG`, then
    /// `~/.kube/config`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// `--connect`: a client certificate (PEM chain) to present.
    #[arg(long, requires = "connect", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// `--connect`: the private key of --client-cert (PEM).
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// `--connect`: the SNI to send (default: the host, when it is a name).
    #[arg(long, requires = "connect")]
    pub sni: Option<String>,
    /// `--connect`: ALPN protocols to offer (repeatable). A PERMISSIVE port of an Istio sidecar
    /// selects its mTLS chain by an Istio ALPN: `--alpn istio`.
    #[arg(long, requires = "connect")]
    pub alpn: Vec<String>,
    /// `--connect` and `--server`: network timeout.
    #[arg(long, default_value = "5s", value_parser = duration::parse)]
    pub timeout: Duration,
    /// The ops address of `peerguard serve` (its --http-listen, e.g. http://127.0.0.1:15014):
    /// required by --workload; otherwise where the trust bundle comes from.
    #[arg(long)]
    pub server: Option<String>,
    /// The mesh's roots (PEM) to verify the chain against.
    #[arg(long, conflicts_with = "state_dir")]
    pub trust_bundle: Option<PathBuf>,
    /// The --state-dir of `peerguard serve` with its built-in CA: verify against
    /// `<dir>/ca/root-cert.pem`.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// `meshConfig.trustDomain`.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// `meshConfig.trustDomainAliases` (repeatable).
    #[arg(long = "trust-domain-alias")]
    pub trust_domain_aliases: Vec<String>,
    /// Warn about certificates expiring within this time. Default 1h: serve and Istio rotate a
    /// 24h certificate with about 5h left, so under 1h means rotation is not happening.
    #[arg(long, default_value = "1h", value_parser = duration::parse)]
    pub warn_within: Duration,
    #[arg(long, value_enum, default_value_t = super::test::Format::Text)]
    pub output: super::test::Format,
}

/// Where the certificates come from (exactly one).
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Input {
    /// A PEM file (one or more certificates: leaf first, then its chain) or one DER certificate.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// A Secret `namespace/name` in the cluster (keys tls.crt / ca.crt, or Istio's
    /// cert-chain.pem / root-cert.pem; private keys are never read).
    #[arg(long)]
    pub secret: Option<String>,
    /// A Secret manifest (YAML or JSON, as `kubectl get secret -o yaml` prints it).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// A live TLS endpoint `HOST:PORT`: the chain it presents.
    #[arg(long)]
    pub connect: Option<String>,
    /// The certificate `peerguard serve` (--server) currently issues to workload
    /// `namespace/name`.
    #[arg(long, requires = "server")]
    pub workload: Option<String>,
}

/// What `--output json` prints (stable field names).
#[derive(Debug, Serialize)]
pub struct Report {
    /// What was inspected, e.g. `file leaf.pem`, `Secret foo/web key tls.crt`.
    pub source: String,
    #[serde(flatten)]
    pub analysis: Analysis,
    /// `--connect` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<connect::TlsInfo>,
    pub errors: usize,
    pub warnings: usize,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    match report(&args) {
        Ok(r) => {
            let text = match args.output {
                super::test::Format::Json => serde_json::to_string_pretty(&r)? + "\n",
                super::test::Format::Text => render(&r),
            };
            super::output::write_stdout(&text)?;
            Ok(if r.errors > 0 { 1 } else { 0 })
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(2)
        }
    }
}

fn split_ns_name(v: &str, flag: &str) -> anyhow::Result<(String, String)> {
    match v.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.into(), name.into()))
        }
        _ => anyhow::bail!("{flag} {v:?}: expected NAMESPACE/NAME"),
    }
}

fn read_certs(path: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(inspect::parse_certs(&bytes, &path.display().to_string())?)
}

fn report(args: &Args) -> anyhow::Result<Report> {
    let i = &args.input;
    // The chain, where it came from, a bundle that came with it, and connection facts.
    let mut carried: Option<Bundle> = None;
    let mut tls = None;
    let mut extra: Vec<Finding> = Vec::new();
    let mut usages = vec![Usage::ClientAuth, Usage::ServerAuth];
    let (chain, source) = if let Some(p) = &i.file {
        (read_certs(p)?, format!("file {}", p.display()))
    } else if let Some(s) = &i.secret {
        let (ns, name) = split_ns_name(s, "--secret")?;
        let secret = fetch::secret_from_cluster(args.kubeconfig.as_deref(), &ns, &name)?;
        from_secret(&secret, &format!("Secret {ns}/{name}"), &mut carried)?
    } else if let Some(p) = &i.secret_file {
        let (secret, what) = fetch::secret_from_file(p)?;
        from_secret(&secret, &what, &mut carried)?
    } else if let Some(addr) = &i.connect {
        let identity = match (&args.client_cert, &args.client_key) {
            (Some(c), Some(k)) => Some(connect::load_identity(c, k)?),
            _ => None,
        };
        let presented_cert = identity.is_some();
        let p = connect::connect(
            addr,
            args.sni.as_deref(),
            &args.alpn,
            identity,
            args.timeout,
        )?;
        let cc = &p.tls.client_certificate;
        if presented_cert && cc.result == "rejected" {
            extra.push(inspect::new_finding(
                "client-cert-rejected",
                format!(
                    "the server refused the client certificate: {}",
                    cc.detail.as_deref().unwrap_or("connection closed")
                ),
            ));
        } else if cc.requested && !presented_cert {
            extra.push(inspect::new_finding(
                "client-cert-required",
                format!(
                    "the server asked for a client certificate ({}); present one with --client-cert/--client-key",
                    match cc.result {
                        "rejected" => "and refused the connection without one",
                        "accepted" => "and accepted the connection without one",
                        _ => "none was given",
                    }
                ),
            ));
        }
        // The peer is a server here.
        usages = vec![Usage::ServerAuth];
        let chain = p.chain;
        tls = Some(p.tls);
        (chain, format!("TLS endpoint {addr}"))
    } else if let Some(w) = &i.workload {
        let (ns, name) = split_ns_name(w, "--workload")?;
        let server = args.server.as_deref().unwrap_or_default();
        (
            fetch::workload_chain(server, &ns, &name, args.timeout)?,
            format!("certificate serve at {server} issues to workload {ns}/{name}"),
        )
    } else {
        anyhow::bail!(
            "give one of --file, --secret, --secret-file, --connect, --workload (see --help)"
        );
    };
    let bundle = trust_bundle(args)?.or(carried);
    let mut trust_domains = vec![args.trust_domain.clone()];
    trust_domains.extend(args.trust_domain_aliases.iter().cloned());
    let policy = Policy {
        trust_domains,
        warn_within: i64::try_from(args.warn_within.as_secs()).unwrap_or(i64::MAX),
        usages,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut analysis = inspect::analyze(&chain, bundle.as_ref(), &policy, now)?;
    analysis.findings.extend(extra);
    analysis
        .findings
        .sort_by_key(|f| std::cmp::Reverse(f.severity));
    let count = |s| analysis.findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    Ok(Report {
        source,
        analysis,
        tls,
        errors,
        warnings,
    })
}

fn from_secret(
    secret: &k8s_openapi::api::core::v1::Secret,
    what: &str,
    carried: &mut Option<Bundle>,
) -> anyhow::Result<(Vec<Vec<u8>>, String)> {
    let c = fetch::secret_certs(secret, what)?;
    if let Some((key, ders)) = c.bundle {
        *carried = Some(Bundle {
            origin: format!("{what} key {key}"),
            ders,
        });
    }
    Ok((c.chain, format!("{what} key {}", c.chain_key)))
}

/// The bundle given on the command line, in the order of precedence of `--help`.
fn trust_bundle(args: &Args) -> anyhow::Result<Option<Bundle>> {
    if let Some(p) = &args.trust_bundle {
        return Ok(Some(Bundle {
            origin: format!("--trust-bundle {}", p.display()),
            ders: read_certs(p)?,
        }));
    }
    if let Some(dir) = &args.state_dir {
        let p = dir.join("ca").join("root-cert.pem");
        if !p.exists() {
            anyhow::bail!(
                "--state-dir {}: no built-in CA root at {} (a server with --ca-cert/--trust-bundle keeps its roots where those flags say: use --trust-bundle or --server)",
                dir.display(),
                p.display()
            );
        }
        return Ok(Some(Bundle {
            origin: format!("serve's root {}", p.display()),
            ders: read_certs(&p)?,
        }));
    }
    if let Some(s) = &args.server {
        return Ok(Some(Bundle {
            origin: format!("the trust bundle of serve at {s}"),
            ders: fetch::server_bundle(s, args.timeout)?,
        }));
    }
    Ok(None)
}

fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let a = &r.analysis;
    let n = a.certificates.len();
    let _ = writeln!(
        o,
        "{} ({n} certificate{})",
        r.source,
        if n == 1 { "" } else { "s" }
    );
    if let Some(t) = &r.tls {
        let _ = writeln!(
            o,
            "  TLS: {} {}, ALPN {}, SNI {}",
            t.protocol_version.as_deref().unwrap_or("?"),
            t.cipher_suite.as_deref().unwrap_or("?"),
            t.alpn.as_deref().unwrap_or("none"),
            t.sni.as_deref().unwrap_or("none")
        );
        let c = &t.client_certificate;
        let _ = writeln!(
            o,
            "  client certificate: {}{}",
            match (c.requested, c.presented) {
                (false, _) => "not requested by the server".to_string(),
                (true, false) => format!("requested, none presented: {}", c.result),
                (true, true) => format!("presented: {}", c.result),
            },
            c.detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
        if let Some(e) = &t.handshake_error {
            let _ = writeln!(o, "  handshake failed after the server's certificate: {e}");
        }
    }
    for c in &a.certificates {
        let _ = writeln!(o, "\ncertificate {} ({})", c.index, c.role.as_str());
        let field = |o: &mut String, k: &str, v: &str| {
            let _ = writeln!(o, "  {k:<16}{v}");
        };
        let or_empty = |s: &str| {
            if s.is_empty() {
                "(empty)".to_string()
            } else {
                s.to_string()
            }
        };
        field(&mut o, "subject", &or_empty(&c.subject));
        field(&mut o, "issuer", &or_empty(&c.issuer));
        field(&mut o, "serial", &c.serial);
        let mut sans: Vec<String> = Vec::new();
        sans.extend(c.sans.uri.iter().map(|u| format!("URI:{u}")));
        sans.extend(c.sans.dns.iter().map(|u| format!("DNS:{u}")));
        sans.extend(c.sans.ip.iter().map(|u| format!("IP:{u}")));
        sans.extend(c.sans.email.iter().map(|u| format!("email:{u}")));
        field(
            &mut o,
            "SANs",
            &if sans.is_empty() {
                "none".into()
            } else {
                sans.join(", ")
            },
        );
        if let Some(s) = &c.spiffe {
            let v = match (&s.namespace, &s.service_account) {
                (Some(ns), Some(sa)) => format!(
                    "trust domain {}, namespace {ns}, service account {sa}",
                    s.trust_domain
                ),
                _ => format!(
                    "trust domain {} (path not /ns/<ns>/sa/<sa>)",
                    s.trust_domain
                ),
            };
            field(&mut o, "SPIFFE ID", &v);
        }
        field(&mut o, "not before", &c.not_before);
        let left = if c.remaining_seconds < 0 {
            format!("expired {} ago", inspect::human(c.remaining_seconds))
        } else {
            format!("{} left", inspect::human(c.remaining_seconds))
        };
        field(&mut o, "not after", &format!("{} ({left})", c.not_after));
        let key = match (&c.key.curve, c.key.bits) {
            (Some(curve), _) => format!("{} {curve}", c.key.kind),
            (None, Some(b)) => format!("{} {b} bits", c.key.kind),
            (None, None) => c.key.kind.clone(),
        };
        field(&mut o, "key", &key);
        let ca = match (c.ca, c.path_len) {
            (false, _) => "no".to_string(),
            (true, None) => "yes".to_string(),
            (true, Some(l)) => format!("yes, path length {l}"),
        };
        field(&mut o, "CA", &ca);
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        field(&mut o, "key usage", &list(&c.key_usage));
        field(&mut o, "ext. key usage", &list(&c.extended_key_usage));
        field(&mut o, "sha256", &c.sha256_fingerprint);
    }
    let v = &a.verification;
    let usages: Vec<&str> = v
        .usages
        .iter()
        .map(|u| match u {
            Usage::ClientAuth => "clientAuth",
            Usage::ServerAuth => "serverAuth",
        })
        .collect();
    let _ = writeln!(
        o,
        "\nchain: {}",
        match v.status {
            VerifyStatus::Verified => format!(
                "verified against {} ({} root{}) for {}",
                v.trust_bundle.as_deref().unwrap_or("?"),
                v.roots,
                if v.roots == 1 { "" } else { "s" },
                usages.join(", ")
            ),
            VerifyStatus::NotVerified => format!(
                "NOT verified against {}: {}",
                v.trust_bundle.as_deref().unwrap_or("?"),
                v.reason.as_deref().unwrap_or("?")
            ),
            VerifyStatus::NotChecked => "not checked (no trust bundle)".to_string(),
        }
    );
    if a.findings.is_empty() {
        let _ = writeln!(o, "findings: none");
    } else {
        let _ = writeln!(o, "findings:");
        for f in &a.findings {
            let sev = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let at = f
                .certificate
                .map(|i| format!(" (certificate {i})"))
                .unwrap_or_default();
            let _ = writeln!(o, "  {sev:<8}{}{at}: {}", f.code, f.message);
        }
    }
    let _ = writeln!(o, "{} error(s), {} warning(s)", r.errors, r.warnings);
    o
}
