//! `peerguard compile`: print the `WorkloadPolicy` JSON (the filter's configuration) for one
//! workload, for a static Envoy config, an Istio `WasmPlugin`'s `pluginConfig`, or an
//! EnvoyFilter. `peerguard serve` sends the same bytes over ECDS.
//!
//! Exit code: 0; 2 for invalid input (bad arguments, unreadable `--config`, or resources with
//! errors: then nothing is printed, so a broken configuration is never deployed by a script).

use peerguard_filter::compile::compile;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: super::workload::WorkloadArgs,
    /// Indented JSON.
    #[arg(long)]
    pub pretty: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let (workload, mesh) = match args.target.resolve() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    let parsed = match args.target.read_config() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    if !parsed.errors.is_empty() {
        for e in &parsed.errors {
            eprintln!("error: {e}");
        }
        return Ok(2);
    }
    for s in &parsed.skipped {
        eprintln!("note: {s}");
    }
    let policy = compile(&parsed.resources, &workload, &mesh);
    for d in &policy.diagnostics {
        eprintln!("warning: {d}");
    }
    let json = if args.pretty {
        serde_json::to_string_pretty(&policy)?
    } else {
        serde_json::to_string(&policy)?
    };
    super::output::write_stdout(&(json + "\n"))?;
    Ok(0)
}
