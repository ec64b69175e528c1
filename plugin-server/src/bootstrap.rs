//! `peerguard bootstrap`: an Envoy bootstrap for an inbound sidecar, built from the one
//! vocabulary in [`crate::envoy_config`].
//!
//! - Default: the sidecar gets its filter configuration over ECDS and its certificates over
//!   SDS from `peerguard serve` (static cluster `peerguard-xds`; every xDS stream carries the
//!   node's bootstrap token as gRPC initial metadata `x-peerguard-token`). One listener
//!   `inbound` serves `--protocol` (http, tcp, or sniff: both on one port). The ECDS filters
//!   wait for their first configuration (`initial_fetch_timeout: 0s`); a deny-all RBAC is the
//!   default used only if the fetch fails.
//! - `--static`: the reference sidecar of `manifests/envoy/reference-sidecar.yaml`, without a
//!   server: an HTTP and a TCP listener, certificates from files, the module and its
//!   `WorkloadPolicy` (`--policy-file`) inline.

use crate::envoy_config::{
    self as ec, AppProtocol, Authz, Certs, Chains, Inbound, PathNormalization,
};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The workload this Envoy runs as, `<namespace>/<name>` (a `Workload` in the registry).
    #[arg(long, required_unless_present = "static_sidecar")]
    pub node: Option<String>,
    /// The peerguard server: `HOST:PORT` or `unix:/path/to.sock`.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub server: String,
    /// The .wasm module path. With the server it only is checked to exist (the server sends
    /// the path Envoy loads), so a wrong path fails here rather than at the first ECDS push;
    /// with `--static` it is the path Envoy loads.
    #[arg(long, required_if_eq("static_sidecar", "true"))]
    pub wasm: Option<PathBuf>,
    /// The node's bootstrap token (see `<state-dir>/tokens/<ns>/<name>.token`).
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Trust domain accepted at the TLS handshake (repeat `--trust-domain-alias` for more).
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    #[arg(long = "trust-domain-alias")]
    pub trust_domain_aliases: Vec<String>,
    /// What the inbound port serves: http (connection manager + HTTP filter), tcp (network
    /// filter + tcp_proxy), or sniff (both on one port, told apart per connection as Istio
    /// does on a port without a declared protocol).
    #[arg(long, value_enum, default_value = "http")]
    pub protocol: AppProtocol,
    /// Istio's `meshConfig.pathNormalization`: NONE, BASE, MERGE_SLASHES or
    /// DECODE_AND_MERGE_SLASHES. The filter decides on the path the app receives.
    #[arg(long, default_value = "BASE")]
    pub path_normalization: PathNormalization,
    /// Port of the inbound listener (with `--static`: the HTTP listener).
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// Address the inbound listener binds.
    #[arg(long, default_value = "0.0.0.0")]
    pub inbound_address: String,
    /// The local application's port.
    #[arg(long, default_value_t = 8080)]
    pub app_port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub app_address: String,
    /// Envoy admin port (bound to 127.0.0.1).
    #[arg(long, default_value_t = 15000)]
    pub admin_port: u16,
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: Format,
    /// The reference sidecar without a server (see the module docs).
    #[arg(long = "static")]
    pub static_sidecar: bool,
    /// `--static`: port of the TCP listener.
    #[arg(long, default_value_t = 15007)]
    pub tcp_port: u16,
    /// `--static`: this workload's certificate, its key, and the mesh roots (PEM files).
    #[arg(long, required_if_eq("static_sidecar", "true"))]
    pub cert_file: Option<PathBuf>,
    #[arg(long, required_if_eq("static_sidecar", "true"))]
    pub key_file: Option<PathBuf>,
    #[arg(long, required_if_eq("static_sidecar", "true"))]
    pub ca_file: Option<PathBuf>,
    /// `--static`: the `WorkloadPolicy` JSON the filters run (from `peerguard compile`).
    /// Without it the filters start with no configuration and deny everything.
    #[arg(long)]
    pub policy_file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let value = build(&args)?;
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&value)?,
        Format::Yaml => serde_saphyr::to_string(&value).context("rendering YAML")?,
    };
    crate::cli::output::write_stdout(&(text + "\n"))?;
    Ok(0)
}

fn trust_domains(args: &Args) -> Vec<String> {
    let mut tds = vec![args.trust_domain.clone()];
    tds.extend(args.trust_domain_aliases.iter().cloned());
    tds
}

fn app_cluster(address: &str, port: u16) -> Value {
    ec::static_cluster(APP_CLUSTER, &[(address.to_string(), port)])
}

/// The local application's cluster.
pub const APP_CLUSTER: &str = "inbound-app";

