//! The load client: HTTP/1.1 keep-alive requests, HTTP/2 requests multiplexed as
//! concurrent streams over a few connections (gRPC-like), or TCP connect + echo round
//! trips, over mTLS with a client certificate (rustls), at a fixed rate or closed-loop.
//!
//! HTTP/2: `connections` tasks are streams in flight, sharing
//! [`Target::h2_connections`] connections (opened before the run, ALPN `h2`); each task
//! sends its next request on its connection as a new stream.
//!
//! - Fixed rate: `connections` tasks, each on its own schedule of `rate / connections`
//!   per second, staggered so the sends spread evenly. A send more than [`LATE`] behind
//!   its schedule is counted as late: the rate was not held (Envoy or the client could not
//!   keep up), and the figures of that point are suspect.
//! - Closed loop: `connections` tasks sending the next request as soon as the previous
//!   answer is in.
//!
//! HTTP latency is from writing the request to the end of the response body. A TCP round
//! trip is connect, full TLS handshake (no resumption, like a fresh sidecar connection),
//! 64 bytes out and back through Envoy's tcp_proxy to the echo app, close.
//! Only operations completing inside the measured window count; the warm-up before it
//! opens connections and settles Envoy. An error (non-200, a dropped connection, a wrong
//! echo, a timeout) at any time is counted: a point with errors is not valid.

use anyhow::{bail, Context as _};
use bytes::Bytes;
use peerguard_harness::http1;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const REQUEST: &[u8] = b"GET /bench HTTP/1.1\r\nhost: bench\r\nuser-agent: peerguard-bench\r\n\r\n";
const PAYLOAD: [u8; 64] = *b"peerguard-bench tcp echo payload, 64 bytes long...............\r\n";
const OP_TIMEOUT: Duration = Duration::from_secs(5);
const LATE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Http,
    Http2,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "shape")]
pub enum Shape {
    Fixed { rate: f64, connections: usize },
    Closed { connections: usize },
}

impl Shape {
    fn connections(&self) -> usize {
        match *self {
            Shape::Fixed { connections, .. } | Shape::Closed { connections } => connections.max(1),
        }
    }
}

/// Where and as whom to connect (the connector carries the ALPN: `http/1.1`, `h2` or none).
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
    /// HTTP/2 only: the connections the streams share.
    pub h2_connections: usize,
}

