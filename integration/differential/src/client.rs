//! Sending one raw request: a fresh connection bound to the case's source address,
//! plaintext or mTLS, the request head written byte for byte (or a TCP echo probe), and
//! the outcome reduced to what is compared.

use crate::harness::{APP_MARKER, APP_MARKER_VALUE, SERVER_NAME};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpSocket;

/// What one side did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP response: its status, and whether the app produced it (allowed) or Envoy
    /// did (403 from an authorization filter, 400 from the connection manager...).
    Http {
        status: u16,
        app: bool,
    },
    /// The connection ended without a response (or with something unreadable).
    Closed,
    /// The TLS handshake failed (listener-level refusal).
    TlsFailed,
    /// TCP: the payload came back.
    Echoed,
    Timeout,
    /// Several requests on one connection (HTTP/1.1 keep-alive), one outcome each.
    Pipelined(Vec<Outcome>),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Http { status, app: true } => write!(f, "{status} from the app"),
            Outcome::Http { status, app: false } => write!(f, "{status} from Envoy"),
            Outcome::Closed => write!(f, "closed without a response"),
            Outcome::TlsFailed => write!(f, "TLS handshake failed"),
            Outcome::Echoed => write!(f, "TCP payload echoed"),
            Outcome::Timeout => write!(f, "timeout"),
            Outcome::Pipelined(v) => {
                let parts: Vec<String> = v.iter().map(|o| o.to_string()).collect();
                write!(f, "[{}]", parts.join(", "))
            }
        }
    }
}

impl Outcome {
    /// Reached the app (HTTP) or the echo server (TCP).
    pub fn allowed(&self) -> bool {
        match self {
            Outcome::Pipelined(v) => v.iter().any(Outcome::allowed),
            o => matches!(o, Outcome::Http { app: true, .. } | Outcome::Echoed),
        }
    }
}

/// One connection to make.
#[derive(Clone)]
pub struct Shot {
    pub target: SocketAddr,
    pub source: IpAddr,
    /// `Some`: mTLS with this client configuration (certificate, mesh root, ALPN).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `Some`: this HTTP/1.1 head; `None`: a TCP echo probe.
    pub http: Option<Arc<[u8]>>,
    /// Send the head's request over HTTP/2 instead (see [`h2_request`]).
    pub h2: bool,
    pub timeout: Duration,
}

const TCP_PAYLOAD: &[u8] = b"peerguard-differential ping\n";

/// Makes the request. `Err` only when the runner could not even try (source address,
/// nothing listening): that is a harness failure, not an outcome.
pub async fn shoot(shot: &Shot) -> anyhow::Result<Outcome> {
    let socket = match shot.source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket
        .bind(SocketAddr::new(shot.source, 0))
        .map_err(|e| anyhow::anyhow!("binding the client to {}: {e}", shot.source))?;
    let tcp = match tokio::time::timeout(shot.timeout, socket.connect(shot.target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => anyhow::bail!("connecting {} -> {}: {e}", shot.source, shot.target),
        Err(_) => anyhow::bail!("connecting {} -> {}: timeout", shot.source, shot.target),
    };
    let _ = tcp.set_nodelay(true);
    let exchange = async {
        match &shot.tls {
            None => exchange(tcp, shot).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)
                    .map_err(|e| anyhow::anyhow!("server name: {e}"))?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                match connector.connect(name, tcp).await {
                    Ok(tls) => exchange(tls, shot).await,
                    Err(_) => Ok(Outcome::TlsFailed),
                }
            }
        }
    };
    match tokio::time::timeout(shot.timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Ok(Outcome::Timeout),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut io: S,
    shot: &Shot,
) -> anyhow::Result<Outcome> {
    let tls = shot.tls.is_some();
    if let (Some(head), true) = (&shot.http, shot.h2) {
        return http2(io, head, tls).await;
    }
    let Some(head) = &shot.http else {
        if let Err(e) = io.write_all(TCP_PAYLOAD).await {
            return Ok(closed_or_tls(&e, tls));
        }
        let mut got = vec![0u8; TCP_PAYLOAD.len()];
        return Ok(match io.read_exact(&mut got).await {
            Ok(_) if got == TCP_PAYLOAD => Outcome::Echoed,
            Ok(_) => Outcome::Closed,
            Err(e) => closed_or_tls(&e, tls),
        });
    };
    if let Err(e) = io.write_all(head).await {
        return Ok(closed_or_tls(&e, tls));
    }
    let _ = io.flush().await;
    let requests = request_methods(head);
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for (i, is_head) in requests.iter().enumerate() {
        let end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break Some(end);
            }
            match io.read(&mut chunk).await {
                Ok(0) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if buf.is_empty() && i == 0 => return Ok(closed_or_tls(&e, tls)),
                Err(_) => break None,
            }
        };
        let Some(end) = end else {
            outcomes.push(Outcome::Closed);
            break;
        };
        let (outcome, body) = parse_head(&buf[..end]);
        outcomes.push(outcome);
        if requests.len() == 1 {
            // The status line and headers are all that is compared.
            break;
        }
        buf.drain(..end + 4);
        // Skip the body to reach the next response; without a length it runs to the end.
        let body = if *is_head { Some(0) } else { body };
        let Some(len) = body else { break };
        while buf.len() < len {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..len.min(buf.len()));
    }
    Ok(match outcomes.len() {
        1 if requests.len() == 1 => outcomes.remove(0),
        _ => {
            // Requests never answered count as closed.
            outcomes.resize(requests.len(), Outcome::Closed);
            Outcome::Pipelined(outcomes)
        }
    })
}

