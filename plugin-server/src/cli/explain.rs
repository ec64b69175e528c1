//! `peerguard explain`: the decision for one request to one workload, and why.
//!
//! Reads every resource under `--config`, compiles them for the workload described on the
//! command line, decides the request and prints: ALLOW/DENY, the reason naming the policy
//! and rule, the port's mTLS mode and the object that set it, which filter `serve` has take
//! the decision (native RBAC or peerguard's, [`crate::enforcement`]), audit and dry-run
//! results, and the compile diagnostics for this workload.
//!
//! Exit code: 0 when a decision was computed, whatever it is (use `--fail-on-deny` to get 1
//! for DENY in scripts); 2 for invalid input (bad arguments, unreadable `--config`, or
//! resources with errors — the decision, fail-closed for them, is still printed). A file
//! that cannot be read at all (a syntax error) makes the decision DENY ("config invalid",
//! naming the file): what it held is unknown.

use super::output::{mode_source, PolicySummary};
use super::workload::{Mesh, Target};
use peerguard_filter::compile::Workload;
use peerguard_filter::schema::{HttpRequest, HttpVersion, Peer, Reason, Request};
use peerguard_filter::{decide, Decision, WorkloadPolicy};
use serde::Serialize;
use serde_json::{json, Value};
use std::net::IpAddr;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("client").required(true).args(["peer", "plaintext"])))]
pub struct Args {
    #[command(flatten)]
    pub target: super::workload::WorkloadArgs,
    /// Workload (target) port the connection arrives on.
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// mTLS client principal, e.g. `cluster.local/ns/foo/sa/sleep` (without `spiffe://`).
    #[arg(long)]
    pub peer: Option<String>,
    /// Plaintext client (no certificate).
    #[arg(long)]
    pub plaintext: bool,
    /// A TCP connection (no HTTP attributes).
    #[arg(long, conflicts_with_all = ["method", "path", "host", "header"])]
    pub tcp: bool,
    #[arg(long, default_value = "GET")]
    pub method: String,
    #[arg(long, default_value = "/")]
    pub path: String,
    /// `:authority`; default `<workload name>.<namespace>`.
    #[arg(long)]
    pub host: Option<String>,
    /// Request header `name=value` (repeatable; repeat a name to send that header several
    /// times).
    #[arg(long)]
    pub header: Vec<String>,
    /// The request is HTTP/2 (what Envoy's codec accepts differs, e.g. lower-case methods).
    #[arg(long, conflicts_with = "tcp")]
    pub http2: bool,
    #[arg(long)]
    pub source_ip: Option<IpAddr>,
    #[arg(long, value_enum, default_value_t = super::test::Format::Text)]
    pub output: super::test::Format,
    /// Exit 1 when the decision is DENY.
    #[arg(long)]
    pub fail_on_deny: bool,
    /// How `serve` would enforce it (reported as `enforced by`).
    #[command(flatten)]
    pub enforcement: crate::enforcement::Options,
}

#[derive(Debug, Serialize)]
struct Explanation {
    request: Request,
    decision: Decision,
    reason: String,
    mtls: PortMode,
    /// Which filter takes this decision in `serve`'s Envoy (native RBAC or peerguard's).
    enforced_by: Value,
    policies: Vec<PolicySummary>,
    diagnostics: Vec<String>,
    config_errors: Vec<String>,
}

#[derive(Debug, Serialize)]
struct PortMode {
    port: u16,
    mode: String,
    from: Option<String>,
}

fn request(args: &Args, workload: &Workload) -> anyhow::Result<Request> {
    let http = if args.tcp {
        None
    } else {
        let headers = args
            .header
            .iter()
            .map(|h| super::workload::pair(h, "header").map(|(k, v)| (k.to_ascii_lowercase(), v)))
            .collect::<Result<Vec<_>, _>>()?;
        Some(HttpRequest {
            method: args.method.clone(),
            path: args.path.clone(),
            host: args
                .host
                .clone()
                .unwrap_or_else(|| format!("{}.{}", workload.name, workload.namespace)),
            headers,
            version: if args.http2 {
                HttpVersion::Http2
            } else {
                HttpVersion::Http11
            },
        })
    };
    Ok(Request {
        peer: args
            .peer
            .as_deref()
            .map(|p| Peer::from_principal(p.strip_prefix("spiffe://").unwrap_or(p))),
        source_ip: args.source_ip,
        destination_ip: None,
        port: args.port,
        sni: None,
        http,
    })
}