/// The run's timeline: load from `start` to `window_end`; only `[window_start, window_end)`
/// is measured.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub start: Instant,
    pub window_start: Instant,
    pub window_end: Instant,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Completed inside the window.
    pub completed: u64,
    /// Over the whole run, warm-up included.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Fixed rate: sends inside the window that started more than [`LATE`] behind schedule.
    pub late: u64,
    /// Of the operations completed inside the window, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl Outcome {
    fn merge(&mut self, o: Outcome) {
        self.completed += o.completed;
        self.errors += o.errors;
        self.late += o.late;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.latencies_us.extend(o.latencies_us);
    }

    fn error(&mut self, e: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    fn done(&mut self, t: &Timeline, began: Instant) {
        let end = Instant::now();
        if end >= t.window_start && end < t.window_end {
            self.completed += 1;
            let us = end.duration_since(began).as_micros();
            self.latencies_us
                .push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }
}

/// Runs the load; returns when every task has stopped (shortly after `window_end`).
pub async fn run(proto: Proto, target: Arc<Target>, shape: Shape, t: Timeline) -> Outcome {
    let n = shape.connections();
    let mut out = Outcome::default();
    // HTTP/2: the shared connections first, so the first sends are not handshakes.
    let mut h2: Vec<Option<h2::client::SendRequest<Bytes>>> = Vec::new();
    if proto == Proto::Http2 {
        for _ in 0..target.h2_connections.max(1) {
            match h2_connect(&target).await {
                Ok(s) => h2.push(Some(s)),
                Err(e) => {
                    out.error(e);
                    h2.push(None);
                }
            }
        }
    }
    let mut tasks = Vec::with_capacity(n);
    for k in 0..n {
        let target = target.clone();
        let stream = h2.get(k % h2.len().max(1)).cloned().flatten();
        tasks.push(tokio::spawn(async move {
            let schedule = match shape {
                Shape::Fixed { rate, .. } if rate > 0.0 => {
                    let interval = Duration::from_secs_f64(n as f64 / rate);
                    // Staggered: task k starts k/n of an interval late.
                    Some((t.start + interval.mul_f64(k as f64 / n as f64), interval))
                }
                _ => None,
            };
            match proto {
                Proto::Http => http_task(&target, schedule, t).await,
                Proto::Http2 => h2_task(stream, schedule, t).await,
                Proto::Tcp => tcp_task(&target, schedule, t).await,
            }
        }));
    }
    for task in tasks {
        match task.await {
            Ok(o) => out.merge(o),
            Err(e) => out.error(anyhow::anyhow!("load task failed: {e}")),
        }
    }
    out
}

/// Waits for the next send. `None`: stop (the run is over).
async fn pace(
    schedule: &mut Option<(Instant, Duration)>,
    t: &Timeline,
    out: &mut Outcome,
) -> Option<()> {
    match schedule {
        Some((next, interval)) => {
            // Also stop once the window is over even if the schedule is behind (a variant
            // that cannot hold the rate, e.g. RBAC at 10,000 policies): its backlog would
            // otherwise keep the point running for a minute and measure nothing more.
            if *next >= t.window_end || Instant::now() >= t.window_end {
                return None;
            }
            tokio::time::sleep_until((*next).into()).await;
            let now = Instant::now();
            if now >= t.window_start && now < t.window_end && now > *next + LATE {
                out.late += 1;
            }
            // Keep the schedule (no drift): a late task catches up.
            *next += *interval;
            Some(())
        }
        None => (Instant::now() < t.window_end).then_some(()),
    }
}

async fn http_task(
    target: &Target,
    mut schedule: Option<(Instant, Duration)>,
    t: Timeline,
) -> Outcome {
    let mut out = Outcome::default();
    let mut conn: Option<TlsStream<TcpStream>> = None;
    let mut buf = Vec::with_capacity(4096);
    // Connect before the run starts, so the first sends are not handshakes.
    match tls_connect(target).await {
        Ok(c) => conn = Some(c),
        Err(e) => out.error(e),
    }
    if Instant::now() < t.start {
        tokio::time::sleep_until(t.start.into()).await;
    }
    while pace(&mut schedule, &t, &mut out).await.is_some() {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match tls_connect(target).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    out.error(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let began = Instant::now();
        match tokio::time::timeout(OP_TIMEOUT, http_exchange(c, &mut buf)).await {
            Ok(Ok(())) => out.done(&t, began),
            Ok(Err(e)) => {
                out.error(e);
                conn = None;
            }
            Err(_) => {
                out.error(anyhow::anyhow!(
                    "HTTP request timed out after {OP_TIMEOUT:?}"
                ));
                conn = None;
            }
        }
    }
    out
}

async fn h2_task(
    conn: Option<h2::client::SendRequest<Bytes>>,
    mut schedule: Option<(Instant, Duration)>,
    t: Timeline,
) -> Outcome {
    let mut out = Outcome::default();
    let Some(conn) = conn else {
        // Its connection failed to open (counted once in `run`): nothing to send on.
        return out;
    };
    if Instant::now() < t.start {
        tokio::time::sleep_until(t.start.into()).await;
    }
    while pace(&mut schedule, &t, &mut out).await.is_some() {
        let began = Instant::now();
        match tokio::time::timeout(OP_TIMEOUT, h2_exchange(conn.clone())).await {
            Ok(Ok(())) => out.done(&t, began),
            Ok(Err(e)) => {
                out.error(e);
                // A broken connection fails every later stream at once: stop this one.
                if conn.clone().ready().await.is_err() {
                    break;
                }
            }
            Err(_) => out.error(anyhow::anyhow!(
                "HTTP/2 request timed out after {OP_TIMEOUT:?}"
            )),
        }
    }
    out
}

async fn tcp_task(
    target: &Target,
    mut schedule: Option<(Instant, Duration)>,
    t: Timeline,
) -> Outcome {
    let mut out = Outcome::default();
    if Instant::now() < t.start {
        tokio::time::sleep_until(t.start.into()).await;
    }
    while pace(&mut schedule, &t, &mut out).await.is_some() {
        let began = Instant::now();
        match tokio::time::timeout(OP_TIMEOUT, tcp_round_trip(target)).await {
            Ok(Ok(())) => out.done(&t, began),
            Ok(Err(e)) => out.error(e),
            Err(_) => out.error(anyhow::anyhow!(
                "TCP round trip timed out after {OP_TIMEOUT:?}"
            )),
        }
    }
    out
}

async fn tls_connect(target: &Target) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("connecting {}", target.addr))?;
    tcp.set_nodelay(true).context("TCP_NODELAY")?;
    target
        .connector
        .connect(target.server_name.clone(), tcp)
        .await
        .context("TLS handshake")
}

