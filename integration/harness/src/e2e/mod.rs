//! The end-to-end backend of `peerguard test --envoy`: scenarios through a real Envoy.
//!
//! All scenarios of a run share ONE Envoy process: scenario `i` gets its own loopback
//! address (127.0.x.y) with one listener per port its requests use, so the filter sees the
//! scenario's workload port as `destination.port`. Every listener is the product's inbound
//! listener ([`config`]): an mTLS chain (client certificate required, mesh root,
//! `spiffe://<td>/` SAN prefixes: Istio's handshake) and a plaintext chain, both running the
//! wasm filter configured with that scenario's `WorkloadPolicy`, in front of an in-process app
//! (HTTP) or echo server (TCP); a port used for both sniffs the protocol. Each request is a
//! fresh connection from its source address with its own certificate (test PKI).
//!
//! The proxies are pluggable ([`Frontend`]): [`ProjectListeners`] is the product's listener;
//! other frontends (the Istio EnvoyFilter form, `cli/tests/istio_conformance.rs`) put other
//! Envoy configurations in front of the same apps, and the same clients and comparison judge
//! them.
//!
//! Reusable parts: [`crate::pki::TestPki`], [`crate::envoy::EnvoyProcess`],
//! [`crate::upstream`].

pub mod config;

use crate::client::{self, HttpRequest, Probe, Shot};
use crate::envoy;
use crate::pki::{CaChoice, ClientCertSpec, Issued, TestPki};
use crate::upstream;
use anyhow::{bail, Context as _};
use config::{Bootstrap, FilterModule, ListenerSpec};
use peerguard_filter::scenario::{HttpVersion, PeerCa, Protocol, Scenario};
use peerguard_filter::WorkloadPolicy;
use peerguard_server::envoy_config::{AppProtocol, PathNormalization};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What happened to one request end to end (`HTTP 200 from the app; app saw XFCC: ...`).
pub use peerguard_server::cli::test::Observed;

/// How to run. [`Options::from_env`] reads the environment.
#[derive(Debug, Clone)]
pub struct Options {
    /// `None`: find it ([`envoy::find_envoy`]).
    pub envoy: Option<PathBuf>,
    /// `None`: find it ([`envoy::find_wasm`]); ignored without the filter.
    pub wasm: Option<PathBuf>,
    /// `false` runs Envoy without peerguard: only the TLS handshake decides (a baseline
    /// for benchmarks, and a check of the runner itself).
    pub with_filter: bool,
    /// Per request (connect, handshake, exchange).
    pub request_timeout: Duration,
    /// Requests in flight at once.
    pub parallelism: usize,
    /// Envoy worker threads.
    pub concurrency: u32,
    /// Keep the run's directory (Envoy config and log) even when the run succeeds.
    pub keep_dir: bool,
    /// Istio's `meshConfig.pathNormalization` for every listener.
    pub path_normalization: PathNormalization,
    /// More Envoy arguments (e.g. `--component-log-level wasm:info`, at which the filter's
    /// decision log lines are written).
    pub envoy_args: Vec<String>,
    /// Copy Envoy's log here when the run ends (it holds the decision log lines).
    pub log_copy: Option<PathBuf>,
    /// Write peerguard's JSON access log (`envoy_config::access_log`) of every listener here.
    pub access_log: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            envoy: None,
            wasm: None,
            with_filter: true,
            request_timeout: Duration::from_secs(2),
            parallelism: 16,
            concurrency: 1,
            keep_dir: false,
            path_normalization: PathNormalization::Base,
            envoy_args: Vec::new(),
            log_copy: None,
            access_log: None,
        }
    }
}

impl Options {
    /// `PEERGUARD_ENVOY`, `PEERGUARD_WASM` (found at run time), `PEERGUARD_E2E_NO_FILTER=1`
    /// (Envoy without the wasm filter), `PEERGUARD_E2E_KEEP=1` (keep config and log).
    pub fn from_env() -> Self {
        let flag = |name: &str| {
            std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
        };
        Options {
            with_filter: !flag("PEERGUARD_E2E_NO_FILTER"),
            keep_dir: flag("PEERGUARD_E2E_KEEP"),
            ..Options::default()
        }
    }
}

/// What a request's client presents.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    Plaintext,
    Mtls(ClientCertSpec),
}

/// One request, runner form.
#[derive(Debug, Clone)]
pub struct E2eRequest {
    pub peer: Peer,
    /// `None`: 127.0.0.1.
    pub source_ip: Option<IpAddr>,
    pub port: u16,
    pub probe: Probe,
}

