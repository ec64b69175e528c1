//! `peerguard serve`: the xDS extension server.
//!
//! Wiring: a [`Source`] emits [`Inputs`]; the builder compiles one `WorkloadPolicy` per
//! registered workload, issues or reuses its certificate, and publishes a per-node snapshot
//! to the [`Store`]; the xDS services stream those snapshots to Envoy. A timer re-runs the
//! builder when a certificate reaches 80% of its life, so rotation is an ordinary SDS push.

pub mod build;
pub mod decision_log;

pub use build::scoped;

use crate::ca::{self, duration, Ca, CaSource};
use crate::node::TokenAuth;
use crate::ops::{self, Metrics};
use crate::registry::Registry;
use crate::snapshot::Store;
use crate::source::{self, dir::DirSource, kube::KubeSource, Inputs, Source};
use crate::xds::{Xds, XdsState};
use anyhow::Context;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryServiceServer;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use peerguard_filter::compile::MeshConfig;
use peerguard_filter::istio::parse::YamlCost;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of Istio resources and peerguard `Workload`s (YAML/JSON, read recursively,
    /// watched for changes). Required with `--source directory`.
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// Where resources come from: a directory, or the Kubernetes API (the mesh CRDs, Pods,
    /// Services and Namespaces).
    #[arg(long, value_enum, default_value = "directory")]
    pub source: SourceKind,
    /// `--source kubernetes`: the kubeconfig to use (default: in-cluster, then `$KUBECONFIG`,
    /// then `~/.kube/config`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Path of the peerguard .wasm module as Envoy sees it (sent as `vm_config.code.local`).
    #[arg(long)]
    pub wasm: String,
    /// Where the built-in CA root, the token secret and the per-workload tokens are kept.
    #[arg(long, default_value = "/var/lib/peerguard")]
    pub state_dir: PathBuf,
    /// gRPC listen address: `HOST:PORT` or `unix:/path/to.sock`.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub listen: String,
    /// Address of `/healthz`, `/readyz`, `/metrics` and the read-only `/trust-bundle` and
    /// `/certs/<namespace>/<name>` (public certificates, for `peerguard certs --server`).
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub http_listen: String,
    /// `meshConfig.trustDomain`.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// `meshConfig.trustDomainAliases` (repeatable).
    #[arg(long = "trust-domain-alias")]
    pub trust_domain_aliases: Vec<String>,
    /// `meshConfig.rootNamespace`.
    #[arg(long, default_value = "istio-system")]
    pub root_namespace: String,
    /// `meshConfig.pathNormalization`: NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES
    /// (must match the connection manager in front of the filter).
    #[arg(long, default_value = "BASE")]
    pub path_normalization: peerguard_filter::schema::PathNormalization,
    /// Proxies in front of the workload that append to X-Forwarded-For
    /// (`numTrustedProxies`): `remoteIpBlocks`/`remote.ip` use the address that many hops
    /// from the right; 0 means the direct peer.
    #[arg(long, default_value_t = 0)]
    pub num_trusted_proxies: u32,
    /// Lifetime of issued workload certificates (e.g. 24h, 90m).
    #[arg(long, default_value = "24h", value_parser = duration::parse)]
    pub workload_cert_ttl: Duration,
    /// Upper bound for --workload-cert-ttl; a larger TTL is refused, not clamped.
    #[arg(long, default_value = "90d", value_parser = duration::parse)]
    pub max_workload_cert_ttl: Duration,
    /// Signing CA certificate (e.g. an intermediate of your PKI), PEM. Needs --ca-key.
    #[arg(long, requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// Private key of --ca-cert, PKCS#8 PEM.
    #[arg(long, requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Root certificates Envoy trusts (SDS `ROOTCA`). Alone: distribute the bundle only.
    #[arg(long)]
    pub trust_bundle: Option<PathBuf>,
    /// How often the config directory is checked for changes.
    #[arg(long, default_value = "200ms", value_parser = duration::parse)]
    pub poll_interval: Duration,
    /// How long the directory must stay unchanged before it is re-read.
    #[arg(long, default_value = "50ms", value_parser = duration::parse)]
    pub debounce: Duration,
    /// How long a file changed without a file event (polling fallback: bind mounts, network
    /// file systems) must stay unchanged before it is read. A file whose writer was seen to
    /// close it is read at once; one still open for writing is never read.
    #[arg(long, default_value = "1s", value_parser = duration::parse)]
    pub settle: Duration,
    /// Most YAML/JSON nodes all config files together may expand to, aliases included (each
    /// file is also limited on its own); files past it are errors that keep their last good
    /// content.
    #[arg(long, default_value_t = source::loader::DEFAULT_TOTAL_BUDGET.nodes)]
    pub max_config_nodes: usize,
    /// Most bytes of text all config files together may expand to, aliases included.
    #[arg(long, default_value_t = source::loader::DEFAULT_TOTAL_BUDGET.scalar_bytes)]
    pub max_config_text_bytes: usize,
    #[command(flatten)]
    pub decision_log: decision_log::DecisionLogArgs,
    /// Native RBAC or the wasm filter, per workload and slot (`crate::enforcement`).
    #[command(flatten)]
    pub enforcement: crate::enforcement::Options,
    /// The Istio WasmPlugin form (`--istio-wasmplugins`, off by default).
    #[command(flatten)]
    pub istio: crate::istio_forms::writer::ServeArgs,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Directory,
    Kubernetes,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = rt.block_on(serve(args));
    // Reading the config directory runs on the blocking pool; a read stuck in the kernel
    // (a hung network file system) must not keep the process from exiting.
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

fn ca_source(args: &Args) -> CaSource {
    match (&args.ca_cert, &args.ca_key, &args.trust_bundle) {
        (Some(cert), Some(key), bundle) => CaSource::Provided {
            cert: cert.clone(),
            key: key.clone(),
            bundle: bundle.clone(),
        },
        (None, None, Some(bundle)) => CaSource::BundleOnly {
            bundle: bundle.clone(),
        },
        _ => CaSource::Builtin {
            state_dir: args.state_dir.clone(),
        },
    }
}

/// The server secret tokens are derived from (created on first start, mode 0600).
pub fn token_auth(state_dir: &std::path::Path) -> anyhow::Result<TokenAuth> {
    let path = state_dir.join("token-secret");
    let text = ca::load_or_create_private(&path, || {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| ca::CaError::Generate(format!("reading /dev/urandom: {e}")))?;
        Ok(crate::node::hex(&bytes))
    })
    .context("token secret")?;
    Ok(TokenAuth::new(text.trim().as_bytes().to_vec()))
}

