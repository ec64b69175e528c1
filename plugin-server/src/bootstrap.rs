//! `peerguard bootstrap`: an Envoy bootstrap for a sidecar that gets its peerguard filter
//! configuration over ECDS and its certificates over SDS from `peerguard serve`.
//!
//! Shape (inbound side only):
//! - static cluster `peerguard-xds`: HTTP/2 to the server; every xDS stream carries the
//!   node's bootstrap token as gRPC initial metadata (`x-peerguard-token`);
//! - listener `inbound` with `tls_inspector` and two chains: TLS (SDS `default` + `ROOTCA`,
//!   client certificate required, URI SAN prefix `spiffe://<td>/` for the trust domain and
//!   each alias, as Istio's handshake check, spec 1.3) and plaintext. Whether plaintext is
//!   allowed is the filter's decision (PeerAuthentication), so both chains run it;
//! - HTTP: HCM with the wasm filter from ECDS (`initial_fetch_timeout: 0s`: the listener
//!   waits for its policy, as Istio does for extensions), XFCC `SANITIZE_SET`, router to
//!   the app; TCP: the network wasm filter from ECDS, then `tcp_proxy` to the app.
//!   `default_config` is a deny-all RBAC, used only if the fetch fails.
//!
//! Emitted as JSON values, never protos (envoy-types has no serde).

use crate::snapshot::{HTTP_FILTER, HTTP_WASM_TYPE, NETWORK_WASM_TYPE, SECRET_CERT, SECRET_ROOT, TCP_FILTER};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Tcp,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The workload this Envoy runs as, `<namespace>/<name>` (a `Workload` in the registry).
    #[arg(long)]
    pub node: String,
    /// The peerguard server: `HOST:PORT` or `unix:/path/to.sock`.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub server: String,
    /// The .wasm module path; the server sends the path Envoy loads, this one is only
    /// checked to exist so a wrong path fails here rather than at the first ECDS push.
    #[arg(long)]
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
    /// HTTP (HCM + HTTP filter) or TCP (network filter + tcp_proxy).
    #[arg(long, value_enum, default_value = "http")]
    pub protocol: Protocol,
    /// Port of the inbound listener.
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
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let value = build(&args)?;
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&value)?,
        Format::Yaml => serde_saphyr::to_string(&value).context("rendering YAML")?,
    };
    println!("{text}");
    Ok(0)
}

