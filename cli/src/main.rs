//! `peerguard`: the xDS extension server and the tools around it.
//!
//! Each subcommand lives in a library and returns an exit code; `main` only parses
//! arguments and sets up logging. The product (`serve`, `bootstrap`, `compile`, `explain`,
//! `test`) is `peerguard-server`; `test --envoy` runs on `peerguard-harness`, `sandbox` and
//! `demo` are `peerguard-sandbox`, `bench` is `peerguard-bench`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

use peerguard_sandbox::demo;
use peerguard_server::{bootstrap, cli, serve};

#[derive(Parser, Debug)]
#[command(
    name = "peerguard",
    version,
    about = "Istio-grade mTLS and peer authorization for stock Envoy"
)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), also from `RUST_LOG`.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenario files (policies + workload + requests with expected decisions).
    Test(cli::test::Args),
    /// Explain the decision for one request to one workload.
    Explain(cli::explain::Args),
    /// Print the filter configuration (WorkloadPolicy JSON) compiled for one workload.
    Compile(cli::compile::Args),
    /// One workload as `serve` sees it: identity, mTLS per port and where it comes from,
    /// what meshed clients send to its Service ports, the policies that select it.
    Describe(cli::describe::Args),
    /// Find what is wrong or risky in a mesh's resources (stable codes, fix hints).
    Analyze(cli::analyze::Args),
    /// Inspect certificates (file, Secret, TLS endpoint, or what serve issues a workload): SPIFFE
    /// ID, validity, key, chain verification, and what Istio would refuse.
    Certs(cli::certs::Args),
    /// Replay recorded requests against the current and a proposed configuration; list
    /// every decision that flips.
    Preview(cli::preview::Args),
    /// Render the Istio resources that run peerguard in Istio's sidecars (WasmPlugin,
    /// EnvoyFilter + ECDS).
    Manifests(cli::manifests::Args),
    /// Is it safe to turn STRICT on? Plaintext vs mTLS connections per workload, port and
    /// client, read from Envoy's stats, and a verdict.
    Readiness(cli::readiness::Args),
    /// Serve the policy playground page (the engine in the browser) on a local address.
    Playground(cli::playground::Args),
    /// Run the xDS extension server (ECDS filter config, SDS certificates).
    Serve(serve::Args),
    /// Print an Envoy bootstrap for a sidecar that uses `peerguard serve`.
    Bootstrap(bootstrap::Args),
    /// The auto mTLS walkthrough as local processes: up, apply, exec, matrix, down.
    Sandbox(peerguard_sandbox::Args),
    /// Demo applications for the sandbox.
    #[command(hide = true)]
    Demo(demo::Args),
    /// Benchmarks with real Envoy and the real server (integration/bench/*.sh run them).
    #[command(hide = true)]
    Bench(peerguard_bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or(cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let code = match cli.command {
        Command::Test(a) => cli::test::run(a, Some(&peerguard_harness::e2e::run)),
        Command::Explain(a) => cli::explain::run(a),
        Command::Compile(a) => cli::compile::run(a),
        Command::Describe(a) => cli::describe::run(a),
        Command::Analyze(a) => cli::analyze::run(a),
        Command::Certs(a) => cli::certs::run(a),
        Command::Preview(a) => cli::preview::run(a),
        Command::Manifests(a) => cli::manifests::run(a),
        Command::Readiness(a) => cli::readiness::run(a),
        Command::Playground(a) => cli::playground::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Bootstrap(a) => bootstrap::run(a),
        Command::Sandbox(a) => peerguard_sandbox::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => peerguard_bench::run(a),
    };
    match code {
        Ok(c) => ExitCode::from(c),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
