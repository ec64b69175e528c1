//! The one HTTP/1.1 client for raw requests: the request line and headers written byte for
//! byte as given (no normalization: tests send `/a/%2e%2e/b` on purpose), the response read
//! to its end (`content-length`, `chunked`, or the connection's end). Blocking and async
//! front ends share the framing, so every tool and test reads responses the same way.

use anyhow::Context as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// A request as it goes on the wire.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target, sent exactly as given.
    pub target: String,
    pub host: String,
    /// In order; names as given.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn get(target: &str, host: &str) -> Request {
        Request {
            method: "GET".into(),
            target: target.into(),
            host: host.into(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The bytes: `connection: close` unless the request names a connection header, and
    /// `content-length: 0` for a method other than GET/HEAD without a body header (Envoy
    /// would otherwise wait for a body).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nhost: {}\r\n",
            self.method, self.target, self.host
        );
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name))
        };
        if !has("content-length")
            && !has("transfer-encoding")
            && self.method != "GET"
            && self.method != "HEAD"
        {
            out.push_str("content-length: 0\r\n");
        }
        if !has("connection") {
            out.push_str("connection: close\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// A complete response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    /// De-chunked.
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why no complete response came back. `got` is what was read before.
#[derive(Debug)]
pub enum Failure {
    Write(std::io::Error),
    Read {
        error: std::io::Error,
        got: Vec<u8>,
    },
    /// The connection ended before a complete response.
    Closed {
        got: Vec<u8>,
    },
    Malformed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            Failure::Write(e) => write!(f, "write failed: {e}"),
            Failure::Read { error, got } if got.is_empty() => write!(f, "{error}"),
            Failure::Read { error, got } => write!(f, "{error} after {:?}", lossy(got)),
            Failure::Closed { got } if got.is_empty() => write!(f, "connection closed"),
            Failure::Closed { got } => write!(f, "truncated response: {:?}", lossy(got)),
            Failure::Malformed(why) => write!(f, "malformed response: {why}"),
        }
    }
}

impl std::error::Error for Failure {}

/// What `buf` holds so far: `Ok(Some)` a complete response, `Ok(None)` not yet (read more).
/// At `eof` an incomplete response is an error; a body without length ends there.
pub fn parse(buf: &[u8], eof: bool) -> Result<Option<Response>, Failure> {
    let closed = || Failure::Closed { got: buf.to_vec() };
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if eof { Err(closed()) } else { Ok(None) };
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| Failure::Malformed(format!("status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &buf[head_end + 4..];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let body =
        if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            match dechunk(rest) {
                Some(b) => b,
                None if eof => return Err(closed()),
                None => return Ok(None),
            }
        } else if let Some(len) = get("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| Failure::Malformed(format!("content-length {len:?}")))?;
            match rest.get(..len) {
                Some(b) => b.to_vec(),
                None if eof => return Err(closed()),
                None => return Ok(None),
            }
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else if eof {
            rest.to_vec()
        } else {
            return Ok(None);
        };
    Ok(Some(Response {
        status,
        headers,
        body,
    }))
}

/// A complete chunked body (trailers skipped), or `None` while incomplete.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(b, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&b[..line_end]).into_owned();
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let end = find(b, b"\r\n")?;
                if end == 0 {
                    return Some(out);
                }
                b = &b[end + 2..];
            }
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `request` and reads one complete response (async).
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    request: &Request,
) -> Result<Response, Failure> {
    io.write_all(&request.encode())
        .await
        .map_err(Failure::Write)?;
    let _ = io.flush().await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(r) = parse(&buf, false)? {
            return Ok(r);
        }
        match io.read(&mut chunk).await {
            Ok(0) => return parse(&buf, true)?.ok_or(Failure::Closed { got: buf }),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(error) => return Err(Failure::Read { error, got: buf }),
        }
    }
}

/// Sends `request` and reads one complete response (blocking).
pub fn exchange_blocking<S: Read + Write>(
    io: &mut S,
    request: &Request,
) -> Result<Response, Failure> {
    io.write_all(&request.encode()).map_err(Failure::Write)?;
    let _ = io.flush();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(r) = parse(&buf, false)? {
            return Ok(r);
        }
        match io.read(&mut chunk) {
            Ok(0) => return parse(&buf, true)?.ok_or(Failure::Closed { got: buf }),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(error) => return Err(Failure::Read { error, got: buf }),
        }
    }
}

/// A plain `GET` on a fresh connection (admin and ops endpoints).
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    exchange_blocking(&mut s, &Request::get(path, "localhost"))
        .with_context(|| format!("GET {path} on {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_written_as_given() {
        let r = Request {
            method: "POST".into(),
            target: "/a/%2e%2e/b?x".into(),
            host: "h:8000".into(),
            headers: vec![("X-Role".into(), "a".into()), ("x-role".into(), "b".into())],
        };
        assert_eq!(
            String::from_utf8(r.encode()).unwrap(),
            "POST /a/%2e%2e/b?x HTTP/1.1\r\nhost: h:8000\r\nX-Role: a\r\nx-role: b\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let keep = Request::get("/", "h").header("connection", "keep-alive");
        assert!(!String::from_utf8(keep.encode()).unwrap().contains("close"));
    }

    #[test]
    fn responses_by_length_chunks_or_close() {
        let full = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\n\r\nabc";
        assert!(parse(&full[..full.len() - 1], false).unwrap().is_none());
        let r = parse(full, false).unwrap().unwrap();
        assert_eq!(
            (r.status, r.text().as_str(), r.header("content-length")),
            (503, "abc", Some("3"))
        );
        assert!(matches!(
            parse(&full[..full.len() - 1], true),
            Err(Failure::Closed { .. })
        ));

        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n";
        assert!(parse(&chunked[..chunked.len() - 2], false)
            .unwrap()
            .is_none());
        assert_eq!(parse(chunked, false).unwrap().unwrap().text(), "abcd");

        let until_close = b"HTTP/1.1 200 OK\r\n\r\nstream";
        assert!(parse(until_close, false).unwrap().is_none());
        assert_eq!(parse(until_close, true).unwrap().unwrap().text(), "stream");

        assert!(matches!(parse(b"", true), Err(Failure::Closed { got }) if got.is_empty()));
        assert!(matches!(
            parse(b"garbage\r\n\r\n", false),
            Err(Failure::Malformed(_))
        ));
    }
}