/// One entry per request head in `payload` (heads end with an empty line; no bodies are
/// sent): whether it is a HEAD request, whose response has no body.
fn request_methods(payload: &[u8]) -> Vec<bool> {
    let mut out = Vec::new();
    let mut rest = payload;
    while let Some(end) = find(rest, b"\r\n\r\n") {
        out.push(rest.starts_with(b"HEAD "));
        rest = &rest[end + 4..];
    }
    if out.is_empty() {
        out.push(payload.starts_with(b"HEAD "));
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The request of an HTTP/1.1 head as HTTP/2: method, `:path` from the request target,
/// `:authority` from the one Host header, the other headers (names lower-cased, in order,
/// `connection` dropped). `Err` when HTTP/2 cannot carry it (no or several Host headers, a
/// target or value the `http` crate refuses).
pub fn h2_request(head: &[u8], tls: bool) -> anyhow::Result<http::Request<()>> {
    let text = std::str::from_utf8(head)?;
    let mut lines = text.trim_end_matches("\r\n").split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some("HTTP/1.1"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        anyhow::bail!("request line {request_line:?}");
    };
    if !target.starts_with('/') {
        anyhow::bail!("request target {target:?} is not a path");
    }
    let mut authority = None;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("header line {line:?}"))?;
        let value = value.trim_matches([' ', '\t']);
        match name.to_ascii_lowercase().as_str() {
            "host" if authority.is_some() => anyhow::bail!("several Host headers"),
            "host" => authority = Some(value.to_string()),
            "connection" => {}
            n => headers.push((n.to_string(), value.to_string())),
        }
    }
    let authority = authority.ok_or_else(|| anyhow::anyhow!("no Host header"))?;
    let scheme = if tls { "https" } else { "http" };
    let uri: http::Uri = format!("{scheme}://{authority}{target}").parse()?;
    if uri.authority().map(|a| a.as_str()) != Some(authority.as_str()) {
        anyhow::bail!("authority {authority:?} does not survive URI parsing");
    }
    if uri.path_and_query().map(|p| p.as_str()) != Some(target) {
        anyhow::bail!("target {target:?} does not survive URI parsing");
    }
    let mut req = http::Request::builder()
        .method(http::Method::from_bytes(method.as_bytes())?)
        .uri(uri);
    for (k, v) in headers {
        req = req.header(
            http::HeaderName::from_bytes(k.as_bytes())?,
            http::HeaderValue::from_str(&v)?,
        );
    }
    Ok(req.body(())?)
}

async fn http2<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    head: &[u8],
    tls: bool,
) -> anyhow::Result<Outcome> {
    let req = h2_request(head, tls)?;
    let (mut client, conn) = match h2::client::handshake(io).await {
        Ok(x) => x,
        Err(e) => return Ok(h2_failure(&e, tls)),
    };
    let conn_task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let outcome = async {
        let (resp, _) = match client.send_request(req, true) {
            Ok(x) => x,
            Err(e) => return h2_failure(&e, tls),
        };
        match resp.await {
            Ok(r) => Outcome::Http {
                status: r.status().as_u16(),
                app: r
                    .headers()
                    .get(APP_MARKER)
                    .is_some_and(|v| v.as_bytes() == APP_MARKER_VALUE.as_bytes()),
            },
            Err(e) => h2_failure(&e, tls),
        }
    }
    .await;
    conn_task.abort();
    Ok(outcome)
}

fn h2_failure(e: &h2::Error, tls: bool) -> Outcome {
    match e.get_io() {
        Some(io) => closed_or_tls(io, tls),
        // A stream or connection reset: no response.
        None => Outcome::Closed,
    }
}

/// With TLS 1.3 the server judges the client certificate after the client has finished
/// the handshake, so a refusal arrives as an alert on the first read or write.
fn closed_or_tls(e: &std::io::Error, tls: bool) -> Outcome {
    let alert = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::AlertReceived(_)));
    if tls && alert {
        Outcome::TlsFailed
    } else {
        Outcome::Closed
    }
}

/// The outcome of a response head, and its body length when it declares one.
fn parse_head(head: &[u8]) -> (Outcome, Option<usize>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status else {
        return (Outcome::Closed, None);
    };
    let (mut app, mut len) = (false, None);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case(APP_MARKER) && v == APP_MARKER_VALUE {
            app = true;
        } else if k.eq_ignore_ascii_case("content-length") {
            len = v.parse().ok();
        }
    }
    (Outcome::Http { status, app }, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_reduced_to_status_and_origin() {
        let app =
            format!("HTTP/1.1 200 OK\r\n{APP_MARKER}: {APP_MARKER_VALUE}\r\ncontent-length: 0");
        assert_eq!(
            parse_head(app.as_bytes()),
            (
                Outcome::Http {
                    status: 200,
                    app: true
                },
                Some(0)
            )
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 19"),
            (
                Outcome::Http {
                    status: 403,
                    app: false
                },
                Some(19)
            )
        );
        assert_eq!(parse_head(b"garbage"), (Outcome::Closed, None));
        assert_eq!(
            request_methods(b"GET / HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\n\r\n"),
            vec![false, true]
        );
    }
}
