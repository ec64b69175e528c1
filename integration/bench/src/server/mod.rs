//! `peerguard bench server` (hidden; `integration/bench/server-bench.sh` runs it): the server's timing goals, measured on real parts and
//! printed with goal checks. Nothing here asserts: timing lives in benchmarks, not tests.
//!
//! - [`flip`]: file write → decision enforced by a real Envoy (DENY on/off, polled with real
//!   mTLS requests);
//! - [`fanout`]: a changed policy pushed to many simulated xDS clients over real gRPC, with
//!   the server's RSS;
//! - [`compile`]: compiling every workload's snapshot for a large mesh.
//!
//! The server runs as a child process (this same binary, `peerguard serve`), so its RSS is
//! its own and it is measured as deployed.

mod compile;
mod fanout;
mod flip;

use anyhow::Context;
use peerguard_server::ca::duration;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// DENY on/off flips measured through Envoy.
    #[arg(long, default_value_t = 20)]
    pub flips: usize,
    /// How often the decision is probed after a write (one new mTLS connection each).
    #[arg(long, default_value = "5ms", value_parser = duration::parse)]
    pub probe_interval: Duration,
    /// Simulated xDS clients (one ECDS stream and one registered node each).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// AuthorizationPolicies in the compile benchmark.
    #[arg(long, default_value_t = 10_000)]
    pub policies: usize,
    #[arg(long, default_value_t = 100)]
    pub namespaces: usize,
    #[arg(long, default_value_t = 1000)]
    pub workloads: usize,
    /// Passed to the server under test.
    #[arg(long, default_value = "200ms", value_parser = duration::parse)]
    pub poll_interval: Duration,
    #[arg(long, default_value = "50ms", value_parser = duration::parse)]
    pub debounce: Duration,
    /// Skip the Envoy part (e.g. without Envoy or the module).
    #[arg(long)]
    pub skip_envoy: bool,
    /// Where to put temporary files (default: a new directory under the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

pub fn run(args: ServerArgs) -> anyhow::Result<u8> {
    server(args)
}

/// A figure and its goal.
struct Check {
    name: String,
    value: String,
    goal: String,
    met: Option<bool>,
}

