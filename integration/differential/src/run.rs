//! The runner: seeds → prepared sets (peerguard's `WorkloadPolicy` and Istio's RBAC filters
//! from the same parsed YAML) → one Envoy per batch → every request sent to both sides →
//! a [`Report`].

use crate::client::{shoot, Outcome, Shot};
use crate::compare::{classify, judge, judge_exact, Context, Observation, Verdict};
use crate::envoy::{BatchConfig, SetAddrs, SetListeners};
use crate::gen::{self, Ca, Case, Origin, Payload, DST_NET, DST_OTHER, DST_PAIR, PEERS};
use crate::harness::{
    client_config, find_envoy, find_wasm, spawn_http_app, spawn_tcp_echo, CaChoice, ClientCertSpec,
    EnvoyProcess, TempDir, TestPki,
};
use anyhow::{bail, Context as _};
use peerguard_filter::istio::parse::parse_str;
use peerguard_filter::WorkloadPolicy;
use peerguard_server::enforcement::{self, Enforcement, Slot};
use peerguard_server::envoy_config::rbac::{self, RbacFilters};
use peerguard_server::envoy_config::Authz;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the second side of each set runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Comparison {
    /// Envoy's RBAC as Istio configures it (authorization only, both sides PERMISSIVE),
    /// with the documented deliberately-safer differences ([`crate::compare::KNOWN_SAFER`]).
    #[default]
    Istio,
    /// Adaptive enforcement: each slot filled with what
    /// [`peerguard_server::enforcement::choose`] picks with `--enforcement native` (native
    /// RBAC wherever allowed, the wasm filter elsewhere), against the wasm filter alone.
    /// Generated sets carry PeerAuthentications; no difference is excused.
    Adaptive,
}

impl Comparison {
    /// The names of the two sides in reports.
    pub fn sides(self) -> (&'static str, &'static str) {
        match self {
            Comparison::Istio => ("peerguard", "reference"),
            Comparison::Adaptive => ("wasm", "adaptive"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub comparison: Comparison,
    pub first_seed: u64,
    pub seeds: u64,
    pub requests_per_set: usize,
    /// Policy sets per Envoy process.
    pub batch: usize,
    /// Requests in flight at once (each is two connections, one per side).
    pub parallelism: usize,
    pub request_timeout: Duration,
    /// `None`: found as the e2e harness finds them.
    pub envoy: Option<PathBuf>,
    pub wasm: Option<PathBuf>,
    /// Keep each batch's Envoy config and log.
    pub keep: bool,
    /// Keep every observation in the report, not only the disagreements.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            comparison: Comparison::Istio,
            first_seed: 1,
            seeds: 30,
            requests_per_set: 12,
            batch: 40,
            parallelism: 16,
            request_timeout: Duration::from_secs(3),
            envoy: None,
            wasm: None,
            keep: false,
            verbose: false,
        }
    }
}

/// One set ready to serve: both sides' configuration from the same parsed YAML.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub origin: Origin,
    /// With the destination placeholders filled in for `addrs`.
    pub yaml: String,
    pub addrs: SetAddrs,
    pub policy: WorkloadPolicy,
    /// Istio's RBAC filters (the reference side of [`Comparison::Istio`]).
    pub rbac: RbacFilters,
    /// [`Comparison::Adaptive`]: what fills each slot of the second side.
    pub enforcement: Option<Enforcement>,
    pub cases: Vec<Case>,
}

/// Parses the set's YAML once and builds both sides from it.
pub fn prepare(g: &gen::Generated, addrs: SetAddrs) -> anyhow::Result<Prepared> {
    let (pair, net, other) = addrs.destination_blocks();
    let yaml = g
        .yaml
        .replace(DST_PAIR, &pair)
        .replace(DST_NET, &net)
        .replace(DST_OTHER, &other);
    let parsed = parse_str(&yaml, &g.origin.to_string());
    // Invalid AuthorizationPolicies are compared (peerguard fails closed, istiod skips what
    // it cannot translate); anything else unreadable leaves nothing to compare.
    let unreadable = parsed.errors.iter().any(|e| e.object.is_none())
        || parsed.resources.iter().any(
            |r| matches!(r, peerguard_filter::istio::Resource::Invalid(i) if i.kind != "AuthorizationPolicy"),
        );
    if unreadable {
        bail!(
            "{}: these resources cannot be compared: {:?}\n{yaml}",
            g.origin,
            parsed.errors
        );
    }
    let workload = gen::workload();
    let mesh = gen::mesh_config();
    let policy = peerguard_filter::compile::compile(&parsed.resources, &workload, &mesh);
    let rbac = rbac::translate_as_istiod(&parsed.resources, &workload, &mesh)
        .with_context(|| format!("{}: translating to Envoy RBAC", g.origin))?;
    Ok(Prepared {
        origin: g.origin.clone(),
        yaml,
        addrs,
        policy,
        rbac,
        enforcement: None,
        cases: g.cases.clone(),
    })
}