fn socket_address(addr: &str) -> anyhow::Result<(Value, bool)> {
    if let Some(path) = addr.strip_prefix("unix:") {
        return Ok((json!({"pipe": {"path": path}}), false));
    }
    let (host, port) = addr.rsplit_once(':').with_context(|| format!("--server {addr:?}: expected HOST:PORT or unix:/path"))?;
    let port: u16 = port.parse().with_context(|| format!("--server {addr:?}: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    Ok((json!({"socket_address": {"address": host, "port_value": port}}), !is_ip))
}

pub fn build(args: &Args) -> anyhow::Result<Value> {
    let (ns, name) = match args.node.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => (ns, name),
        _ => bail!("--node {:?}: expected <namespace>/<name>", args.node),
    };
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading --token-file {}", f.display()))?.trim().to_string(),
        (None, None) => bail!("a bootstrap token is required (--token or --token-file): without it the server sends no certificates"),
    };
    if let Some(w) = &args.wasm {
        if !w.is_file() {
            bail!("--wasm {}: no such file (build it with scripts/build-wasm.sh)", w.display());
        }
    }
    let (xds_addr, dns) = socket_address(&args.server)?;
    let grpc = json!({
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{
            "envoy_grpc": {"cluster_name": "peerguard-xds"},
            "initial_metadata": [{"key": crate::node::TOKEN_HEADER, "value": token}],
        }],
    });
    let source = json!({"api_config_source": grpc, "resource_api_version": "V3", "initial_fetch_timeout": "0s"});

    let mut san = vec![json!({"san_type": "URI", "matcher": {"prefix": format!("spiffe://{}/", args.trust_domain)}})];
    for alias in &args.trust_domain_aliases {
        san.push(json!({"san_type": "URI", "matcher": {"prefix": format!("spiffe://{alias}/")}}));
    }
    let mut common = json!({
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
        "tls_certificate_sds_secret_configs": [{"name": SECRET_CERT, "sds_config": source}],
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": san},
            "validation_context_sds_secret_config": {"name": SECRET_ROOT, "sds_config": source},
        },
    });
    if args.protocol == Protocol::Http {
        common["alpn_protocols"] = json!(["h2", "http/1.1"]);
    }
    let tls = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": common,
        },
    });

    let filters = match args.protocol {
        Protocol::Http => vec![json!({
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "inbound_http",
                "codec_type": "AUTO",
                "forward_client_cert_details": "SANITIZE_SET",
                "set_current_client_cert_details": {"uri": true},
                "route_config": {
                    "name": "inbound",
                    "virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "inbound-app"}}]}],
                },
                "http_filters": [
                    {
                        "name": HTTP_FILTER,
                        "config_discovery": {
                            "config_source": source,
                            "default_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC", "rules": {}},
                            "type_urls": [HTTP_WASM_TYPE, "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"],
                        },
                    },
                    {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                ],
            },
        })],
        Protocol::Tcp => vec![
            json!({
                "name": TCP_FILTER,
                "config_discovery": {
                    "config_source": source,
                    "default_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC", "stat_prefix": "peerguard_default", "rules": {}},
                    "type_urls": [NETWORK_WASM_TYPE, "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"],
                },
            }),
            json!({
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "inbound_tcp", "cluster": "inbound-app"},
            }),
        ],
    };

    let listener = json!({
        "name": "inbound",
        "address": {"socket_address": {"address": args.inbound_address, "port_value": args.inbound_port}},
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
        "filter_chains": [
            {"name": "inbound-mtls", "filter_chain_match": {"transport_protocol": "tls"}, "transport_socket": tls, "filters": filters},
            {"name": "inbound-plaintext", "filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": filters},
        ],
    });
    let xds_cluster = json!({
        "name": "peerguard-xds",
        "type": if dns { "STRICT_DNS" } else { "STATIC" },
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    "connection_keepalive": {"interval": "30s", "timeout": "10s"},
                }},
            },
        },
        "load_assignment": {"cluster_name": "peerguard-xds", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": xds_addr}}]}]},
    });
    let app_cluster = json!({
        "name": "inbound-app",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "inbound-app", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": args.app_address, "port_value": args.app_port}}}}]}]},
    });
    Ok(json!({
        "node": {
            "id": format!("{ns}/{name}"),
            "cluster": name,
            "metadata": {"NAMESPACE": ns, "WORKLOAD_NAME": name},
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": args.admin_port}}},
        "static_resources": {"clusters": [xds_cluster, app_cluster], "listeners": [listener]},
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
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
        let sans = &tls["common_tls_context"]["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"];
        assert_eq!(sans[0]["matcher"]["prefix"], "spiffe://cluster.local/");
        assert_eq!(sans[1]["matcher"]["prefix"], "spiffe://old.td/");
        let hcm = &chains[0]["filters"][0]["typed_config"];
        assert_eq!(hcm["forward_client_cert_details"], "SANITIZE_SET");
        let f = &hcm["http_filters"][0];
        assert_eq!(f["name"], HTTP_FILTER);
        assert_eq!(f["config_discovery"]["config_source"]["initial_fetch_timeout"], "0s");
        let md = &f["config_discovery"]["config_source"]["api_config_source"]["grpc_services"][0]["initial_metadata"][0];
        assert_eq!(md["key"], "x-peerguard-token");
        assert_eq!(md["value"], "abc");
    }

    #[test]
    fn tcp_bootstrap_uses_the_network_filter() {
        let b = build(&args(&["--protocol", "tcp", "--server", "unix:/run/pg.sock"])).unwrap();
        let f = &b["static_resources"]["listeners"][0]["filter_chains"][1]["filters"];
        assert_eq!(f[0]["name"], TCP_FILTER);
        assert_eq!(f[1]["name"], "envoy.filters.network.tcp_proxy");
        assert_eq!(b["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]["path"], "/run/pg.sock");
    }

    #[test]
    fn refuses_bad_input() {
        let mut a = args(&[]);
        a.node = "nonamespace".into();
        assert!(build(&a).is_err());
        let mut a = args(&[]);
        a.token = None;
        assert!(build(&a).unwrap_err().to_string().contains("token"));
    }
}
