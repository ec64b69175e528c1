//! Envoy `Node` → the workload it runs as, and the bootstrap-token check.
//!
//! A node names itself by `node.id = "<namespace>/<name>"`, or by node metadata
//! `NAMESPACE` + `WORKLOAD_NAME`; an Istio proxy in Kubernetes names its pod by metadata
//! `NAMESPACE` + `NAME` and by the node id `sidecar~<ip>~<pod>.<namespace>~<domain>`, which the
//! Kubernetes source's registry (keyed by pod) resolves. Naming is a claim, not a proof: secrets are
//! only served when the stream carries the workload's bootstrap token in the gRPC header
//! [`TOKEN_HEADER`] (Envoy's `GrpcService.initial_metadata`). Tokens are
//! `hex(HMAC-SHA256(server secret, "peerguard-token/v1:<ns>/<name>"))`, so the server needs no
//! token database and a token cannot be moved to another workload.

use crate::registry::{Registry, WorkloadEntry, WorkloadKey};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const TOKEN_HEADER: &str = "x-peerguard-token";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("the request carries no node: Envoy sends one on the first request of a stream")]
    Missing,
    #[error("node id {0:?} is not `<namespace>/<name>` and node metadata has no NAMESPACE and WORKLOAD_NAME")]
    Unnamed(String),
    #[error(
        "unknown node {0}: no `Workload` {0} in the registry (add one to the config directory)"
    )]
    Unknown(WorkloadKey),
    #[error("node {key}: metadata SERVICE_ACCOUNT {claimed:?} differs from the registry's {registered:?}")]
    ServiceAccountMismatch {
        key: WorkloadKey,
        claimed: String,
        registered: String,
    },
}

