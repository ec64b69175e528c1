//! Turning the measured points into figures: per (load, variant) medians over the rounds,
//! ratios to the no-filter baseline of the same round with their confidence intervals,
//! p99 over the rounds' samples pooled with its interval, the table and the memory table.

use super::load::Proto;
use super::setup::{Kind, Variant};
use super::stats::{self, Interval};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One load shape as the report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadKind {
    Fixed,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct LoadId {
    pub proto: Proto,
    pub kind: LoadKind,
}

/// One measurement: one variant under one load in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub round: usize,
    pub load: LoadId,
    pub variant: Variant,
    pub name: String,
    pub completed: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub late: u64,
    pub wall_s: f64,
    pub rps: f64,
    pub p50_us: Option<u32>,
    pub p99_us: Option<u32>,
    /// The p99's order-statistic interval (95 %) within this window.
    pub p99_ci: Option<Interval>,
    /// The window's latencies, sorted (pooled over rounds in the summary; not in the JSON).
    #[serde(skip)]
    pub latencies_us: Vec<u32>,
    pub envoy_cpu_s: f64,
    /// Envoy CPU time per completed request (HTTP) or connection round trip (TCP).
    pub envoy_cpu_us_per_op: Option<f64>,
    /// Envoy's CPU over the window, in cores.
    pub envoy_cores: f64,
    /// Measurements of this point (a window disturbed by other processes is measured again).
    pub attempts: u32,
    pub client_cores: f64,
    /// CPU taken by other processes during the window, in cores.
    pub other_cores: f64,
}

/// Medians over the rounds, and the medians of the per-round ratios to `none`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub load: LoadId,
    pub variant: Variant,
    pub name: String,
    pub rounds: usize,
    pub errors: u64,
    pub late: u64,
    pub rps: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub envoy_cpu_us_per_op: Option<f64>,
    pub cpu_ratio: Option<f64>,
    /// Interval of the median over rounds of the per-round CPU/op ratio (see [`stats`]).
    pub cpu_ratio_ci: Option<Interval>,
    pub p50_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
    pub rps_ratio: Option<f64>,
    /// Latencies of every round pooled: how many, their p99 and its interval (95 %).
    pub samples: usize,
    pub p99_pooled_us: Option<f64>,
    pub p99_pooled_ci: Option<Interval>,
    /// Pooled p99 over the no-filter Envoy's pooled p99, interval at >= 95 % (two 97.5 %
    /// intervals divided crosswise).
    pub p99_pooled_ratio: Option<f64>,
    pub p99_pooled_ratio_ci: Option<Interval>,
}