/// [`prepare`] for [`Comparison::Adaptive`]: also what `choose` picks for each slot, from
/// the same resources, workload, mesh and compiled policy `serve` would give it.
pub fn prepare_adaptive(g: &gen::Generated, addrs: SetAddrs) -> anyhow::Result<Prepared> {
    let mut p = prepare(g, addrs)?;
    let parsed = parse_str(&p.yaml, &g.origin.to_string());
    let opts = enforcement::Options {
        mode: enforcement::Mode::Native,
        ..enforcement::Options::default()
    };
    p.enforcement = Some(enforcement::choose(
        &parsed.resources,
        &gen::workload(),
        &gen::mesh_config(),
        &p.policy,
        &opts,
    ));
    Ok(p)
}

/// The filters of the second side, in the places the shared listener holds peerguard's:
/// Istio's RBAC filters, or the adaptive choice (the wasm filter, configured as the first
/// side's, where a slot keeps it).
fn second_side(p: &Prepared, wasm: &std::path::Path) -> anyhow::Result<RbacFilters> {
    let Some(e) = &p.enforcement else {
        return Ok(p.rbac.clone());
    };
    let policy_json = serde_json::to_string(&p.policy)?;
    match e.authz(&wasm.display().to_string(), &policy_json) {
        Authz::Adaptive { http, network, .. } => Ok(RbacFilters {
            http: vec![http],
            network: vec![network],
            omitted: Vec::new(),
        }),
        other => bail!(
            "{}: enforcement gave {other:?}, not one filter per slot",
            p.origin
        ),
    }
}

/// The transport slot `serve` pushes with the adaptive choice (both sides get it).
fn transport_of(p: &Prepared) -> Option<serde_json::Value> {
    p.enforcement.as_ref().map(|e| {
        serde_json::json!({
            "name": peerguard_server::envoy_config::listener::TRANSPORT_FILTER,
            "typed_config": e.transport,
        })
    })
}

/// How much of an adaptive run went through native RBAC.
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    pub sets_native_http: usize,
    pub sets_native_tcp: usize,
    /// Both slots kept the wasm filter (the two sides are the same filter).
    pub sets_wasm_only: usize,
    /// HTTP requests to a native HTTP slot, TCP connections to a native TCP slot.
    pub requests_native_http: usize,
    pub requests_native_tcp: usize,
    /// Requests to a slot that kept the wasm filter.
    pub requests_wasm: usize,
    /// Why a slot kept the filter (`http: ...`, `tcp: ...`), slots counted.
    pub kept: BTreeMap<String, usize>,
    /// Sets by the workload's mTLS mode (on ports without a port-level mode).
    pub modes: BTreeMap<String, usize>,
}

impl Coverage {
    fn absorb(&mut self, o: Coverage) {
        self.sets_native_http += o.sets_native_http;
        self.sets_native_tcp += o.sets_native_tcp;
        self.sets_wasm_only += o.sets_wasm_only;
        self.requests_native_http += o.requests_native_http;
        self.requests_native_tcp += o.requests_native_tcp;
        self.requests_wasm += o.requests_wasm;
        for (k, v) in o.kept {
            *self.kept.entry(k).or_default() += v;
        }
        for (k, v) in o.modes {
            *self.modes.entry(k).or_default() += v;
        }
    }

