//! The goals of issue 16, checked (never asserted) on one run's figures, each with its
//! interval and, where the run has a `baseline` module, the same figure before the work:
//!
//! - CPU per op <= 1.05x no filter at 10 policies (what `serve` pushes: `adaptive`), and
//!   <= 1.15x at 10,000 (`adaptive` and `peerguard`);
//! - never above native RBAC at any size (`adaptive/N` against `rbac/N`, round by round);
//! - peerguard's wasm path within +5 us of Envoy CPU per HTTP request of the no-op module;
//! - p99 at the fixed rate <= 1.1x no filter at every size (pooled samples, interval);
//! - <= 8 MiB more RSS per extra worker than without a filter at 10,000 policies.
//!
//! A goal is `pass` or `FAIL` on its point value; `certain` says whether the whole interval
//! is on the same side of the limit (otherwise the run cannot tell, and says so).

use super::load::Proto;
use super::report::{self, LoadId, LoadKind, Memory, Pair, Point, Summary};
use super::setup::{Kind, Variant};
use super::stats::Interval;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub text: String,
    /// `pass`, `FAIL`, `invalid` (a point had errors) or `n/a` (not measured in this run).
    pub result: String,
    pub value: Option<f64>,
    pub interval: Option<Interval>,
    /// The interval lies entirely on the side of the limit the value is on.
    pub certain: Option<bool>,
    pub limit: f64,
    /// The same figure for the `baseline` module (before this work), if the run has one.
    pub before: Option<f64>,
}

/// What one goal check needs: a figure for a subject kind (and its interval and errors).
struct Figure {
    value: Option<f64>,
    interval: Option<Interval>,
    errors: u64,
}

pub struct Inputs<'a> {
    pub points: &'a [Point],
    pub summaries: &'a [Summary],
    pub memory: &'a [Memory],
    pub counts: &'a [usize],
    pub rate: f64,
    pub tcp_rate: f64,
}

fn v(kind: Kind, policies: usize) -> Variant {
    Variant { kind, policies }
}

fn errors_of(points: &[Point], load: LoadId, variants: &[Variant]) -> u64 {
    points
        .iter()
        .filter(|p| p.load == load && variants.contains(&p.variant))
        .map(|p| p.errors)
        .sum()
}

fn has(points: &[Point], variant: Variant) -> bool {
    points.iter().any(|p| p.variant == variant)
}

