//! Where `peerguard certs` gets certificates from, other than a live handshake
//! ([`super::connect`]): a Kubernetes Secret (from the cluster or a manifest file) and the
//! ops endpoints of `peerguard serve` (`/certs/<ns>/<name>`, `/trust-bundle`).

use super::inspect::{parse_certs, InspectError};
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{what}: {message}")]
    Secret { what: String, message: String },
    #[error(transparent)]
    Certs(#[from] InspectError),
    #[error("server {server}: {message}")]
    Server { server: String, message: String },
    #[error("{0}")]
    Kube(String),
}

/// Keys of a Secret holding the certificate chain (leaf first), in the order they are tried:
/// a `kubernetes.io/tls` Secret, Istio's `istio.<sa>`/plugged-in secrets.
pub const CHAIN_KEYS: [&str; 2] = ["tls.crt", "cert-chain.pem"];
/// Keys holding the roots that issued it.
pub const BUNDLE_KEYS: [&str; 2] = ["ca.crt", "root-cert.pem"];

/// What a Secret carries: the chain, and the roots if it has them. Private keys (`tls.key`,
/// `key.pem`) are never read.
#[derive(Debug)]
pub struct SecretCerts {
    pub chain_key: &'static str,
    pub chain: Vec<Vec<u8>>,
    pub bundle: Option<(&'static str, Vec<Vec<u8>>)>,
}

pub fn secret_certs(secret: &Secret, what: &str) -> Result<SecretCerts, FetchError> {
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    // `stringData` wins over `data`, as the API server merges them.
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    let Some((chain_key, bytes)) = CHAIN_KEYS
        .iter()
        .find_map(|k| data.get(*k).map(|b| (*k, b)))
    else {
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        return Err(FetchError::Secret {
            what: what.into(),
            message: format!(
                "no {} key (keys: {})",
                CHAIN_KEYS.join(" or "),
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            ),
        });
    };
    let chain = parse_certs(bytes, &format!("{what} key {chain_key}"))?;
    let bundle = match BUNDLE_KEYS
        .iter()
        .find_map(|k| data.get(*k).map(|b| (*k, b)))
    {
        Some((k, b)) => Some((k, parse_certs(b, &format!("{what} key {k}"))?)),
        None => None,
    };
    Ok(SecretCerts {
        chain_key,
        chain,
        bundle,
    })
}

/// A Secret manifest (YAML or JSON, as `kubectl get secret -o yaml` prints it).
pub fn secret_from_file(path: &std::path::Path) -> Result<(Secret, String), FetchError> {
    let what = path.display().to_string();
    let err = |message: String| FetchError::Secret {
        what: what.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let secret: Secret =
        serde_saphyr::from_str(&text).map_err(|e| err(format!("not a Secret manifest: {e}")))?;
    let name = format!(
        "Secret {}/{}",
        secret.metadata.namespace.as_deref().unwrap_or("default"),
        secret.metadata.name.as_deref().unwrap_or("?")
    );
    Ok((secret, format!("{what} ({name})")))
}

/// `namespace/name` from the cluster.
pub fn secret_from_cluster(
    kubeconfig: Option<&std::path::Path>,
    namespace: &str,
    name: &str,
) -> Result<Secret, FetchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FetchError::Kube(format!("starting the tokio runtime: {e}")))?;
    rt.block_on(async {
        let client = crate::source::kube::client(kubeconfig)
            .await
            .map_err(|e| FetchError::Kube(e.to_string()))?;
        let api: kube::Api<Secret> = kube::Api::namespaced(client, namespace);
        api.get(name).await.map_err(|e| FetchError::Secret {
            what: format!("Secret {namespace}/{name}"),
            message: e.to_string(),
        })
    })
}

/// `host:port` of an ops address given as `http://host:port[/]` or `host:port`.
pub fn ops_address(server: &str) -> Result<String, FetchError> {
    let bad = |m: &str| FetchError::Server {
        server: server.into(),
        message: m.into(),
    };
    if server.starts_with("https://") {
        return Err(bad(
            "the ops server speaks plain HTTP: use http://HOST:PORT",
        ));
    }
    let rest = server.strip_prefix("http://").unwrap_or(server);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(bad(
            "expected the ops address of `peerguard serve` (--http-listen), HOST:PORT or http://HOST:PORT",
        ));
    }
    Ok(rest.to_string())
}

