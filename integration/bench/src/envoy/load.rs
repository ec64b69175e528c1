//! The load client: HTTP/1.1 keep-alive requests, or TCP connect + echo round trips, over
//! mTLS with a client certificate (rustls), at a fixed rate or closed-loop.
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

/// Where and as whom to connect (the connector carries the ALPN: `http/1.1` or none).
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
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
    let mut tasks = Vec::with_capacity(n);
    for k in 0..n {
        let target = target.clone();
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
                Proto::Tcp => tcp_task(&target, schedule, t).await,
            }
        }));
    }
    let mut out = Outcome::default();
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
            if *next >= t.window_end {
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
