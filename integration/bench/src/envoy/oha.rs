//! The headline points again with an established load generator, `oha` (Rust registry),
//! so the figures do not rest on the project's own client alone.
//!
//! oha presents the mesh client certificate (`--cert/--key`, `--cacert` for the server's
//! root), resolves the server name to the listener (`--connect-to`), holds a fixed rate
//! (`-q`) over HTTP/1.1 keep-alive (`-c` connections) or HTTP/2 (`--http2`, `-c`
//! connections × `-p` streams each) and reports JSON. Envoy's CPU is read from procfs as for
//! the own client, over the middle of each run (after the connections are open, before the
//! deadline), and divided by the requests oha completed in that window at its achieved
//! rate (its count over its duration). Same variants, same Envoys, same rounds rotation.

use super::procfs;
use super::setup::{Kind, Variant};
use super::stats::{self, Interval};
use anyhow::{bail, Context as _};
use peerguard_harness::pki::SERVER_NAME;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// oha's name for requests cut off by `-z` (not an error of the system under test).
const DEADLINE: &str = "aborted due to deadline";

/// Before the measured window: oha starting, its connections' handshakes.
const LEAD_IN: Duration = Duration::from_millis(600);
/// After it: the deadline's in-flight requests and oha's exit.
const TAIL: Duration = Duration::from_millis(400);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OhaProto {
    Http1,
    Http2,
}

/// How oha is run.
#[derive(Debug, Clone, Serialize)]
pub struct OhaSettings {
    pub binary: PathBuf,
    pub version: String,
    pub rate: f64,
    pub http1_connections: usize,
    pub h2_connections: usize,
    pub h2_streams_per_connection: usize,
    pub window_ms: u64,
    pub rounds: usize,
}

/// Files oha reads: the client's certificate and key, the mesh root.
pub struct Credentials {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Credentials {
    pub fn write(dir: &Path, cert_pem: &str, key_pem: &str, ca_pem: &str) -> anyhow::Result<Self> {
        let put = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };
        Ok(Credentials {
            cert: put("client.pem", cert_pem)?,
            key: put("client-key.pem", key_pem)?,
            ca: put("mesh-root.pem", ca_pem)?,
        })
    }
}

/// One oha run against one variant.
#[derive(Debug, Clone, Serialize)]
pub struct OhaPoint {
    pub round: usize,
    pub proto: OhaProto,
    pub variant: Variant,
    pub name: String,
    /// Responses oha counted (all statuses) and those that were not 200 or failed.
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub achieved_rps: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub envoy_cpu_s: f64,
    pub window_s: f64,
    pub envoy_cpu_us_per_req: Option<f64>,
}

/// Medians over rounds and the per-round ratio to `none` with its interval.
#[derive(Debug, Clone, Serialize)]
pub struct OhaSummary {
    pub proto: OhaProto,
    pub variant: Variant,
    pub name: String,
    pub errors: u64,
    pub p99_us: Option<f64>,
    pub envoy_cpu_us_per_req: Option<f64>,
    pub cpu_ratio: Option<f64>,
    pub cpu_ratio_ci: Option<Interval>,
    pub p99_ratio: Option<f64>,
}

/// Which variants oha loads: no filter, the no-op module, and at 10 and the largest count
/// native RBAC, peerguard, the baseline module and adaptive (whichever the run has).
pub fn selected(variants: &[Variant], counts: &[usize]) -> Vec<Variant> {
    let mut sizes = vec![10];
    sizes.extend(counts.iter().copied().max().filter(|&m| m != 10));
    variants
        .iter()
        .copied()
        .filter(|v| match v.kind {
            Kind::None | Kind::Noop => true,
            _ => sizes.contains(&v.policies),
        })
        .collect()
}

/// The external load generator's part of the run.
#[derive(Serialize)]
pub struct External {
    pub settings: OhaSettings,
    pub summary: Vec<OhaSummary>,
    pub points: Vec<OhaPoint>,
}