/// Sorted latencies of every round of (load, variant), as f64.
fn pooled(points: &[Point], load: LoadId, variant: Variant) -> Vec<f64> {
    let mut v: Vec<f64> = points
        .iter()
        .filter(|p| p.load == load && p.variant == variant)
        .flat_map(|p| p.latencies_us.iter().map(|&x| f64::from(x)))
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn pooled_quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// `a` against `b` round by round under one load: the median over rounds of `f(a) op f(b)`
/// and its interval. `op` is a ratio or a difference.
pub fn paired(
    points: &[Point],
    load: LoadId,
    a: Variant,
    b: Variant,
    f: &dyn Fn(&Point) -> Option<f64>,
    op: Pair,
) -> (Option<f64>, Option<Interval>) {
    let find = |v: Variant, round: usize| {
        points
            .iter()
            .find(|p| p.load == load && p.variant == v && p.round == round)
    };
    let values: Vec<f64> = points
        .iter()
        .filter(|p| p.load == load && p.variant == a)
        .filter_map(|pa| {
            let x = f(pa)?;
            let y = f(find(b, pa.round)?)?;
            match op {
                Pair::Ratio if y > 0.0 => Some(x / y),
                Pair::Ratio => None,
                Pair::Difference => Some(x - y),
            }
        })
        .collect();
    (median(values.clone()), stats::median_interval(&values))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    Ratio,
    Difference,
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub fn summarize(points: &[Point]) -> Vec<Summary> {
    let mut groups: BTreeMap<(LoadId, Variant), Vec<&Point>> = BTreeMap::new();
    for p in points {
        groups.entry((p.load, p.variant)).or_default().push(p);
    }
    let baseline = |load: LoadId, round: usize| {
        points
            .iter()
            .find(|p| p.load == load && p.round == round && p.variant.kind == Kind::None)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let f = |x: Option<u32>| x.map(f64::from);
    let none = Variant {
        kind: Kind::None,
        policies: 0,
    };
    groups
        .into_iter()
        .map(|((load, variant), ps)| {
            let mine = pooled(points, load, variant);
            let base = pooled(points, load, none);
            let p99 = pooled_quantile(&mine, 0.99);
            let base_p99 = pooled_quantile(&base, 0.99);
            let ratio_ci = match (
                stats::quantile_interval(&mine, 0.99, 0.975),
                stats::quantile_interval(&base, 0.99, 0.975),
            ) {
                (Some(a), Some(b)) => stats::ratio_interval(a, b),
                _ => None,
            };
            let (_, cpu_ratio_ci) = paired(
                points,
                load,
                variant,
                none,
                &|p| p.envoy_cpu_us_per_op,
                Pair::Ratio,
            );
            let med = |get: &dyn Fn(&Point) -> Option<f64>| {
                median(ps.iter().filter_map(|p| get(p)).collect())
            };
            let med_ratio = |get: &dyn Fn(&Point) -> Option<f64>| {
                median(
                    ps.iter()
                        .filter_map(|p| ratio(get(p), baseline(load, p.round).and_then(get)))
                        .collect(),
                )
            };
            Summary {
                load,
                variant,
                name: variant.name(),
                rounds: ps.len(),
                errors: ps.iter().map(|p| p.errors).sum(),
                late: ps.iter().map(|p| p.late).sum(),
                rps: med(&|p| Some(p.rps)),
                p50_us: med(&|p| f(p.p50_us)),
                p99_us: med(&|p| f(p.p99_us)),
                envoy_cpu_us_per_op: med(&|p| p.envoy_cpu_us_per_op),
                cpu_ratio: med_ratio(&|p| p.envoy_cpu_us_per_op),
                cpu_ratio_ci,
                p50_ratio: med_ratio(&|p| f(p.p50_us)),
                p99_ratio: med_ratio(&|p| f(p.p99_us)),
                rps_ratio: med_ratio(&|p| Some(p.rps)),
                samples: mine.len(),
                p99_pooled_us: p99,
                p99_pooled_ci: stats::quantile_interval(&mine, 0.99, 0.95),
                p99_pooled_ratio: match (p99, base_p99) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                },
                p99_pooled_ratio_ci: ratio_ci,
            }
        })
        .collect()
}

pub fn load_label(load: LoadId, rate: f64, tcp_rate: f64) -> String {
    match (load.proto, load.kind) {
        (Proto::Http, LoadKind::Fixed) => format!("HTTP fixed {rate:.0} req/s"),
        (Proto::Http, LoadKind::Closed) => "HTTP closed-loop".into(),
        (Proto::Http2, LoadKind::Fixed) => format!("HTTP/2 fixed {rate:.0} req/s"),
        (Proto::Http2, LoadKind::Closed) => "HTTP/2 closed-loop".into(),
        (Proto::Tcp, LoadKind::Fixed) => format!("TCP fixed {tcp_rate:.0} conn/s"),
        (Proto::Tcp, LoadKind::Closed) => "TCP closed-loop".into(),
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"))
}

/// `lo-hi` of an interval, or `-`.
pub fn ci(i: Option<Interval>, prec: usize) -> String {
    i.map_or_else(
        || "-".into(),
        |i| format!("{:.prec$}-{:.prec$}", i.lo, i.hi),
    )
}

/// The table: medians over rounds; p99 is over the pooled samples of every round, with
/// its 95 % interval; ratios (x) to the no-filter Envoy of the same round / pooled, with
/// their intervals (confidence in the JSON; for CPU it depends on the number of rounds).
pub fn table(summaries: &[Summary], rate: f64, tcp_rate: f64) -> String {
    let mut s = String::new();
    let mut loads: Vec<LoadId> = summaries.iter().map(|s| s.load).collect();
    loads.sort();
    loads.dedup();
    for load in loads {
        let unit = if load.proto == Proto::Tcp {
            "conn"
        } else {
            "req"
        };
        let _ = writeln!(s, "\n{}", load_label(load, rate, tcp_rate));
        let _ = writeln!(
            s,
            "  {:<16} {:>8} {:>7} {:>7} {:>13} {:>10} {:>5} {:>11} {:>5} {:>11} {:>6} {:>5}",
            "variant",
            format!("{unit}/s"),
            "p50 us",
            "p99 us",
            "p99 95% CI",
            format!("CPU us/{unit}"),
            "xCPU",
            "xCPU CI",
            "xp99",
            "xp99 CI",
            "errors",
            "late"
        );
        let mut rows: Vec<&Summary> = summaries.iter().filter(|x| x.load == load).collect();
        rows.sort_by_key(|x| (x.variant.kind, x.variant.policies));
        for r in rows {
            let _ = writeln!(
                s,
                "  {:<16} {:>8} {:>7} {:>7} {:>13} {:>10} {:>5} {:>11} {:>5} {:>11} {:>6} {:>5}",
                r.name,
                opt(r.rps, 0),
                opt(r.p50_us, 0),
                opt(r.p99_pooled_us, 0),
                ci(r.p99_pooled_ci, 0),
                opt(r.envoy_cpu_us_per_op, 1),
                opt(r.cpu_ratio, 2),
                ci(r.cpu_ratio_ci, 2),
                opt(r.p99_pooled_ratio, 2),
                ci(r.p99_pooled_ratio_ci, 2),
                r.errors,
                r.late
            );
        }
    }
    s
}

/// Envoy memory with a variant loaded, at one and two workers.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub variant: Variant,
    pub name: String,
    pub rss_c1: Option<u64>,
    pub rss_c2: Option<u64>,
    pub startup_ms_c1: Option<u64>,
}

impl Memory {
    pub fn per_worker(&self) -> Option<i64> {
        Some(i64::try_from(self.rss_c2?).ok()? - i64::try_from(self.rss_c1?).ok()?)
    }
}

pub fn memory_table(mem: &[Memory]) -> String {
    let mib =
        |b: Option<i64>| b.map_or_else(|| "-".into(), |b| format!("{:.1}", b as f64 / 1048576.0));
    let to_i = |b: Option<u64>| b.and_then(|b| i64::try_from(b).ok());
    let base = mem.iter().find(|m| m.variant.kind == Kind::None);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  {:<16} {:>11} {:>11} {:>14} {:>14} {:>14} {:>10}",
        "variant", "RSS c1 MiB", "RSS c2 MiB", "c2-c1 MiB", "c1 - none", "c2-c1 - none", "start ms"
    );
    for m in mem {
        let d1 = match (to_i(m.rss_c1), base.and_then(|b| to_i(b.rss_c1))) {
            (Some(a), Some(b)) => Some(a - b),
            _ => None,
        };
        let dw = match (m.per_worker(), base.and_then(|b| b.per_worker())) {
            (Some(a), Some(b)) => Some(a - b),
            _ => None,
        };
        let _ = writeln!(
            s,
            "  {:<16} {:>11} {:>11} {:>14} {:>14} {:>14} {:>10}",
            m.name,
            mib(to_i(m.rss_c1)),
            mib(to_i(m.rss_c2)),
            mib(m.per_worker()),
            mib(d1),
            mib(dw),
            m.startup_ms_c1
                .map_or_else(|| "-".into(), |x| x.to_string())
        );
    }
    s
}

/// The per-worker statement: what one more worker costs with each filter, over no filter.
pub fn memory_notes(mem: &[Memory]) -> String {
    let Some(base) = mem
        .iter()
        .find(|m| m.variant.kind == Kind::None)
        .and_then(Memory::per_worker)
    else {
        return String::new();
    };
    let mut s = String::new();
    for m in mem.iter().filter(|m| m.variant.kind != Kind::None) {
        if let Some(w) = m.per_worker() {
            let _ = writeln!(
                s,
                "  one more worker with {}: {:+.1} MiB ({:+.1} MiB more than without a filter)",
                m.name,
                w as f64 / 1048576.0,
                (w - base) as f64 / 1048576.0
            );
        }
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn point(round: usize, kind: Kind, n: usize, cpu: f64, p99: u32) -> Point {
        let variant = Variant { kind, policies: n };
        Point {
            round,
            load: LoadId {
                proto: Proto::Http,
                kind: LoadKind::Fixed,
            },
            variant,
            name: variant.name(),
            completed: 1000,
            errors: 0,
            first_error: None,
            late: 0,
            wall_s: 1.0,
            rps: 1000.0,
            p50_us: Some(p99 / 2),
            p99_us: Some(p99),
            p99_ci: None,
            // 1,000 samples: 980 at p99 / 2, 20 at p99 (the nearest-rank p99 is the 990th).
            latencies_us: (0..1000)
                .map(|i| if i < 980 { p99 / 2 } else { p99 })
                .collect(),
            envoy_cpu_s: cpu * 1000.0 / 1e6,
            envoy_cpu_us_per_op: Some(cpu),
            envoy_cores: 0.1,
            attempts: 1,
            client_cores: 0.1,
            other_cores: 0.0,
        }
    }

    #[test]
    fn ratios_are_against_the_baseline_of_the_same_round() {
        // Round 1 ran on a slower machine: both doubled; the ratio stays 1.1.
        let pts = vec![
            point(0, Kind::None, 0, 50.0, 400),
            point(0, Kind::Peerguard, 10, 55.0, 440),
            point(1, Kind::None, 0, 100.0, 800),
            point(1, Kind::Peerguard, 10, 110.0, 880),
        ];
        let s = summarize(&pts);
        let pg = s.iter().find(|s| s.variant.kind == Kind::Peerguard);
        let r = pg.and_then(|s| s.cpu_ratio).unwrap_or_default();
        assert!((r - 1.1).abs() < 1e-9, "{r}");
        assert_eq!(pg.and_then(|s| s.envoy_cpu_us_per_op), Some(82.5));
    }
}
