//! Envoy configuration for every sidecar of the sandbox, generated from the topology and
//! the current resources. Pure: paths in, JSON out.
//!
//! Inbound (server side), per target port: the compiled [`WorkloadPolicy`] is the wasm
//! filter's configuration in every HTTP chain. With [`InboundChains::Filter`] (peerguard's
//! design, the default) every port has a TLS and a plaintext chain and the filter enforces
//! the mode and authorization from the connection's certificate. With
//! [`InboundChains::Istio`] the chains are the ones Istio builds for the mode (spec 2.5):
//! STRICT has only the TLS chain (plaintext matches nothing and the connection is closed:
//! curl's 000 / exit 56), PERMISSIVE has both (TLS selected by an Istio ALPN), DISABLE has
//! only plaintext and no TLS inspector (an mTLS ClientHello hits the HTTP codec: the client
//! sidecar answers 503). Both give the walkthrough's observable results.
//!
//! Outbound (client side): one listener per sidecar that routes by Host to one cluster per
//! Service; each endpoint carries the TLS [`client::choose`] picked for it in its metadata,
//! and the cluster's `transport_socket_matches` turn that into mTLS with the client's
//! certificate, or plaintext (auto mTLS within one Service with mixed endpoints).

use super::pki;
use super::topology::{Pod, Service, Topology};
use anyhow::{bail, Context as _};
use peerguard_filter::client::{
    self, ChoiceSource, ClientContext, ClientTls, Destination, Endpoint,
};
use peerguard_filter::compile::compile;
use peerguard_filter::istio::Resource;
use peerguard_filter::schema::{ModeFrom, MtlsMode, WorkloadPolicy};
use peerguard_server::envoy_config::listener;
use peerguard_server::envoy_config::{
    self as ec, AppProtocol, Authz, Certs, Chains, Inbound, PathNormalization,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TLS_MATCH_KEY: &str = "peerguard.tls";

/// Where one sidecar's files live.
#[derive(Debug, Clone)]
pub struct SidecarPaths {
    pub dir: PathBuf,
}

impl SidecarPaths {
    pub fn new(state: &Path, pod: &Pod) -> Self {
        SidecarPaths {
            dir: state.join("envoy").join(pod.id()),
        }
    }
    pub fn bootstrap(&self) -> PathBuf {
        self.dir.join("bootstrap.json")
    }
    /// LDS and CDS each get their own watched directory, so a move of one file reloads
    /// only its own resource type.
    pub fn lds(&self) -> PathBuf {
        self.dir.join("lds").join("lds.json")
    }
    pub fn cds(&self) -> PathBuf {
        self.dir.join("cds").join("cds.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("envoy.log")
    }
}

/// Who turns the server's mTLS mode into accept/refuse.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum InboundChains {
    /// peerguard's design (spec 2.5, last point): every port has a TLS and a plaintext
    /// chain, and the wasm filter refuses STRICT + plaintext and DISABLE + mTLS (it resets
    /// the request: the plaintext client sees a closed connection, a client sidecar 503).
    Filter,
    /// Istio's chains: the mode selects which chains exist, Envoy refuses by itself.
    Istio,
}

pub struct Inputs<'a> {
    pub topology: &'a Topology,
    pub chains: InboundChains,
    pub resources: &'a [Resource],
    pub state: &'a Path,
    pub wasm: Option<&'a Path>,
    /// With `--xds serve`: per sidecar pod, the pieces of its `peerguard bootstrap` that
    /// make Envoy fetch the filter config (ECDS) and certificates (SDS) from `peerguard serve`.
    pub xds: Option<&'a BTreeMap<String, XdsParts>>,
    pub version: u64,
    /// Istio's `meshConfig.pathNormalization` for every sidecar.
    pub path_normalization: PathNormalization,
}