/// With `--oha` (and not `--no-external`): the headline points again with oha, on the
/// run's own Envoys, after the own client's rounds.
pub(super) async fn external(
    args: &super::EnvoyArgs,
    settings: &super::Settings,
    world: &super::World,
    running: &[super::Running],
    variants: &[Variant],
) -> anyhow::Result<Option<External>> {
    let Some(binary) = args.oha.as_ref().filter(|_| !args.no_external) else {
        return Ok(None);
    };
    let s = OhaSettings {
        binary: binary.clone(),
        version: version(binary)?,
        rate: settings.rate,
        http1_connections: settings.fixed_connections,
        h2_connections: settings.h2_connections,
        h2_streams_per_connection: (settings.h2_streams / settings.h2_connections).max(1),
        window_ms: args
            .oha_ms
            .unwrap_or(if settings.quick { 600 } else { 2000 }),
        rounds: args
            .oha_rounds
            .unwrap_or(if settings.quick { 1 } else { 2 })
            .max(1),
    };
    let dir = peerguard_harness::envoy::TempDir::new("peerguard-bench-oha")?;
    let creds = Credentials::write(
        dir.path(),
        &world.client.cert_pem,
        &world.client.key_pem,
        world.pki.mesh_root_pem(),
    )?;
    let chosen = selected(variants, &settings.policies);
    let targets: Vec<_> = running
        .iter()
        .filter(|r| chosen.contains(&r.variant))
        .map(|r| (r.variant, r.proc.pid(), r.http))
        .collect();
    eprintln!("  {} against {} variants ...", s.version, targets.len());
    let points = run_all(&s, &creds, &targets).await;
    Ok(Some(External {
        summary: summarize(&points),
        settings: s,
        points,
    }))
}

