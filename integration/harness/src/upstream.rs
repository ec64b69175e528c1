//! The test "app" behind Envoy: an HTTP/1.1 server that answers every request with 200 and
//! a marker header only it sets, echoing the `x-forwarded-client-cert` it received, and a
//! TCP echo server. Reaching either is what "allowed" means end to end.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::http1::find;

/// Set on every response of the app; Envoy's own replies never carry it.
pub const APP_MARKER: &str = "x-peerguard-app";
pub const APP_MARKER_VALUE: &str = "reached";
/// The XFCC header the app received (`-` when none).
pub const APP_SAW_XFCC: &str = "x-peerguard-app-saw-xfcc";
/// The path the app received (after Envoy's normalization).
pub const APP_SAW_PATH: &str = "x-peerguard-app-saw-path";

const MAX_HEAD: usize = 64 * 1024;

/// The body of [`ok_app`]'s answers.
pub const OK_BODY: &str = "app-ok";

/// A blocking app for tests without a tokio runtime: every request (keep-alive) gets
/// `200 app-ok`, with the request target it received in [`APP_SAW_PATH`] (what Envoy
/// forwarded after normalizing). Runs on its own threads until the process ends.
pub fn ok_app() -> std::io::Result<SocketAddr> {
    use std::io::{Read as _, Write as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let mut seen = Vec::new();
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = find(&seen, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                        seen.drain(..end + 4);
                        let target = head.split(' ').nth(1).unwrap_or("");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\n{APP_SAW_PATH}: {}\r\ncontent-length: {}\r\n\r\n{OK_BODY}",
                            header_safe(target),
                            OK_BODY.len()
                        );
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A blocking TCP echo app (see [`ok_app`]).
pub fn echo_app() -> std::io::Result<SocketAddr> {
    use std::io::{Read as _, Write as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Binds the HTTP app on 127.0.0.1 (any port) and serves it in the background of the
/// current tokio runtime.
pub async fn spawn_http_app() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = serve_http(conn).await;
            });
        }
    });
    Ok(addr)
}

/// Binds the TCP echo app on 127.0.0.1 (any port).
pub async fn spawn_tcp_echo() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(addr)
}

/// Serves HTTP/1.1 requests on one connection (keep-alive) until the peer closes.
async fn serve_http(mut conn: TcpStream) -> anyhow::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                anyhow::bail!("request head too large");
            }
            let mut chunk = [0u8; 8192];
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let path = request_line
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut xfcc: Vec<String> = Vec::new();
        let mut content_length = 0usize;
        let mut chunked = false;
        let mut close = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "x-forwarded-client-cert" => xfcc.push(value.to_string()),
                "content-length" => content_length = value.parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        if chunked {
            read_chunked(&mut conn, &mut buf).await?;
        } else {
            while buf.len() < content_length {
                let mut chunk = [0u8; 8192];
                let n = conn.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..content_length);
        }
        let xfcc = if xfcc.is_empty() {
            "-".to_string()
        } else {
            xfcc.join(", ")
        };
        let body = format!("reached: {request_line}\nx-forwarded-client-cert: {xfcc}\n");
        let resp = format!(
            "HTTP/1.1 200 OK\r\n{APP_MARKER}: {APP_MARKER_VALUE}\r\n{APP_SAW_XFCC}: {}\r\n{APP_SAW_PATH}: {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            header_safe(&xfcc),
            header_safe(&path),
            body.len()
        );
        conn.write_all(resp.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}

/// Consumes a chunked body (and trailers) from `buf` + the connection.
async fn read_chunked(conn: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            fill(conn, buf).await?;
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = loop {
                    if let Some(i) = find(buf, b"\r\n") {
                        break i;
                    }
                    fill(conn, buf).await?;
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Ok(());
                }
            }
        }
        while buf.len() < size + 2 {
            fill(conn, buf).await?;
        }
        buf.drain(..size + 2);
    }
}

async fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = conn.read(&mut chunk).await?;
    if n == 0 {
        anyhow::bail!("connection closed inside a chunked body");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn header_safe(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}
