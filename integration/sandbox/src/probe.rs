//! The sandbox's clients: one HTTP/1.1 request from a pod's address (`sandbox exec`), the
//! walkthrough matrix (`sandbox matrix`), and admin-port queries to the sidecars.
//!
//! A pod with a sidecar sends through its outbound listener (as iptables would redirect
//! it); a pod without one resolves the Service with the sandbox's resolver table and
//! connects to an endpoint directly. Every request uses a fresh connection
//! (`connection: close`), as each `curl` in the walkthrough does.

use super::topology::{Pod, Service, Topology};
use anyhow::{bail, Context as _};
use peerguard_harness::http1;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpSocket;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Response {
    /// 0 when the connection failed or closed before a status line (curl's 000).
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Why `code` is 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The client URI httpbin saw in `X-Forwarded-Client-Cert` (the last element, the one
    /// the sidecar set), from a `/headers` body.
    pub fn principal(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        let xfcc = v.pointer("/headers/X-Forwarded-Client-Cert")?.as_str()?;
        xfcc_uri(xfcc)
    }
}

pub fn xfcc_uri(xfcc: &str) -> Option<String> {
    let last = xfcc.rsplit(',').next()?;
    last.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("URI")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// One request. Never fails: connection problems give code 0 and `error`.
pub async fn request(
    bind: Option<IpAddr>,
    to: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Response {
    match tokio::time::timeout(timeout, request_inner(bind, to, method, host, path)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Response {
            error: Some(format!("{e:#}")),
            ..Response::default()
        },
        Err(_) => Response {
            error: Some(format!("timed out after {timeout:?}")),
            ..Response::default()
        },
    }
}

async fn request_inner(
    bind: Option<IpAddr>,
    to: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
) -> anyhow::Result<Response> {
    let socket = TcpSocket::new_v4().context("socket")?;
    if let Some(ip) = bind {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding {ip}"))?;
    }
    let mut stream = socket
        .connect(to)
        .await
        .with_context(|| format!("connecting to {to}"))?;
    let request = http1::Request {
        method: method.into(),
        target: path.into(),
        host: host.into(),
        headers: vec![
            ("user-agent".into(), "peerguard-sandbox".into()),
            ("accept".into(), "*/*".into()),
        ],
    };
    let r = http1::exchange(&mut stream, &request).await?;
    Ok(Response {
        code: r.status,
        body: r.text(),
        headers: r.headers,
        error: None,
    })
}

/// Where a request from `pod` to `host:port` goes.
pub struct Route {
    pub bind: IpAddr,
    pub connect: SocketAddr,
    /// The endpoint chosen, for pods without a sidecar.
    pub endpoint: Option<String>,
}

/// `pick` selects among a Service's endpoints for pods without a sidecar.
pub fn route(
    t: &Topology,
    pod: &Pod,
    host: &str,
    port: u16,
    pick: impl Fn(&[&Pod]) -> usize,
) -> anyhow::Result<Route> {
    if pod.sidecar {
        return Ok(Route {
            bind: IpAddr::V4(pod.ip),
            connect: SocketAddr::new(IpAddr::V4(pod.ip), t.ports.outbound),
            endpoint: None,
        });
    }
    let svc: &Service = t
        .resolve_host(host, Some(&pod.namespace))
        .with_context(|| {
            format!(
                "{host}: unknown host (the sandbox resolver knows the Services of the topology)"
            )
        })?;
    if svc.port != port {
        bail!(
            "{}: no port {port} (Service port is {})",
            svc.id(),
            svc.port
        );
    }
    let eps: Vec<&Pod> = t.endpoints(svc).collect();
    let ep = eps
        .get(pick(&eps) % eps.len().max(1))
        .context("no endpoints")?;
    // Without a sidecar the Service port is translated to the target port, as kube-proxy does.
    Ok(Route {
        bind: IpAddr::V4(pod.ip),
        connect: SocketAddr::new(IpAddr::V4(ep.ip), svc.target_port),
        endpoint: Some(ep.id()),
    })
}

/// `http://host[:port]/path` → (host, port, path).
pub fn parse_url(url: &str) -> anyhow::Result<(String, u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs (the sidecar does the TLS)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .with_context(|| format!("{url}: bad port"))?,
        ),
        None => (authority.to_string(), 80),
    };
    Ok((host, port, path))
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub from: String,
    pub to: String,
    pub code: u16,
    /// The client SPIFFE URI httpbin saw (null when none).
    pub principal: Option<String>,
    /// The pod that answered (`x-sandbox-pod`), when one did.
    pub endpoint: Option<String>,
}

/// One request of the matrix. For a Service with several endpoints the walkthrough's
/// matrix shows the endpoint with a sidecar, so the request is repeated (up to 4 times)
/// until that endpoint answered; clients without a sidecar go to it directly.
pub async fn matrix_cell(t: &Topology, from: &str, to: &str) -> anyhow::Result<Cell> {
    let pod = t.pod(from)?;
    let svc = t.service(to)?;
    let eps: Vec<&Pod> = t.endpoints(svc).collect();
    let preferred = eps.iter().position(|p| p.sidecar).unwrap_or(0);
    let host = format!("{}:{}", svc.id(), svc.port);
    let mut last = None;
    for _ in 0..4 {
        let r = route(t, pod, &svc.id(), svc.port, |_| preferred)?;
        let resp = request(
            Some(r.bind),
            r.connect,
            "GET",
            &host,
            &t.matrix.path,
            Duration::from_secs(5),
        )
        .await;
        let endpoint = resp
            .header("x-sandbox-pod")
            .map(str::to_string)
            .or(r.endpoint);
        let cell = Cell {
            from: from.into(),
            to: to.into(),
            code: resp.code,
            principal: resp.principal(),
            endpoint: endpoint.clone(),
        };
        let on_preferred = endpoint.as_deref() == eps.get(preferred).map(|p| p.id()).as_deref();
        if on_preferred || eps.len() < 2 || resp.code != 200 {
            return Ok(cell);
        }
        last = Some(cell);
    }
    last.context("no response")
}

pub async fn matrix(t: &Topology) -> anyhow::Result<Vec<Cell>> {
    let mut cells = Vec::new();
    for from in &t.matrix.from {
        for to in &t.matrix.to {
            cells.push(matrix_cell(t, from, to).await?);
        }
    }
    Ok(cells)
}

pub fn print_matrix(cells: &[Cell]) {
    out!(
        "{:<14} {:<17} {:>4}  {:<28} principal",
        "from",
        "to",
        "code",
        "endpoint"
    );
    for c in cells {
        out!(
            "{:<14} {:<17} {:>4}  {:<28} {}",
            c.from,
            c.to,
            c.code,
            c.endpoint.as_deref().unwrap_or("-"),
            c.principal.as_deref().unwrap_or("-")
        );
    }
}

/// GET on a sidecar's admin port.
pub async fn admin_get(ip: IpAddr, port: u16, path: &str) -> Response {
    request(
        None,
        SocketAddr::new(ip, port),
        "GET",
        "localhost",
        path,
        Duration::from_secs(2),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_last_element_uri() {
        assert_eq!(
            xfcc_uri("By=spiffe://cluster.local/ns/full/sa/httpbin;Hash=ab;URI=spiffe://cluster.local/ns/full/sa/sleep").as_deref(),
            Some("spiffe://cluster.local/ns/full/sa/sleep")
        );
        assert_eq!(
            xfcc_uri("URI=spiffe://evil,Hash=1;URI=spiffe://good").as_deref(),
            Some("spiffe://good")
        );
        assert_eq!(xfcc_uri("Hash=1"), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://httpbin.partial:8000/headers").unwrap(),
            ("httpbin.partial".into(), 8000, "/headers".into())
        );
        assert_eq!(
            parse_url("http://httpbin.full").unwrap(),
            ("httpbin.full".into(), 80, "/".into())
        );
    }

    #[test]
    fn routes() {
        let t = Topology::load(None).unwrap();
        let r = route(
            &t,
            t.pod("sleep.full").unwrap(),
            "httpbin.partial",
            8000,
            |_| 0,
        )
        .unwrap();
        assert_eq!(r.connect, "127.0.1.10:15001".parse().unwrap());
        let r = route(
            &t,
            t.pod("sleep.legacy").unwrap(),
            "httpbin.partial",
            8000,
            |_| 1,
        )
        .unwrap();
        assert_eq!(
            (r.connect, r.endpoint.as_deref()),
            (
                "127.0.2.21:80".parse().unwrap(),
                Some("httpbin-nosidecar.partial")
            )
        );
        assert!(route(&t, t.pod("sleep.legacy").unwrap(), "nope.full", 8000, |_| 0).is_err());
    }
}
