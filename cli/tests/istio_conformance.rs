//! Every shared conformance case (`integration/conformance/cases`, or `CONFORMANCE_DIR`)
//! through the Istio EnvoyFilter + ECDS form on real Envoy: per case, a sidecar built from the
//! project's representative Istio inbound listener (`integration/istio/sidecar-inbound.yaml`)
//! with `peerguard manifests istio envoyfilter` applied to it (EnvoyFilter patch semantics,
//! `peerguard_server::istio_forms::patch`), its peerguard filters from the ECDS of a real
//! `peerguard serve` whose config directory holds the case's resources and a peerguard
//! `Workload` for the case's workload (reached over mTLS with the sidecar's own certificate
//! from the Istio agent's SDS, through a stand-in for the server pod's sidecar). The requests,
//! clients and comparison are those of `peerguard test --envoy` (`peerguard_harness::e2e`
//! with another [`Frontend`]; `ScenarioRequest::check_observed`).
//!
//! What the Istio listener of a case is: istiod's inbound listener for the case's workload,
//! in two runs. (1) Istio's PeerAuthentication is PERMISSIVE (Istio's default): a TLS chain
//! (Istio's ALPNs, client certificate required) and a plaintext chain per port, and the
//! case's resources go to peerguard only, so peerguard's filter alone enforces the case's
//! PeerAuthentication (STRICT refusing plaintext, DISABLE refusing mTLS) and
//! AuthorizationPolicy: the deployment where peerguard replaces Istio's mTLS enforcement, and
//! the run that shows peerguard's own refusals. (2) istiod reads the case's
//! PeerAuthentications too (as it does in a mesh where users apply them): STRICT ports keep
//! only their TLS chains, DISABLE ports only their plaintext ones (modes resolved from the
//! PeerAuthentications alone, by peerguard's compiler; Istio 1.6+ ignores the legacy
//! `authentication.istio.io` kinds), so Istio refuses first, and the expected decisions must
//! be the same. The per-mesh parts istiod writes from `meshConfig` are applied in both: the
//! trust-domain SAN prefixes of the handshake (the case's trust domain and aliases,
//! `ApplyToCommonTLSContext`) and the connection managers' path normalization. A port used by
//! HTTP and TCP requests gets Istio's sniffing chains (ALPN `istio-http/*` / `http/1.1,h2c`
//! to the connection manager, the rest to `tcp_proxy`; the TCP side to its own cluster, as
//! the test has one app per protocol).
//!
//! Known differences (not skipped, listed with their reason in [`KNOWN_DIFFERENCES`] and
//! printed): none. Istio's inbound connection manager has `use_remote_address: false`, which
//! would let a client-sent X-Forwarded-For decide `ipBlocks`; the rendered EnvoyFilter merges
//! the direct-peer settings into it (cases 101 and 102 check it).
//!
//! SKIPPED without Envoy or the wasm module unless PEERGUARD_REQUIRE_ENVOY=1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::istio::{
    ecds_filters, ecds_from_serve, recorded, rendered_patches, sds_cluster, serve_agent_sds,
    standin_listener, AgentSds, SERVER_ID,
};
use harness::Server;
use peerguard_filter::compile::compile;
use peerguard_filter::istio::Resource;
use peerguard_filter::scenario::{self, Outcome, Scenario};
use peerguard_filter::schema::{MtlsMode, MtlsPolicy};
use peerguard_harness::e2e::{self, Deployment, E2eScenario, Frontend, Options, Shared};
use peerguard_harness::envoy::{EnvoyProcess, TempDir};
use peerguard_harness::require::{require, Needs};
use peerguard_server::envoy_config::{self as ec, AppProtocol};
use peerguard_server::istio_forms::patch;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Ports the template is rendered with for the parts that are not a case's port.
const SPARE_HTTP: u16 = 1;
const SPARE_TCP: u16 = 2;

/// Cases (by name) the Istio form cannot run, and why. Empty: every case runs.
const SKIPPED: &[(&str, &str)] = &[];