/// `GET path` on the ops server: `(status, body)`.
pub fn ops_get(server: &str, path: &str, timeout: Duration) -> Result<(u16, String), FetchError> {
    let addr = ops_address(server)?;
    let err = |message: String| FetchError::Server {
        server: server.into(),
        message,
    };
    let sock_addr = addr
        .to_socket_addrs()
        .map_err(|e| err(format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| err("resolves to no address".into()))?;
    let mut sock = TcpStream::connect_timeout(&sock_addr, timeout)
        .map_err(|e| err(format!("cannot connect: {e}")))?;
    sock.set_read_timeout(Some(timeout))
        .and_then(|()| sock.set_write_timeout(Some(timeout)))
        .map_err(|e| err(e.to_string()))?;
    sock.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| err(format!("GET {path}: {e}")))?;
    let mut raw = Vec::new();
    // The ops server answers small bodies and closes the connection.
    sock.take(16 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| err(format!("GET {path}: {e}")))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| err(format!("GET {path}: not an HTTP response")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err(format!("GET {path}: no status in the response")))?;
    Ok((status, body.to_string()))
}

/// The chain `serve` currently issues to `namespace/name`.
pub fn workload_chain(
    server: &str,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, FetchError> {
    let path = format!("/certs/{namespace}/{name}");
    match ops_get(server, &path, timeout)? {
        (200, body) => Ok(parse_certs(body.as_bytes(), &format!("{server}{path}"))?),
        (404, body) if body.starts_with("no certificate") => Err(FetchError::Server {
            server: server.into(),
            message: format!(
                "no certificate issued to workload {namespace}/{name} (not in the registry, or the server cannot issue: see its log)"
            ),
        }),
        (status, body) => Err(FetchError::Server {
            server: server.into(),
            message: format!(
                "GET {path}: HTTP {status}: {} (is this the ops address, --http-listen, of a peerguard serve with certificate endpoints?)",
                body.trim()
            ),
        }),
    }
}

/// The roots `serve` distributes (SDS `ROOTCA`).
pub fn server_bundle(server: &str, timeout: Duration) -> Result<Vec<Vec<u8>>, FetchError> {
    match ops_get(server, "/trust-bundle", timeout)? {
        (200, body) => Ok(parse_certs(
            body.as_bytes(),
            &format!("{server}/trust-bundle"),
        )?),
        (status, body) => Err(FetchError::Server {
            server: server.into(),
            message: format!("GET /trust-bundle: HTTP {status}: {}", body.trim()),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn cert_pem(cn: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![format!("{cn}.example")]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.self_signed(&key).unwrap().pem()
    }

    fn b64(s: &str) -> String {
        // The manifest form: data values are base64 (k8s-openapi decodes them).
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = s.as_bytes();
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn a_tls_secret_manifest_gives_chain_and_bundle_and_never_the_key() {
        let dir = std::env::temp_dir().join(format!("pg-certs-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (leaf, ca) = (cert_pem("leaf"), cert_pem("root"));
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: web, namespace: foo}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n  ca.crt: {}\n",
            b64(&leaf),
            b64("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"),
            b64(&ca)
        );
        let path = dir.join("s.yaml");
        std::fs::write(&path, yaml).unwrap();
        let (secret, what) = secret_from_file(&path).unwrap();
        assert!(what.contains("Secret foo/web"), "{what}");
        let c = secret_certs(&secret, &what).unwrap();
        assert_eq!(c.chain_key, "tls.crt");
        assert_eq!(c.chain.len(), 1);
        let (k, b) = c.bundle.unwrap();
        assert_eq!((k, b.len()), ("ca.crt", 1));
        // Istio's keys, from stringData.
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: istio.default, namespace: foo}}\nstringData:\n  cert-chain.pem: |\n{}  root-cert.pem: |\n{}",
            leaf.lines().map(|l| format!("    {l}\n")).collect::<String>(),
            ca.lines().map(|l| format!("    {l}\n")).collect::<String>()
        );
        std::fs::write(&path, yaml).unwrap();
        let (secret, what) = secret_from_file(&path).unwrap();
        let c = secret_certs(&secret, &what).unwrap();
        assert_eq!(c.chain_key, "cert-chain.pem");
        assert_eq!(c.bundle.unwrap().0, "root-cert.pem");
        // Neither key: the error names the keys found.
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: x}}\ndata: {{ca.crt: {}}}\n",
                b64(&ca)
            ),
        )
        .unwrap();
        let (secret, what) = secret_from_file(&path).unwrap();
        let e = secret_certs(&secret, &what).unwrap_err().to_string();
        assert!(
            e.contains("no tls.crt or cert-chain.pem key (keys: ca.crt)"),
            "{e}"
        );
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        )
        .unwrap();
        assert!(secret_from_file(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ops_addresses() {
        assert_eq!(
            ops_address("http://127.0.0.2:15014/").unwrap(),
            "127.0.0.2:15014"
        );
        assert_eq!(ops_address("localhost:15014").unwrap(), "localhost:15014");
        assert!(ops_address("https://x:1").is_err());
        assert!(ops_address("x").is_err());
        assert!(ops_address("http://x:1/certs").is_err());
    }
}