fn meta_str(node: &Node, key: &str) -> Option<String> {
    let fields = &node.metadata.as_ref()?.fields;
    match fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Which workload the node says it is (the first of [`node_keys`]).
pub fn node_key(node: Option<&Node>) -> Result<WorkloadKey, NodeError> {
    node_keys(node)?
        .into_iter()
        .next()
        .ok_or_else(|| NodeError::Unnamed(node.map(|n| n.id.clone()).unwrap_or_default()))
}

/// Every name the node gives itself, the pod first: Istio's proxies send the pod (`NAME`,
/// and the `sidecar~ip~pod.ns~…` id) as well as the workload (`WORKLOAD_NAME`, the
/// Deployment), and a pod named like another pod's Deployment must not get that pod's policy.
pub fn node_keys(node: Option<&Node>) -> Result<Vec<WorkloadKey>, NodeError> {
    let node = node.ok_or(NodeError::Missing)?;
    let mut keys = Vec::new();
    let namespace = meta_str(node, "NAMESPACE");
    if let (Some(namespace), Some(name)) = (&namespace, meta_str(node, "NAME")) {
        keys.push(WorkloadKey {
            namespace: namespace.clone(),
            name,
        });
    }
    if let Some(key) = sidecar_id(&node.id) {
        keys.push(key);
    }
    if let (Some(namespace), Some(name)) = (namespace, meta_str(node, "WORKLOAD_NAME")) {
        keys.push(WorkloadKey { namespace, name });
    }
    match node.id.split_once('/') {
        Some((ns, name))
            if !ns.is_empty()
                && !name.is_empty()
                && !name.contains('/')
                && !node.id.contains('~') =>
        {
            keys.push(WorkloadKey {
                namespace: ns.into(),
                name: name.into(),
            })
        }
        _ => {}
    }
    if keys.is_empty() {
        return Err(NodeError::Unnamed(node.id.clone()));
    }
    keys.dedup();
    Ok(keys)
}

/// `sidecar~10.0.0.5~httpbin-7d9f.foo~foo.svc.cluster.local` → `foo/httpbin-7d9f` (Istio's
/// `<type>~<ip>~<pod>.<namespace>~<domain>`; pod names have no dots, so the last dot splits).
fn sidecar_id(id: &str) -> Option<WorkloadKey> {
    let mut parts = id.split('~');
    let (kind, _ip, pod_ns, _domain) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !matches!(kind, "sidecar" | "router") {
        return None;
    }
    let (name, namespace) = pod_ns.rsplit_once('.')?;
    (!name.is_empty() && !namespace.is_empty()).then(|| WorkloadKey {
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// Resolve the node against the registry: the first of its names that is registered.
pub fn resolve<'r>(
    node: Option<&Node>,
    registry: &'r Registry,
) -> Result<&'r WorkloadEntry, NodeError> {
    let keys = node_keys(node)?;
    let entry = match (keys.iter().find_map(|k| registry.get(k)), keys.first()) {
        (Some(entry), _) => entry,
        (None, Some(first)) => return Err(NodeError::Unknown(first.clone())),
        (None, None) => {
            return Err(NodeError::Unnamed(
                node.map(|n| n.id.clone()).unwrap_or_default(),
            ))
        }
    };
    let key = entry.key.clone();
    if let Some(claimed) = node.and_then(|n| meta_str(n, "SERVICE_ACCOUNT")) {
        if claimed != entry.spec.service_account {
            return Err(NodeError::ServiceAccountMismatch {
                key,
                claimed,
                registered: entry.spec.service_account.clone(),
            });
        }
    }
    Ok(entry)
}

/// Issues and checks bootstrap tokens.
#[derive(Clone)]
pub struct TokenAuth {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenAuth(..)")
    }
}

impl TokenAuth {
    pub fn new(secret: Vec<u8>) -> Self {
        TokenAuth { secret }
    }

    fn mac(&self, key: &WorkloadKey) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).ok()?;
        mac.update(format!("peerguard-token/v1:{key}").as_bytes());
        Some(mac)
    }

    pub fn token(&self, key: &WorkloadKey) -> String {
        self.mac(key)
            .map(|m| hex(&m.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// Constant-time check.
    pub fn verify(&self, key: &WorkloadKey, token: &str) -> bool {
        let Some(bytes) = unhex(token.trim()) else {
            return false;
        };
        self.mac(key)
            .map(|m| m.verify_slice(&bytes).is_ok())
            .unwrap_or(false)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    fn key(ns: &str, n: &str) -> WorkloadKey {
        WorkloadKey {
            namespace: ns.into(),
            name: n.into(),
        }
    }

    #[test]
    fn node_id_or_metadata() {
        let n = Node {
            id: "foo/httpbin".into(),
            ..Default::default()
        };
        assert_eq!(node_key(Some(&n)), Ok(key("foo", "httpbin")));
        let mut meta = Struct::default();
        for (k, v) in [("NAMESPACE", "bar"), ("WORKLOAD_NAME", "sleep")] {
            meta.fields.insert(
                k.into(),
                Value {
                    kind: Some(Kind::StringValue(v.into())),
                },
            );
        }
        let n = Node {
            id: "sidecar~10.0.0.1~x~y".into(),
            metadata: Some(meta),
            ..Default::default()
        };
        assert_eq!(node_key(Some(&n)), Ok(key("bar", "sleep")));
        // Istio's proxy in Kubernetes: the pod comes first, from metadata NAME or the id.
        let mut meta = Struct::default();
        for (k, v) in [
            ("NAMESPACE", "foo"),
            ("NAME", "httpbin-7d9f"),
            ("WORKLOAD_NAME", "httpbin"),
        ] {
            meta.fields.insert(
                k.into(),
                Value {
                    kind: Some(Kind::StringValue(v.into())),
                },
            );
        }
        let n = Node {
            id: "sidecar~10.0.0.5~httpbin-7d9f.foo~foo.svc.cluster.local".into(),
            metadata: Some(meta),
            ..Default::default()
        };
        assert_eq!(
            node_keys(Some(&n)),
            Ok(vec![key("foo", "httpbin-7d9f"), key("foo", "httpbin")])
        );
        let n = Node {
            id: "sidecar~10.0.0.5~sleep-1.bar~bar.svc.cluster.local".into(),
            ..Default::default()
        };
        assert_eq!(node_key(Some(&n)), Ok(key("bar", "sleep-1")));
        for bad in [
            "sidecar~10.0.0.5~nodots~x",
            "sidecar~1~a.b",
            "other~1~a.b~d",
            "sidecar~1~.b~d",
        ] {
            let n = Node {
                id: bad.into(),
                ..Default::default()
            };
            assert!(
                matches!(node_key(Some(&n)), Err(NodeError::Unnamed(_))),
                "{bad}"
            );
        }
        let n = Node {
            id: "justname".into(),
            ..Default::default()
        };
        assert!(matches!(node_key(Some(&n)), Err(NodeError::Unnamed(_))));
        assert_eq!(node_key(None), Err(NodeError::Missing));
    }

    #[test]
    fn unknown_node_is_a_clear_error() {
        let n = Node {
            id: "foo/ghost".into(),
            ..Default::default()
        };
        let err = resolve(Some(&n), &Registry::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown node foo/ghost"), "{err}");
    }

    #[test]
    fn tokens_are_bound_to_the_workload() {
        let a = TokenAuth::new(b"secret-1".to_vec());
        let b = TokenAuth::new(b"secret-2".to_vec());
        let t = a.token(&key("foo", "a"));
        assert_eq!(t.len(), 64);
        assert!(a.verify(&key("foo", "a"), &t));
        assert!(!a.verify(&key("foo", "b"), &t));
        assert!(!b.verify(&key("foo", "a"), &t));
        assert!(!a.verify(&key("foo", "a"), ""));
        assert!(!a.verify(&key("foo", "a"), "zz"));
    }
}