/// One scenario, runner form: what the listeners need and the requests.
#[derive(Debug, Clone)]
pub struct E2eScenario {
    pub name: String,
    /// The trust domain and its aliases: accepted at the handshake.
    pub trust_domains: Vec<String>,
    pub policy: WorkloadPolicy,
    pub requests: Vec<E2eRequest>,
}

/// Runs every request of every scenario through real Envoy. Result: per scenario, per
/// request (in file order), what was observed. Options from the environment
/// ([`Options::from_env`]).
pub fn run(scenarios: &[(Scenario, WorkloadPolicy)]) -> anyhow::Result<Vec<Vec<Observed>>> {
    let planned = scenarios
        .iter()
        .map(|(s, p)| from_scenario(s, p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    run_e2e(&planned, &Options::from_env())
}

/// Converts a parsed scenario file into the runner form.
pub fn from_scenario(s: &Scenario, policy: &WorkloadPolicy) -> anyhow::Result<E2eScenario> {
    let mut requests = Vec::with_capacity(s.requests.len());
    for (j, r) in s.requests.iter().enumerate() {
        let at = || {
            format!(
                "{}: scenario {}, request {}",
                s.file.display(),
                s.name,
                j + 1
            )
        };
        let peer = match &r.peer {
            None => Peer::Plaintext,
            Some(p) => {
                let uri_sans = p.uri_sans();
                if uri_sans.is_empty() {
                    bail!("{}: peer has neither principal nor uri_san", at());
                }
                Peer::Mtls(ClientCertSpec {
                    uri_sans,
                    ca: match p.ca {
                        Some(PeerCa::Untrusted) => CaChoice::Untrusted,
                        None => CaChoice::Mesh,
                    },
                    expired: p.expired,
                })
            }
        };
        let probe = match r.protocol {
            Protocol::Tcp => Probe::Tcp,
            Protocol::Http => {
                let h = r
                    .http
                    .as_ref()
                    .with_context(|| format!("{}: protocol http without `http`", at()))?;
                Probe::Http(HttpRequest {
                    method: h.method.clone(),
                    path: h.path.clone(),
                    host: h.host.clone(),
                    headers: h
                        .headers
                        .iter()
                        .flat_map(|(k, v)| v.iter().map(move |v| (k.clone(), v.to_string())))
                        .collect(),
                    http2: h.version == Some(HttpVersion::Http2),
                })
            }
        };
        requests.push(E2eRequest {
            peer,
            source_ip: r.source_ip,
            port: r.port,
            probe,
        });
    }
    let mut trust_domains = vec![s.trust_domain.clone()];
    for a in &s.trust_domain_aliases {
        if !trust_domains.contains(a) {
            trust_domains.push(a.clone());
        }
    }
    Ok(E2eScenario {
        name: s.name.clone(),
        trust_domains,
        policy: policy.clone(),
        requests,
    })
}

/// The runner proper: one Envoy for all scenarios.
pub fn run_e2e(scenarios: &[E2eScenario], opts: &Options) -> anyhow::Result<Vec<Vec<Observed>>> {
    run_with(&mut ProjectListeners, scenarios, opts)
}

/// Loopback addresses for scenarios: 127.0.<1..=254>.<1..=254> (never 127.0.0.x).
const ADDRESS_SLOTS: usize = 254 * 254;

/// Scenario `i`'s listener address in a run whose block starts at slot `base`. Runs that
/// overlap in time (parallel tests, a benchmark next to a test) pick different bases.
pub fn scenario_address(base: usize, i: usize) -> anyhow::Result<Ipv4Addr> {
    if i >= ADDRESS_SLOTS {
        bail!("too many scenarios for one run (max {ADDRESS_SLOTS})");
    }
    let k = (base + i) % ADDRESS_SLOTS;
    let hi = u8::try_from(1 + k / 254).unwrap_or(1);
    let lo = u8::try_from(1 + k % 254).unwrap_or(1);
    Ok(Ipv4Addr::new(127, 0, hi, lo))
}

/// A start slot that differs between processes and between runs of one process.
pub fn random_base() -> usize {
    use std::hash::{BuildHasher as _, Hasher as _};
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_usize(RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    usize::try_from(h.finish() % ADDRESS_SLOTS as u64).unwrap_or(0)
}

/// The ports a scenario's requests use and what they carry: a port with HTTP and TCP
/// requests sniffs the protocol (as Istio's inbound listener does on a port without a
/// declared protocol).
pub fn scenario_ports(s: &E2eScenario) -> BTreeMap<u16, AppProtocol> {
    let mut ports: BTreeMap<u16, AppProtocol> = BTreeMap::new();
    for r in &s.requests {
        let proto = match r.probe {
            Probe::Http(_) => AppProtocol::Http,
            Probe::Tcp => AppProtocol::Tcp,
        };
        let merged = match ports.get(&r.port) {
            Some(prev) if *prev != proto => AppProtocol::Sniff,
            _ => proto,
        };
        ports.insert(r.port, merged);
    }
    ports
}

/// Listeners: one per (scenario, port); a port with HTTP and TCP requests sniffs.
fn plan_listeners(
    scenarios: &[E2eScenario],
    base: usize,
) -> anyhow::Result<(Vec<ListenerSpec>, Vec<Ipv4Addr>)> {
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        let addr = scenario_address(base, i)?;
        addrs.push(addr);
        let ports = scenario_ports(s);
        let policy_json = serde_json::to_string(&s.policy)
            .with_context(|| format!("scenario {}: serializing its WorkloadPolicy", s.name))?;
        for (port, proto) in ports {
            listeners.push(ListenerSpec {
                name: format!("s{i}_{port}"),
                address: addr,
                port,
                protocol: proto,
                trust_domains: s.trust_domains.clone(),
                policy_json: policy_json.clone(),
                // The connection manager normalizes as the scenario's mesh says, so that
                // `--envoy` and in-process runs answer the same question.
                path_normalization: Some(s.policy.path_normalization),
            });
        }
    }
    Ok((listeners, addrs))
}

/// What every frontend gets: the tools, the test PKI and the apps behind the proxies.
pub struct Shared<'a> {
    pub envoy: &'a std::path::Path,
    /// `None`: run without the filter ([`Options::with_filter`]).
    pub wasm: Option<&'a std::path::Path>,
    pub pki: &'a TestPki,
    pub http_app: SocketAddr,
    pub tcp_app: SocketAddr,
    pub opts: &'a Options,
}

/// The proxies in front of the apps: what the requests of a run go through. The runner owns
/// everything else (PKI, apps, clients, the comparison), so every frontend is judged the
/// same way. [`ProjectListeners`] is `peerguard test --envoy`'s.
pub trait Frontend {
    /// Starts the proxies for `scenarios` (blocking; called inside the run's runtime, so it
    /// may spawn tasks on it).
    fn start(
        &mut self,
        scenarios: &[E2eScenario],
        shared: &Shared<'_>,
    ) -> anyhow::Result<Box<dyn Deployment>>;
}

/// Running proxies; stopped on drop.
pub trait Deployment: Send {
    /// Where scenario `scenario`'s requests to workload port `port` connect.
    fn target(&self, scenario: usize, port: u16) -> SocketAddr;
    /// The ALPN an mTLS client offers ([`client::default_alpn`] unless the proxies select
    /// chains on another vocabulary, as Istio's inbound listener does).
    fn client_alpn(&self, probe: &Probe) -> Vec<Vec<u8>> {
        client::default_alpn(probe)
    }
    /// `Err` (with the proxies' log) when a proxy died during the run.
    fn check_running(&mut self) -> anyhow::Result<()>;
    /// Keep configuration and logs on disk (a failed run).
    fn keep(&mut self);
    /// One line naming where configuration and logs are.
    fn describe(&self) -> String;
    /// The log with the filter's decision lines ([`Options::log_copy`]).
    fn log_path(&self) -> Option<PathBuf> {
        None
    }
}

/// Runs every request of every scenario through the proxies `frontend` starts.
pub fn run_with(
    frontend: &mut dyn Frontend,
    scenarios: &[E2eScenario],
    opts: &Options,
) -> anyhow::Result<Vec<Vec<Observed>>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run_async(frontend, scenarios, opts))
}

