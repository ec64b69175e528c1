//! `peerguard bootstrap`: an Envoy bootstrap for a sidecar. Not built yet.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`peerguard bootstrap` is not implemented yet")
}
