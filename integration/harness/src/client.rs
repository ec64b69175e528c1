//! The clients: one fresh connection per request, bound to the request's source address,
//! plaintext or mTLS with the request's certificate; HTTP/1.1 written byte for byte,
//! HTTP/2 (ALPN `h2` on TLS, prior knowledge on plaintext), or a TCP echo probe.

use crate::e2e::Observed;
use crate::http1;
use crate::pki::{Issued, SERVER_NAME};
use crate::upstream::{APP_MARKER, APP_MARKER_VALUE, APP_SAW_XFCC};
use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// An HTTP request as a scenario writes it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// Sent exactly as given (no normalization).
    pub path: String,
    pub host: String,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    pub http2: bool,
}

#[derive(Debug, Clone)]
pub enum Probe {
    Http(HttpRequest),
    /// Send a payload; allowed iff it comes back.
    Tcp,
}

/// Everything needed to make one connection.
#[derive(Clone)]
pub struct Shot {
    pub target: SocketAddr,
    pub source_ip: IpAddr,
    /// `Some`: mTLS with this client certificate.
    pub client_cert: Option<Arc<Issued>>,
    pub mesh_root: CertificateDer<'static>,
    pub probe: Probe,
    pub timeout: Duration,
    /// The ALPN offered on mTLS; `None`: plain ALPN ([`default_alpn`]).
    pub alpn: Option<Vec<Vec<u8>>>,
}

/// The ALPN a plain mTLS client offers: `h2` or `http/1.1` for HTTP, none for TCP.
pub fn default_alpn(probe: &Probe) -> Vec<Vec<u8>> {
    match probe {
        Probe::Http(h) if h.http2 => vec![b"h2".to_vec()],
        Probe::Http(_) => vec![b"http/1.1".to_vec()],
        Probe::Tcp => Vec::new(),
    }
}

/// The ALPN an Istio sidecar offers upstream on mTLS (its `istio.alpn` filter and the
/// outbound cluster's TLS context): `istio-h2` / `istio-http/1.1` for HTTP,
/// `istio-peer-exchange, istio` for TCP. Istio's inbound chains select on these.
pub fn istio_alpn(probe: &Probe) -> Vec<Vec<u8>> {
    match probe {
        Probe::Http(h) if h.http2 => vec![b"istio-h2".to_vec()],
        Probe::Http(_) => vec![b"istio-http/1.1".to_vec()],
        Probe::Tcp => vec![b"istio-peer-exchange".to_vec(), b"istio".to_vec()],
    }
}

/// A failure of the runner itself (not an outcome): the run must stop.
#[derive(Debug)]
pub struct RunnerError(pub anyhow::Error);

/// Makes the request; `Err` only when the runner could not even try (binding the source
/// address, connection refused: nothing listens where Envoy should).
pub async fn shoot(shot: &Shot) -> Result<Observed, RunnerError> {
    let tcp = connect(shot).await?;
    let timeout = shot.timeout;
    let fut = async {
        match &shot.client_cert {
            None => exchange(tcp, shot, false).await,
            Some(cert) => {
                let alpn = shot
                    .alpn
                    .clone()
                    .unwrap_or_else(|| default_alpn(&shot.probe));
                let config = match crate::tls::mesh_client_config(cert, &shot.mesh_root, alpn) {
                    Ok(c) => c,
                    Err(e) => return Err(RunnerError(e)),
                };
                let name = ServerName::try_from(SERVER_NAME)
                    .map_err(|e| RunnerError(anyhow::anyhow!("server name: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                match connector.connect(name, tcp).await {
                    Ok(tls) => exchange(tls, shot, true).await,
                    Err(e) => Ok(denied(format!("TLS handshake failed: {}", io_detail(&e)))),
                }
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Ok(denied(format!("timeout after {timeout:?}"))),
    }
}

fn denied(detail: String) -> Observed {
    Observed {
        allowed: false,
        detail,
    }
}

async fn connect(shot: &Shot) -> Result<TcpStream, RunnerError> {
    let socket = match shot.source_ip {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| RunnerError(e.into()))?;
    socket
        .bind(SocketAddr::new(shot.source_ip, 0))
        .map_err(|e| {
            RunnerError(anyhow::anyhow!(
                "binding the client to source address {}: {e}",
                shot.source_ip
            ))
        })?;
    match tokio::time::timeout(shot.timeout, socket.connect(shot.target)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(RunnerError(anyhow::anyhow!(
            "connecting {} -> {}: {e} (is Envoy listening there?)",
            shot.source_ip,
            shot.target
        ))),
        Err(_) => Err(RunnerError(anyhow::anyhow!(
            "connecting {} -> {}: timeout",
            shot.source_ip,
            shot.target
        ))),
    }
}

async fn exchange<S>(io: S, shot: &Shot, tls: bool) -> Result<Observed, RunnerError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Ok(match &shot.probe {
        Probe::Tcp => tcp_echo(io).await,
        Probe::Http(h) if h.http2 => {
            // A request the h2 client cannot express is the runner's limit, not a denial.
            let req = h2_request(h, tls).map_err(RunnerError)?;
            http2(io, req).await
        }
        Probe::Http(h) => http1(io, h).await,
    })
}

async fn tcp_echo<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> Observed {
    let payload = b"peerguard-e2e ping\n";
    if let Err(e) = io.write_all(payload).await {
        return denied(format!("write failed: {}", io_detail(&e)));
    }
    let _ = io.flush().await;
    let mut got = vec![0u8; payload.len()];
    match io.read_exact(&mut got).await {
        Ok(_) if got == payload => Observed {
            allowed: true,
            detail: "payload echoed".into(),
        },
        Ok(_) => denied(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&got)
        )),
        Err(e) => denied(io_detail(&e)),
    }
}

async fn http1<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, h: &HttpRequest) -> Observed {
    let request = http1::Request {
        method: h.method.clone(),
        target: h.path.clone(),
        host: h.host.clone(),
        headers: h.headers.clone(),
    };
    match http1::exchange(&mut io, &request).await {
        Ok(r) => verdict(r.status, &r.headers, &r.body),
        Err(http1::Failure::Write(e)) => denied(format!("write failed: {}", io_detail(&e))),
        Err(http1::Failure::Read { error, got }) if got.is_empty() => denied(io_detail(&error)),
        Err(http1::Failure::Read { error, got }) => {
            denied(format!("{} after {:?}", io_detail(&error), lossy(&got)))
        }
        Err(other) => denied(other.to_string()),
    }
}