/// `peerguard test --envoy`'s frontend: ONE Envoy with the product's inbound listener
/// ([`config`]) per (scenario, port), each scenario on its own loopback address.
#[derive(Debug, Default)]
pub struct ProjectListeners;

struct ProjectDeployment {
    dir: envoy::TempDir,
    envoy: envoy::EnvoyProcess,
    addrs: Vec<Ipv4Addr>,
}

impl Deployment for ProjectDeployment {
    fn target(&self, scenario: usize, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.addrs[scenario]), port)
    }
    fn check_running(&mut self) -> anyhow::Result<()> {
        if !self.envoy.is_running() {
            self.dir.keep();
            bail!(
                "Envoy died during the run; log {}:\n{}",
                self.envoy.log_path().display(),
                self.envoy.log_tail(40)
            );
        }
        Ok(())
    }
    fn keep(&mut self) {
        self.dir.keep();
    }
    fn describe(&self) -> String {
        format!("Envoy log: {}", self.envoy.log_path().display())
    }
    fn log_path(&self) -> Option<PathBuf> {
        Some(self.envoy.log_path().to_path_buf())
    }
}

impl Frontend for ProjectListeners {
    fn start(
        &mut self,
        scenarios: &[E2eScenario],
        shared: &Shared<'_>,
    ) -> anyhow::Result<Box<dyn Deployment>> {
        let opts = shared.opts;
        // Another run may hold some of our addresses: retry with another block, but only
        // for bind failures (anything else is reported at once).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (listeners, addrs) = plan_listeners(scenarios, random_base())?;
            let bootstrap = Bootstrap {
                listeners: &listeners,
                filter: shared.wasm.map(|w| FilterModule { wasm: w }),
                mesh_root_pem: shared.pki.mesh_root_pem(),
                server_cert_pem: &shared.pki.server().cert_pem,
                server_key_pem: &shared.pki.server().key_pem,
                http_upstream: shared.http_app,
                tcp_upstream: shared.tcp_app,
                path_normalization: opts.path_normalization,
            };
            let mut dir = envoy::TempDir::new("peerguard-e2e")?;
            let config_path = dir.path().join("envoy.json");
            let mut config = bootstrap.to_json();
            let mut extra = vec!["--concurrency".to_string(), opts.concurrency.to_string()];
            if let Some(path) = &opts.access_log {
                attach_access_logs(&mut config, &listeners, &addrs, scenarios, path);
                // Envoy writes access logs from a buffer; flush it well before the run ends.
                extra.extend(["--file-flush-interval-msec".into(), "100".into()]);
            }
            extra.extend(opts.envoy_args.iter().cloned());
            std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)
                .with_context(|| format!("writing {}", config_path.display()))?;
            let started = envoy::EnvoyProcess::start(
                shared.envoy,
                &config_path,
                dir.path(),
                &extra,
                Duration::from_secs(30),
            );
            match started {
                Ok(envoy) => {
                    if opts.keep_dir {
                        dir.keep();
                        eprintln!(
                            "peerguard e2e: Envoy config and log kept in {}",
                            dir.path().display()
                        );
                    }
                    tracing::debug!(dir = %dir.path().display(), admin = %envoy.admin_address(), "Envoy ready");
                    return Ok(Box::new(ProjectDeployment { dir, envoy, addrs }));
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    let bind_failure =
                        text.contains("cannot bind") || text.contains("ddress already in use");
                    if bind_failure && attempt < 3 {
                        tracing::warn!("Envoy could not bind its listeners (attempt {attempt}), retrying with other addresses");
                        continue;
                    }
                    dir.keep();
                    return Err(e.context(format!(
                        "Envoy config {}{}",
                        config_path.display(),
                        if bind_failure {
                            " (a listener address:port is taken; is another process listening on one of the scenario ports on 0.0.0.0?)"
                        } else {
                            ""
                        }
                    )));
                }
            }
        }
    }
}