    fn count(&mut self, p: &Prepared, e: &Enforcement) {
        self.sets_native_http += usize::from(e.http.is_native());
        self.sets_native_tcp += usize::from(e.tcp.is_native());
        self.sets_wasm_only += usize::from(!e.http.is_native() && !e.tcp.is_native());
        for (name, slot) in [("http", &e.http), ("tcp", &e.tcp)] {
            if let Slot::Wasm { why } = slot {
                *self
                    .kept
                    .entry(format!("{name}: {}", why_kind(why)))
                    .or_default() += 1;
            }
        }
        let mode = format!("{:?}", p.policy.mtls.default.mode).to_uppercase();
        *self.modes.entry(mode).or_default() += 1;
        for c in &p.cases {
            let slot = match c.payload {
                Payload::Http(_) => &e.http,
                Payload::Tcp => &e.tcp,
            };
            match (slot.is_native(), &c.payload) {
                (true, Payload::Http(_)) => self.requests_native_http += 1,
                (true, Payload::Tcp) => self.requests_native_tcp += 1,
                (false, _) => self.requests_wasm += 1,
            }
        }
    }

    fn render(&self) -> String {
        let mut s = format!(
            "  native RBAC: HTTP slot in {} sets ({} requests), TCP slot in {} sets ({} connections); {} sets wasm in both slots; {} requests to a wasm slot\n",
            self.sets_native_http,
            self.requests_native_http,
            self.sets_native_tcp,
            self.requests_native_tcp,
            self.sets_wasm_only,
            self.requests_wasm
        );
        let modes: Vec<String> = self.modes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        s.push_str(&format!("  sets by mTLS mode: {}\n", modes.join(", ")));
        for (why, n) in &self.kept {
            s.push_str(&format!("  wasm kept [{why}]: {n}\n"));
        }
        s
    }
}

/// The variant of a [`enforcement::Why`] without its details, for counting.
fn why_kind(why: &enforcement::Why) -> String {
    let s = format!("{why:?}");
    s.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// One disagreement, with what is needed to reproduce it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub obs: Observation,
    pub class: &'static str,
}

#[derive(Debug, Default)]
pub struct Report {
    pub comparison: Comparison,
    pub sets: usize,
    pub requests: usize,
    pub agreements: usize,
    /// Requests sent a second time because one side timed out.
    pub retried: usize,
    /// Requests the reference side let through (a run where it never does tests little).
    pub reference_allowed: usize,
    /// Excused disagreements, by [`crate::compare::KNOWN_SAFER`] id.
    pub safer: BTreeMap<&'static str, usize>,
    pub findings: Vec<Finding>,
    /// Every observation (with [`Options::verbose`]).
    pub all: Vec<Observation>,
    /// The YAML of every set with a finding.
    pub yaml: BTreeMap<Origin, String>,
    /// [`Comparison::Adaptive`]: what went through native RBAC.
    pub coverage: Coverage,
    pub elapsed: Duration,
}

impl Report {
    pub fn by_class(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for f in &self.findings {
            *m.entry(f.class).or_default() += 1;
        }
        m
    }

    fn absorb(&mut self, other: Report) {
        self.sets += other.sets;
        self.requests += other.requests;
        self.agreements += other.agreements;
        self.reference_allowed += other.reference_allowed;
        self.retried += other.retried;
        for (k, v) in other.safer {
            *self.safer.entry(k).or_default() += v;
        }
        self.findings.extend(other.findings);
        self.all.extend(other.all);
        self.yaml.extend(other.yaml);
        self.coverage.absorb(other.coverage);
    }

