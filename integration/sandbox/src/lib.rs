//! `peerguard sandbox`: Istio's "Automatic mutual TLS" walkthrough as real processes on
//! one machine: demo httpbin apps, one Envoy sidecar per meshed pod (inbound with the
//! peerguard wasm filter, outbound with per-endpoint auto mTLS), each pod on its own
//! loopback address. See `integration/sandbox/README.md`.

/// `println!` that ignores a closed stdout (`peerguard sandbox matrix | head` must not
/// panic with EPIPE).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod compose;
mod config;
pub mod demo;
mod pki;
mod probe;
mod run;
mod state;
mod topology;
mod xds;

use anyhow::Context as _;
use state::State;
use std::path::PathBuf;
use std::time::Duration;

pub const STAGE_1: &str = include_str!("../stages/1-permissive.yaml");

#[derive(clap::Args, Debug)]
pub struct Args {
    /// State directory (default: $PEERGUARD_SANDBOX_DIR, else ./.peerguard/sandbox).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Start the sandbox (apps, sidecars), apply stage 1, print the matrix.
    Up(UpArgs),
    /// Stop every process the sandbox started.
    Down,
    /// Apply a file of Istio resources (kubectl-apply semantics); the sidecars pick the
    /// change up live.
    Apply { file: PathBuf },
    /// Delete the resources named in a file.
    Delete { file: PathBuf },
    /// Send one request from a pod: `sandbox exec sleep.full -- GET http://httpbin.partial:8000/headers`.
    Exec {
        /// The client pod, `name.namespace`.
        pod: String,
        /// METHOD URL
        #[arg(last = true, num_args = 1..=2)]
        request: Vec<String>,
        /// Print the status line and response headers too.
        #[arg(short = 'i', long)]
        include: bool,
    },
    /// Every client to every Service: code and the client identity httpbin saw.
    Matrix {
        #[arg(long, default_value = "text")]
        output: Output,
        /// Only these client pods (repeatable). In containers each client pod measures
        /// its own row: `docker-compose exec sleep-full peerguard sandbox --dir /state
        /// matrix --from sleep.full`.
        #[arg(long)]
        from: Vec<String>,
    },
    /// Print the docker-compose file that runs the topology in containers (the committed
    /// docker-compose.yaml is this output; see integration/docker/).
    Compose(compose::ComposeArgs),
    /// Server modes and client TLS choices of the current resources, and the processes.
    Status {
        #[arg(long, default_value = "text")]
        output: Output,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Stay in the foreground; Ctrl-C stops everything.
    #[arg(long)]
    foreground: bool,
    /// Put the pods on 127.<NET>.x.y (the topology's second octet is replaced).
    #[arg(long, default_value_t = 0)]
    net: u8,
    /// Another topology file (default: the built-in integration/sandbox/topology.yaml).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// The wasm filter: auto (find peerguard.wasm), off, or a path.
    #[arg(long, default_value = "auto")]
    wasm: String,
    /// The Envoy binary (default: PEERGUARD_ENVOY, .peerguard/env, PATH).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// How the server's mode is enforced: `filter` (peerguard: both chains, the wasm
    /// filter refuses) or `istio` (Envoy's own chains per mode, as Istio builds them).
    #[arg(long, value_enum, default_value = "filter")]
    inbound_chains: config::InboundChains,
    /// Filter configuration and certificates: `files` (inline, the sandbox's CA) or
    /// `serve` (ECDS + SDS from a `peerguard serve` the sandbox runs, sidecars configured
    /// from `peerguard bootstrap`). Listeners and clusters are files either way.
    #[arg(long, value_enum, default_value = "serve")]
    xds: state::XdsMode,
    /// Istio's `meshConfig.pathNormalization` for every sidecar: NONE, BASE,
    /// MERGE_SLASHES or DECODE_AND_MERGE_SLASHES.
    #[arg(long, default_value = "BASE")]
    path_normalization: peerguard_server::envoy_config::PathNormalization,
    /// Initial resources instead of stage 1 (repeatable).
    #[arg(long = "resources")]
    resources: Vec<PathBuf>,
    /// Do not print the matrix when ready.
    #[arg(long)]
    no_matrix: bool,
    /// The filter's decision log (`serve --decision-log-sample`), written to each sidecar's
    /// `envoy.log` (its `wasm` component then logs at info), for `peerguard preview`.
    #[command(flatten)]
    decision_log: peerguard_server::serve::decision_log::DecisionLogArgs,
    /// The pods run in containers (docker-compose.yaml, from `sandbox compose`) at
    /// A.B.x.y: configure and wait for them, start no app or sidecar here. Implies
    /// --no-matrix (each client container measures its own row).
    #[arg(long, value_name = "A.B", value_parser = compose::parse_prefix)]
    containers: Option<[u8; 2]>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    // Rendering needs no state directory.
    if let Cmd::Compose(a) = &args.command {
        return compose::run(a);
    }
    let dir = args
        .dir
        .or_else(|| {
            std::env::var_os("PEERGUARD_SANDBOX_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(".peerguard/sandbox"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Absolute: the path is matched against process command lines by `down`.
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let st = State::new(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(command(&st, args.command))
}

async fn command(st: &State, cmd: Cmd) -> anyhow::Result<u8> {
    match cmd {
        Cmd::Up(a) => {
            run::refuse_if_running(st)?;
            if let Err(e) = run::up(st, &a).await {
                run::down(st)?;
                return Err(e);
            }
            if !a.no_matrix && a.containers.is_none() {
                let t = run::topology(&st.settings()?)?;
                probe::print_matrix(&probe::matrix(&t).await?);
            }
            if a.foreground {
                eprintln!("sandbox: running in the foreground; Ctrl-C stops it");
                let _ = tokio::signal::ctrl_c().await;
                let n = run::down(st)?;
                eprintln!("sandbox: stopped {n} processes");
            }
            Ok(0)
        }
        Cmd::Down => {
            let n = run::down(st)?;
            eprintln!("sandbox: stopped {n} processes");
            Ok(0)
        }
        Cmd::Compose(a) => compose::run(&a),
        Cmd::Apply { file } => {
            ensure_up(st).await?;
            change(st, |st| st.apply(&file)).await
        }
        Cmd::Delete { file } => {
            ensure_up(st).await?;
            change(st, |st| st.delete(&file)).await
        }
        Cmd::Exec {
            pod,
            request,
            include,
        } => exec(st, &pod, &request, include).await,
        Cmd::Matrix { output, from } => {
            ensure_up(st).await?;
            let mut t = run::topology(&st.settings()?)?;
            if !from.is_empty() {
                for f in &from {
                    t.pod(f)?;
                }
                t.matrix.from = from;
            }
            let cells = probe::matrix(&t).await?;
            match output {
                Output::Json => out!("{}", serde_json::to_string_pretty(&cells)?),
                Output::Text => probe::print_matrix(&cells),
            }
            Ok(0)
        }
        Cmd::Status { output } => {
            ensure_up(st).await?;
            let settings = st.settings()?;
            let t = run::topology(&settings)?;
            let resources = st.resources()?;
            let inputs = config::Inputs {
                topology: &t,
                chains: settings.chains,
                resources: &resources,
                state: &st.dir,
                wasm: settings.wasm.as_deref(),
                xds: None,
                version: 0,
                path_normalization: settings.path_normalization,
            };
            let plan = config::plan(&inputs);
            let procs = run::running(st);
            match output {
                Output::Json => out!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"plan": plan, "processes": procs})
                    )?
                ),
                Output::Text => {
                    out!("servers:");
                    for s in &plan.servers {
                        out!(
                            "  {:<26} port {:<5} {:?}{} ({})",
                            s.pod,
                            s.port,
                            s.mode,
                            if s.dry_run { " (dry-run)" } else { "" },
                            s.from.as_deref().unwrap_or("nothing configured")
                        );
                    }
                    out!("clients:");
                    for c in &plan.clients {
                        out!(
                            "  {:<12} -> {:<16} {:<26} {:?} ({})",
                            c.from,
                            c.to,
                            c.endpoint,
                            c.tls,
                            c.by
                        );
                    }
                    out!(
                        "processes: {}",
                        procs
                            .iter()
                            .map(|(p, n)| format!("{n} [{p}]"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            Ok(0)
        }
    }
}

/// Changes the store, then the sidecars. If the new config cannot be generated or a
/// sidecar does not take it, the store and the sidecars go back to the previous state and
/// the error is reported: a bad change never leaves the sandbox half-applied.
async fn change(
    st: &State,
    edit: impl FnOnce(&State) -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<u8> {
    let before = st.snapshot();
    for line in edit(st)? {
        out!("{line}");
    }
    match run::reconcile(st).await {
        Ok(v) => {
            eprintln!("sandbox: config version {v} running in every sidecar");
            Ok(0)
        }
        Err(e) => {
            st.restore(&before)?;
            let back = run::reconcile(st).await;
            eprintln!(
                "sandbox: change rolled back ({})",
                match &back {
                    Ok(v) => format!("config version {v} running again"),
                    Err(e) => format!("restoring the previous config failed too: {e:#}"),
                }
            );
            Err(e)
        }
    }
}

/// [`run::ensure_up`] for the sandbox in `st`.
async fn ensure_up(st: &State) -> anyhow::Result<()> {
    let settings = st.settings()?;
    run::ensure_up(st, &settings, &run::topology(&settings)?).await
}

async fn exec(st: &State, pod: &str, request: &[String], include: bool) -> anyhow::Result<u8> {
    ensure_up(st).await?;
    let t = run::topology(&st.settings()?)?;
    let p = t.pod(pod)?;
    let (method, url) = match request {
        [url] => ("GET".to_string(), url.clone()),
        [m, url] => (m.to_ascii_uppercase(), url.clone()),
        _ => anyhow::bail!("usage: sandbox exec POD -- [METHOD] URL"),
    };
    let (host, port, path) = probe::parse_url(&url)?;
    // Clients without a sidecar rotate over the endpoints, like kube-proxy would.
    let counter = st.dir.join("rr");
    let n: usize = std::fs::read_to_string(&counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let _ = std::fs::write(&counter, (n + 1).to_string());
    let route = probe::route(&t, p, &host, port, |_| n)?;
    let authority = if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let resp = probe::request(
        Some(route.bind),
        route.connect,
        &method,
        &authority,
        &path,
        Duration::from_secs(10),
    )
    .await;
    if resp.code == 0 {
        eprintln!("000 ({})", resp.error.as_deref().unwrap_or("no response"));
        // curl's "receive failure" exit code, as in the walkthrough's `000 / exit 56`.
        return Ok(56);
    }
    if include {
        out!("HTTP/1.1 {}", resp.code);
        for (k, v) in &resp.headers {
            out!("{k}: {v}");
        }
        out!("");
    }
    {
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), "{}", resp.body);
    }
    Ok(0)
}