/// Requests (case, request index) that peerguard decides differently in this form than the
/// case expects, and why: known product gaps, reported, not hidden. Each must still differ
/// (the test fails when one passes: remove it then). Empty: cases 101 and 102 (`ipBlocks` on
/// the direct peer, `remoteIpBlocks` hop counting) differed until the rendered EnvoyFilter
/// merged `envoy_config::direct_peer_fields` into Istio's inbound connection managers.
const KNOWN_DIFFERENCES: &[(&str, usize, &str)] = &[];

// ------------------------------------------------------------------ the listener

fn chains_named(cfg: &patch::Config, name: &str) -> Vec<Value> {
    cfg.listeners[0]["filter_chains"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name)
        .cloned()
        .collect()
}

fn cluster_named(cfg: &patch::Config, name: &str) -> Value {
    cfg.clusters
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("the template has no cluster {name}"))
}

/// The case's Istio inbound configuration: the template's listener with, per port of the
/// case, the template's chains for an HTTP or TCP port (both, as Istio sniffs, for a port
/// that carries both), bound on `addr` at every port.
fn istio_inbound(
    s: &Scenario,
    ports: &BTreeMap<u16, AppProtocol>,
    addr: Ipv4Addr,
    app_http: SocketAddr,
    app_tcp: SocketAddr,
    istio_mtls: Option<&MtlsPolicy>,
) -> (patch::Config, usize) {
    let (ah, at) = (app_http.port(), app_tcp.port());
    let mut cfg = recorded(SPARE_HTTP, SPARE_TCP, ah, at);
    let spare: Vec<String> = [SPARE_HTTP, SPARE_TCP]
        .iter()
        .map(|p| format!("0.0.0.0_{p}"))
        .collect();
    let spare_clusters: Vec<String> = [SPARE_HTTP, SPARE_TCP]
        .iter()
        .map(|p| format!("inbound|{p}||"))
        .collect();
    let mut chains: Vec<Value> = cfg.listeners[0]["filter_chains"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !spare.iter().any(|n| c["name"] == n.as_str()))
        .cloned()
        .collect();
    cfg.clusters
        .retain(|c| !spare_clusters.iter().any(|n| c["name"] == n.as_str()));
    // The http_inspector runs on ports without a declared protocol only (Istio).
    let mut inspector_off = vec![json!({"destination_port_range": {"start": 15006, "end": 15007}})];
    for (&port, &proto) in ports {
        let name = format!("0.0.0.0_{port}");
        let http = || recorded(port, SPARE_TCP, ah, at);
        let tcp = || recorded(SPARE_HTTP, port, ah, at);
        match proto {
            AppProtocol::Http => {
                let t = http();
                chains.extend(chains_named(&t, &name));
                cfg.clusters
                    .push(cluster_named(&t, &format!("inbound|{port}||")));
            }
            AppProtocol::Tcp => {
                let t = tcp();
                chains.extend(chains_named(&t, &name));
                cfg.clusters
                    .push(cluster_named(&t, &format!("inbound|{port}||")));
            }
            AppProtocol::Sniff => {
                let h = http();
                for mut c in chains_named(&h, &name) {
                    let m = &mut c["filter_chain_match"];
                    m["application_protocols"] = if m["transport_protocol"] == "tls" {
                        json!(["istio-http/1.0", "istio-http/1.1", "istio-h2"])
                    } else {
                        json!(["http/1.1", "h2c"])
                    };
                    chains.push(c);
                }
                cfg.clusters
                    .push(cluster_named(&h, &format!("inbound|{port}||")));
                // One app per protocol here (a pod has one app on the port): the TCP side
                // gets its own cluster.
                let t = tcp();
                let tcp_cluster = format!("inbound|{port}||tcp");
                for mut c in chains_named(&t, &name) {
                    c["filters"][0]["typed_config"]["cluster"] = json!(tcp_cluster);
                    chains.push(c);
                }
                let mut cl = cluster_named(&t, &format!("inbound|{port}||"));
                cl["name"] = json!(tcp_cluster);
                cl["load_assignment"]["cluster_name"] = json!(tcp_cluster);
                cfg.clusters.push(cl);
                continue;
            }
        }
        inspector_off.push(json!({"destination_port_range": {"start": port, "end": port + 1}}));
    }
    // Istio enforcing PeerAuthentication too: STRICT ports keep only their TLS chains,
    // DISABLE ports only their plaintext ones (a connection no chain matches is closed).
    let before = chains.len();
    if let Some(m) = istio_mtls {
        chains.retain(|c| {
            let Some(port) = c["filter_chain_match"]["destination_port"].as_u64() else {
                return true;
            };
            let Ok(port) = u16::try_from(port) else {
                return true;
            };
            if !ports.contains_key(&port) {
                return true;
            }
            let tls = c["filter_chain_match"]["transport_protocol"] == "tls";
            match m.for_port(port).mode {
                MtlsMode::Strict => tls,
                MtlsMode::Disable => !tls,
                MtlsMode::Permissive => true,
            }
        });
    }
    let removed = before - chains.len();
    // istiod's per-mesh parts: the handshake's trust domains, the path normalization.
    let mut tds = vec![s.trust_domain.clone()];
    tds.extend(s.trust_domain_aliases.iter().cloned());
    let (normalize, merge, escaped) = ec::hcm_fields(s.path_normalization);
    for c in &mut chains {
        if let Some(v) = c.pointer_mut(
            "/transport_socket/typed_config/common_tls_context/combined_validation_context/default_validation_context",
        ) {
            v["match_typed_subject_alt_names"] = json!(ec::listener::trust_domain_matchers(&tds));
        }
        for f in c["filters"].as_array_mut().unwrap() {
            if f["name"] == ec::istio::HCM {
                let t = &mut f["typed_config"];
                t["normalize_path"] = json!(normalize);
                t["merge_slashes"] = json!(merge);
                t["path_with_escaped_slashes_action"] = json!(escaped);
            }
        }
    }
    let l = &mut cfg.listeners[0];
    l["filter_chains"] = json!(chains);
    for f in l["listener_filters"].as_array_mut().unwrap() {
        if f["name"] == "envoy.filters.listener.http_inspector" {
            f["filter_disabled"] = json!({"or_match": {"rules": inspector_off}});
        }
    }
    // As the iptables redirect would deliver them: the case's ports are the listener's.
    let mut ps = ports.keys();
    let first = *ps.next().expect("a case with requests");
    l["address"] = ec::socket(&addr.to_string(), first);
    let more: Vec<Value> = ps
        .map(|p| json!({"address": ec::socket(&addr.to_string(), *p)}))
        .collect();
    if !more.is_empty() {
        l["additional_addresses"] = json!(more);
    }
    (cfg, removed)
}