fn prepare(args: &Args) -> anyhow::Result<(Mesh, Target, Request)> {
    let (mesh, target) = args.target.load()?;
    let request = request(args, &target.workload)?;
    Ok((mesh, target, request))
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let (mesh, target, request) = match prepare(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    if target.registered.is_none() {
        eprintln!(
            "note: {} is not in the registry of {}; using the workload described on the command line",
            args.target.workload, mesh.origin
        );
    }
    let policy = mesh.compile(&target.workload);
    let decision = match (mesh.unreadable(), decide::Engine::new(policy.clone())) {
        // A file (or a document) that could not be read at all may hold the only DENY or
        // STRICT that applies here: no decision is taken as if it were not there.
        (Some(why), _) => Decision::deny(Reason::NoConfig { why }),
        (None, Ok(engine)) => peerguard_filter::hcm::decide(&engine, &request),
        (None, Err(e)) => Decision::deny(Reason::NoConfig { why: e.to_string() }),
    };
    let chosen = mesh.enforcement(&target.workload, &policy, &args.enforcement);
    let (slot_name, slot) = match request.http {
        Some(_) => ("http", &chosen.http),
        None => ("tcp", &chosen.tcp),
    };
    let enforced_by =
        json!({"slot": slot_name, "by": slot.to_string(), "workload": chosen.to_json()});
    let mut explanation = explain(&policy, request, decision, mesh.config_errors());
    explanation.enforced_by = enforced_by;
    let text = match args.output {
        super::test::Format::Json => serde_json::to_string_pretty(&explanation)? + "\n",
        super::test::Format::Text => render(&explanation),
    };
    super::output::write_stdout(&text)?;
    // Invalid input is exit 2 even though the decision (fail-closed for the invalid objects)
    // is still printed: a script must not take a broken configuration for a clean answer.
    Ok(if !explanation.config_errors.is_empty() {
        2
    } else if args.fail_on_deny && !explanation.decision.allowed {
        1
    } else {
        0
    })
}

fn explain(
    policy: &WorkloadPolicy,
    request: Request,
    decision: Decision,
    config_errors: Vec<String>,
) -> Explanation {
    let m = policy.mtls.for_port(request.port);
    Explanation {
        mtls: PortMode {
            port: request.port,
            mode: match m.is_dry_run_strict() {
                true => "STRICT (dry-run: enforced as PERMISSIVE)".to_string(),
                false => format!("{:?}", m.mode).to_uppercase(),
            },
            from: m.from.clone(),
        },
        reason: decision.reason.to_string(),
        enforced_by: Value::Null,
        policies: PolicySummary::of(policy),
        diagnostics: policy.diagnostics.clone(),
        request,
        decision,
        config_errors,
    }
}

fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(if e.decision.allowed {
        "ALLOW".into()
    } else {
        "DENY".into()
    });
    line(format!("reason: {}", e.reason));
    line(format!(
        "mTLS: port {} is {} ({})",
        e.mtls.port,
        e.mtls.mode,
        mode_source(e.mtls.from.as_deref())
    ));
    if let Some(by) = e.enforced_by["by"].as_str() {
        line(format!("enforced by: {by}"));
    }
    line(match &e.decision.audit {
        Some(r) => format!("audit: yes, AUDIT policy {r} matched"),
        None => "audit: no AUDIT policy matched".into(),
    });
    let dr = &e.decision.dry_run;
    let shadow = |r: Option<peerguard_filter::schema::ShadowResult>,
                  by: &Option<peerguard_filter::schema::RuleRef>| match r {
        None => "no result".to_string(),
        Some(r) => format!(
            "{}{}",
            format!("{r:?}").to_lowercase(),
            by.as_ref()
                .map(|b| format!(" (by {b})"))
                .unwrap_or_default()
        ),
    };
    line(format!(
        "dry-run: deny: {}; allow: {}",
        shadow(dr.deny, &dr.deny_matched),
        shadow(dr.allow, &dr.allow_matched)
    ));
    if let Some(by) = &dr.strict_refused {
        line(format!(
            "dry-run STRICT: this plaintext connection would be refused (STRICT set by {by})"
        ));
    }
    if e.policies.is_empty() {
        line("authorization policies for this workload: none".into());
    } else {
        line("authorization policies for this workload:".into());
        for p in &e.policies {
            line(format!("  {}", p.line()));
        }
    }
    if !e.diagnostics.is_empty() {
        line("diagnostics:".into());
        for d in &e.diagnostics {
            line(format!("  - {d}"));
        }
    }
    if !e.config_errors.is_empty() {
        line("configuration errors:".into());
        for d in &e.config_errors {
            line(format!("  - {d}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec!["explain", "--config", "x", "--workload", "foo/httpbin"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn builds_workload_and_request() {
        let a = args(&[
            "--labels",
            "app=httpbin,version=v1",
            "--peer",
            "spiffe://cluster.local/ns/a/sa/b",
            "--header",
            "X-Token=admin",
            "--port",
            "8080",
        ])
        .unwrap();
        let mesh = super::super::workload::Mesh {
            inputs: Default::default(),
            config: a.target.mesh.mesh_config(),
            origin: "test".into(),
        };
        let wl = a.target.resolve(&mesh).unwrap().workload;
        let req = request(&a, &wl).unwrap();
        assert_eq!(wl.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(mesh.config.root_namespace, "istio-system");
        assert_eq!(
            req.peer.unwrap().uri_sans,
            vec!["spiffe://cluster.local/ns/a/sa/b"]
        );
        let http = req.http.unwrap();
        assert_eq!(
            http.headers,
            vec![("x-token".to_string(), "admin".to_string())]
        );
        assert_eq!(http.host, "httpbin.foo");
        let tcp = request(&args(&["--plaintext", "--tcp"]).unwrap(), &wl).unwrap();
        assert!(tcp.peer.is_none() && tcp.http.is_none());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(args(&[]).is_err(), "--peer or --plaintext is required");
        assert!(args(&["--plaintext", "--tcp", "--method", "GET"]).is_err());
        assert!(prepare(&args(&["--plaintext", "--labels", "novalue"]).unwrap()).is_err());
        let mut a = args(&["--plaintext"]).unwrap();
        a.target.workload = "no-slash".into();
        assert!(prepare(&a).is_err());
    }
}
