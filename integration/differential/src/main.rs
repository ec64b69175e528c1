//! `peerguard-differential`: the large differential run (see `run.sh`).
//!
//! Exit status: 0 when every disagreement is a documented deliberately-safer case, 1 when
//! there are others, 2 when the harness itself failed.

use clap::Parser;
use peerguard_differential::cases;
use peerguard_differential::run::{run, Comparison, Options};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    about = "Envoy RBAC (as Istio configures it) versus Envoy + peerguard, on generated policies and raw requests"
)]
struct Args {
    /// Compare adaptive enforcement (native RBAC where `choose` allows it, with
    /// `--enforcement native`) with the wasm filter, on sets with PeerAuthentications,
    /// instead of peerguard with Istio's RBAC.
    #[arg(long)]
    adaptive: bool,
    /// Number of policy sets (one per seed).
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    /// The first seed; sets use seeds first-seed, first-seed+1, ...
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Run this one seed only (same as --first-seed S --seeds 1).
    #[arg(long)]
    seed: Option<u64>,
    /// Requests per policy set.
    #[arg(long, default_value_t = 24)]
    requests: usize,
    /// Policy sets per Envoy process.
    #[arg(long, default_value_t = 40)]
    batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    parallelism: usize,
    /// Per request, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// Envoy binary (default: PEERGUARD_ENVOY, .peerguard/env, PATH).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// The wasm module (default: PEERGUARD_WASM, $CARGO_TARGET_DIR/peerguard.wasm).
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// Keep each batch's Envoy config and log.
    #[arg(long)]
    keep: bool,
    /// Print every request's outcomes, not only the disagreements.
    #[arg(long)]
    verbose: bool,
    /// Also run these case files (a file or a directory of `*.yaml`); with --seeds 0,
    /// only them. `corpus` names the reproducers kept with the harness.
    #[arg(long)]
    cases: Option<PathBuf>,
    /// Print the policies and requests (of --seed, or of --cases), both sides'
    /// configuration, and exit without running Envoy.
    #[arg(long)]
    show: bool,
}

fn main() {
    let args = Args::parse();
    let (first_seed, seeds) = match args.seed {
        Some(s) => (s, 1),
        None => (args.first_seed, args.seeds),
    };
    let comparison = if args.adaptive {
        Comparison::Adaptive
    } else {
        Comparison::Istio
    };
    let cases = match &args.cases {
        None => Ok(Vec::new()),
        Some(p) if p.as_os_str() == "corpus" => cases::corpus(comparison),
        Some(p) => cases::load_all(p),
    };
    let cases = match cases {
        Ok(c) => c,
        Err(e) => {
            eprintln!("differential: {e:#}");
            std::process::exit(2);
        }
    };
    if args.show {
        let text = if cases.is_empty() {
            peerguard_differential::show(comparison, first_seed, args.requests)
        } else {
            cases
                .iter()
                .map(|c| peerguard_differential::show_set(comparison, c))
                .collect::<anyhow::Result<Vec<_>>>()
                .map(|v| v.join("\n"))
        };
        std::process::exit(match text {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => {
                eprintln!("differential: {e:#}");
                2
            }
        });
    }
    let opts = Options {
        comparison,
        first_seed,
        seeds,
        requests_per_set: args.requests,
        batch: args.batch,
        parallelism: args.parallelism,
        request_timeout: Duration::from_millis(args.timeout_ms),
        envoy: args.envoy,
        wasm: args.wasm,
        keep: args.keep,
        verbose: args.verbose,
    };
    match run(&opts, &cases) {
        Ok(report) => {
            print!("{}", report.render());
            std::process::exit(if report.findings.is_empty() { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("differential: harness failure: {e:#}");
            std::process::exit(2);
        }
    }
}