pub fn version(binary: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    if !out.status.success() {
        bail!("{} --version failed", binary.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs oha once against `http` (the variant's HTTP listener) and reads Envoy's CPU.
pub async fn run_one(
    s: &OhaSettings,
    creds: &Credentials,
    proto: OhaProto,
    round: usize,
    variant: Variant,
    envoy_pid: u32,
    http: SocketAddr,
) -> anyhow::Result<OhaPoint> {
    let total = LEAD_IN + Duration::from_millis(s.window_ms) + TAIL;
    let port = http.port();
    let mut cmd = tokio::process::Command::new(&s.binary);
    cmd.arg(format!("https://{SERVER_NAME}:{port}/bench"))
        .args(["--no-tui", "--output-format", "json"])
        .args(["-z", &format!("{}ms", total.as_millis())])
        .args(["-q", &format!("{}", s.rate)])
        .arg("--connect-to")
        .arg(format!("{SERVER_NAME}:{port}:{}:{port}", http.ip()))
        .arg("--cacert")
        .arg(&creds.ca)
        .arg("--cert")
        .arg(&creds.cert)
        .arg("--key")
        .arg(&creds.key);
    match proto {
        OhaProto::Http1 => {
            cmd.args(["-c", &s.http1_connections.to_string()]);
        }
        OhaProto::Http2 => {
            cmd.arg("--http2")
                .args(["-c", &s.h2_connections.to_string()])
                .args(["-p", &s.h2_streams_per_connection.to_string()]);
        }
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", s.binary.display()))?;
    tokio::time::sleep(LEAD_IN).await;
    let a = procfs::Sample::take(envoy_pid)?;
    tokio::time::sleep(Duration::from_millis(s.window_ms)).await;
    let b = procfs::Sample::take(envoy_pid)?;
    let out = tokio::time::timeout(total + Duration::from_secs(20), child.wait_with_output())
        .await
        .context("oha did not finish")?
        .context("waiting for oha")?;
    if !out.status.success() {
        bail!(
            "oha failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let report: Value = serde_json::from_slice(&out.stdout).context("oha's output is not JSON")?;
    let parsed = parse_report(&report)?;
    let ticks = procfs::clock_ticks_per_second();
    let cpu = procfs::window_cpu(&a, &b, ticks);
    // Requests in the window at oha's achieved rate (it held the schedule: `achieved_rps`).
    let in_window = parsed.achieved_rps * cpu.wall_s;
    Ok(OhaPoint {
        round,
        proto,
        variant,
        name: variant.name(),
        requests: parsed.requests,
        errors: parsed.errors,
        first_error: parsed.first_error,
        achieved_rps: parsed.achieved_rps,
        p50_us: parsed.p50_us,
        p99_us: parsed.p99_us,
        envoy_cpu_s: cpu.envoy_cpu_s,
        window_s: cpu.wall_s,
        envoy_cpu_us_per_req: (in_window > 0.0).then(|| cpu.envoy_cpu_s * 1e6 / in_window),
    })
}

#[derive(Debug, PartialEq)]
struct Parsed {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    achieved_rps: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

/// oha's `--output-format json`: `summary.total` (s), `statusCodeDistribution`,
/// `errorDistribution`, `latencyPercentiles` (s).
fn parse_report(v: &Value) -> anyhow::Result<Parsed> {
    let count = |key: &str| -> Vec<(String, u64)> {
        v[key]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let statuses = count("statusCodeDistribution");
    let failures = count("errorDistribution");
    let ok: u64 = statuses
        .iter()
        .filter(|(k, _)| k == "200")
        .map(|(_, n)| n)
        .sum();
    let responses: u64 = statuses.iter().map(|(_, n)| n).sum();
    // oha aborts the requests in flight at its deadline (HTTP/1.1) and counts them here:
    // not failures, the run simply ended.
    let failures: Vec<(String, u64)> = failures
        .into_iter()
        .filter(|(k, _)| k != DEADLINE)
        .collect();
    let failed: u64 = failures.iter().map(|(_, n)| n).sum();
    let first_error = statuses
        .iter()
        .find(|(k, _)| k != "200")
        .map(|(k, n)| format!("{n} responses {k}"))
        .or_else(|| failures.first().map(|(k, n)| format!("{n}x {k}")));
    let total_s = v["summary"]["total"]
        .as_f64()
        .context("oha JSON: no summary.total")?;
    let pct = |k: &str| v["latencyPercentiles"][k].as_f64().map(|s| s * 1e6);
    Ok(Parsed {
        requests: responses,
        errors: (responses - ok) + failed,
        first_error,
        achieved_rps: if total_s > 0.0 {
            responses as f64 / total_s
        } else {
            0.0
        },
        p50_us: pct("p50"),
        p99_us: pct("p99"),
    })
}

/// Every selected variant under both protocols, `rounds` times, the order rotated per
/// round (as the own client's rounds). A failed oha run is a point with an error.
pub async fn run_all(
    s: &OhaSettings,
    creds: &Credentials,
    targets: &[(Variant, u32, SocketAddr)],
) -> Vec<OhaPoint> {
    let mut out = Vec::new();
    for round in 0..s.rounds {
        for (pi, proto) in [OhaProto::Http1, OhaProto::Http2].into_iter().enumerate() {
            let n = targets.len();
            for i in 0..n {
                let (variant, pid, addr) = targets[(i + round + pi) % n];
                let p = match run_one(s, creds, proto, round, variant, pid, addr).await {
                    Ok(p) => p,
                    Err(e) => OhaPoint {
                        round,
                        proto,
                        variant,
                        name: variant.name(),
                        requests: 0,
                        errors: 1,
                        first_error: Some(format!("{e:#}")),
                        achieved_rps: 0.0,
                        p50_us: None,
                        p99_us: None,
                        envoy_cpu_s: 0.0,
                        window_s: 0.0,
                        envoy_cpu_us_per_req: None,
                    },
                };
                eprintln!(
                    "  oha round {} {:?} {:<16} {:>7.0}/s p99 {:>6} us CPU {:>7} us/req{}",
                    round + 1,
                    proto,
                    p.name,
                    p.achieved_rps,
                    p.p99_us.map_or("-".into(), |x| format!("{x:.0}")),
                    p.envoy_cpu_us_per_req
                        .map_or("-".into(), |x| format!("{x:.1}")),
                    p.first_error
                        .as_ref()
                        .map_or(String::new(), |e| format!("  ERRORS {}: {e}", p.errors))
                );
                out.push(p);
            }
        }
    }
    out
}

pub fn summarize(points: &[OhaPoint]) -> Vec<OhaSummary> {
    let mut keys: Vec<(OhaProto, Variant)> = points.iter().map(|p| (p.proto, p.variant)).collect();
    keys.sort();
    keys.dedup();
    let none = |proto: OhaProto, round: usize| {
        points
            .iter()
            .find(|p| p.proto == proto && p.round == round && p.variant.kind == Kind::None)
    };
    keys.into_iter()
        .map(|(proto, variant)| {
            let mine: Vec<&OhaPoint> = points
                .iter()
                .filter(|p| p.proto == proto && p.variant == variant)
                .collect();
            let ratios = |f: &dyn Fn(&OhaPoint) -> Option<f64>| -> Vec<f64> {
                mine.iter()
                    .filter_map(|p| {
                        let b = f(none(proto, p.round)?)?;
                        (b > 0.0).then_some(f(p)? / b)
                    })
                    .collect()
            };
            let cpu = ratios(&|p| p.envoy_cpu_us_per_req);
            OhaSummary {
                proto,
                variant,
                name: variant.name(),
                errors: mine.iter().map(|p| p.errors).sum(),
                p99_us: super::report::median(mine.iter().filter_map(|p| p.p99_us).collect()),
                envoy_cpu_us_per_req: super::report::median(
                    mine.iter().filter_map(|p| p.envoy_cpu_us_per_req).collect(),
                ),
                cpu_ratio: super::report::median(cpu.clone()),
                cpu_ratio_ci: stats::median_interval(&cpu),
                p99_ratio: super::report::median(ratios(&|p| p.p99_us)),
            }
        })
        .collect()
}

/// oha's figures next to the own client's (`own`: the same variant's fixed-rate HTTP/1.1
/// or HTTP/2 summary, CPU/op and its ratio).
pub fn table(
    oha: &[OhaSummary],
    own: &dyn Fn(OhaProto, Variant) -> (Option<f64>, Option<f64>, Option<f64>),
) -> String {
    let o = |v: Option<f64>, p: usize| v.map_or_else(|| "-".into(), |x| format!("{x:.p$}"));
    let mut s = String::new();
    for proto in [OhaProto::Http1, OhaProto::Http2] {
        let rows: Vec<&OhaSummary> = oha.iter().filter(|r| r.proto == proto).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "\n{} fixed rate: oha | own client (CPU us/req, x no filter, p99 us)",
            match proto {
                OhaProto::Http1 => "HTTP/1.1",
                OhaProto::Http2 => "HTTP/2",
            }
        );
        let _ = writeln!(
            s,
            "  {:<16} {:>9} {:>6} {:>11} {:>7} {:>6} | {:>9} {:>6} {:>7} {:>6}",
            "variant", "oha CPU", "xCPU", "xCPU CI", "p99", "errors", "own CPU", "xCPU", "p99", ""
        );
        let mut rows = rows;
        rows.sort_by_key(|r| (r.variant.kind, r.variant.policies));
        for r in rows {
            let (own_cpu, own_ratio, own_p99) = own(proto, r.variant);
            let _ = writeln!(
                s,
                "  {:<16} {:>9} {:>6} {:>11} {:>7} {:>6} | {:>9} {:>6} {:>7}",
                r.name,
                o(r.envoy_cpu_us_per_req, 1),
                o(r.cpu_ratio, 2),
                super::report::ci(r.cpu_ratio_ci, 2),
                o(r.p99_us, 0),
                r.errors,
                o(own_cpu, 1),
                o(own_ratio, 2),
                o(own_p99, 0),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn oha_json_is_read_for_counts_errors_and_percentiles() -> anyhow::Result<()> {
        let v = json!({
            "summary": {"total": 2.0, "successRate": 1.0},
            "latencyPercentiles": {"p50": 0.0004, "p99": 0.0012},
            "statusCodeDistribution": {"200": 1990, "403": 10},
            "errorDistribution": {"connection reset": 2, "aborted due to deadline": 16},
        });
        let p = parse_report(&v)?;
        assert_eq!((p.requests, p.errors), (2000, 12));
        assert_eq!(p.achieved_rps, 1000.0);
        assert_eq!(p.p99_us.map(|x| x.round()), Some(1200.0));
        assert_eq!(p.first_error.as_deref(), Some("10 responses 403"));
        assert!(parse_report(&json!({})).is_err());
        Ok(())
    }

    #[test]
    fn oha_loads_the_headline_sizes_only() {
        let v = |kind, policies| Variant { kind, policies };
        let all = vec![
            v(Kind::None, 0),
            v(Kind::Noop, 0),
            v(Kind::Rbac, 10),
            v(Kind::Rbac, 100),
            v(Kind::Peerguard, 10_000),
        ];
        let got = selected(&all, &[10, 100, 10_000]);
        assert_eq!(
            got,
            vec![
                v(Kind::None, 0),
                v(Kind::Noop, 0),
                v(Kind::Rbac, 10),
                v(Kind::Peerguard, 10_000)
            ]
        );
    }
}
