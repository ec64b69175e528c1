//! The run's text output (table, memory, goals, caveats); the JSON is the `Document`.

use super::adaptive::{self, Choice};
use super::goals::{self, Goal};
use super::load::Proto;
use super::oha::{self, OhaProto, OhaSummary};
use super::pin::Pinning;
use super::report::{self, Memory, Point, Summary};
use super::report::{LoadId, LoadKind};
use super::{Settings, WasmSizes, NOISY_CORES};

pub struct Text<'a> {
    pub settings: &'a Settings,
    pub envoy_version: &'a str,
    pub sizes: WasmSizes,
    pub summary: &'a [Summary],
    pub memory: &'a [Memory],
    pub goals: &'a [Goal],
    pub adaptive: &'a [Choice],
    /// oha's summaries, if the run had the external load generator.
    pub external: Option<&'a [OhaSummary]>,
    pub caveats: &'a [String],
}

pub fn text(t: &Text) -> String {
    let s = t.settings;
    let mut out = String::new();
    out.push_str(&format!(
        "\npeerguard Envoy benchmark ({}); medians of {} round(s), ratios (x) to the no-filter Envoy of the same round\n",
        t.envoy_version, s.rounds
    ));
    out.push_str(&format!(
        "wasm: peerguard.wasm {} bytes ({:.0} KiB), no-op {} bytes{}\n",
        t.sizes.peerguard,
        t.sizes.peerguard as f64 / 1024.0,
        t.sizes.noop,
        t.sizes
            .baseline
            .map_or(String::new(), |b| format!(", baseline (before) {b} bytes"))
    ));
    out.push_str(&report::table(t.summary, s.rate, s.tcp_rate));
    if !t.adaptive.is_empty() {
        out.push_str(
            "\nadaptive/N: what `peerguard serve` pushes (enforcement::choose, default options)\n",
        );
        out.push_str(&adaptive::render(t.adaptive));
    }
    if let Some(ext) = t.external {
        let own = |proto: OhaProto, v: super::setup::Variant| {
            let load = LoadId {
                proto: match proto {
                    OhaProto::Http1 => Proto::Http,
                    OhaProto::Http2 => Proto::Http2,
                },
                kind: LoadKind::Fixed,
            };
            t.summary
                .iter()
                .find(|x| x.load == load && x.variant == v)
                .map_or((None, None, None), |x| {
                    (x.envoy_cpu_us_per_op, x.cpu_ratio, x.p99_pooled_us)
                })
        };
        out.push_str(&oha::table(ext, &own));
    }
    out.push_str("\nEnvoy memory (VmRSS after a short warm-up; c1/c2 = --concurrency 1/2, c2-c1 = one more worker)\n");
    out.push_str(&report::memory_table(t.memory));
    out.push_str(&report::memory_notes(t.memory));
    out.push_str("\nGoals (issue 16)\n");
    out.push_str(&goals::render(t.goals));
    out.push_str("\nCaveats\n");
    for c in t.caveats {
        out.push_str(&format!("  - {c}\n"));
    }
    out
}

pub fn caveats(
    settings: &Settings,
    points: &[Point],
    ticks: u64,
    pinning: &Pinning,
) -> Vec<String> {
    let mut c = vec![
        if pinning.enabled {
            format!("CPU pinning: {}.", pinning.how)
        } else {
            format!("No CPU pinning ({}): the load client and Envoy compete for the same cores.", pinning.how)
        },
        format!(
            "Envoy runs with --concurrency {} (one worker) on a 2-core machine it shares with the load \
             client and the upstream apps (this process): closed-loop rates are whole-machine figures; \
             CPU per op is Envoy's alone.",
            settings.envoy_concurrency
        ),
        "TCP ops are a new connection each: full mTLS handshake (no resumption), 64 bytes echoed, close; \
         the handshake dominates their cost."
            .into(),
        "Latency runs from writing the request (or connecting) to the last byte; sends that \
         started behind the fixed schedule are counted in `late`, not added to the latency."
            .into(),
        "p99 is over the samples of every round pooled, with a distribution-free 95 % interval \
         (order statistics); xp99's interval divides two 97.5 % intervals crosswise (>= 95 %). \
         xCPU's interval is the order-statistic interval of the median of the per-round ratios: \
         [min, max] below 6 rounds, with confidence 1 - 2^(1-rounds) (75 % at 3, 94 % at 5)."
            .into(),
        format!(
            "HTTP/2: {} concurrent streams over {} connection(s) (ALPN h2), downstream only: Envoy \
             speaks HTTP/1.1 to the in-process app.",
            settings.h2_streams, settings.h2_connections
        ),
        format!(
            "Envoy CPU comes from /proc/<pid>/stat in 1/{ticks} s ticks: each window is off by up to one \
             tick at each end (see envoy_cpu_s in the JSON)."
        ),
    ];
    let worst_other = points.iter().map(|p| p.other_cores).fold(0.0, f64::max);
    let mean_other = if points.is_empty() {
        0.0
    } else {
        points.iter().map(|p| p.other_cores).sum::<f64>() / points.len() as f64
    };
    c.push(format!(
        "Other processes used {mean_other:.2} cores on average during the windows (worst {worst_other:.2}); \
         the per-round ratios absorb slow phases only partly."
    ));
    let late: u64 = points.iter().map(|p| p.late).sum();
    if late > 0 {
        c.push(format!(
            "{late} fixed-rate sends started more than 10 ms behind schedule: the rate was not fully held at those points."
        ));
    }
    let errors: u64 = points.iter().map(|p| p.errors).sum();
    if errors > 0 {
        c.push(format!(
            "{errors} operations failed; points with errors make their goal checks invalid."
        ));
    }
    let retried = points.iter().filter(|p| p.attempts > 1).count();
    if retried > 0 {
        c.push(format!(
            "{retried} point(s) were measured twice because other processes used more than \
             {NOISY_CORES} cores during the window; the quieter attempt is kept."
        ));
    }
    if settings.quick {
        c.push(
            "--quick: one round and short windows, no memory pass at two workers; figures are \
             indicative only."
                .into(),
        );
    }
    c
}