/// What a sidecar takes from its `peerguard bootstrap` output when `peerguard serve`
/// delivers the filter configuration and the certificates.
#[derive(Debug, Clone)]
pub struct XdsParts {
    /// Static cluster `peerguard-xds`.
    pub cluster: Value,
    /// The config source (gRPC to the server with the node's token) for ECDS and SDS.
    pub source: Value,
}

impl XdsParts {
    /// Extracts the parts from a `peerguard bootstrap` document.
    pub fn from_bootstrap(b: &Value) -> anyhow::Result<XdsParts> {
        let cluster = b
            .pointer("/static_resources/clusters")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["name"] == ec::XDS_CLUSTER))
            .cloned()
            .context("peerguard bootstrap: no static cluster peerguard-xds")?;
        let source = find_key(b, "config_discovery")
            .and_then(|d| d.get("config_source"))
            .cloned()
            .context("peerguard bootstrap: no ECDS config source")?;
        Ok(XdsParts { cluster, source })
    }
}

/// The first value under `key`, depth first.
fn find_key<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m
            .get(key)
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

/// The generated configuration of one sidecar.
pub struct Sidecar {
    pub bootstrap: Value,
    pub lds: Value,
    pub cds: Value,
}

/// What the sandbox decided, for `sandbox status`: server modes and client TLS choices.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub servers: Vec<ServerPlan>,
    pub clients: Vec<ClientPlan>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerPlan {
    pub pod: String,
    pub port: u16,
    pub mode: MtlsMode,
    pub from: Option<String>,
    /// STRICT set with `peerguard.dev/dry-run`: counted, enforced as PERMISSIVE.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientPlan {
    pub from: String,
    pub to: String,
    pub endpoint: String,
    pub tls: ClientTls,
    pub by: String,
}

pub fn policies(inputs: &Inputs<'_>) -> BTreeMap<String, WorkloadPolicy> {
    let t = inputs.topology;
    t.pods
        .iter()
        .filter(|p| p.sidecar)
        .map(|p| (p.id(), compile(inputs.resources, &t.workload(p), &t.mesh())))
        .collect()
}

/// Per sidecar pod, the policy and which filter `peerguard serve` (default `--enforcement
/// auto`, the sandbox's `--decision-log-sample`) puts in each slot for it.
pub fn enforcement(
    inputs: &Inputs<'_>,
    decision_log: Option<peerguard_filter::schema::DecisionLog>,
) -> BTreeMap<String, (WorkloadPolicy, peerguard_server::enforcement::Enforcement)> {
    let t = inputs.topology;
    let opts = peerguard_server::enforcement::Options::default();
    t.pods
        .iter()
        .filter(|p| p.sidecar)
        .map(|p| {
            let w = t.workload(p);
            let mut policy = compile(inputs.resources, &w, &t.mesh());
            policy.decision_log = decision_log;
            let chosen = peerguard_server::enforcement::choose(
                inputs.resources,
                &w,
                &t.mesh(),
                &policy,
                &opts,
            );
            (p.id(), (policy, chosen))
        })
        .collect()
}

pub fn plan(inputs: &Inputs<'_>) -> Plan {
    let t = inputs.topology;
    let policies = policies(inputs);
    let mut servers = Vec::new();
    for p in t
        .pods
        .iter()
        .filter(|p| p.sidecar && p.app != super::topology::AppKind::None)
    {
        if let Some(pol) = policies.get(&p.id()) {
            for port in t.target_ports(p) {
                let m = pol.mtls.for_port(port);
                servers.push(ServerPlan {
                    pod: p.id(),
                    port,
                    mode: m.mode,
                    from: m.from.clone(),
                    dry_run: m.is_dry_run_strict(),
                });
            }
        }
    }
    let mut clients = Vec::new();
    for c in t.pods.iter().filter(|p| p.sidecar) {
        for s in &t.services {
            for e in t.endpoints(s) {
                let choice = choice_for(inputs, &policies, c, s, e);
                let by = match &choice.source {
                    ChoiceSource::DestinationRule { object, .. } => object.clone(),
                    ChoiceSource::AutoMtls => "auto mTLS".into(),
                    ChoiceSource::Default => "default (auto mTLS off)".into(),
                };
                clients.push(ClientPlan {
                    from: c.id(),
                    to: s.id(),
                    endpoint: e.id(),
                    tls: choice.tls,
                    by,
                });
            }
        }
    }
    Plan { servers, clients }
}