pub fn evaluate(i: &Inputs) -> Vec<Goal> {
    let mut loads: Vec<LoadId> = i.points.iter().map(|p| p.load).collect();
    loads.sort();
    loads.dedup();
    let max_n = i.counts.iter().copied().max();
    // What `serve` pushes: `adaptive` when the run has it, else `peerguard`.
    let pushed = |n: usize| {
        if has(i.points, v(Kind::Adaptive, n)) {
            Kind::Adaptive
        } else {
            Kind::Peerguard
        }
    };
    let mut out = Vec::new();
    for &load in &loads {
        let label = report::load_label(load, i.rate, i.tcp_rate);
        let none = v(Kind::None, 0);
        // CPU/op against no filter, round by round.
        let cpu_vs = |a: Variant, b: Variant| {
            let (value, interval) = report::paired(
                i.points,
                load,
                a,
                b,
                &|p| p.envoy_cpu_us_per_op,
                Pair::Ratio,
            );
            Figure {
                value,
                interval,
                errors: errors_of(i.points, load, &[a, b]),
            }
        };
        let mut cpu_goals: Vec<(Kind, usize, f64)> = Vec::new();
        if i.counts.contains(&10) {
            cpu_goals.push((pushed(10), 10, 1.05));
        }
        if i.counts.contains(&10_000) {
            cpu_goals.push((pushed(10_000), 10_000, 1.15));
            if pushed(10_000) != Kind::Peerguard {
                cpu_goals.push((Kind::Peerguard, 10_000, 1.15));
            }
        }
        for (kind, n, limit) in cpu_goals {
            out.push(check(
                format!(
                    "{label}: {}/{n} CPU per op <= {limit}x no filter",
                    kind.label()
                ),
                cpu_vs(v(kind, n), none),
                limit,
                before(i.points, |b| cpu_vs(v(b, n), none).value),
            ));
        }
        for &n in i.counts {
            let kind = pushed(n);
            out.push(check(
                format!(
                    "{label}: {}/{n} CPU per op <= native rbac/{n} (ratio <= 1)",
                    kind.label()
                ),
                cpu_vs(v(kind, n), v(Kind::Rbac, n)),
                1.0,
                before(i.points, |b| cpu_vs(v(b, n), v(Kind::Rbac, n)).value),
            ));
        }
        if load.proto != Proto::Tcp {
            let mut sizes = vec![10];
            sizes.extend(max_n.filter(|&m| m != 10));
            for n in sizes {
                if !i.counts.contains(&n) {
                    continue;
                }
                let above_noop = |k: Kind| {
                    let (value, interval) = report::paired(
                        i.points,
                        load,
                        v(k, n),
                        v(Kind::Noop, 0),
                        &|p| p.envoy_cpu_us_per_op,
                        Pair::Difference,
                    );
                    Figure {
                        value,
                        interval,
                        errors: errors_of(i.points, load, &[v(k, n), v(Kind::Noop, 0)]),
                    }
                };
                out.push(check(
                    format!("{label}: peerguard/{n} CPU per request <= no-op wasm + 5 us"),
                    above_noop(Kind::Peerguard),
                    5.0,
                    before(i.points, |b| above_noop(b).value),
                ));
            }
        }
        if load.kind == LoadKind::Fixed {
            let p99 = |variant: Variant| {
                let s = i
                    .summaries
                    .iter()
                    .find(|s| s.load == load && s.variant == variant);
                Figure {
                    value: s.and_then(|s| s.p99_pooled_ratio),
                    interval: s.and_then(|s| s.p99_pooled_ratio_ci),
                    errors: errors_of(i.points, load, &[variant, none]),
                }
            };
            for &n in i.counts {
                let mut kinds = vec![Kind::Peerguard];
                if pushed(n) == Kind::Adaptive {
                    kinds.push(Kind::Adaptive);
                }
                for kind in kinds {
                    out.push(check(
                        format!("{label}: {}/{n} p99 <= 1.1x no filter", kind.label()),
                        p99(v(kind, n)),
                        1.1,
                        before(i.points, |b| p99(v(b, n)).value),
                    ));
                }
            }
        }
    }
    if let Some(n) = max_n {
        let base = i
            .memory
            .iter()
            .find(|m| m.variant.kind == Kind::None)
            .and_then(Memory::per_worker);
        let extra = |kind: Kind| {
            let w = i
                .memory
                .iter()
                .find(|m| m.variant == v(kind, n))
                .and_then(Memory::per_worker);
            match (w, base) {
                (Some(w), Some(b)) => Some((w - b) as f64 / 1_048_576.0),
                _ => None,
            }
        };
        let mut kinds = vec![Kind::Peerguard];
        if pushed(n) == Kind::Adaptive {
            kinds.push(Kind::Adaptive);
        }
        for kind in kinds {
            out.push(check(
                format!(
                    "{}/{n}: one more worker costs <= 8 MiB RSS more than without a filter",
                    kind.label()
                ),
                Figure {
                    value: extra(kind),
                    interval: None,
                    errors: 0,
                },
                8.0,
                before(i.points, |_| extra(Kind::Baseline)),
            ));
        }
    }
    out
}

/// The figure for the `baseline` module, if the run measured one.
fn before(points: &[Point], f: impl Fn(Kind) -> Option<f64>) -> Option<f64> {
    points
        .iter()
        .any(|p| p.variant.kind == Kind::Baseline)
        .then(|| f(Kind::Baseline))
        .flatten()
}

