//! `peerguard describe`: one workload as `serve` sees it — the equivalent of
//! `istioctl x describe pod`: its identity, the mTLS mode of each port and the object that set
//! it, what a meshed client sends to each of its Service ports (DestinationRule or auto mTLS)
//! and whether the workload accepts that, the authorization policies that select it, the
//! compile diagnostics, and (`--server`) the certificate `serve` issues it.
//!
//! Exit code: 0; 1 when a meshed client's connection to one of its ports would fail (the
//! auto mTLS walkthrough's 503: a DestinationRule sending plaintext to a STRICT port, or
//! ISTIO_MUTUAL to a workload without a sidecar) or its certificate has an error finding
//! (`peerguard certs`' findings, or an identity other than the workload's); 2 for invalid
//! input (bad arguments, an unreadable source, resources with errors, a `--server` that does
//! not answer — the description, fail-closed for them, is still printed).

use super::certs::fetch;
use super::certs::inspect::{self, Bundle, Severity, Usage};
use super::output::{mode_source, PolicySummary};
use super::workload::{Mesh, Target};
use peerguard_filter::client::{self, ChoiceSource, ClientContext, ClientTls, Destination};
use peerguard_filter::schema::MtlsMode;
use peerguard_filter::WorkloadPolicy;
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: super::workload::WorkloadArgs,
    /// Namespace of the meshed client whose view of the Service ports is shown (its own
    /// DestinationRules are looked up first); default: the workload's namespace.
    #[arg(long)]
    pub client_namespace: Option<String>,
    /// `meshConfig.enableAutoMtls`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_mtls: bool,
    /// The ops address (`--http-listen`) of the `serve` that issues the workload's
    /// certificate: the certificate it holds is shown and checked (as `peerguard certs`).
    #[arg(long)]
    pub server: Option<String>,
    #[arg(long, value_enum, default_value_t = super::test::Format::Text)]
    pub output: super::test::Format,
    /// How `serve` enforces the policies (shown as `enforced by`).
    #[command(flatten)]
    pub enforcement: crate::enforcement::Options,
}

#[derive(Debug, Serialize)]
pub struct Description {
    pub workload: String,
    pub service_account: String,
    pub spiffe_id: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where the registry defines it; `None`: described on the command line.
    pub registered: Option<String>,
    pub sidecar: bool,
    pub mtls: Vec<PortDescription>,
    pub services: Vec<ServicePortDescription>,
    pub policies: Vec<PolicySummary>,
    /// Which filter `serve` puts in the HTTP and TCP slots, and why.
    pub enforced_by: serde_json::Value,
    pub diagnostics: Vec<String>,
    pub config_errors: Vec<String>,
    /// With `--server`: the certificate `serve` issues the workload.
    pub certificate: Option<HeldCertificate>,
}