async fn run_async(
    frontend: &mut dyn Frontend,
    scenarios: &[E2eScenario],
    opts: &Options,
) -> anyhow::Result<Vec<Vec<Observed>>> {
    let envoy_bin = match &opts.envoy {
        Some(p) => p.clone(),
        None => envoy::find_envoy()?,
    };
    let wasm = if opts.with_filter {
        Some(match &opts.wasm {
            Some(p) => p.clone(),
            None => envoy::find_wasm()?,
        })
    } else {
        None
    };

    let pki = TestPki::new()?;
    let http_app = upstream::spawn_http_app()
        .await
        .context("starting the HTTP app")?;
    let tcp_app = upstream::spawn_tcp_echo()
        .await
        .context("starting the TCP echo app")?;

    // Certificates, one per distinct peer.
    let mut certs: HashMap<ClientCertSpec, Arc<Issued>> = HashMap::new();
    for s in scenarios {
        for r in &s.requests {
            if let Peer::Mtls(spec) = &r.peer {
                if !certs.contains_key(spec) {
                    let issued = pki
                        .client(spec)
                        .with_context(|| format!("scenario {}: client certificate", s.name))?;
                    certs.insert(spec.clone(), Arc::new(issued));
                }
            }
        }
    }

    let shared = Shared {
        envoy: &envoy_bin,
        wasm: wasm.as_deref(),
        pki: &pki,
        http_app,
        tcp_app,
        opts,
    };
    // Frontends start processes and wait for them: off the async workers.
    let mut deployment = tokio::task::block_in_place(|| frontend.start(scenarios, &shared))?;

    let mut shots = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        for (j, r) in s.requests.iter().enumerate() {
            let client_cert = match &r.peer {
                Peer::Plaintext => None,
                Peer::Mtls(spec) => certs.get(spec).cloned(),
            };
            shots.push((
                i,
                j,
                Shot {
                    target: deployment.target(i, r.port),
                    source_ip: r.source_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    client_cert,
                    mesh_root: pki.mesh_root_der().clone(),
                    alpn: Some(deployment.client_alpn(&r.probe)),
                    probe: r.probe.clone(),
                    timeout: opts.request_timeout,
                },
            ));
        }
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.parallelism.max(1)));
    let mut tasks = Vec::new();
    for (i, j, shot) in shots {
        // The permit is taken here, in order, not inside the task: with `parallelism: 1` the
        // requests then reach Envoy in the scenarios' order (tasks may start in any order),
        // which tests that read Envoy's logs line by line rely on.
        let permit = sem.clone().acquire_owned().await;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            (i, j, client::shoot(&shot).await)
        }));
    }
    let mut out: Vec<Vec<Option<Observed>>> = scenarios
        .iter()
        .map(|s| vec![None; s.requests.len()])
        .collect();
    let mut failure = None;
    for t in tasks {
        let (i, j, r) = t.await.context("request task")?;
        match r {
            Ok(o) => out[i][j] = Some(o),
            Err(client::RunnerError(e)) => {
                if failure.is_none() {
                    failure = Some(e.context(format!(
                        "scenario {}, request {}",
                        scenarios[i].name,
                        j + 1
                    )));
                }
            }
        }
    }
    deployment.check_running()?;
    if let Some(e) = failure {
        deployment.keep();
        return Err(e.context(deployment.describe()));
    }
    if opts.access_log.is_some() {
        // Past the flush interval: the last lines are written before Envoy is killed.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some(to) = &opts.log_copy {
        let from = deployment
            .log_path()
            .context("--log-copy: this frontend has no single Envoy log")?;
        std::fs::copy(&from, to)
            .with_context(|| format!("copying Envoy's log to {}", to.display()))?;
    }
    drop(deployment);
    Ok(out
        .into_iter()
        .map(|v| v.into_iter().flatten().collect())
        .collect())
}