fn check(text: String, f: Figure, limit: f64, before: Option<f64>) -> Goal {
    let result = match f.value {
        _ if f.errors > 0 => "invalid",
        None => "n/a",
        Some(x) if x <= limit => "pass",
        Some(_) => "FAIL",
    };
    let certain = match (f.value, f.interval) {
        (Some(x), Some(ci)) => Some(if x <= limit {
            ci.hi <= limit
        } else {
            ci.lo > limit
        }),
        _ => None,
    };
    Goal {
        text,
        result: result.into(),
        value: f.value,
        interval: f.interval,
        certain,
        limit,
        before,
    }
}

/// One line per goal.
pub fn render(goals: &[Goal]) -> String {
    let mut s = String::new();
    for g in goals {
        let interval = g.interval.map_or(String::new(), |ci| {
            format!(
                ", interval {:.2}-{:.2} at {:.0}%{}",
                ci.lo,
                ci.hi,
                ci.confidence * 100.0,
                match g.certain {
                    Some(true) => "",
                    _ => ": not conclusive",
                }
            )
        });
        let before = g
            .before
            .map_or(String::new(), |b| format!("; before: {b:.2}"));
        s.push_str(&format!(
            "  [{:<7}] {} (measured {}{interval}{before})\n",
            g.result,
            g.text,
            g.value.map_or("-".into(), |v| format!("{v:.2}")),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::report::tests::point;

    fn goals(points: &[Point], counts: &[usize]) -> Vec<Goal> {
        let summaries = report::summarize(points);
        evaluate(&Inputs {
            points,
            summaries: &summaries,
            memory: &[],
            counts,
            rate: 1000.0,
            tcp_rate: 200.0,
        })
    }

    fn find(g: &[Goal], t: &str) -> Option<String> {
        g.iter()
            .find(|g| g.text.contains(t))
            .map(|g| g.result.clone())
    }

    #[test]
    fn goals_pass_fail_and_refuse_points_with_errors() {
        let mut pts = Vec::new();
        for round in 0..3 {
            pts.push(point(round, Kind::None, 0, 50.0, 400));
            pts.push(point(round, Kind::Noop, 0, 52.0, 400));
            pts.push(point(round, Kind::Peerguard, 10, 60.0, 600));
            pts.push(point(round, Kind::Adaptive, 10, 51.0, 420));
            pts.push(point(round, Kind::Rbac, 10, 52.0, 400));
            pts.push(point(round, Kind::Baseline, 10, 70.0, 800));
        }
        let g = goals(&pts, &[10]);
        // adaptive is what `serve` pushes: 51/50 = 1.02.
        assert_eq!(
            find(&g, "adaptive/10 CPU per op <= 1.05x").as_deref(),
            Some("pass")
        );
        assert_eq!(
            find(&g, "adaptive/10 CPU per op <= native").as_deref(),
            Some("pass")
        );
        // peerguard: 60 - 52 = 8 us above the no-op.
        assert_eq!(
            find(&g, "peerguard/10 CPU per request").as_deref(),
            Some("FAIL")
        );
        assert_eq!(find(&g, "peerguard/10 p99").as_deref(), Some("FAIL"));
        assert_eq!(find(&g, "adaptive/10 p99").as_deref(), Some("pass"));
        let before = g
            .iter()
            .find(|g| g.text.contains("adaptive/10 CPU per op <= 1.05x"))
            .and_then(|g| g.before);
        assert_eq!(before, Some(1.4));

        pts[3].errors = 1;
        let g = goals(&pts, &[10]);
        assert_eq!(
            find(&g, "adaptive/10 CPU per op <= 1.05x").as_deref(),
            Some("invalid")
        );
    }

    #[test]
    fn without_adaptive_the_pushed_module_is_peerguard() {
        let pts = vec![
            point(0, Kind::None, 0, 50.0, 400),
            point(0, Kind::Peerguard, 100, 60.0, 400),
            point(0, Kind::Rbac, 100, 70.0, 400),
        ];
        let g = goals(&pts, &[100]);
        assert_eq!(
            find(&g, "peerguard/100 CPU per op <= native").as_deref(),
            Some("pass")
        );
    }
}
