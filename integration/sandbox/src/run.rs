//! Processes of the sandbox: start, reconcile (write configs, wait until every sidecar
//! runs them), stop.

use super::config::{self, Inputs, SidecarPaths};
use super::probe;
use super::state::{write_atomic, Settings, State, XdsMode};
use super::topology::{AppKind, Topology};
use super::xds;
use super::{pki, UpArgs};
use anyhow::{bail, Context as _};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn topology(s: &Settings) -> anyhow::Result<Topology> {
    let [a, b] = s.prefix();
    Ok(Topology::load(s.topology.as_deref())?.with_prefix(a, b))
}

/// Where a pod's demo app listens: behind the sidecar, or on the Service's target port.
pub fn app_listen(t: &Topology, pod: &super::topology::Pod) -> SocketAddr {
    let port = if pod.sidecar {
        t.ports.app_behind_sidecar
    } else {
        t.target_ports(pod).first().copied().unwrap_or(80)
    };
    SocketAddr::new(IpAddr::V4(pod.ip), port)
}

/// A sidecar's Envoy arguments after `-c <bootstrap>` (processes and `sandbox compose`).
pub fn envoy_args(pod: &super::topology::Pod) -> Vec<String> {
    let id = pod.id();
    [
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--drain-time-s",
        "1",
        "--drain-strategy",
        "immediate",
        "--log-level",
        "warn",
        "--service-node",
        &id,
        "--service-cluster",
        &id,
    ]
    .map(str::to_string)
    .to_vec()
}

/// Envoy: `--envoy`, else the harness's search (`PEERGUARD_ENVOY`, `.peerguard/env`, PATH).
pub fn envoy_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(p) => Ok(p.to_path_buf()),
        None => peerguard_harness::envoy::find_envoy(),
    }
}

