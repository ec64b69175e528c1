//! `peerguard explain`: the decision for one request, and why.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`peerguard explain` is not implemented yet")
}
