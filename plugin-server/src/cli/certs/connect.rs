//! `peerguard certs --connect HOST:PORT`: a TLS handshake that records the chain the server
//! presents, whatever it is (nothing is trusted or refused here: the chain is judged by
//! [`super::inspect`] like any other), optionally presenting a client certificate, and says
//! whether the server asked for one and accepted it.
//!
//! With TLS 1.3 the server checks the client certificate after the client considers the
//! handshake done, so acceptance is learnt by sending `close_notify` right after it: a server
//! that refused the certificate answers with its alert first (Envoy/BoringSSL:
//! `certificate_required`, `unknown_ca`, ...), one that accepted it closes cleanly.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use std::io::{ErrorKind, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error("{addr}: TLS handshake failed before the server presented a certificate: {message}")]
    NoCertificate { addr: String, message: String },
    #[error("{what}: {message}")]
    ClientCert { what: String, message: String },
}

/// The client certificate to present: the chain (leaf first) and its private key.
pub struct ClientIdentity {
    pub chain: Vec<Vec<u8>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Reads `--client-cert` (PEM chain) and `--client-key` (PEM: PKCS#8, PKCS#1 or SEC1). The
/// key's content never appears in an error.
pub fn load_identity(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<ClientIdentity, ConnectError> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(cert).map_err(|e| ConnectError::ClientCert {
        what: cert.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    let chain = super::inspect::parse_certs(&bytes, &cert.display().to_string()).map_err(|e| {
        ConnectError::ClientCert {
            what: "--client-cert".into(),
            message: e.to_string(),
        }
    })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ConnectError::ClientCert {
        what: key.display().to_string(),
        message: format!("no usable private key ({})", pem_error(&e)),
    })?;
    Ok(ClientIdentity { chain, key })
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::NoItemsFound => "no PRIVATE KEY block".into(),
        E::Io(e) => e.to_string(),
        _ => "malformed PEM".into(),
    }
}

/// What the client side of the handshake saw.
#[derive(Debug, Clone, Serialize)]
pub struct TlsInfo {
    pub address: String,
    /// SNI sent (none for an IP address without `--sni`).
    pub sni: Option<String>,
    pub protocol_version: Option<String>,
    pub cipher_suite: Option<String>,
    pub alpn: Option<String>,
    /// The handshake failed after the server's certificate arrived (e.g. TLS 1.2 and a
    /// refused client certificate).
    pub handshake_error: Option<String>,
    pub client_certificate: ClientAuth,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientAuth {
    /// The server sent a CertificateRequest.
    pub requested: bool,
    /// A certificate was sent in answer.
    pub presented: bool,
    /// `accepted`, `rejected`, `not_requested`, or `unknown` (no answer before the timeout).
    pub result: &'static str,
    /// The alert or error behind `rejected`.
    pub detail: Option<String>,
}

pub struct Presented {
    pub chain: Vec<Vec<u8>>,
    pub tls: TlsInfo,
}

/// Records the server's chain and accepts it (after checking the handshake signature, so the
/// server holds the leaf's key); the judging happens afterwards.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<Vec<u8>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut c) = self.chain.lock() {
            *c = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|d| d.as_ref().to_vec())
                .collect();
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Notes whether the server asked for a client certificate, and answers with ours if any.
#[derive(Debug)]
struct ClientCertRecorder {
    requested: AtomicBool,
    key: Option<Arc<CertifiedKey>>,
}

impl ResolvesClientCert for ClientCertRecorder {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.requested.store(true, Ordering::SeqCst);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

pub fn connect(
    addr: &str,
    sni: Option<&str>,
    alpn: &[String],
    identity: Option<ClientIdentity>,
    timeout: Duration,
) -> Result<Presented, ConnectError> {
    let unreachable = |message: String| ConnectError::Unreachable {
        addr: addr.into(),
        message,
    };
    let (host, _) = addr
        .rsplit_once(':')
        .ok_or_else(|| unreachable("expected HOST:PORT".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = match identity {
        Some(id) => {
            let signing = provider
                .key_provider
                .load_private_key(id.key)
                .map_err(|e| ConnectError::ClientCert {
                    what: "--client-key".into(),
                    message: format!("unusable private key: {e}"),
                })?;
            let chain = id.chain.into_iter().map(CertificateDer::from).collect();
            Some(Arc::new(CertifiedKey::new(chain, signing)))
        }
        None => None,
    };
    let presented_cert = key.is_some();
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        provider: provider.clone(),
    });
    let client_cert = Arc::new(ClientCertRecorder {
        requested: AtomicBool::new(false),
        key,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unreachable(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_client_cert_resolver(client_cert.clone());
    config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let name = sni.unwrap_or(host);
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|e| unreachable(format!("{name:?} is not a valid server name: {e}")))?;
    let sni_sent = match &server_name {
        ServerName::DnsName(d) => Some(d.as_ref().to_string()),
        _ => None,
    };
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name)
        .map_err(|e| unreachable(e.to_string()))?;
    let sock_addr = addr
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| unreachable("resolves to no address".into()))?;
    let mut sock = TcpStream::connect_timeout(&sock_addr, timeout)
        .map_err(|e| unreachable(format!("cannot connect: {e}")))?;
    sock.set_read_timeout(Some(timeout))
        .and_then(|()| sock.set_write_timeout(Some(timeout)))
        .map_err(|e| unreachable(e.to_string()))?;

    let mut handshake_error = None;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            handshake_error = Some(io_reason(&e));
            break;
        }
    }
    let chain = recorder.chain.lock().map(|c| c.clone()).unwrap_or_default();
    if chain.is_empty() {
        return Err(ConnectError::NoCertificate {
            addr: addr.into(),
            message: handshake_error.unwrap_or_else(|| "no certificate received".into()),
        });
    }
    let requested = client_cert.requested.load(Ordering::SeqCst);
    let (result, detail) = match (&handshake_error, requested) {
        (Some(e), true) => ("rejected", Some(e.clone())),
        (Some(_), false) => ("unknown", None),
        (None, false) => ("not_requested", None),
        (None, true) => probe(&mut conn, &mut sock),
    };
    let tls = TlsInfo {
        address: addr.into(),
        sni: sni_sent,
        protocol_version: conn.protocol_version().map(|v| format!("{v:?}")),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite())),
        alpn: conn
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned()),
        handshake_error,
        client_certificate: ClientAuth {
            requested,
            presented: requested && presented_cert,
            result,
            detail,
        },
    };
    Ok(Presented { chain, tls })
}

/// After a completed handshake in which a client certificate was asked for: close, and see
/// whether the server's answer is an alert (refused) or a clean close (accepted).
fn probe(
    conn: &mut rustls::ClientConnection,
    sock: &mut TcpStream,
) -> (&'static str, Option<String>) {
    conn.send_close_notify();
    while conn.wants_write() {
        if let Err(e) = conn.write_tls(sock) {
            return ("unknown", Some(format!("sending close_notify: {e}")));
        }
    }
    let mut plain = [0u8; 4096];
    loop {
        match conn.read_tls(sock) {
            Ok(0) => return ("accepted", None),
            Ok(_) => match conn.process_new_packets() {
                Err(e) => return ("rejected", Some(e.to_string())),
                Ok(state) => {
                    if state.peer_has_closed() {
                        return ("accepted", None);
                    }
                    // Application data (a server speaking first): drain and keep reading.
                    while conn.reader().read(&mut plain).is_ok_and(|n| n > 0) {}
                }
            },
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (
                    "unknown",
                    Some("no answer to close_notify before --timeout".into()),
                )
            }
            // A reset right after the handshake: the server dropped the connection without an
            // alert, which servers do when they refuse the certificate.
            Err(e) => return ("rejected", Some(e.to_string())),
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}