// ------------------------------------------------------------------ the mesh of a case

/// The case's resources as written, and a peerguard `Workload` for its workload.
fn mesh_file(s: &Scenario) -> String {
    let w = &s.workload;
    let services: Vec<Value> = w
        .services
        .iter()
        .map(|svc| {
            let ports: Vec<Value> = w
                .service_ports
                .iter()
                .filter(|p| &p.service == svc)
                .map(|p| {
                    let mut v = json!({"port": p.port, "targetPort": p.target_port});
                    if let Some(n) = &p.name {
                        v["name"] = json!(n);
                    }
                    v
                })
                .collect();
            json!({"name": svc, "ports": ports})
        })
        .collect();
    let workload = json!({
        "apiVersion": peerguard_server::registry::API_VERSION,
        "kind": peerguard_server::registry::KIND,
        "metadata": {"name": w.name, "namespace": w.namespace, "labels": w.labels},
        "spec": {"serviceAccount": w.service_account, "services": services},
    });
    let mut docs: Vec<String> = s
        .raw_resources
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    docs.push(serde_json::to_string(&workload).unwrap());
    docs.join("\n---\n") + "\n"
}

/// The mTLS modes istiod builds the chains from: the case's PeerAuthentications alone,
/// resolved by peerguard's compiler (the legacy `authentication.istio.io` kinds are not
/// read by Istio 1.6+; with none, PERMISSIVE).
fn istio_view_of_mtls(s: &Scenario) -> MtlsPolicy {
    let pa: Vec<Resource> = s
        .resources
        .iter()
        .filter(|r| matches!(r, Resource::PeerAuthentication(_)))
        .cloned()
        .collect();
    compile(&pa, &s.workload, &s.mesh()).mtls
}

