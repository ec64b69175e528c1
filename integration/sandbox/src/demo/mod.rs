//! `peerguard demo`: small demo applications for the sandbox (hidden subcommand).
//!
//! `demo httpbin` answers like httpbin.org for the paths the Istio walkthroughs use:
//! `/headers` (the request headers as JSON, names in httpbin's Title-Case), `/ip`,
//! `/status/N`, and `/` (a short text). Every response carries `x-sandbox-pod: <name>` so
//! that a caller can tell which endpoint of a Service answered.

mod http;

use anyhow::Context as _;
use std::net::SocketAddr;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    app: App,
}

#[derive(clap::Subcommand, Debug)]
enum App {
    /// An httpbin look-alike: /headers, /ip, /status/N.
    Httpbin(HttpbinArgs),
}

#[derive(clap::Args, Debug)]
pub struct HttpbinArgs {
    /// Address to listen on, e.g. 127.0.1.20:18080.
    #[arg(long)]
    listen: SocketAddr,
    /// The pod name reported in `x-sandbox-pod`, e.g. `httpbin.full`.
    #[arg(long)]
    name: String,
    /// Opaque marker (the sandbox passes its state directory, so that `sandbox down`
    /// only signals processes it started).
    #[arg(long, hide = true)]
    tag: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    match args.app {
        App::Httpbin(a) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("tokio runtime")?;
            rt.block_on(http::serve(a.listen, a.name))?;
            Ok(0)
        }
    }
}