#[derive(Debug, Serialize)]
pub struct HeldCertificate {
    pub server: String,
    /// `None` when it could not be fetched (`error` says why).
    pub analysis: Option<inspect::Analysis>,
    /// Problems: fetching, or a SPIFFE ID other than the workload's.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PortDescription {
    /// `None`: every port not listed.
    pub port: Option<u16>,
    pub mode: MtlsMode,
    /// The object that set it; `None`: nothing configured (Istio's default).
    pub from: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ServicePortDescription {
    pub service: String,
    pub port: u16,
    pub target_port: u16,
    pub server_mode: MtlsMode,
    /// What a meshed client in `client_namespace` sends.
    pub client_tls: ClientTls,
    /// `DestinationRule ns/name`, `auto mTLS` or `default (auto mTLS off)`.
    pub client_tls_from: String,
    /// `None`: the connection works; else why it fails.
    pub problem: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let (mesh, target) = match args.target.load() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    let d = describe(&mesh, &target, &args);
    let text = match args.output {
        super::test::Format::Json => serde_json::to_string_pretty(&d)? + "\n",
        super::test::Format::Text => render(&d),
    };
    super::output::write_stdout(&text)?;
    let cert_unreachable = d.certificate.as_ref().is_some_and(|c| c.analysis.is_none());
    let cert_bad = d.certificate.as_ref().is_some_and(|c| {
        c.error.is_some()
            || c.analysis
                .as_ref()
                .is_some_and(|a| a.findings.iter().any(|f| f.severity == Severity::Error))
    });
    Ok(if !d.config_errors.is_empty() || cert_unreachable {
        2
    } else if d.services.iter().any(|s| s.problem.is_some()) || cert_bad {
        1
    } else {
        0
    })
}

pub fn describe(mesh: &Mesh, target: &Target, args: &Args) -> Description {
    let w = &target.workload;
    let policy = mesh.compile(w);
    let mut config_errors = mesh.config_errors();
    if let Some(why) = mesh.unreadable() {
        // Not in the policy: `serve` would hold its updates (and explain denies everything).
        config_errors.push(format!(
            "{why}: serve holds policy updates until it is readable"
        ));
    }
    Description {
        workload: format!("{}/{}", w.namespace, w.name),
        service_account: w.service_account.clone(),
        spiffe_id: spiffe_id(mesh, w),
        labels: w.labels.clone(),
        registered: target.registered.clone(),
        sidecar: target.sidecar,
        mtls: ports(&policy, w),
        services: services(mesh, target, &policy, args),
        policies: PolicySummary::of(&policy),
        enforced_by: mesh.enforcement(w, &policy, &args.enforcement).to_json(),
        diagnostics: policy.diagnostics.clone(),
        config_errors,
        certificate: args
            .server
            .as_deref()
            .map(|server| held_certificate(server, mesh, w)),
    }
}

/// What `serve` at `server` issues to `w`, checked as `peerguard certs --workload` checks it,
/// and against the identity the workload must have.
fn held_certificate(
    server: &str,
    mesh: &Mesh,
    w: &peerguard_filter::compile::Workload,
) -> HeldCertificate {
    let timeout = std::time::Duration::from_secs(5);
    let fetched = fetch::workload_chain(server, &w.namespace, &w.name, timeout)
        .and_then(|chain| fetch::server_bundle(server, timeout).map(|roots| (chain, roots)));
    let (chain, roots) = match fetched {
        Ok(v) => v,
        Err(e) => {
            return HeldCertificate {
                server: server.into(),
                analysis: None,
                error: Some(e.to_string()),
            }
        }
    };
    let policy = inspect::Policy {
        trust_domains: std::iter::once(mesh.config.trust_domain.clone())
            .chain(mesh.config.trust_domain_aliases.iter().cloned())
            .collect(),
        warn_within: 3600,
        usages: vec![Usage::ClientAuth, Usage::ServerAuth],
    };
    let bundle = Bundle {
        origin: format!("the trust bundle of serve at {server}"),
        ders: roots,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    match inspect::analyze(&chain, Some(&bundle), &policy, now) {
        Ok(analysis) => {
            let want = spiffe_id(mesh, w);
            let held = analysis
                .certificates
                .first()
                .and_then(|c| c.spiffe.as_ref())
                .map(|s| s.id.clone());
            let error = (held.as_deref() != Some(want.as_str())).then(|| {
                format!(
                    "the certificate's SPIFFE ID is {}, the workload's identity is {want}",
                    held.as_deref().unwrap_or("missing")
                )
            });
            HeldCertificate {
                server: server.into(),
                analysis: Some(analysis),
                error,
            }
        }
        Err(e) => HeldCertificate {
            server: server.into(),
            analysis: None,
            error: Some(e.to_string()),
        },
    }
}

/// What `serve`'s CA puts in the workload's certificate.
fn spiffe_id(mesh: &Mesh, w: &peerguard_filter::compile::Workload) -> String {
    crate::ca::workload_spiffe_id(&mesh.config.trust_domain, &w.namespace, &w.service_account)
}

/// The default mode, then every port that has its own mode or that a Service targets.
fn ports(policy: &WorkloadPolicy, w: &peerguard_filter::compile::Workload) -> Vec<PortDescription> {
    let mut out = vec![PortDescription {
        port: None,
        mode: policy.mtls.default.mode,
        from: policy.mtls.default.from.clone(),
    }];
    let listed: BTreeSet<u16> = policy
        .mtls
        .ports
        .keys()
        .copied()
        .chain(w.service_ports.iter().map(|p| p.target_port))
        .collect();
    for port in listed {
        let m = policy.mtls.for_port(port);
        out.push(PortDescription {
            port: Some(port),
            mode: m.mode,
            from: m.from.clone(),
        });
    }
    out
}

fn services(
    mesh: &Mesh,
    target: &Target,
    policy: &WorkloadPolicy,
    args: &Args,
) -> Vec<ServicePortDescription> {
    let w = &target.workload;
    let ctx = ClientContext {
        namespace: args
            .client_namespace
            .clone()
            .unwrap_or_else(|| w.namespace.clone()),
        root_namespace: mesh.config.root_namespace.clone(),
        auto_mtls: args.auto_mtls,
        ..ClientContext::default()
    };
    w.service_ports
        .iter()
        .map(|sp| {
            let server_mode = policy.mtls.for_port(sp.target_port).mode;
            let endpoint = if target.sidecar {
                client::Endpoint {
                    has_sidecar: true,
                    server_mode,
                }
            } else {
                client::Endpoint::no_sidecar()
            };
            let dest = Destination {
                service: sp.service.clone(),
                namespace: w.namespace.clone(),
                port: sp.port,
                subset: None,
            };
            let choice = client::choose(&mesh.inputs.resources, &ctx, &dest, endpoint);
            let from = match &choice.source {
                ChoiceSource::DestinationRule { object, .. } => object.clone(),
                ChoiceSource::AutoMtls => "auto mTLS".into(),
                ChoiceSource::Default => "default (auto mTLS off)".into(),
            };
            ServicePortDescription {
                service: sp.service.clone(),
                port: sp.port,
                target_port: sp.target_port,
                server_mode,
                client_tls: choice.tls,
                client_tls_from: from,
                problem: problem(target.sidecar, server_mode, choice.tls),
            }
        })
        .collect()
}

/// Whether the server side accepts what the client sends (spec 5: the walkthrough's 503s).
fn problem(sidecar: bool, server: MtlsMode, client: ClientTls) -> Option<String> {
    match (sidecar, server, client) {
        (false, _, ClientTls::IstioMutual) => Some(
            "ISTIO_MUTUAL towards a workload without a sidecar: the handshake fails (503)".into(),
        ),
        (true, MtlsMode::Strict, ClientTls::Plaintext) => {
            Some("plaintext towards a STRICT port: the connection is refused (503)".into())
        }
        (true, MtlsMode::Strict, ClientTls::Simple) => Some(
            "TLS without a client certificate towards a STRICT port: refused (503)".into(),
        ),
        (true, MtlsMode::Disable, ClientTls::IstioMutual) => Some(
            "ISTIO_MUTUAL towards a DISABLE port: the sidecar passes the TLS bytes to the app, which fails".into(),
        ),
        _ => None,
    }
}

fn mode(m: MtlsMode) -> String {
    format!("{m:?}").to_uppercase()
}

fn tls(t: ClientTls) -> &'static str {
    match t {
        ClientTls::Plaintext => "plaintext",
        ClientTls::IstioMutual => "ISTIO_MUTUAL",
        ClientTls::Simple => "SIMPLE",
        ClientTls::Mutual => "MUTUAL",
    }
}

fn render(d: &Description) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("workload: {}", d.workload));
    line(format!(
        "  identity: {} (service account {})",
        d.spiffe_id, d.service_account
    ));
    let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    line(format!(
        "  labels: {}",
        if labels.is_empty() {
            "none".into()
        } else {
            labels.join(",")
        }
    ));
    line(format!(
        "  registry: {}; sidecar: {}",
        d.registered
            .as_deref()
            .map(|f| format!("defined in {f}"))
            .unwrap_or_else(|| "not registered (described on the command line)".into()),
        if d.sidecar { "yes" } else { "no" }
    ));
    line("mTLS (server side):".into());
    for p in &d.mtls {
        line(format!(
            "  {}: {} ({})",
            p.port
                .map(|p| format!("port {p}"))
                .unwrap_or_else(|| "other ports".into()),
            mode(p.mode),
            mode_source(p.from.as_deref())
        ));
    }
    if d.services.is_empty() {
        line("services: none known".into());
    } else {
        line("services (what a meshed client sends):".into());
        for s in &d.services {
            line(format!(
                "  {}:{} -> {} ({}): client sends {} ({}){}",
                s.service,
                s.port,
                s.target_port,
                mode(s.server_mode),
                tls(s.client_tls),
                s.client_tls_from,
                s.problem
                    .as_deref()
                    .map(|p| format!(" — FAILS: {p}"))
                    .unwrap_or_else(|| " — ok".into())
            ));
        }
    }
    if d.policies.is_empty() {
        line("authorization policies: none".into());
    } else {
        line("authorization policies:".into());
        for p in &d.policies {
            line(format!("  {}", p.line()));
        }
    }
    line("enforced by (serve):".into());
    for slot in ["http", "tcp"] {
        line(format!(
            "  {slot}: {}",
            d.enforced_by[slot]["by"].as_str().unwrap_or("?")
        ));
    }
    if let Some(c) = &d.certificate {
        line(format!("certificate (issued by serve at {}):", c.server));
        if let Some(a) = &c.analysis {
            if let Some(leaf) = a.certificates.first() {
                line(format!(
                    "  {} serial {}",
                    leaf.spiffe
                        .as_ref()
                        .map(|s| s.id.as_str())
                        .unwrap_or("no SPIFFE ID"),
                    leaf.serial
                ));
                line(format!(
                    "  valid {} to {} ({})",
                    leaf.not_before,
                    leaf.not_after,
                    if leaf.remaining_seconds >= 0 {
                        format!("{} left", inspect::human(leaf.remaining_seconds))
                    } else {
                        format!("expired {} ago", inspect::human(leaf.remaining_seconds))
                    }
                ));
            }
            line(format!(
                "  chain: {}",
                match a.verification.status {
                    inspect::VerifyStatus::Verified =>
                        "verified against serve's trust bundle".to_string(),
                    _ => format!(
                        "NOT verified: {}",
                        a.verification.reason.as_deref().unwrap_or("unknown")
                    ),
                }
            ));
            for f in &a.findings {
                let severity = format!("{:?}", f.severity).to_lowercase();
                line(format!("  {severity} {}: {}", f.code, f.message));
            }
        }
        if let Some(e) = &c.error {
            line(format!("  ERROR: {e}"));
        }
    }
    for (title, list) in [
        ("diagnostics", &d.diagnostics),
        ("configuration errors", &d.config_errors),
    ] {
        if !list.is_empty() {
            line(format!("{title}:"));
            for e in list {
                line(format!("  - {e}"));
            }
        }
    }
    out
}