    /// Counts, then each disagreement with its seed, the outcomes, the raw request, and
    /// (once per seed) the policy YAML.
    pub fn render(&self) -> String {
        let (a, b) = self.comparison.sides();
        let mut s = format!(
            "differential ({a} | {b}): {} policy sets, {} requests: {} agree, {} excused as deliberately safer, {} disagree ({:.1}s)\n",
            self.sets,
            self.requests,
            self.agreements,
            self.safer.values().sum::<usize>(),
            self.findings.len(),
            self.elapsed.as_secs_f64()
        );
        s.push_str(&format!(
            "  {b} side allowed {} of {} requests; {} sent twice after a timeout\n",
            self.reference_allowed, self.requests, self.retried
        ));
        if self.comparison == Comparison::Adaptive {
            s.push_str(&self.coverage.render());
        }
        for (id, n) in &self.safer {
            s.push_str(&format!("  safer [{id}]: {n}\n"));
        }
        for (class, n) in self.by_class() {
            s.push_str(&format!("  disagreements [{class}]: {n}\n"));
        }
        for o in &self.all {
            s.push_str(&format!(
                "  {} #{}: {a} {} | {b} {} | {} from {} to {}{}: {}\n",
                o.origin,
                o.index,
                o.peerguard,
                o.reference,
                describe_peer(o.case.peer),
                o.case.source,
                o.case.port,
                h2_note(&o.case),
                o.case.payload.describe()
            ));
        }
        let mut shown_yaml = std::collections::BTreeSet::new();
        for f in &self.findings {
            let o = &f.obs;
            s.push_str(&format!(
                "\nDISAGREEMENT {} request {} [{}]\n  {a}: {}\n  {b}: {}\n  client: {} from {} to port {}{}\n  request: {}\n",
                o.origin,
                o.index,
                f.class,
                o.peerguard,
                o.reference,
                describe_peer(o.case.peer),
                o.case.source,
                o.case.port,
                h2_note(&o.case),
                o.case.payload.describe()
            ));
            if shown_yaml.insert(o.origin.clone()) {
                let yaml = self.yaml.get(&o.origin).map(String::as_str).unwrap_or("");
                s.push_str("  policies:\n");
                for line in yaml.lines() {
                    s.push_str(&format!("    {line}\n"));
                }
                let flag = match self.comparison {
                    Comparison::Istio => "",
                    Comparison::Adaptive => " --adaptive",
                };
                s.push_str(&format!("  replay: {}{flag}\n", o.origin.replay()));
            }
        }
        s
    }
}

pub fn h2_note(c: &Case) -> &'static str {
    if c.h2 {
        " over HTTP/2"
    } else {
        ""
    }
}

pub fn describe_peer(i: usize) -> String {
    match PEERS.get(i).copied().flatten() {
        None => "plaintext".into(),
        Some(p) => format!(
            "mTLS{} with URI SANs {:?}",
            if p.ca == Ca::Untrusted {
                " (untrusted CA)"
            } else {
                ""
            },
            p.uri_sans
        ),
    }
}

/// Generates `opts.seeds` sets, serves and compares them with the `extra` sets (case
/// files) in the same run.
pub fn run(opts: &Options, extra: &[gen::Generated]) -> anyhow::Result<Report> {
    let generate = match opts.comparison {
        Comparison::Istio => gen::generate,
        Comparison::Adaptive => gen::generate_adaptive,
    };
    let mut sets: Vec<gen::Generated> = extra.to_vec();
    sets.extend(
        (0..opts.seeds).map(|i| generate(opts.first_seed.wrapping_add(i), opts.requests_per_set)),
    );
    match opts.comparison {
        Comparison::Istio => run_generated(&sets, opts, prepare),
        Comparison::Adaptive => run_generated(&sets, opts, prepare_adaptive),
    }
}