fn serve_flags(s: &Scenario) -> Vec<String> {
    let mut f = vec![
        "--trust-domain".to_string(),
        s.trust_domain.clone(),
        "--root-namespace".into(),
        s.root_namespace.clone(),
        "--path-normalization".into(),
        serde_json::to_value(s.path_normalization)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string(),
        "--num-trusted-proxies".into(),
        s.num_trusted_proxies.to_string(),
    ];
    if !s.trust_domain_aliases.is_empty() {
        f.push("--trust-domain-alias".into());
        f.push(s.trust_domain_aliases.join(","));
    }
    f
}

// ------------------------------------------------------------------ the frontend

/// A free port on 127.0.0.1 below the usual ephemeral range (32768-60999), where the many
/// connections of the run do not take it meanwhile; never the same twice in a run.
fn quiet_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    if NEXT.load(Ordering::Relaxed) == 0 {
        let seed = 20_000 + (std::process::id() % 600) as u16 * 20;
        let _ = NEXT.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    loop {
        let p = NEXT.fetch_add(1, Ordering::Relaxed);
        if !(20_000..32_000).contains(&p) {
            NEXT.store(20_000, Ordering::Relaxed);
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// One Istio-shaped sidecar per case (an Envoy node is one workload to the server), each
/// with its own `peerguard serve`, agent SDS and loopback address; one stand-in for the
/// server pods' sidecar in front of all servers.
struct IstioForm {
    cases: Vec<Scenario>,
    /// istiod reads the case's PeerAuthentications too: the chains per mode
    /// ([`istio_view_of_mtls`]); otherwise PERMISSIVE chains.
    istio_peer_authentication: bool,
    /// Port chains left out because istiod's mode for the port is STRICT or DISABLE.
    chains_removed: usize,
    /// Per case: (server start, Envoy start) durations, for the report.
    startup: Vec<(Duration, Duration)>,
}

struct Sidecar {
    envoy: EnvoyProcess,
    _server: Server,
    sds: tokio::task::JoinHandle<()>,
}

/// Fields drop in order: the processes stop before their directory goes.
struct IstioDeployment {
    addrs: Vec<Ipv4Addr>,
    sidecars: Vec<Sidecar>,
    _standin: EnvoyProcess,
    dir: TempDir,
}

impl Deployment for IstioDeployment {
    fn target(&self, scenario: usize, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.addrs[scenario]), port)
    }
    fn client_alpn(&self, probe: &peerguard_harness::client::Probe) -> Vec<Vec<u8>> {
        peerguard_harness::client::istio_alpn(probe)
    }
    fn check_running(&mut self) -> anyhow::Result<()> {
        for s in &mut self.sidecars {
            if !s.envoy.is_running() {
                self.dir.keep();
                anyhow::bail!(
                    "a sidecar died during the run; log {}:\n{}",
                    s.envoy.log_path().display(),
                    s.envoy.log_tail(40)
                );
            }
        }
        Ok(())
    }
    fn keep(&mut self) {
        self.dir.keep();
    }
    fn describe(&self) -> String {
        format!("sidecar configs and logs: {}", self.dir.path().display())
    }
}

impl Frontend for IstioForm {
    fn start(
        &mut self,
        scenarios: &[E2eScenario],
        shared: &Shared<'_>,
    ) -> anyhow::Result<Box<dyn Deployment>> {
        let rt = tokio::runtime::Handle::current();
        let wasm = shared
            .wasm
            .ok_or_else(|| anyhow::anyhow!("the Istio form needs the filter"))?;
        let mut dir = TempDir::new("peerguard-istio-conformance")?;
        if shared.opts.keep_dir {
            dir.keep();
            eprintln!(
                "istio form: configs and logs kept in {}",
                dir.path().display()
            );
        }
        let pki = shared.pki;
        let base = e2e::random_base();

        // The servers, one per case (cases reuse namespaces and names).
        let t0 = Instant::now();
        let servers: Vec<(Server, Duration)> = std::thread::scope(|sc| {
            let handles: Vec<_> = self
                .cases
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let d = dir.path().join(format!("case{i}"));
                    sc.spawn(move || {
                        let t = Instant::now();
                        std::fs::create_dir_all(d.join("cfg")).unwrap();
                        std::fs::create_dir_all(d.join("state")).unwrap();
                        std::fs::write(d.join("cfg/case.yaml"), mesh_file(s)).unwrap();
                        let flags = serve_flags(s);
                        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                        // Ports outside the ephemeral range, and a retry: 38 servers and
                        // their Envoys start at once, and a port found free may be taken
                        // before the server binds it.
                        for _ in 0..3 {
                            let mut server = Server::start_on(
                                &d,
                                wasm.to_str().unwrap(),
                                quiet_port(),
                                quiet_port(),
                                &flags,
                            );
                            std::thread::sleep(Duration::from_millis(100));
                            if server.child.try_wait().unwrap().is_none() {
                                return (server, t.elapsed());
                            }
                        }
                        panic!(
                            "case {}: peerguard serve did not start (see {})",
                            s.name,
                            d.display()
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let servers_took = t0.elapsed();

        // The stand-in for the server pods' sidecar: one listener per server.
        let standin_ports: Vec<u16> = servers.iter().map(|_| quiet_port()).collect();
        let server_cert = pki.sidecar(SERVER_ID)?;
        let mut listeners = Vec::new();
        let mut clusters = Vec::new();
        for (i, ((server, _), port)) in servers.iter().zip(&standin_ports).enumerate() {
            let cluster = format!("peerguard-serve-{i}");
            listeners.push(standin_listener(
                &format!("standin-{i}"),
                *port,
                &cluster,
                &server_cert,
                pki.mesh_root_pem(),
                Some(&json!({"prefix": "spiffe://"})),
            ));
            clusters.push(ec::static_cluster(
                &cluster,
                &[("127.0.0.1".into(), server.grpc_port)],
            ));
        }
        let standin_dir = dir.path().join("server-pod-sidecar");
        std::fs::create_dir_all(&standin_dir)?;
        std::fs::write(
            standin_dir.join("envoy.json"),
            serde_json::to_vec_pretty(&ec::bootstrap(
                None,
                ec::admin("127.0.0.1", 0),
                listeners,
                clusters,
            ))?,
        )?;
        let standin = EnvoyProcess::start(
            shared.envoy,
            &standin_dir.join("envoy.json"),
            &standin_dir,
            &["--concurrency".into(), "1".into()],
            Duration::from_secs(30),
        )?;

        // The sidecars.
        let mut prepared = Vec::new();
        let mut addrs = Vec::new();
        for (i, (s, e)) in self.cases.iter().zip(scenarios).enumerate() {
            let addr = e2e::scenario_address(base, i)?;
            addrs.push(addr);
            let d = dir.path().join(format!("case{i}"));
            let w = &s.workload;
            let identity = format!(
                "spiffe://{}/ns/{}/sa/{}",
                s.trust_domain, w.namespace, w.service_account
            );
            let sock = d.join("agent-sds.sock");
            let sds = serve_agent_sds(
                &rt,
                &sock,
                AgentSds {
                    cert: pki.sidecar(&identity)?,
                    root_pem: pki.mesh_root_pem().to_string(),
                },
            );
            let istio_mtls = self
                .istio_peer_authentication
                .then(|| istio_view_of_mtls(s));
            let (mut cfg, removed) = istio_inbound(
                s,
                &e2e::scenario_ports(e),
                addr,
                shared.http_app,
                shared.tcp_app,
                istio_mtls.as_ref(),
            );
            self.chains_removed += removed;
            let patches = rendered_patches(&format!("127.0.0.1:{}", standin_ports[i]));
            let counts = patch::apply(&mut cfg, &patches)
                .map_err(|err| anyhow::anyhow!("case {}: {err}", s.name))?;
            assert!(
                counts.iter().all(|c| *c > 0),
                "case {}: a patch matched nothing: {counts:?}",
                s.name
            );
            let mut clusters = cfg.clusters.clone();
            clusters.push(sds_cluster(&sock));
            let node = json!({
                "id": format!("sidecar~{addr}~{}.{}~{}.svc.cluster.local", w.name, w.namespace, w.namespace),
                "cluster": format!("{}.{}", w.name, w.namespace),
                "metadata": {"NAMESPACE": w.namespace, "NAME": w.name},
            });
            let bootstrap = ec::bootstrap(
                Some(node),
                ec::admin("127.0.0.1", 0),
                cfg.listeners.clone(),
                clusters,
            );
            std::fs::write(d.join("envoy.json"), serde_json::to_vec_pretty(&bootstrap)?)?;
            prepared.push((d, sds));
        }
        let t1 = Instant::now();
        let envoy_bin = shared.envoy;
        let started: Vec<anyhow::Result<(EnvoyProcess, Duration)>> = std::thread::scope(|sc| {
            let handles: Vec<_> = prepared
                .iter()
                .map(|(d, _)| {
                    sc.spawn(move || {
                        let t = Instant::now();
                        let p = EnvoyProcess::start(
                            envoy_bin,
                            &d.join("envoy.json"),
                            d,
                            &["--concurrency".into(), "1".into()],
                            Duration::from_secs(60),
                        )?;
                        Ok((p, t.elapsed()))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sidecars = Vec::new();
        for (i, ((r, (server, st)), (_, sds))) in
            started.into_iter().zip(servers).zip(prepared).enumerate()
        {
            let name = &self.cases[i].name;
            let (envoy, et) = match r {
                Ok(x) => x,
                Err(e) => {
                    dir.keep();
                    return Err(e.context(format!(
                        "case {name}: the patched Istio sidecar does not load; server log:\n{}",
                        server.log_text()
                    )));
                }
            };
            // The filters came from peerguard serve over ECDS (not the deny-all default).
            let (_, dump) = envoy.admin_get("/config_dump")?;
            let ecds = ecds_filters(&dump);
            assert!(
                ecds_from_serve(&ecds),
                "case {name}: ECDS filters from peerguard serve: {ecds:?}"
            );
            self.startup.push((st, et));
            sidecars.push(Sidecar {
                envoy,
                _server: server,
                sds,
            });
        }
        println!(
            "istio form: {} servers ready in {:?}, {} sidecars ready in {:?}",
            sidecars.len(),
            servers_took,
            sidecars.len(),
            t1.elapsed()
        );
        Ok(Box::new(IstioDeployment {
            dir,
            addrs,
            sidecars,
            _standin: standin,
        }))
    }
}

impl Drop for IstioDeployment {
    fn drop(&mut self) {
        for s in &self.sidecars {
            s.sds.abort();
        }
    }
}

// ------------------------------------------------------------------ the test

/// peerguard enforces the case's PeerAuthentication; Istio's chains are PERMISSIVE.
#[test]
fn conformance_cases_through_the_istio_envoyfilter_form() {
    run_cases(
        "conformance_cases_through_the_istio_envoyfilter_form",
        false,
    );
}

/// istiod reads the case's PeerAuthentications too: its chains refuse first (STRICT: no
/// plaintext chain; DISABLE: no TLS chain), and the expected decisions are the same.
#[test]
fn conformance_cases_through_the_istio_envoyfilter_form_with_istio_chains_per_mode() {
    run_cases(
        "conformance_cases_through_the_istio_envoyfilter_form_with_istio_chains_per_mode",
        true,
    );
}

/// One run at a time: each starts an Envoy and a server per case.
static ONE_RUN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_cases(test: &str, istio_peer_authentication: bool) {
    let Some(tools) = require(test, Needs::EnvoyAndWasm).unwrap() else {
        return;
    };
    let _one = ONE_RUN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let started = Instant::now();
    let dir = std::env::var_os("CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| harness::istio::repo_root().join("integration/conformance/cases"));
    let loaded = scenario::load_paths(std::slice::from_ref(&dir));
    assert!(
        loaded.errors.is_empty(),
        "invalid cases: {:?}",
        loaded.errors
    );
    assert!(
        !loaded.scenarios.is_empty(),
        "no cases in {}",
        dir.display()
    );

    let mut skipped: Vec<(String, usize, &str)> = Vec::new();
    let mut cases = Vec::new();
    let mut planned = Vec::new();
    for s in loaded.scenarios {
        if let Some((_, why)) = SKIPPED.iter().find(|(n, _)| *n == s.name) {
            skipped.push((s.name.clone(), s.requests.len(), why));
            continue;
        }
        let policy = compile(&s.resources, &s.workload, &s.mesh());
        planned.push(e2e::from_scenario(&s, &policy).unwrap());
        cases.push(s);
    }
    for (name, _) in SKIPPED {
        assert!(
            skipped.iter().any(|(n, _, _)| n == name),
            "SKIPPED names {name}, which is not a case in {}",
            dir.display()
        );
    }
    let known = KNOWN_DIFFERENCES;
    let mut form = IstioForm {
        cases: cases.clone(),
        istio_peer_authentication,
        chains_removed: 0,
        startup: Vec::new(),
    };
    let opts = Options {
        envoy: Some(tools.envoy.clone()),
        wasm: Some(tools.wasm().unwrap()),
        ..Options::from_env()
    };
    let observed = e2e::run_with(&mut form, &planned, &opts).unwrap();

    // The comparison of `peerguard test --envoy`.
    let (mut passed, mut failed, mut differ, mut fixed) = (0, Vec::new(), Vec::new(), Vec::new());
    for (s, obs) in cases.iter().zip(&observed) {
        assert_eq!(obs.len(), s.requests.len(), "case {}", s.name);
        for (j, (r, o)) in s.requests.iter().zip(obs).enumerate() {
            let m = r.check_observed(o.allowed, &o.detail);
            let outcome = if m.is_empty() {
                Outcome::Passed
            } else {
                Outcome::Failed(m)
            };
            let why = known
                .iter()
                .find(|(n, k, _)| *n == s.name && *k == j)
                .map(|(_, _, w)| *w);
            match (outcome, why) {
                (Outcome::Passed, None) => passed += 1,
                (Outcome::Passed, Some(_)) => fixed.push(format!("{} request[{j}]", s.name)),
                (Outcome::Failed(m), Some(w)) => {
                    differ.push(format!(
                        "{}\n    because: {w}",
                        scenario::failure_line(s, j, &m)
                    ));
                }
                (Outcome::Failed(m), None) => failed.push(scenario::failure_line(s, j, &m)),
                (Outcome::Skipped, _) => {}
            }
        }
    }
    let skipped_requests: usize = skipped.iter().map(|(_, n, _)| n).sum();
    let slowest = form
        .startup
        .iter()
        .map(|(s, e)| *s + *e)
        .max()
        .unwrap_or_default();
    println!(
        "{test}: {} cases, {passed} requests passed, {} failed, {} known differences, {skipped_requests} skipped ({} cases); slowest server+sidecar start {slowest:?}; took {:?}",
        cases.len(),
        failed.len(),
        differ.len(),
        skipped.len(),
        started.elapsed()
    );
    if istio_peer_authentication {
        println!(
            "{test}: {} port chains left out by istiod's PeerAuthentication modes",
            form.chains_removed
        );
        assert!(
            form.chains_removed > 0,
            "no case has a STRICT or DISABLE port: this run is the PERMISSIVE one again"
        );
    }
    for (name, n, why) in &skipped {
        println!("SKIPPED case {name} ({n} requests): {why}");
    }
    for d in &differ {
        println!("KNOWN DIFFERENCE {d}");
    }
    assert!(
        failed.is_empty(),
        "{} requests failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert_eq!(
        differ.len() + fixed.len(),
        known.len(),
        "KNOWN_DIFFERENCES names requests that are not in the cases run"
    );
    assert!(
        fixed.is_empty(),
        "known differences that now pass (remove them from KNOWN_DIFFERENCES): {fixed:?}"
    );
}