async fn serve(args: Args) -> anyhow::Result<u8> {
    // Before anything is created (clap's `required_if_eq` ignores the default `--source`).
    if args.source == SourceKind::Directory && args.config_dir.is_none() {
        anyhow::bail!(
            "--source directory (the default) needs --config-dir; or use --source kubernetes"
        );
    }
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating --state-dir {}", args.state_dir.display()))?;
    let ca = Ca::load(
        &ca_source(&args),
        &args.trust_domain,
        args.workload_cert_ttl,
        args.max_workload_cert_ttl,
    )
    .context("certificate authority")?;
    let auth = token_auth(&args.state_dir)?;
    let mesh = MeshConfig {
        trust_domain: args.trust_domain.clone(),
        trust_domain_aliases: args.trust_domain_aliases.clone(),
        root_namespace: args.root_namespace.clone(),
        path_normalization: args.path_normalization,
        num_trusted_proxies: args.num_trusted_proxies,
    };
    let metrics = Arc::new(Metrics::default());
    if let Some(t) = ca.ca_not_after() {
        metrics.set("peerguard_ca_cert_expiry_timestamp_seconds", &[], unix(t));
    }
    let store = Arc::new(Store::default());
    let (registry_tx, registry_rx) = watch::channel(Arc::new(Registry::default()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // Listeners first, so a bad address fails before anything else runs.
    let http = tokio::net::TcpListener::bind(&args.http_listen)
        .await
        .with_context(|| format!("binding --http-listen {}", args.http_listen))?;
    tracing::info!(
        addr = %args.http_listen,
        "ops endpoints: /healthz /readyz /metrics /trust-bundle /certs/<namespace>/<name>"
    );
    let issued = Arc::new(ops::certs::IssuedCerts::default());
    issued.publish_bundle(ca.bundle_pem());
    tokio::spawn(ops::serve_http(
        http,
        metrics.clone(),
        issued.clone(),
        shutdown_rx.clone(),
    ));

    let source: Box<dyn Source> = match (args.source, &args.config_dir) {
        (SourceKind::Directory, Some(dir)) => Box::new(DirSource {
            dir: dir.clone(),
            poll: args.poll_interval,
            debounce: args.debounce,
            settle: args.settle,
            total_budget: YamlCost {
                nodes: args.max_config_nodes,
                scalar_bytes: args.max_config_text_bytes,
            },
        }),
        (SourceKind::Directory, None) => {
            anyhow::bail!("--source directory (the default) needs --config-dir")
        }
        (SourceKind::Kubernetes, _) => Box::new(KubeSource {
            kubeconfig: args.kubeconfig.clone(),
            debounce: args.debounce,
            rediscover: Duration::from_secs(30),
            write_status: true,
        }),
    };
    tracing::info!(source = %source.describe(), "reading configuration");
    let (inputs_tx, inputs_rx) = mpsc::channel::<Arc<Inputs>>(4);
    let _source_task = source.run(inputs_tx);
    let inputs_rx = crate::istio_forms::writer::tee(
        &args.istio,
        args.kubeconfig.as_deref(),
        args.source == SourceKind::Kubernetes,
        mesh.clone(),
        metrics.clone(),
        inputs_rx,
    )
    .await?;

    let builder = build::Builder {
        ca,
        mesh,
        decision_log: args.decision_log.clone(),
        enforcement: args.enforcement.clone(),
        wasm: args.wasm.clone(),
        state_dir: args.state_dir.clone(),
        auth: auth.clone(),
        store: store.clone(),
        registry_tx,
        metrics: metrics.clone(),
        certs: Default::default(),
        issued,
        history: Default::default(),
    };
    tokio::spawn(builder.run(inputs_rx, shutdown_rx.clone()));

    let reviewer = match args.source {
        SourceKind::Kubernetes => {
            let client = crate::source::kube::client(args.kubeconfig.as_deref())
                .await
                .context("Kubernetes client for TokenReview")?;
            Some(Arc::new(
                crate::source::kube::tokenreview::TokenReviewer::new(client),
            ))
        }
        SourceKind::Directory => None,
    };
    let xds = Xds(Arc::new(XdsState {
        store,
        registry: registry_rx,
        auth,
        reviewer,
        metrics: metrics.clone(),
        shutdown: shutdown_rx.clone(),
        connected: Default::default(),
    }));
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(AggregatedDiscoveryServiceServer::new(xds.clone()))
        .add_service(ExtensionConfigDiscoveryServiceServer::new(xds.clone()))
        .add_service(SecretDiscoveryServiceServer::new(xds));
    let mut sd = shutdown_rx.clone();
    let stop = async move {
        let _ = sd.changed().await;
    };
    let signals = tokio::spawn(async move {
        ops::shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });
    let result = if let Some(path) = args.listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let uds = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding --listen {}", args.listen))?;
        tracing::info!(socket = path, "xDS server listening (ADS, ECDS, SDS)");
        let r = server
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(uds),
                stop,
            )
            .await;
        let _ = std::fs::remove_file(path);
        r
    } else {
        let tcp = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding --listen {}", args.listen))?;
        tracing::info!(addr = %args.listen, "xDS server listening (ADS, ECDS, SDS)");
        server
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(tcp), stop)
            .await
    };
    signals.abort();
    result.context("xDS server")?;
    tracing::info!("stopped");
    Ok(0)
}

pub(crate) fn unix(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as f64)
        .unwrap_or(0.0)
}