fn h2_request(h: &HttpRequest, tls: bool) -> anyhow::Result<http::Request<()>> {
    let scheme = if tls { "https" } else { "http" };
    let uri = format!("{scheme}://{}{}", h.host, h.path);
    let mut req = http::Request::builder()
        .method(h.method.as_str())
        .uri(uri.as_str());
    for (k, v) in &h.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.body(()).with_context(|| {
        format!(
            "the runner cannot send {} {} (host {:?}) over HTTP/2",
            h.method, h.path, h.host
        )
    })
}

async fn http2<S>(io: S, req: http::Request<()>) -> Observed
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut client, conn) = match h2::client::handshake(io).await {
        Ok(x) => x,
        Err(e) => return denied(format!("HTTP/2 handshake failed: {}", h2_detail(&e))),
    };
    let conn_task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let (resp, _) = match client.send_request(req, true) {
            Ok(x) => x,
            Err(e) => return denied(format!("HTTP/2 send failed: {}", h2_detail(&e))),
        };
        let resp = match resp.await {
            Ok(r) => r,
            Err(e) => return denied(format!("HTTP/2: {}", h2_detail(&e))),
        };
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body_stream = resp.into_body();
        let mut body = Vec::new();
        while let Some(chunk) = body_stream.data().await {
            match chunk {
                Ok(c) => {
                    let _ = body_stream.flow_control().release_capacity(c.len());
                    body.extend_from_slice(&c);
                }
                Err(_) => break,
            }
        }
        verdict(status, &headers, &body)
    }
    .await;
    conn_task.abort();
    result
}

fn verdict(status: u16, headers: &[(String, String)], body: &[u8]) -> Observed {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if get(APP_MARKER) == Some(APP_MARKER_VALUE) {
        let xfcc = get(APP_SAW_XFCC).unwrap_or("-");
        Observed {
            allowed: true,
            detail: format!("HTTP {status} from the app; app saw XFCC: {xfcc}"),
        }
    } else {
        let body = lossy(body);
        let body = body.trim();
        let body: String = body.chars().take(200).collect();
        denied(format!("HTTP {status} {body}").trim_end().to_string())
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A short, stable description of an I/O failure (TLS alerts included).
fn io_detail(e: &std::io::Error) -> String {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        // With TLS 1.3 the server judges the client certificate after the client has
        // finished its side, so its verdict arrives as an alert on the first read.
        return match inner {
            rustls::Error::AlertReceived(alert) => {
                format!("TLS handshake failed: server sent alert {alert:?}")
            }
            other => format!("TLS error: {other}"),
        };
    }
    let text = e.to_string();
    // h2 keeps only the text of the I/O errors it wraps.
    if let Some(alert) = text.strip_prefix("received fatal alert: ") {
        return format!("TLS handshake failed: server sent alert {alert}");
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "connection closed".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        std::io::ErrorKind::BrokenPipe => "connection closed (broken pipe)".into(),
        _ => text,
    }
}

fn h2_detail(e: &h2::Error) -> String {
    if let Some(io) = e.get_io() {
        return io_detail(io);
    }
    if let Some(reason) = e.reason() {
        return format!("stream/connection reset ({reason:?})");
    }
    e.to_string()
}