pub fn build(args: &Args) -> anyhow::Result<Value> {
    if args.static_sidecar {
        return build_static(args);
    }
    let node = args.node.as_deref().unwrap_or_default();
    let (ns, name) = match node.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => (ns, name),
        _ => bail!("--node {node:?}: expected <namespace>/<name>"),
    };
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading --token-file {}", f.display()))?.trim().to_string(),
        (None, None) => bail!("a bootstrap token is required (--token or --token-file): without it the server sends no certificates"),
    };
    if let Some(w) = &args.wasm {
        if !w.is_file() {
            bail!(
                "--wasm {}: no such file (build it with scripts/build-wasm.sh)",
                w.display()
            );
        }
    }
    let xds = ec::xds_cluster(&args.server).with_context(|| "--server".to_string())?;
    let source = ec::xds_config_source(&token);
    let inbound = Inbound {
        name: "inbound".into(),
        address: args.inbound_address.clone(),
        port: args.inbound_port,
        protocol: args.protocol,
        trust_domains: trust_domains(args),
        certs: Certs::Sds {
            source: source.clone(),
        },
        authz: Authz::Ecds { source },
        chains: Chains::Both,
        path_normalization: args.path_normalization,
        http_cluster: APP_CLUSTER.into(),
        tcp_cluster: APP_CLUSTER.into(),
        route_timeout: None,
    };
    let node = json!({"id": format!("{ns}/{name}"), "cluster": name, "metadata": {"NAMESPACE": ns, "WORKLOAD_NAME": name}});
    Ok(ec::bootstrap(
        Some(node),
        ec::admin("127.0.0.1", args.admin_port),
        vec![inbound.listener()],
        vec![xds, app_cluster(&args.app_address, args.app_port)],
    ))
}

/// The reference sidecar's inputs (strings as Envoy gets them: the reference manifest keeps
/// `@PLACEHOLDERS@` in them).
#[derive(Debug, Clone)]
pub struct Reference {
    pub wasm: String,
    pub cert: String,
    pub key: String,
    pub ca: String,
    pub policy_json: Option<String>,
    pub trust_domains: Vec<String>,
    pub address: String,
    pub http_port: u16,
    pub tcp_port: u16,
    pub app_address: String,
    pub app_port: u16,
    pub admin_port: u16,
    pub path_normalization: PathNormalization,
}

/// `manifests/envoy/reference-sidecar.yaml`: an HTTP and a TCP listener in front of the
/// local app, the filter configured inline.
pub fn reference(r: &Reference) -> Value {
    let listener = |name: &str, port: u16, protocol: AppProtocol| {
        Inbound {
            name: name.into(),
            address: r.address.clone(),
            port,
            protocol,
            trust_domains: r.trust_domains.clone(),
            certs: Certs::Files {
                cert: r.cert.clone(),
                key: r.key.clone(),
                ca: r.ca.clone(),
            },
            authz: Authz::Wasm {
                module: r.wasm.clone(),
                policy_json: r.policy_json.clone(),
            },
            chains: Chains::Both,
            path_normalization: r.path_normalization,
            http_cluster: APP_CLUSTER.into(),
            tcp_cluster: APP_CLUSTER.into(),
            route_timeout: None,
        }
        .listener()
    };
    ec::bootstrap(
        None,
        ec::admin("127.0.0.1", r.admin_port),
        vec![
            listener("inbound_http", r.http_port, AppProtocol::Http),
            listener("inbound_tcp", r.tcp_port, AppProtocol::Tcp),
        ],
        vec![app_cluster(&r.app_address, r.app_port)],
    )
}

