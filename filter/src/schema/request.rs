use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What the proxy knows about one connection (TCP) or one request on it (HTTP).
/// Built by the wasm adapter from Envoy's attributes, or by the conformance runner and
/// `explain` from their inputs. Identity only ever comes from the verified connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// `None`: plaintext connection (no TLS, or TLS without a client certificate is not
    /// possible here: the listener requires one).
    pub peer: Option<Peer>,
    pub source_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    /// The workload (target) port the connection arrived on.
    pub port: u16,
    /// TLS SNI, when the connection is TLS and the client sent one.
    #[serde(default)]
    pub sni: Option<String>,
    /// `None` for a TCP connection (network filter).
    pub http: Option<HttpRequest>,
}

/// The verified client certificate of an mTLS connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Every URI SAN of the certificate, in certificate order, exactly as written
    /// (`spiffe://td/ns/x/sa/y`, or anything else the certificate carries).
    pub uri_sans: Vec<String>,
}

impl Peer {
    /// A peer whose certificate carries the single SAN `spiffe://<principal>`.
    pub fn from_principal(principal: &str) -> Self {
        Peer {
            uri_sans: vec![format!("spiffe://{principal}")],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    /// The request path as received (`:path`, with any query); the engine normalizes it.
    pub path: String,
    /// `:authority` / Host, including any `:port`.
    pub host: String,
    /// Every header, lower-case names, in arrival order; a repeated header appears once per
    /// value.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The HTTP version the client spoke (what Envoy's codec accepts depends on it).
    #[serde(default)]
    pub version: HttpVersion,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HttpVersion {
    #[default]
    #[serde(rename = "1.1")]
    Http11,
    #[serde(rename = "2")]
    Http2,
}