/// Adds peerguard's JSON access log to every listener, naming the workload of its scenario
/// and recording the headers its policies read.
fn attach_access_logs(
    config: &mut serde_json::Value,
    listeners: &[ListenerSpec],
    addrs: &[Ipv4Addr],
    scenarios: &[E2eScenario],
    path: &std::path::Path,
) {
    let Some(json) = config
        .pointer_mut("/static_resources/listeners")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return;
    };
    for (l, spec) in json.iter_mut().zip(listeners) {
        let Some(s) = addrs
            .iter()
            .position(|a| *a == spec.address)
            .and_then(|i| scenarios.get(i))
        else {
            continue;
        };
        let w = &s.policy.workload;
        let headers: Vec<String> = peerguard_filter::schema::recorded_headers(&s.policy)
            .into_iter()
            .collect();
        peerguard_server::envoy_config::access_log::attach(
            l,
            &path.display().to_string(),
            &format!("{}/{}", w.namespace, w.name),
            &headers,
        );
    }
}

/// Builds a plain HTTP probe (handy for tests and tools).
pub fn http_probe(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    http2: bool,
) -> Probe {
    Probe::Http(HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        host: host.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        http2,
    })
}

/// A mesh client certificate for `principal` (`td/ns/x/sa/y`).
pub fn mesh_peer(principal: &str) -> Peer {
    Peer::Mtls(ClientCertSpec {
        uri_sans: vec![format!("spiffe://{principal}")],
        ca: CaChoice::Mesh,
        expired: false,
    })
}
