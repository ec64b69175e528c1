//! TLS client configurations for tests and tools: verifying Envoy against the test mesh root
//! (the runner), or accepting any server certificate (SPIFFE workload certificates carry no
//! DNS name; those tests check what Envoy verifies about the *client*). Explicit `ring`
//! provider: independent of which crypto features other crates enable.

use crate::pki::Issued;
use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Presents `cert`, verifies the server against `mesh_root` (name [`crate::pki::SERVER_NAME`]).
pub fn mesh_client_config(
    cert: &Issued,
    mesh_root: &CertificateDer<'static>,
    alpn: Vec<Vec<u8>>,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(mesh_root.clone()).context("mesh root")?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert.cert_der.clone()], cert.private_key())
        .context("client certificate")?;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// Presents `cert` (or no certificate), accepts any server certificate.
pub fn any_server_client_config(
    cert: Option<&Issued>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let p = provider();
    let b = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(p)));
    let config = match cert {
        Some(c) => b
            .with_client_auth_cert(vec![c.cert_der.clone()], c.private_key())
            .context("client certificate")?,
        None => b.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A blocking TLS stream to `addr` (the handshake completes on first use).
pub fn connect_blocking(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    server_name: &str,
    timeout: Duration,
) -> anyhow::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_read_timeout(Some(timeout))?;
    let name = ServerName::try_from(server_name.to_string())
        .with_context(|| format!("server name {server_name:?}"))?;
    let conn = rustls::ClientConnection::new(config.clone(), name).context("TLS client")?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
