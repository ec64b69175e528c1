//! `peerguard playground`: serves the policy playground page (built by
//! `scripts/build-playground.sh`, embedded into this binary at compile time) on a local
//! address. The page decides everything in the browser; this server only hands out files.
//!
//! A binary built before the page was refuses with the command that builds it: there is no
//! page to pretend with.

use anyhow::Context as _;
use peerguard_playground::assets;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to serve on (port 0 picks a free port; the URL is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8088")]
    pub listen: SocketAddr,
}

/// Largest request head read; the page only ever sends small GETs.
const MAX_HEAD: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(args: Args) -> anyhow::Result<u8> {
    if !assets::built() {
        eprintln!(
            "error: the playground was not built into this binary. Build the page with \
             `bash scripts/build-playground.sh`, then rebuild peerguard (cargo build -p peerguard)."
        );
        return Ok(1);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(serve(args.listen))
}

async fn serve(listen: SocketAddr) -> anyhow::Result<u8> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr().context("listening address")?;
    // stdout: for scripts and tests that start it on port 0.
    println!("playground: http://{addr}/");
    tracing::info!(%addr, files = assets::files().len(), "serving the playground");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        tokio::spawn(async move {
            if let Err(e) = handle(stream).await {
                tracing::debug!(%peer, error = %e, "request not served");
            }
        });
    }
}

async fn handle(mut stream: TcpStream) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let Some(head) = head else {
        return respond(
            &mut stream,
            400,
            "text/plain; charset=utf-8",
            b"bad request\n",
            false,
        )
        .await;
    };
    let mut parts = head.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            405,
            "text/plain; charset=utf-8",
            b"only GET\n",
            false,
        )
        .await;
    }
    match assets::lookup(target) {
        Some((body, ty)) => respond(&mut stream, 200, ty, body, head_only).await,
        None => {
            respond(
                &mut stream,
                404,
                "text/plain; charset=utf-8",
                b"not found\n",
                head_only,
            )
            .await
        }
    }
}

/// The request line, once the whole head has arrived (`None`: too long or not HTTP).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf);
            return Ok(text.lines().next().map(str::to_string));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    ty: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    // Everything is local: no other origin may supply script, style or frames.
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {ty}\r\ncontent-length: {}\r\ncache-control: no-cache\r\n\
         x-content-type-options: nosniff\r\ncontent-security-policy: default-src 'self'; script-src 'self' \
         'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}