fn choice_for(
    inputs: &Inputs<'_>,
    policies: &BTreeMap<String, WorkloadPolicy>,
    client_pod: &Pod,
    svc: &Service,
    endpoint: &Pod,
) -> client::Choice {
    let t = inputs.topology;
    let ctx = ClientContext {
        namespace: client_pod.namespace.clone(),
        root_namespace: t.root_namespace.clone(),
        auto_mtls: true,
        dns_domain: t.dns_domain.clone(),
    };
    let dest = Destination {
        service: svc.name.clone(),
        namespace: svc.namespace.clone(),
        port: svc.port,
        subset: None,
    };
    let ep = match (endpoint.sidecar, policies.get(&endpoint.id())) {
        (true, Some(pol)) => Endpoint {
            has_sidecar: true,
            server_mode: pol.mtls.for_port(svc.target_port).mode,
        },
        // A sidecar endpoint whose policy was not compiled cannot happen (policies covers
        // every sidecar pod); treat it as STRICT, the mode that never downgrades.
        (true, None) => Endpoint {
            has_sidecar: true,
            server_mode: MtlsMode::Strict,
        },
        (false, _) => Endpoint::no_sidecar(),
    };
    client::choose(inputs.resources, &ctx, &dest, ep)
}

/// Every sidecar's configuration, keyed by pod id.
pub fn generate(inputs: &Inputs<'_>) -> anyhow::Result<BTreeMap<String, Sidecar>> {
    let t = inputs.topology;
    let policies = policies(inputs);
    let mut out = BTreeMap::new();
    for pod in t.pods.iter().filter(|p| p.sidecar) {
        let paths = SidecarPaths::new(inputs.state, pod);
        let mut listeners = Vec::new();
        let mut clusters = Vec::new();
        if pod.app != super::topology::AppKind::None {
            let policy = policies.get(&pod.id()).context("no compiled policy")?;
            let policy_json = serde_json::to_string(policy).context("serializing the policy")?;
            for port in t.target_ports(pod) {
                let mode = policy.mtls.for_port(port);
                listeners.push(inbound_listener(inputs, pod, port, mode, &policy_json));
                let mut inbound = static_cluster(
                    &format!("inbound|{port}||"),
                    &[(pod.ip.to_string(), t.ports.app_behind_sidecar, None)],
                    None,
                );
                // The app sees connections from its own pod address, not 127.0.0.1.
                inbound["upstream_bind_config"] =
                    json!({"source_address": {"address": pod.ip.to_string(), "port_value": 0}});
                clusters.push(inbound);
            }
        }
        listeners.push(outbound_listener(inputs, pod));
        for svc in &t.services {
            clusters.push(outbound_cluster(inputs, &policies, pod, svc)?);
        }
        let version = inputs.version.to_string();
        out.insert(
            pod.id(),
            Sidecar {
                bootstrap: bootstrap(t, pod, &paths, xds_parts(inputs, pod)?),
                lds: discovery(
                    &version,
                    "type.googleapis.com/envoy.config.listener.v3.Listener",
                    listeners,
                ),
                cds: discovery(
                    &version,
                    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                    clusters,
                ),
            },
        );
    }
    Ok(out)
}

fn discovery(version: &str, type_url: &str, resources: Vec<Value>) -> Value {
    let resources: Vec<Value> = resources
        .into_iter()
        .map(|mut r| {
            if let Some(o) = r.as_object_mut() {
                o.insert("@type".into(), json!(type_url));
            }
            r
        })
        .collect();
    json!({"version_info": version, "resources": resources})
}

