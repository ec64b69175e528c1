//! `peerguard compile`: print the `WorkloadPolicy` JSON (the filter's configuration) for one
//! workload, for a static Envoy config, an Istio `WasmPlugin`'s `pluginConfig`, or an
//! EnvoyFilter. `peerguard serve` sends the same bytes over ECDS.
//!
//! Exit code: 0; 2 for invalid input (bad arguments, unreadable `--config`, or resources with
//! errors: then nothing is printed, so a broken configuration is never deployed by a script).

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: super::workload::WorkloadArgs,
    /// Indented JSON.
    #[arg(long)]
    pub pretty: bool,
    #[command(flatten)]
    pub decision_log: crate::serve::decision_log::DecisionLogArgs,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let (mesh, target) = match args.target.load() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    let errors = mesh.config_errors();
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Ok(2);
    }
    for s in &mesh.inputs.skipped {
        eprintln!("note: {s}");
    }
    if target.registered.is_none() {
        eprintln!(
            "note: {} is not in the registry of {}; using the workload described on the command line",
            args.target.workload, mesh.origin
        );
    }
    let mut policy = mesh.compile(&target.workload);
    args.decision_log.apply(&mut policy);
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
