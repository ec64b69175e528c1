//! `peerguard serve`: the xDS extension server. Not built yet.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`peerguard serve` is not implemented yet")
}