fn bootstrap(t: &Topology, pod: &Pod, paths: &SidecarPaths, xds: Option<&XdsParts>) -> Value {
    let watched = |file: PathBuf| {
        let dir = file
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        json!({
            "path_config_source": {"path": file.display().to_string(), "watched_directory": {"path": dir}},
            "resource_api_version": "V3",
        })
    };
    let node = json!({
        "id": format!("sidecar~{}~{}~{}.svc.{}", pod.ip, pod.id(), pod.namespace, t.dns_domain),
        "cluster": pod.id(),
        // How `peerguard serve` names the node (its Workload in the registry).
        "metadata": {"NAMESPACE": pod.namespace, "WORKLOAD_NAME": pod.name},
    });
    let clusters = xds.map(|x| vec![x.cluster.clone()]).unwrap_or_default();
    let mut b = ec::bootstrap(
        Some(node),
        ec::admin(&pod.ip.to_string(), t.ports.admin),
        Vec::new(),
        clusters,
    );
    b["dynamic_resources"] =
        json!({"lds_config": watched(paths.lds()), "cds_config": watched(paths.cds())});
    b
}

fn inbound_listener(
    inputs: &Inputs<'_>,
    pod: &Pod,
    port: u16,
    mode: &ModeFrom,
    policy_json: &str,
) -> Value {
    let t = inputs.topology;
    let authz = match (inputs.xds.and_then(|m| m.get(&pod.id())), inputs.wasm) {
        (Some(x), _) => Authz::Ecds {
            source: x.source.clone(),
        },
        (None, Some(wasm)) => Authz::Wasm {
            module: wasm.display().to_string(),
            policy_json: Some(policy_json.to_string()),
        },
        (None, None) => Authz::None,
    };
    Inbound {
        name: format!("inbound_{}_{port}", pod.ip),
        address: pod.ip.to_string(),
        port,
        protocol: AppProtocol::Http,
        // Only SPIFFE identities of this mesh's trust domain (spec 1.3).
        trust_domains: vec![t.trust_domain.clone()],
        certs: certs(inputs, pod),
        authz,
        chains: match inputs.chains {
            InboundChains::Filter => Chains::Both,
            InboundChains::Istio => Chains::istio(mode),
        },
        path_normalization: inputs.path_normalization,
        http_cluster: format!("inbound|{port}||"),
        tcp_cluster: format!("inbound|{port}||"),
        route_timeout: Some("5s".into()),
    }
    .listener()
}

/// Certificate and trust: files written by the sandbox, or SDS (`default`, `ROOTCA`) from
/// `peerguard serve`.
fn certs(inputs: &Inputs<'_>, pod: &Pod) -> Certs {
    match inputs.xds.and_then(|m| m.get(&pod.id())) {
        Some(x) => Certs::Sds {
            source: x.source.clone(),
        },
        None => {
            let dir = pki::cert_dir(inputs.state, &pod.namespace, &pod.service_account);
            let path = |p: PathBuf| p.display().to_string();
            Certs::Files {
                cert: path(dir.join("cert.pem")),
                key: path(dir.join("key.pem")),
                ca: path(pki::ca_path(inputs.state)),
            }
        }
    }
}

fn xds_parts<'a>(inputs: &Inputs<'a>, pod: &Pod) -> anyhow::Result<Option<&'a XdsParts>> {
    match inputs.xds {
        None => Ok(None),
        Some(m) => m
            .get(&pod.id())
            .map(Some)
            .with_context(|| format!("{}: no peerguard bootstrap", pod.id())),
    }
}

