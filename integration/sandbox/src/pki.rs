//! The sandbox's mesh CA and one workload certificate per service account, written as
//! PEM files that the Envoy configs reference. (`peerguard serve` would deliver them over
//! SDS; see the sandbox README for why the sandbox writes files today.)

use anyhow::Context as _;
use peerguard_harness::pki::{CaChoice, ClientCertSpec, TestPki};
use std::path::{Path, PathBuf};

/// `certs/ca.pem` and `certs/<ns>-<sa>/{cert,key}.pem`.
pub fn cert_dir(state: &Path, namespace: &str, sa: &str) -> PathBuf {
    state.join("certs").join(format!("{namespace}-{sa}"))
}

pub fn ca_path(state: &Path) -> PathBuf {
    state.join("certs").join("ca.pem")
}

/// Creates the CA and a certificate for each `(namespace, service account, spiffe uri)`,
/// with the same PKI code as `peerguard test --envoy`.
pub fn generate(state: &Path, identities: &[(String, String, String)]) -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    write(&ca_path(state), pki.mesh_root_pem())?;
    for (ns, sa, uri) in identities {
        let spec = ClientCertSpec {
            uri_sans: vec![uri.clone()],
            ca: CaChoice::Mesh,
            expired: false,
        };
        let cert = pki
            .client(&spec)
            .with_context(|| format!("certificate for {uri}"))?;
        let dir = cert_dir(state, ns, sa);
        write(&dir.join("cert.pem"), &cert.cert_pem)?;
        write(&dir.join("key.pem"), &cert.key_pem)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
