//! `peerguard test DIR...`: run conformance-format scenario files.

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scenario files or directories of them.
    #[arg(required = true)]
    pub paths: Vec<std::path::PathBuf>,
    /// Run the requests through a real Envoy with the built wasm filter.
    #[arg(long)]
    pub envoy: bool,
}

pub fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`peerguard test` is not implemented yet")
}