fn outbound_listener(inputs: &Inputs<'_>, pod: &Pod) -> Value {
    let t = inputs.topology;
    let vhosts: Vec<Value> = t
        .services
        .iter()
        .map(|s| {
            let mut names = vec![s.fqdn(&t.dns_domain), s.id(), format!("{}.svc", s.id())];
            if s.namespace == pod.namespace {
                names.push(s.name.clone());
            }
            let domains: Vec<String> = names.iter().flat_map(|n| [n.clone(), format!("{n}:{}", s.port)]).collect();
            json!({
                "name": format!("{}:{}", s.fqdn(&t.dns_domain), s.port),
                "domains": domains,
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": outbound_name(t, s), "timeout": "5s"}}],
            })
        })
        .collect();
    listener::outbound(
        &format!("outbound_{}_{}", pod.ip, t.ports.outbound),
        &pod.ip.to_string(),
        t.ports.outbound,
        inputs.path_normalization,
        vhosts,
    )
}

fn outbound_name(t: &Topology, s: &Service) -> String {
    format!("outbound|{}||{}", s.port, s.fqdn(&t.dns_domain))
}

type EndpointSpec = (String, u16, Option<ClientTls>);

fn static_cluster(name: &str, endpoints: &[EndpointSpec], matches: Option<Vec<Value>>) -> Value {
    let lb: Vec<Value> = endpoints
        .iter()
        .map(|(ip, port, tls)| {
            let mut e = json!({"endpoint": {"address": ec::socket(ip, *port)}});
            if let Some(tls) = tls {
                e["metadata"] = json!({"filter_metadata": {"envoy.transport_socket_match": {TLS_MATCH_KEY: tls_label(*tls)}}});
            }
            e
        })
        .collect();
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb}]},
    });
    if let Some(m) = matches {
        c["transport_socket_matches"] = json!(m);
    }
    c
}

fn tls_label(tls: ClientTls) -> &'static str {
    match tls {
        ClientTls::Plaintext => "DISABLE",
        ClientTls::IstioMutual => "ISTIO_MUTUAL",
        ClientTls::Simple => "SIMPLE",
        ClientTls::Mutual => "MUTUAL",
    }
}

fn outbound_cluster(
    inputs: &Inputs<'_>,
    policies: &BTreeMap<String, WorkloadPolicy>,
    client_pod: &Pod,
    svc: &Service,
) -> anyhow::Result<Value> {
    let t = inputs.topology;
    let mut endpoints = Vec::new();
    let mut matches = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for e in t.endpoints(svc) {
        let choice = choice_for(inputs, policies, client_pod, svc, e);
        endpoints.push((e.ip.to_string(), svc.target_port, Some(choice.tls)));
        if choice.tls == ClientTls::Plaintext || !seen.insert(tls_label(choice.tls)) {
            continue;
        }
        let socket = upstream_tls(inputs, client_pod, svc, &choice).with_context(|| {
            format!(
                "{} -> {}: {}",
                client_pod.id(),
                svc.id(),
                tls_label(choice.tls)
            )
        })?;
        matches.push(json!({"name": tls_label(choice.tls), "match": {TLS_MATCH_KEY: tls_label(choice.tls)}, "transport_socket": socket}));
    }
    Ok(static_cluster(
        &outbound_name(t, svc),
        &endpoints,
        Some(matches),
    ))
}