fn build_static(args: &Args) -> anyhow::Result<Value> {
    let file = |flag: &str, p: &Option<PathBuf>| -> anyhow::Result<String> {
        let p: &Path = p
            .as_deref()
            .with_context(|| format!("--static needs --{flag}"))?;
        if !p.is_file() {
            bail!("--{flag} {}: no such file", p.display());
        }
        Ok(p.display().to_string())
    };
    let policy_json = match &args.policy_file {
        None => None,
        // Embedded as written: the filter validates it and refuses an invalid one (Envoy does
        // not start), the same check as for a configuration from the server.
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading --policy-file {}", f.display()))?
                .trim()
                .to_string(),
        ),
    };
    Ok(reference(&Reference {
        wasm: file("wasm", &args.wasm)?,
        cert: file("cert-file", &args.cert_file)?,
        key: file("key-file", &args.key_file)?,
        ca: file("ca-file", &args.ca_file)?,
        policy_json,
        trust_domains: trust_domains(args),
        address: args.inbound_address.clone(),
        http_port: args.inbound_port,
        tcp_port: args.tcp_port,
        app_address: args.app_address.clone(),
        app_port: args.app_port,
        admin_port: args.admin_port,
        path_normalization: args.path_normalization,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy_config::listener::{HTTP_FILTER, TCP_FILTER, TRANSPORT_FILTER};
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: Args,
    }

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["x", "--node", "foo/httpbin", "--token", "abc"];
        v.extend_from_slice(extra);
        T::parse_from(v).a
    }

    #[test]
    fn http_bootstrap_wires_ecds_sds_and_the_token() {
        let b = build(&args(&["--trust-domain-alias", "old.td"])).unwrap();
        assert_eq!(b["node"]["id"], "foo/httpbin");
        let l = &b["static_resources"]["listeners"][0];
        let chains = l["filter_chains"].as_array().unwrap();
        assert_eq!(chains.len(), 2);
        let tls = &chains[0]["transport_socket"]["typed_config"];
        assert_eq!(tls["require_client_certificate"], true);
        let sans = &tls["common_tls_context"]["combined_validation_context"]
            ["default_validation_context"]["match_typed_subject_alt_names"];
        assert_eq!(sans[0]["matcher"]["prefix"], "spiffe://cluster.local/");
        assert_eq!(sans[1]["matcher"]["prefix"], "spiffe://old.td/");
        // The transport slot first in every chain, then the connection manager.
        assert_eq!(chains[0]["filters"][0]["name"], TRANSPORT_FILTER);
        assert_eq!(chains[1]["filters"][0]["name"], TRANSPORT_FILTER);
        let hcm = &chains[0]["filters"][1]["typed_config"];
        assert_eq!(hcm["forward_client_cert_details"], "SANITIZE_SET");
        let f = &hcm["http_filters"][0];
        assert_eq!(f["name"], HTTP_FILTER);
        assert_eq!(
            f["config_discovery"]["config_source"]["initial_fetch_timeout"],
            "0s"
        );
        let md = &f["config_discovery"]["config_source"]["api_config_source"]["grpc_services"][0]
            ["initial_metadata"][0];
        assert_eq!(md["key"], "x-peerguard-token");
        assert_eq!(md["value"], "abc");
    }

    #[test]
    fn tcp_bootstrap_uses_the_network_filter() {
        let b = build(&args(&[
            "--protocol",
            "tcp",
            "--server",
            "unix:/run/pg.sock",
        ]))
        .unwrap();
        let f = &b["static_resources"]["listeners"][0]["filter_chains"][1]["filters"];
        assert_eq!(f[0]["name"], TRANSPORT_FILTER);
        assert_eq!(f[1]["name"], TCP_FILTER);
        assert_eq!(f[2]["name"], "envoy.filters.network.tcp_proxy");
        assert_eq!(
            b["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
                [0]["endpoint"]["address"]["pipe"]["path"],
            "/run/pg.sock"
        );
    }

    #[test]
    fn refuses_bad_input() {
        let mut a = args(&[]);
        a.node = Some("nonamespace".into());
        assert!(build(&a).is_err());
        let mut a = args(&[]);
        a.token = None;
        assert!(build(&a).unwrap_err().to_string().contains("token"));
        let mut a = args(&[]);
        a.server = "nowhere".into();
        assert!(format!("{:#}", build(&a).unwrap_err()).contains("expected HOST:PORT"));
    }

    #[test]
    fn path_normalization_is_a_setting() {
        let hcm = |extra: &[&str]| {
            build(&args(extra)).unwrap()["static_resources"]["listeners"][0]["filter_chains"][0]
                ["filters"][1]["typed_config"]
                .clone()
        };
        let base = hcm(&[]);
        assert_eq!(
            (
                base["normalize_path"].clone(),
                base["merge_slashes"].clone()
            ),
            (json!(true), json!(false))
        );
        assert_eq!(base["use_remote_address"], true);
        assert_eq!(base["xff_num_trusted_hops"], 0);
        let decode = hcm(&["--path-normalization", "DECODE_AND_MERGE_SLASHES"]);
        assert_eq!(
            decode["path_with_escaped_slashes_action"],
            "UNESCAPE_AND_FORWARD"
        );
        assert_eq!(decode["merge_slashes"], true);
        assert_eq!(
            hcm(&["--path-normalization", "NONE"])["normalize_path"],
            false
        );
    }

    #[test]
    fn static_sidecar_needs_its_files() {
        let r = T::try_parse_from(["x", "--static", "--wasm", "/m.wasm"]);
        assert!(
            r.is_err(),
            "--static without --cert-file/--key-file/--ca-file"
        );
        let a = T::try_parse_from([
            "x",
            "--static",
            "--wasm",
            "/nonexistent.wasm",
            "--cert-file",
            "/c",
            "--key-file",
            "/k",
            "--ca-file",
            "/ca",
        ])
        .unwrap()
        .a;
        assert!(format!("{:#}", build(&a).unwrap_err())
            .contains("--wasm /nonexistent.wasm: no such file"));
    }
}