/// The wasm filter: `--wasm PATH`, or with `auto` the harness's search (`PEERGUARD_WASM`,
/// `$CARGO_TARGET_DIR/peerguard.wasm`, next to the binary); `off` runs the sidecars without
/// it.
pub fn wasm_module(choice: &str) -> anyhow::Result<Option<PathBuf>> {
    match choice {
        "off" => Ok(None),
        "auto" => Ok(peerguard_harness::envoy::find_wasm().ok()),
        path => {
            let p = PathBuf::from(path);
            if !p.is_file() {
                bail!("--wasm {path}: no such file");
            }
            Ok(Some(p))
        }
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Only processes whose command line names this state directory are ours (a recorded pid
/// may have been reused by now).
fn ours(pid: u32, state: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(&state.display().to_string()))
        .unwrap_or(false)
}

pub fn running(st: &State) -> Vec<(u32, String)> {
    st.pids()
        .into_iter()
        .filter(|(pid, _)| alive(*pid) && ours(*pid, &st.dir))
        .collect()
}

/// Refuses to start over a running sandbox. Checked before `up` touches anything: a failed
/// `up` stops what it started, and that must never be the sandbox already running.
pub fn refuse_if_running(st: &State) -> anyhow::Result<()> {
    if !running(st).is_empty() {
        bail!(
            "a sandbox is already running in {} (run `peerguard sandbox down` first)",
            st.dir.display()
        );
    }
    Ok(())
}

/// Commands that talk to the sidecars fail on a stopped sandbox instead of reporting what
/// a stopped one looks like (an all-`0` matrix). With `--containers` the processes live in
/// other containers, so a sidecar's admin port answering is the sign of life.
pub async fn ensure_up(st: &State, settings: &Settings, t: &Topology) -> anyhow::Result<()> {
    let up = match settings.containers {
        None => !running(st).is_empty(),
        Some(_) => {
            let mut any = false;
            for pod in t.pods.iter().filter(|p| p.sidecar) {
                let admin = SocketAddr::new(IpAddr::V4(pod.ip), t.ports.admin);
                if matches!(
                    tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::net::TcpStream::connect(admin)
                    )
                    .await,
                    Ok(Ok(_))
                ) {
                    any = true;
                    break;
                }
            }
            any
        }
    };
    if !up {
        bail!(
            "the sandbox in {} is not running (run `peerguard sandbox up`)",
            st.dir.display()
        );
    }
    Ok(())
}

pub async fn up(st: &State, args: &UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    refuse_if_running(st)?;
    // A fresh state: old configs, certs and resources belong to the previous sandbox.
    for sub in ["envoy", "certs", "resources", "apps"] {
        let p = st.dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    // Another sandbox (another state directory) on the same addresses would answer our
    // probes and take our configs for its own.
    // (In containers the addresses belong to the compose project's own network.)
    let preview = Topology::load(args.topology.as_deref())?.with_net(args.net);
    for pod in preview
        .pods
        .iter()
        .filter(|p| p.sidecar && args.containers.is_none())
    {
        let admin = SocketAddr::new(IpAddr::V4(pod.ip), preview.ports.admin);
        if tokio::net::TcpStream::connect(admin).await.is_ok() {
            bail!(
                "{admin} is in use: another sandbox runs on 127.{}.x.y (stop it, or choose --net)",
                args.net
            );
        }
    }
    let _ = std::fs::remove_file(st.pids_file());
    std::fs::create_dir_all(&st.dir).with_context(|| format!("creating {}", st.dir.display()))?;
    let settings = Settings {
        net: args.net,
        topology: args.topology.clone(),
        wasm: wasm_module(&args.wasm)?,
        envoy: match args.containers {
            // The sidecar containers run Envoy; this process never does.
            Some(_) => PathBuf::from("envoy"),
            None => envoy_binary(args.envoy.as_deref())?,
        },
        chains: args.inbound_chains,
        xds: args.xds,
        containers: args.containers,
        path_normalization: args.path_normalization,
        decision_log: args.decision_log.decision_log_sample,
    };
    if settings.decision_log.is_some()
        && (settings.xds != XdsMode::Serve || settings.containers.is_some())
    {
        bail!("--decision-log-sample is passed to the `peerguard serve` of --xds serve, for local sidecars (not with --xds files or --containers)");
    }
    if settings.xds == XdsMode::Serve && settings.wasm.is_none() {
        bail!("--xds serve sends the wasm filter's configuration over ECDS: it needs the wasm module (--wasm)");
    }
    if settings.chains == config::InboundChains::Filter && settings.wasm.is_none() {
        bail!(
            "no wasm filter (--wasm {}), and with --inbound-chains filter it is what refuses connections; \
             build it (bash scripts/build-wasm.sh) or use --inbound-chains istio",
            args.wasm
        );
    }
    st.save_settings(&settings)?;
    let t = topology(&settings)?;
    match &settings.wasm {
        Some(w) => eprintln!("sandbox: wasm filter {}", w.display()),
        None => eprintln!(
            "sandbox: WITHOUT the wasm filter (--wasm {}): transport modes only",
            args.wasm
        ),
    }
    eprintln!("sandbox: inbound chains: {:?}", settings.chains);

    // Initial resources: the given files, or stage 1 of the walkthrough.
    if args.resources.is_empty() {
        let stage1 = st.dir.join("stage-1-permissive.yaml");
        std::fs::write(&stage1, super::STAGE_1).context("writing stage 1")?;
        st.apply(&stage1)?;
    }
    for f in &args.resources {
        st.apply(f)?;
    }

    let mut identities: Vec<(String, String, String)> = t
        .pods
        .iter()
        .filter(|p| p.sidecar)
        .map(|p| {
            (
                p.namespace.clone(),
                p.service_account.clone(),
                p.spiffe(&t.trust_domain),
            )
        })
        .collect();
    identities.sort();
    identities.dedup();
    pki::generate(&st.dir, &identities)?;
    if settings.xds == XdsMode::Serve {
        xds::write_workloads(st, &t)?;
        xds::start(st, &settings, &t, args.foreground).await?;
    }

    let version = write_configs(st, &settings, &t, true)?;

    let exe = std::env::current_exe().context("locating the peerguard binary")?;
    let apps_dir = st.dir.join("apps");
    std::fs::create_dir_all(&apps_dir).context("creating apps dir")?;
    let mut app_addrs = Vec::new();
    for pod in t.pods.iter().filter(|p| p.app == AppKind::Httpbin) {
        let listen = app_listen(&t, pod);
        if settings.containers.is_some() {
            app_addrs.push(listen);
            continue;
        }
        let log =
            std::fs::File::create(apps_dir.join(format!("{}.log", pod.id()))).context("app log")?;
        let mut cmd = Command::new(&exe);
        cmd.args([
            "demo",
            "httpbin",
            "--listen",
            &listen.to_string(),
            "--name",
            &pod.id(),
            "--tag",
        ])
        .arg(&st.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("app log")?)
        .stderr(log);
        spawn(st, cmd, &format!("app {}", pod.id()), args.foreground)?;
        app_addrs.push(listen);
    }
    for pod in t
        .pods
        .iter()
        .filter(|p| p.sidecar && settings.containers.is_none())
    {
        let paths = SidecarPaths::new(&st.dir, pod);
        let log = std::fs::File::create(paths.log()).context("envoy log")?;
        let mut cmd = Command::new(&settings.envoy);
        cmd.arg("-c")
            .arg(paths.bootstrap())
            .args(envoy_args(pod))
            // The decision log lines are info lines of the filter.
            .args(match settings.decision_log {
                Some(_) => vec!["--component-log-level", "wasm:info"],
                None => vec![],
            })
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("envoy log")?)
            .stderr(log);
        spawn(st, cmd, &format!("envoy {}", pod.id()), args.foreground)?;
    }

    // Ready: every app answers, every sidecar runs this config version and its listeners
    // accept connections.
    // Containers start at their own pace (each sidecar waits for its bootstrap file).
    let deadline = Instant::now()
        + match settings.containers {
            Some(_) => READY_TIMEOUT * 4,
            None => READY_TIMEOUT,
        };
    for a in &app_addrs {
        wait_connect(*a, deadline).await.with_context(|| {
            format!("app at {a} did not start (logs in {})", apps_dir.display())
        })?;
    }
    wait_version(st, &t, version, deadline, &BTreeMap::new()).await?;
    wait_filters(st, &settings, &t, deadline).await?;
    for pod in t.pods.iter().filter(|p| p.sidecar) {
        let mut ports = vec![t.ports.outbound];
        if pod.app != AppKind::None {
            ports.extend(t.target_ports(pod));
        }
        for port in ports {
            wait_connect(SocketAddr::new(IpAddr::V4(pod.ip), port), deadline)
                .await
                .with_context(|| format!("{} did not listen on {port}", pod.id()))?;
        }
    }
    eprintln!(
        "sandbox: up in {:.1} s ({} processes, state {})",
        started.elapsed().as_secs_f64(),
        st.pids().len(),
        st.dir.display()
    );
    Ok(())
}

pub(super) fn spawn(
    st: &State,
    mut cmd: Command,
    name: &str,
    foreground: bool,
) -> anyhow::Result<()> {
    if !foreground {
        // Own process group: a Ctrl-C in the terminal that ran `up` does not reach them.
        cmd.process_group(0);
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    st.record_pid(child.id(), name)?;
    // The child is not waited for here: `down` (or the foreground loop) ends it.
    std::mem::forget(child);
    Ok(())
}

async fn wait_connect(addr: SocketAddr, deadline: Instant) -> anyhow::Result<()> {
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing accepts connections on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Regenerates every sidecar's LDS and CDS (CDS first, so new routes never point at a
/// missing cluster) and returns the version written. The bootstrap is written only at
/// start-up.
pub fn write_configs(
    st: &State,
    settings: &Settings,
    t: &Topology,
    with_bootstrap: bool,
) -> anyhow::Result<u64> {
    let resources = st.resources()?;
    let version = st.next_version()?;
    let parts = match settings.xds {
        XdsMode::Serve => Some(xds::parts(st, settings, t)?),
        XdsMode::Files => None,
    };
    let inputs = Inputs {
        topology: t,
        chains: settings.chains,
        xds: parts.as_ref(),
        resources: &resources,
        state: &st.dir,
        wasm: settings.wasm.as_deref(),
        version,
        path_normalization: settings.path_normalization,
    };
    let sidecars = config::generate(&inputs)?;
    for pod in t.pods.iter().filter(|p| p.sidecar) {
        let Some(s) = sidecars.get(&pod.id()) else {
            continue;
        };
        let paths = SidecarPaths::new(&st.dir, pod);
        if with_bootstrap {
            write_atomic(
                &paths.bootstrap(),
                &serde_json::to_string_pretty(&s.bootstrap)?,
            )?;
        }
        write_atomic(&paths.cds(), &serde_json::to_string_pretty(&s.cds)?)?;
        write_atomic(&paths.lds(), &serde_json::to_string_pretty(&s.lds)?)?;
    }
    Ok(version)
}

/// Waits until every sidecar reports `version` for both LDS and CDS, and no listener is
/// warming. A rejected config (NACK) is reported with Envoy's reason.
pub async fn wait_version(
    st: &State,
    t: &Topology,
    version: u64,
    deadline: Instant,
    baseline: &BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    let want = format!("\"{version}\"");
    for pod in t.pods.iter().filter(|p| p.sidecar) {
        let ip = IpAddr::V4(pod.ip);
        loop {
            let r = probe::admin_get(
                ip,
                t.ports.admin,
                "/stats?filter=(lds|cds).(version_text|update_rejected)",
            )
            .await;
            let stat = |name: &str| {
                r.body.lines().find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|v| v.strip_prefix(": "))
                        .map(str::to_string)
                })
            };
            let lds = stat("listener_manager.lds.version_text");
            let cds = stat("cluster_manager.cds.version_text");
            let rejected = rejected_count(&r.body);
            let nacked = r.code == 200 && rejected > baseline.get(&pod.id()).copied().unwrap_or(0);
            if r.code == 200
                && lds.as_deref() == Some(want.as_str())
                && cds.as_deref() == Some(want.as_str())
            {
                let l = probe::admin_get(
                    ip,
                    t.ports.admin,
                    "/stats?filter=listener_manager.total_listeners_warming",
                )
                .await;
                if l.body.trim().ends_with(": 0") {
                    break;
                }
            }
            if nacked || Instant::now() > deadline {
                let log = SidecarPaths::new(&st.dir, pod).log();
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail
                    .lines()
                    .rev()
                    .take(8)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                bail!(
                    "{} {} config version {version} (lds {:?}, cds {:?}; admin: {}).\nlog {}:\n{}",
                    pod.id(),
                    if nacked { "rejected" } else { "did not take" },
                    lds,
                    cds,
                    r.error.as_deref().unwrap_or("ok"),
                    log.display(),
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    // Listeners and clusters replaced by this update drain for `--drain-time-s 1` with the
    // immediate strategy; new connections already use the new config.
    Ok(())
}

/// Reconcile after `apply`/`delete`: write the new configs and wait for them.
pub async fn reconcile(st: &State) -> anyhow::Result<u64> {
    let settings = st.settings()?;
    let t = topology(&settings)?;
    if running(st).is_empty() {
        bail!(
            "the sandbox in {} is not running (run `peerguard sandbox up`)",
            st.dir.display()
        );
    }
    let mut baseline = BTreeMap::new();
    for pod in t.pods.iter().filter(|p| p.sidecar) {
        let r = probe::admin_get(
            IpAddr::V4(pod.ip),
            t.ports.admin,
            "/stats?filter=update_rejected",
        )
        .await;
        baseline.insert(pod.id(), rejected_count(&r.body));
    }
    let version = write_configs(st, &settings, &t, false)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    wait_version(st, &t, version, deadline, &baseline).await?;
    wait_filters(st, &settings, &t, deadline).await?;
    Ok(version)
}

/// With `--xds serve`, the filter configuration arrives over ECDS, independently of the
/// listener files: wait until every filter runs the policy of the current resources.
async fn wait_filters(
    st: &State,
    settings: &Settings,
    t: &Topology,
    deadline: Instant,
) -> anyhow::Result<()> {
    if settings.xds != XdsMode::Serve {
        return Ok(());
    }
    let resources = st.resources()?;
    let inputs = Inputs {
        topology: t,
        chains: settings.chains,
        xds: None,
        resources: &resources,
        state: &st.dir,
        wasm: settings.wasm.as_deref(),
        version: 0,
        path_normalization: settings.path_normalization,
    };
    xds::wait_ecds(
        t,
        &config::enforcement(&inputs, settings.decision_log),
        deadline,
    )
    .await
}

/// LDS + CDS updates the sidecar refused (NACKs), from an admin `/stats` body.
fn rejected_count(stats: &str) -> u64 {
    stats
        .lines()
        .filter(|l| {
            l.starts_with("listener_manager.lds.update_rejected")
                || l.starts_with("cluster_manager.cds.update_rejected")
        })
        .filter_map(|l| l.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum()
}

pub fn down(st: &State) -> anyhow::Result<usize> {
    let procs = running(st);
    for (pid, _) in &procs {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while procs.iter().any(|(p, _)| alive(*p) && ours(*p, &st.dir)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (pid, name) in &procs {
        if alive(*pid) && ours(*pid, &st.dir) {
            eprintln!("sandbox: {name} (pid {pid}) ignored SIGTERM, killing");
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
    let _ = std::fs::remove_file(st.pids_file());
    Ok(procs.len())
}
