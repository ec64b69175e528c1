//! A deliberately small HTTP/1.1 server (keep-alive, Content-Length bodies only): enough
//! for Envoy upstream connections and curl-like clients, nothing more.

use anyhow::Context as _;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;

pub async fn serve(listen: SocketAddr, name: String) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, %name, "httpbin listening");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, peer, &name).await {
                tracing::debug!(%peer, "connection: {e:#}");
            }
        });
    }
}

struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, name: &str) -> anyhow::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                stream.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await?;
                return Ok(());
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let Some(req) = parse_head(&buf[..head_end]) else {
            stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await?;
            return Ok(());
        };
        let body_len: usize = req
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if body_len > MAX_BODY || req.header("transfer-encoding").is_some() {
            stream.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await?;
            return Ok(());
        }
        while buf.len() < head_end + body_len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_end + body_len);
        let close = req.version == "HTTP/1.0"
            || req
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (status, content_type, body) = respond(&req, peer);
        let head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-sandbox-pod: {name}\r\n{}\r\n",
            reason(status),
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        stream.write_all(head.as_bytes()).await?;
        if req.method != "HEAD" {
            stream.write_all(body.as_bytes()).await?;
        }
        if close {
            return Ok(());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let version = first.next()?.to_string();
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some(Request {
        method,
        target,
        version,
        headers,
    })
}

fn respond(req: &Request, peer: SocketAddr) -> (u16, &'static str, String) {
    let path = req.target.split('?').next().unwrap_or("");
    match path {
        "/headers" => {
            let mut map: BTreeMap<String, String> = BTreeMap::new();
            for (k, v) in &req.headers {
                map.entry(title_case(k))
                    .and_modify(|e| {
                        e.push(',');
                        e.push_str(v)
                    })
                    .or_insert_with(|| v.clone());
            }
            (
                200,
                "application/json",
                json(&serde_json::json!({ "headers": map })),
            )
        }
        "/ip" => (
            200,
            "application/json",
            json(&serde_json::json!({ "origin": peer.ip().to_string() })),
        ),
        "/" => (200, "text/plain", "peerguard demo httpbin\n".into()),
        _ => match path
            .strip_prefix("/status/")
            .and_then(|c| c.parse::<u16>().ok())
        {
            Some(code) if (100..=599).contains(&code) => (code, "text/plain", String::new()),
            _ => (404, "text/plain", "not found\n".into()),
        },
    }
}

fn json(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// httpbin prints header names as `X-Forwarded-Client-Cert`.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        418 => "I'm a teapot",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_echo_in_title_case() {
        let req = parse_head(b"GET /headers HTTP/1.1\r\nhost: httpbin.full:8000\r\nx-forwarded-client-cert: URI=spiffe://a\r\n\r\n").unwrap();
        let (code, _, body) = respond(&req, "127.0.0.1:1".parse().unwrap());
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["headers"]["X-Forwarded-Client-Cert"], "URI=spiffe://a");
        assert_eq!(v["headers"]["Host"], "httpbin.full:8000");
    }

    #[test]
    fn status_and_ip() {
        let req = parse_head(b"GET /status/418 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(respond(&req, "127.0.0.1:1".parse().unwrap()).0, 418);
        let req = parse_head(b"GET /ip HTTP/1.1\r\n\r\n").unwrap();
        assert!(respond(&req, "127.0.3.10:1".parse().unwrap())
            .2
            .contains("127.0.3.10"));
        let req = parse_head(b"GET /nope HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(respond(&req, "127.0.0.1:1".parse().unwrap()).0, 404);
    }
}