/// As [`run`] for given sets; `prep` builds each side (tests swap one side to check that a
/// difference is caught).
pub fn run_generated(
    generated: &[gen::Generated],
    opts: &Options,
    prep: impl Fn(&gen::Generated, SetAddrs) -> anyhow::Result<Prepared>,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let envoy_bin = match &opts.envoy {
        Some(p) => p.clone(),
        None => find_envoy()?,
    };
    let wasm = match &opts.wasm {
        Some(p) => p.clone(),
        None => find_wasm()?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let pki = TestPki::new()?;
    let (http_app, tcp_app) =
        rt.block_on(async { anyhow::Ok((spawn_http_app().await?, spawn_tcp_echo().await?)) })?;
    let tls = Arc::new(TlsConfigs::new(&pki)?);
    let mut report = Report {
        comparison: opts.comparison,
        ..Report::default()
    };
    for chunk in generated.chunks(opts.batch.max(1)) {
        let env = Env {
            envoy: &envoy_bin,
            wasm: &wasm,
            pki: &pki,
            http_app,
            tcp_app,
            tls: &tls,
        };
        let r = run_batch(&rt, chunk, opts, &env, &prep)?;
        report.absorb(r);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

struct Env<'a> {
    envoy: &'a std::path::Path,
    wasm: &'a std::path::Path,
    pki: &'a TestPki,
    http_app: SocketAddr,
    tcp_app: SocketAddr,
    tls: &'a Arc<TlsConfigs>,
}

/// Client TLS settings per peer, for HTTP/1.1, HTTP/2 (ALPN) and TCP (no ALPN).
struct TlsConfigs {
    http: Vec<Option<Arc<rustls::ClientConfig>>>,
    h2: Vec<Option<Arc<rustls::ClientConfig>>>,
    tcp: Vec<Option<Arc<rustls::ClientConfig>>>,
}

impl TlsConfigs {
    fn new(pki: &TestPki) -> anyhow::Result<Self> {
        let (mut http, mut h2, mut tcp) = (Vec::new(), Vec::new(), Vec::new());
        for p in PEERS {
            let Some(p) = p else {
                http.push(None);
                h2.push(None);
                tcp.push(None);
                continue;
            };
            let issued = pki.client(&ClientCertSpec {
                uri_sans: p.uri_sans.iter().map(|s| s.to_string()).collect(),
                ca: match p.ca {
                    Ca::Mesh => CaChoice::Mesh,
                    Ca::Untrusted => CaChoice::Untrusted,
                },
                expired: false,
            })?;
            let root = pki.mesh_root_der();
            http.push(Some(Arc::new(client_config(
                &issued,
                root,
                vec![b"http/1.1".to_vec()],
            )?)));
            h2.push(Some(Arc::new(client_config(
                &issued,
                root,
                vec![b"h2".to_vec()],
            )?)));
            tcp.push(Some(Arc::new(client_config(&issued, root, Vec::new())?)));
        }
        Ok(TlsConfigs { http, h2, tcp })
    }
}

/// Listener blocks 127.100.0.0/16 ... 127.199.0.0/16: away from the client sources
/// (127.10/16, 127.20/16, 127.0.0.1) and from the e2e runner (127.0/16).
fn random_block() -> u8 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    100 + (h.finish() % 100) as u8
}

fn run_batch(
    rt: &tokio::runtime::Runtime,
    chunk: &[gen::Generated],
    opts: &Options,
    env: &Env<'_>,
    prep: &impl Fn(&gen::Generated, SetAddrs) -> anyhow::Result<Prepared>,
) -> anyhow::Result<Report> {
    let trust_domains = vec![gen::mesh_config().trust_domain];
    let mut attempt = 0;
    let (prepared, mut dir, mut envoy) = loop {
        attempt += 1;
        let block = random_block();
        let prepared = chunk
            .iter()
            .enumerate()
            .map(|(k, g)| prep(g, SetAddrs::of(block, k)?))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let second = prepared
            .iter()
            .map(|p| second_side(p, env.wasm))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let listeners = prepared
            .iter()
            .zip(&second)
            .map(|(p, rbac)| {
                Ok(SetListeners {
                    addrs: p.addrs,
                    policy_json: serde_json::to_string(&p.policy)?,
                    rbac,
                    transport: transport_of(p),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let config = BatchConfig {
            sets: &listeners,
            http_ports: &gen::HTTP_PORTS,
            tcp_ports: &[gen::TCP_PORT],
            trust_domains: &trust_domains,
            wasm: env.wasm,
            pki: env.pki,
            http_upstream: env.http_app,
            tcp_upstream: env.tcp_app,
        }
        .to_json()?;
        let mut dir = TempDir::new("peerguard-differential")?;
        let path = dir.path().join("envoy.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let args = vec!["--concurrency".to_string(), "1".to_string()];
        match EnvoyProcess::start(env.envoy, &path, dir.path(), &args, Duration::from_secs(60)) {
            Ok(p) => {
                drop(listeners);
                break (prepared, dir, p);
            }
            Err(e) => {
                let text = format!("{e:#}");
                if attempt < 3
                    && (text.contains("cannot bind") || text.contains("ddress already in use"))
                {
                    continue;
                }
                dir.keep();
                return Err(e.context(format!("Envoy config {}", path.display())));
            }
        }
    };
    if opts.keep {
        dir.keep();
        eprintln!(
            "differential: Envoy config and log kept in {}",
            dir.path().display()
        );
    }
    let (observations, retried) = rt.block_on(shoot_all(&prepared, opts, env.tls))?;
    if !envoy.is_running() {
        dir.keep();
        bail!(
            "Envoy died during the batch; log {}:\n{}",
            envoy.log_path().display(),
            envoy.log_tail(40)
        );
    }
    let mut report = Report {
        comparison: opts.comparison,
        sets: prepared.len(),
        retried,
        ..Report::default()
    };
    for (p, obs) in prepared.iter().zip(observations) {
        if let Some(e) = &p.enforcement {
            report.coverage.count(p, e);
        }
        for o in obs {
            report.requests += 1;
            if o.reference.allowed() {
                report.reference_allowed += 1;
            }
            if opts.verbose {
                report.all.push(o.clone());
            }
            let cx = Context {
                yaml: &p.yaml,
                obs: &o,
            };
            let verdict = match opts.comparison {
                Comparison::Istio => judge(&cx),
                Comparison::Adaptive => judge_exact(&cx),
            };
            match verdict {
                Verdict::Agree => report.agreements += 1,
                Verdict::Safer(id) => *report.safer.entry(id).or_default() += 1,
                Verdict::Disagree => {
                    let class = classify(&cx);
                    report.yaml.insert(p.origin.clone(), p.yaml.clone());
                    report.findings.push(Finding { obs: o, class });
                }
            }
        }
    }
    if !report.findings.is_empty() && !opts.keep {
        dir.keep();
        eprintln!(
            "differential: disagreements; this batch's Envoy config and log are kept in {}",
            dir.path().display()
        );
    }
    drop(envoy);
    Ok(report)
}

async fn shoot_all(
    prepared: &[Prepared],
    opts: &Options,
    tls: &Arc<TlsConfigs>,
) -> anyhow::Result<(Vec<Vec<Observation>>, usize)> {
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.parallelism.max(1)));
    let mut tasks = Vec::new();
    for (set, p) in prepared.iter().enumerate() {
        for (index, case) in p.cases.iter().enumerate() {
            let (http, configs) = match &case.payload {
                Payload::Http(h) => (
                    Some(Arc::<[u8]>::from(h.as_slice())),
                    if case.h2 { &tls.h2 } else { &tls.http },
                ),
                Payload::Tcp => (None, &tls.tcp),
            };
            let shot = |addr| Shot {
                target: SocketAddr::new(IpAddr::V4(addr), case.port),
                source: IpAddr::V4(case.source),
                tls: configs.get(case.peer).cloned().flatten(),
                http: http.clone(),
                h2: case.h2,
                timeout: opts.request_timeout,
            };
            let (pg, rf) = (shot(p.addrs.peerguard), shot(p.addrs.reference));
            let sem = sem.clone();
            let (origin, case) = (p.origin.clone(), case.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let (a, b) = tokio::join!(shoot(&pg), shoot(&rf));
                let (mut a, mut b) = (a?, b?);
                // A timeout is the machine being busy, not a decision: ask both again once.
                let retried = a != b && (a == Outcome::Timeout || b == Outcome::Timeout);
                if retried {
                    let (a2, b2) = tokio::join!(shoot(&pg), shoot(&rf));
                    (a, b) = (a2?, b2?);
                }
                anyhow::Ok((
                    set,
                    retried,
                    Observation {
                        origin,
                        index,
                        case,
                        peerguard: a,
                        reference: b,
                    },
                ))
            }));
        }
    }
    let mut out: Vec<Vec<Observation>> = prepared.iter().map(|_| Vec::new()).collect();
    let mut retried = 0;
    for t in tasks {
        let (set, again, o) = t.await.context("request task")??;
        retried += usize::from(again);
        out[set].push(o);
    }
    Ok((out, retried))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{is_peerguard_filter, HCM_NAME};
    use clap::Parser as _;
    use serde_json::{json, Value};
    use std::path::Path;

    #[derive(clap::Parser)]
    struct BootstrapCli {
        #[command(flatten)]
        args: peerguard_server::bootstrap::Args,
    }

    /// What decides which chain a connection takes and which filters it meets: per chain,
    /// the match, whether TLS requires a client certificate, and the filter names (the
    /// authorization slot as `authz`, whatever fills it).
    fn shape(listener: &Value) -> Vec<Value> {
        let names = |filters: &Value| -> Vec<String> {
            filters
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    if is_peerguard_filter(&f["name"]) {
                        "authz".to_string()
                    } else {
                        f["name"].as_str().unwrap_or_default().to_string()
                    }
                })
                .collect()
        };
        listener["filter_chains"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let mut filters = names(&c["filters"]);
                for f in c["filters"].as_array().into_iter().flatten() {
                    if f["name"] == HCM_NAME {
                        filters.extend(names(&f["typed_config"]["http_filters"]));
                    }
                }
                json!({
                    "match": c["filter_chain_match"],
                    "client_certificate": c["transport_socket"]["typed_config"]["require_client_certificate"],
                    "filters": filters,
                })
            })
            .collect()
    }

    fn adaptive_set(yaml: &str) -> anyhow::Result<Prepared> {
        let g = gen::Generated {
            origin: Origin::File("shape".into()),
            yaml: yaml.into(),
            cases: Vec::new(),
        };
        prepare_adaptive(&g, SetAddrs::of(150, 0)?)
    }

    /// The adaptive side runs on the listener `peerguard serve`'s bootstrap gives a sidecar
    /// (`Chains::Both`: an mTLS and a plaintext chain on every port), so the mode is enforced
    /// by what fills the slot, never by a missing chain; and the slot holds exactly what
    /// `choose` picked, on both chains.
    #[test]
    fn the_adaptive_side_is_serves_listener_with_the_chosen_filter_in_every_chain(
    ) -> anyhow::Result<()> {
        let p = adaptive_set("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: PERMISSIVE}}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: foo}\nspec: {action: DENY, rules: [{to: [{operation: {paths: [\"/admin\"]}}]}]}\n")?;
        let e = p.enforcement.clone().context("no enforcement")?;
        let Slot::Native {
            typed_config: http_native,
            ..
        } = &e.http
        else {
            bail!("expected a native HTTP slot: {}", e.http);
        };
        let pki = TestPki::new()?;
        let second = second_side(&p, Path::new("/x.wasm"))?;
        let sets = [SetListeners {
            addrs: p.addrs,
            policy_json: serde_json::to_string(&p.policy)?,
            rbac: &second,
            transport: transport_of(&p),
        }];
        let cfg = BatchConfig {
            sets: &sets,
            http_ports: &[8080],
            tcp_ports: &[9000],
            trust_domains: &["cluster.local".to_string()],
            wasm: Path::new("/x.wasm"),
            pki: &pki,
            http_upstream: "127.0.0.1:1".parse()?,
            tcp_upstream: "127.0.0.1:2".parse()?,
        }
        .to_json()?;
        let ls = cfg["static_resources"]["listeners"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let [wasm_http, wasm_tcp, adaptive_http, adaptive_tcp] = ls.as_slice() else {
            bail!("{} listeners", ls.len());
        };
        for (protocol, harness) in [
            ("http", [wasm_http, adaptive_http]),
            ("tcp", [wasm_tcp, adaptive_tcp]),
        ] {
            let cli = BootstrapCli::try_parse_from([
                "bootstrap",
                "--node",
                "foo/httpbin",
                "--token",
                "t",
                "--format",
                "json",
                "--protocol",
                protocol,
            ])?;
            let serve = peerguard_server::bootstrap::build(&cli.args)?;
            let serve_listener = &serve["static_resources"]["listeners"][0];
            let serve_shape = shape(serve_listener);
            assert_eq!(serve_shape.len(), 2, "{serve_listener}");
            for l in harness {
                assert_eq!(shape(l), serve_shape, "{protocol}: {l}");
            }
        }
        use peerguard_server::envoy_config::listener::TRANSPORT_FILTER;
        // Both chains of the adaptive HTTP listener hold the native RBAC `choose` picked, both
        // chains of its TCP listener the wasm filter (an enforced DENY rule reaches TCP).
        assert!(!e.tcp.is_native(), "{}", e.tcp);
        for c in adaptive_http["filter_chains"]
            .as_array()
            .into_iter()
            .flatten()
        {
            // First the transport slot, as in serve's listener, then the connection manager.
            assert_eq!(c["filters"][0]["name"], TRANSPORT_FILTER);
            assert_eq!(c["filters"][0]["typed_config"], e.transport);
            let slot = &c["filters"][1]["typed_config"]["http_filters"][0];
            assert_eq!(slot["typed_config"], *http_native);
        }
        for c in adaptive_tcp["filter_chains"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(c["filters"][0]["name"], TRANSPORT_FILTER);
            assert_eq!(c["filters"][1]["name"], "peerguard");
            assert_eq!(
                c["filters"][1]["typed_config"],
                wasm_tcp["filter_chains"][0]["filters"][1]["typed_config"]
            );
        }
        Ok(())
    }
}