fn upstream_tls(
    inputs: &Inputs<'_>,
    client_pod: &Pod,
    svc: &Service,
    choice: &client::Choice,
) -> anyhow::Result<Value> {
    let t = inputs.topology;
    let settings = match &choice.source {
        ChoiceSource::DestinationRule { settings, .. } => Some(settings),
        _ => None,
    };
    let mut ctx = json!({});
    let sni;
    match choice.tls {
        ClientTls::IstioMutual => {
            // Verify the server against the service accounts of the Service's sidecar pods.
            let mut sans: Vec<String> = t
                .endpoints(svc)
                .filter(|p| p.sidecar)
                .map(|p| p.spiffe(&t.trust_domain))
                .collect();
            sans.sort();
            sans.dedup();
            let matchers: Vec<Value> = if sans.is_empty() {
                vec![
                    json!({"san_type": "URI", "matcher": {"prefix": format!("spiffe://{}/", t.trust_domain)}}),
                ]
            } else {
                sans.iter()
                    .map(|s| json!({"san_type": "URI", "matcher": {"exact": s}}))
                    .collect()
            };
            ctx = certs(inputs, client_pod).common_tls_context(matchers);
            ctx["alpn_protocols"] = json!(["istio-http/1.1", "istio"]);
            sni = format!("outbound_.{}_._.{}", svc.port, svc.fqdn(&t.dns_domain));
        }
        ClientTls::Simple | ClientTls::Mutual => {
            let s = settings.context("SIMPLE/MUTUAL without DestinationRule settings")?;
            // Envoy would reject the whole cluster update for a missing file; say which.
            for f in [&s.ca_certificates, &s.client_certificate, &s.private_key]
                .into_iter()
                .flatten()
            {
                if !Path::new(f).is_file() {
                    bail!("file {f:?} does not exist on this machine");
                }
            }
            if let Some(ca) = &s.ca_certificates {
                ctx["validation_context"] = json!({"trusted_ca": {"filename": ca}});
            }
            if choice.tls == ClientTls::Mutual {
                match (&s.client_certificate, &s.private_key) {
                    (Some(c), Some(k)) => {
                        ctx["tls_certificates"] = json!([{"certificate_chain": {"filename": c}, "private_key": {"filename": k}}]);
                    }
                    _ => bail!(
                        "MUTUAL needs clientCertificate and privateKey files (credentialName is not supported by the sandbox)"
                    ),
                }
            }
            sni = s.sni.clone().unwrap_or_else(|| svc.fqdn(&t.dns_domain));
        }
        ClientTls::Plaintext => bail!("no TLS for plaintext"),
    }
    Ok(json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": sni,
            "common_tls_context": ctx,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerguard_filter::istio::parse::parse_str;

    fn gen(yaml: &str) -> BTreeMap<String, Sidecar> {
        let t = Topology::load(None).unwrap();
        let r = parse_str(yaml, "t.yaml").resources;
        generate(&Inputs {
            topology: &t,
            chains: InboundChains::Istio,
            resources: &r,
            state: Path::new("/s"),
            wasm: None,
            xds: None,
            version: 3,
            path_normalization: PathNormalization::Base,
        })
        .unwrap()
    }

    fn cluster<'a>(s: &'a Sidecar, name: &str) -> &'a Value {
        s.cds["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
    }

    #[test]
    fn sidecars_and_files() {
        let out = gen("");
        assert_eq!(
            out.keys().cloned().collect::<Vec<_>>(),
            vec!["httpbin.full", "httpbin.partial", "sleep.full"]
        );
        let s = &out["sleep.full"];
        assert_eq!(s.lds["version_info"], "3");
        // sleep has no app: only the outbound listener.
        assert_eq!(s.lds["resources"].as_array().unwrap().len(), 1);
        assert_eq!(
            out["httpbin.full"].lds["resources"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn dr_istio_mutual_tags_the_endpoint() {
        let out = gen(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: d, namespace: full}\nspec: {host: httpbin.full.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n",
        );
        let c = cluster(
            &out["sleep.full"],
            "outbound|8000||httpbin.full.svc.cluster.local",
        );
        let ep = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
        assert_eq!(
            ep["metadata"]["filter_metadata"]["envoy.transport_socket_match"][TLS_MATCH_KEY],
            "ISTIO_MUTUAL"
        );
        assert_eq!(
            c["transport_socket_matches"][0]["match"][TLS_MATCH_KEY],
            "ISTIO_MUTUAL"
        );
        // Towards legacy (no sidecar, no DR) everything stays plaintext: no TLS matches.
        let c = cluster(
            &out["sleep.full"],
            "outbound|8000||httpbin.legacy.svc.cluster.local",
        );
        assert_eq!(c["transport_socket_matches"], json!([]));
    }
}