/// One request on a keep-alive connection; `Ok` only for a complete `200` response. The
/// response is framed by the harness's HTTP/1 parser; `buf` is reused between requests.
async fn http_exchange(io: &mut TlsStream<TcpStream>, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    io.write_all(REQUEST).await.context("writing the request")?;
    io.flush().await.context("flushing the request")?;
    buf.clear();
    let mut chunk = [0u8; 8192];
    let response = loop {
        if let Some(r) = http1::parse(buf, false)? {
            break r;
        }
        let n = io.read(&mut chunk).await.context("reading the response")?;
        if n == 0 {
            bail!("connection closed before a complete response");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if response.status != 200 {
        bail!("response {} (expected 200 from the app)", response.status);
    }
    Ok(())
}

/// One HTTP/2 connection (ALPN must select `h2`); its driver runs as its own task until
/// every handle is dropped.
async fn h2_connect(target: &Target) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
    let tls = tls_connect(target).await?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if alpn.as_deref() != Some(b"h2".as_slice()) {
        bail!(
            "ALPN selected {:?}, not h2: the listener does not offer HTTP/2",
            alpn.map(|a| String::from_utf8_lossy(&a).into_owned())
        );
    }
    let (send, connection) = h2::client::Builder::new()
        .handshake::<_, Bytes>(tls)
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        // Its end (an error or the last handle dropped) shows up in the streams.
        let _ = connection.await;
    });
    Ok(send)
}

/// One request as a new stream; `Ok` only for a complete `200` response.
async fn h2_exchange(conn: h2::client::SendRequest<Bytes>) -> anyhow::Result<()> {
    let mut conn = conn.ready().await.context("HTTP/2 connection")?;
    let request = http::Request::builder()
        .method("GET")
        .uri("https://bench/bench")
        .header("user-agent", "peerguard-bench")
        .body(())
        .context("building the request")?;
    let (response, _) = conn
        .send_request(request, true)
        .context("sending the request")?;
    let response = response.await.context("reading the response headers")?;
    let status = response.status();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.context("reading the response body")?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if status != http::StatusCode::OK {
        bail!("response {status} (expected 200 from the app)");
    }
    Ok(())
}

async fn tcp_round_trip(target: &Target) -> anyhow::Result<()> {
    let mut io = tls_connect(target).await?;
    io.write_all(&PAYLOAD)
        .await
        .context("writing the payload")?;
    io.flush().await.context("flushing the payload")?;
    let mut got = [0u8; PAYLOAD.len()];
    io.read_exact(&mut got).await.context("reading the echo")?;
    if got != PAYLOAD {
        bail!("the echo differs from the payload");
    }
    // close_notify + FIN; the result does not matter any more.
    let _ = io.shutdown().await;
    Ok(())
}

/// The `q` quantile (0..=1) of sorted values (nearest rank).
pub fn quantile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