fn server(args: ServerArgs) -> anyhow::Result<u8> {
    let work = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("peerguard-bench-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let exe = std::env::current_exe().context("locating the peerguard binary")?;
    println!(
        "peerguard bench server ({} build, work dir {})",
        if cfg!(debug_assertions) {
            "DEBUG"
        } else {
            "release"
        },
        work.display()
    );
    let mut checks = Vec::new();

    // (a) enforcement latency through Envoy.
    if args.skip_envoy {
        println!("\n[a] file write -> enforced decision: skipped (--skip-envoy)");
    } else {
        match (
            peerguard_harness::envoy::find_envoy().ok(),
            peerguard_harness::envoy::find_wasm()
                .ok()
                .and_then(|w| w.canonicalize().ok()),
        ) {
            (Some(envoy), Some(wasm)) => {
                println!("\n[a] file write -> enforced decision in Envoy ({} flips, probe every {:?}, server --poll-interval {:?} --debounce {:?})", args.flips, args.probe_interval, args.poll_interval, args.debounce);
                let r = flip::run(&exe, &work.join("flip"), &envoy, &wasm, &args)?;
                let (p50, p99, max) = (
                    percentile(&r.latencies, 50.0),
                    percentile(&r.latencies, 99.0),
                    percentile(&r.latencies, 100.0),
                );
                println!("    envoy: {}", envoy.display());
                println!(
                    "    latencies (ms): {}",
                    r.latencies
                        .iter()
                        .map(|d| format!("{:.0}", ms(*d)))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                println!(
                    "    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} flips timed out; {} probes",
                    ms(p50),
                    ms(p99),
                    ms(max),
                    r.timeouts,
                    r.probes
                );
                checks.push(Check {
                    name: "write -> enforced p99".into(),
                    value: format!("{:.1} ms", ms(p99)),
                    goal: "< 200 ms".into(),
                    met: Some(p99 < Duration::from_millis(200) && r.timeouts == 0),
                });
                checks.push(Check {
                    name: "write -> enforced p50".into(),
                    value: format!("{:.1} ms", ms(p50)),
                    goal: "(info)".into(),
                    met: None,
                });
            }
            (e, w) => {
                println!(
                    "\n[a] file write -> enforced decision: SKIPPED: {}",
                    if e.is_none() {
                        "no Envoy (PEERGUARD_ENVOY or scripts/setup.sh)"
                    } else if w.is_none() {
                        "no peerguard.wasm (PEERGUARD_WASM or scripts/build-wasm.sh)"
                    } else {
                        "?"
                    }
                );
                checks.push(Check {
                    name: "write -> enforced p99".into(),
                    value: "skipped".into(),
                    goal: "< 200 ms".into(),
                    met: None,
                });
            }
        }
    }

    // (b) fan-out to many xDS clients, and RSS.
    println!("\n[b] push of a changed policy to {} xDS clients (ECDS streams over real gRPC, one registered node each)", args.clients);
    let r = fanout::run(&exe, &work.join("fanout"), &args)?;
    println!(
        "    server ready with {} workloads in {:.0} ms (first compile + {} certificates)",
        args.clients,
        ms(r.startup),
        args.clients
    );
    println!(
        "    streams open and ACKed: {} in {:.0} ms",
        r.streams,
        ms(r.connect)
    );
    println!(
        "    write -> received: first {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, all {} in {:.0} ms; missing {}",
        ms(percentile(&r.received, 0.0)),
        ms(percentile(&r.received, 50.0)),
        ms(percentile(&r.received, 99.0)),
        r.received.len(),
        ms(percentile(&r.received, 100.0)),
        r.missing
    );
    println!(
        "    server RSS: {:.1} MB before the push, peak {:.1} MB sampled during it, VmHWM {:.1} MB",
        mb(r.rss_before),
        mb(r.rss_peak),
        mb(r.hwm)
    );
    checks.push(Check {
        name: format!("push to all {}", args.clients),
        value: format!("{:.0} ms", ms(percentile(&r.received, 100.0))),
        goal: "< 1000 ms".into(),
        met: Some(r.missing == 0 && percentile(&r.received, 100.0) < Duration::from_secs(1)),
    });
    checks.push(Check {
        name: "server peak RSS (VmHWM)".into(),
        value: format!("{:.1} MB", mb(r.hwm)),
        goal: "< 150 MB".into(),
        met: Some(r.hwm < 150 * 1024 * 1024),
    });

    // (c) compile time of a large mesh.
    println!(
        "\n[c] compile: {} AuthorizationPolicies over {} namespaces, {} workloads",
        args.policies, args.namespaces, args.workloads
    );
    let r = compile::run(&work.join("compile"), &args)?;
    println!("    read + parse the directory (cold, median of {}): {:.0} ms ({} resources, {} errors); again after one of {} files changed: {:.0} ms", compile::ROUNDS, ms(r.parse), r.resources, r.errors, args.namespaces, ms(r.reparse_one));
    println!(
        "    compile all workloads' snapshots: {:.0} ms ({:.2} ms per workload, {} policies applied on average, {} KB of policy JSON on average)",
        ms(r.compile),
        ms(r.compile) / r.workloads.max(1) as f64,
        r.applied / r.workloads.max(1),
        r.json_bytes / r.workloads.max(1) / 1024
    );
    checks.push(Check {
        name: "compile all snapshots".into(),
        value: format!("{:.0} ms", ms(r.compile)),
        goal: "(info)".into(),
        met: None,
    });
    // Cold start: what `serve` does before its first push (issue 16's goal).
    let cold = r.parse + r.compile;
    println!(
        "    cold start (read + parse + compile every snapshot): {:.0} ms, goal < {COLD_START_GOAL_MS} ms",
        ms(cold)
    );
    checks.push(Check {
        name: format!("cold start, {} policies", args.policies),
        value: format!("{:.0} ms", ms(cold)),
        goal: format!("< {COLD_START_GOAL_MS} ms"),
        met: Some(ms(cold) < COLD_START_GOAL_MS as f64),
    });

    println!("\nsummary");
    for c in &checks {
        let verdict = match c.met {
            Some(true) => "goal met",
            Some(false) => "GOAL MISSED",
            None => "",
        };
        println!(
            "    {:<28} {:>12}   goal {:<10} {verdict}",
            c.name, c.value, c.goal
        );
    }
    if cfg!(debug_assertions) {
        println!(
            "    (debug build: figures are pessimistic; use integration/bench/server-bench.sh)"
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(0)
}

/// Read, parse and compile a 10,000-policy mesh in less than this (issue 16).
const COLD_START_GOAL_MS: u64 = 500;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Nearest-rank percentile (`p` = 100 is the maximum, 0 the minimum).
fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `peerguard serve` as a child process.
struct ServerProc {
    child: Child,
    grpc_port: u16,
    http_port: u16,
    log: PathBuf,
}

impl ServerProc {
    fn start(exe: &Path, dir: &Path, wasm: &str, args: &ServerArgs) -> anyhow::Result<ServerProc> {
        let (grpc_port, http_port) = (free_port()?, free_port()?);
        let log = dir.join("server.log");
        let child = Command::new(exe)
            .args(["serve", "--config-dir"])
            .arg(dir.join("cfg"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args([
                "--wasm",
                wasm,
                "--listen",
                &format!("127.0.0.1:{grpc_port}"),
                "--http-listen",
                &format!("127.0.0.1:{http_port}"),
            ])
            .args([
                "--poll-interval",
                &format!("{}ms", args.poll_interval.as_millis()),
            ])
            .args(["--debounce", &format!("{}ms", args.debounce.as_millis())])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting peerguard serve")?;
        Ok(ServerProc {
            child,
            grpc_port,
            http_port,
            log,
        })
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((200, _)) = http_get(self.http_port, "/readyz") {
                return Ok(());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                anyhow::bail!("peerguard serve exited ({st}); log {}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        anyhow::bail!(
            "peerguard serve not ready within {timeout:?}; log {}",
            self.log.display()
        )
    }

    /// `(VmRSS, VmHWM)` in bytes.
    fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on the ops endpoint: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = peerguard_harness::http1::get(std::net::SocketAddr::from(([127, 0, 0, 1], port)), path)
        .ok()?;
    Some((r.status, r.text()))
}

/// Writes through a temporary name, as editors and `kubectl cp` do.
fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(10));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(20));
        assert_eq!(percentile(&v, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }
}
