//! Per-node snapshots: resource name → `{version, Any}`, per type URL, and the store that
//! publishes them to the xDS streams (one `watch` channel per node, so a change reaches only
//! the nodes whose resources changed). Pure data: no tonic here.

use crate::ca::IssuedCert;
use crate::registry::WorkloadKey;
use envoy_types::pb::envoy::config::core::v3::{
    async_data_source, data_source, AsyncDataSource, DataSource, TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::extensions::wasm::v3::{
    plugin_config, FailurePolicy, PluginConfig, VmConfig,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Any, ListValue, StringValue, Struct, Value as ProtoValue};
use envoy_types::util::pack_any;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

pub const ECDS_TYPE: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// Names shared with the listeners that load these resources (one vocabulary).
pub use crate::envoy_config::listener::{HTTP_FILTER, SECRET_CERT, SECRET_ROOT, TCP_FILTER};
pub use crate::envoy_config::{
    HTTP_ROOT_ID, HTTP_WASM_TYPE, NETWORK_WASM_TYPE, TCP_ROOT_ID, V8_RUNTIME, VM_ID,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    /// Short content hash: identical content has the same version across server restarts.
    pub version: String,
    pub any: Any,
}

impl Versioned {
    pub fn new(any: Any) -> Self {
        let mut h = Sha256::new();
        h.update(any.type_url.as_bytes());
        h.update([0]);
        h.update(&any.value);
        let digest = h.finalize();
        Versioned {
            version: crate::node::hex(&digest[..8]),
            any,
        }
    }
}

/// Everything one node may receive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSnapshot {
    pub by_type: BTreeMap<String, BTreeMap<String, Versioned>>,
}

impl NodeSnapshot {
    pub fn insert(&mut self, name: &str, any: Any) {
        let type_url = if any.type_url == SECRET_TYPE {
            SECRET_TYPE
        } else {
            ECDS_TYPE
        };
        self.by_type
            .entry(type_url.to_string())
            .or_default()
            .insert(name.to_string(), Versioned::new(any));
    }
}

fn plugin(name: &str, root_id: &str, wasm_path: &str, policy_json: &str) -> PluginConfig {
    PluginConfig {
        name: name.to_string(),
        root_id: root_id.to_string(),
        vm: Some(plugin_config::Vm::VmConfig(VmConfig {
            // One VM for both roles: same code, same vm_id.
            vm_id: VM_ID.to_string(),
            runtime: V8_RUNTIME.to_string(),
            code: Some(AsyncDataSource {
                specifier: Some(async_data_source::Specifier::Local(DataSource {
                    specifier: Some(data_source::Specifier::Filename(wasm_path.to_string())),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        configuration: Some(pack_any(StringValue {
            value: policy_json.to_string(),
        })),
        failure_policy: FailurePolicy::FailClosed as i32,
        ..Default::default()
    }
}

/// The ECDS resource of the HTTP filter.
pub fn http_filter(wasm_path: &str, policy_json: &str) -> Any {
    use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
    let wasm = Wasm {
        config: Some(plugin(HTTP_FILTER, HTTP_ROOT_ID, wasm_path, policy_json)),
    };
    pack_any(TypedExtensionConfig {
        name: HTTP_FILTER.to_string(),
        typed_config: Some(pack_any(wasm)),
    })
}

/// The ECDS resource of the network filter.
pub fn tcp_filter(wasm_path: &str, policy_json: &str) -> Any {
    use envoy_types::pb::envoy::extensions::filters::network::wasm::v3::Wasm;
    let wasm = Wasm {
        config: Some(plugin(TCP_FILTER, TCP_ROOT_ID, wasm_path, policy_json)),
    };
    pack_any(TypedExtensionConfig {
        name: TCP_FILTER.to_string(),
        typed_config: Some(pack_any(wasm)),
    })
}

/// `xds.type.v3.TypedStruct`: a filter configuration as JSON (a `google.protobuf.Struct`)
/// with the type it converts to. Envoy accepts it wherever it takes a typed extension
/// config, ECDS included (the slot checks the inner `type_url` against its `type_urls`).
/// envoy-types has no serde, and the native RBAC form is built as JSON
/// ([`crate::envoy_config::rbac`]): this carries it without a second, protobuf, builder.
#[derive(Clone, PartialEq, prost::Message)]
struct TypedStruct {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Struct>,
}

impl prost::Name for TypedStruct {
    const NAME: &'static str = "TypedStruct";
    const PACKAGE: &'static str = "xds.type.v3";
    fn full_name() -> String {
        "xds.type.v3.TypedStruct".into()
    }
    fn type_url() -> String {
        "type.googleapis.com/xds.type.v3.TypedStruct".into()
    }
}

/// The ECDS resource `name` holding a native filter: its `typed_config` JSON (with `@type`),
/// e.g. an RBAC filter from [`crate::enforcement`].
pub fn native_filter(name: &str, typed_config: &serde_json::Value) -> Any {
    let mut fields = match typed_config {
        serde_json::Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    let type_url = match fields.remove("@type") {
        Some(serde_json::Value::String(t)) => t,
        _ => String::new(),
    };
    pack_any(TypedExtensionConfig {
        name: name.to_string(),
        typed_config: Some(pack_any(TypedStruct {
            type_url,
            value: Some(to_struct(fields)),
        })),
    })
}

fn to_struct(fields: serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: fields.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(v: serde_json::Value) -> ProtoValue {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s),
        J::Array(a) => Kind::ListValue(ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        J::Object(m) => Kind::StructValue(to_struct(m)),
    };
    ProtoValue { kind: Some(kind) }
}

fn inline(s: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.to_string())),
        ..Default::default()
    })
}

pub fn cert_secret(cert: &IssuedCert) -> Any {
    pack_any(Secret {
        name: SECRET_CERT.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(&cert.chain_pem),
            private_key: inline(&cert.key_pem),
            ..Default::default()
        })),
    })
}

pub fn root_secret(bundle_pem: &str) -> Any {
    pack_any(Secret {
        name: SECRET_ROOT.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(bundle_pem),
                ..Default::default()
            },
        )),
    })
}

/// The published snapshots, one channel per known node.
#[derive(Default)]
pub struct Store {
    nodes: Mutex<BTreeMap<WorkloadKey, watch::Sender<Arc<NodeSnapshot>>>>,
}

impl Store {
    /// Publishes `snap` for `key`; returns whether anything changed (subscribers are only
    /// woken then).
    pub fn publish(&self, key: &WorkloadKey, snap: NodeSnapshot) -> bool {
        let Ok(mut nodes) = self.nodes.lock() else {
            return false;
        };
        match nodes.get(key) {
            Some(tx) => tx.send_if_modified(|cur| {
                if **cur == snap {
                    false
                } else {
                    *cur = Arc::new(snap);
                    true
                }
            }),
            None => {
                let (tx, _) = watch::channel(Arc::new(snap));
                nodes.insert(key.clone(), tx);
                true
            }
        }
    }

    /// Drops nodes not in `keep`; their streams see the channel close and end.
    pub fn retain(&self, keep: &std::collections::BTreeSet<WorkloadKey>) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.retain(|k, _| keep.contains(k));
        }
    }

    /// What is published for `key` now.
    pub fn current(&self, key: &WorkloadKey) -> Option<Arc<NodeSnapshot>> {
        self.nodes
            .lock()
            .ok()?
            .get(key)
            .map(|tx| tx.borrow().clone())
    }

    pub fn subscribe(&self, key: &WorkloadKey) -> Option<watch::Receiver<Arc<NodeSnapshot>>> {
        self.nodes.lock().ok()?.get(key).map(|tx| tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn versions_are_content_hashes() {
        let a = Versioned::new(http_filter("/x.wasm", "{}"));
        let b = Versioned::new(http_filter("/x.wasm", "{}"));
        let c = Versioned::new(http_filter("/x.wasm", "{\"a\":1}"));
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert_eq!(a.version.len(), 16);
    }

    #[test]
    fn ecds_resource_shape() {
        let any = tcp_filter("/m.wasm", "{\"schema\":1}");
        assert_eq!(any.type_url, ECDS_TYPE);
        let tec = TypedExtensionConfig::decode(any.value.as_slice()).unwrap();
        assert_eq!(tec.name, TCP_FILTER);
        let inner = tec.typed_config.unwrap();
        assert_eq!(inner.type_url, NETWORK_WASM_TYPE);
        let w = envoy_types::pb::envoy::extensions::filters::network::wasm::v3::Wasm::decode(
            inner.value.as_slice(),
        )
        .unwrap();
        let pc = w.config.unwrap();
        assert_eq!(pc.root_id, TCP_ROOT_ID);
        assert_eq!(pc.failure_policy, FailurePolicy::FailClosed as i32);
        let cfg = StringValue::decode(pc.configuration.unwrap().value.as_slice()).unwrap();
        assert_eq!(cfg.value, "{\"schema\":1}");
    }

    #[test]
    fn publish_only_wakes_on_change() {
        let store = Store::default();
        let k = WorkloadKey {
            namespace: "a".into(),
            name: "b".into(),
        };
        let mut s = NodeSnapshot::default();
        s.insert(HTTP_FILTER, http_filter("/x", "{}"));
        assert!(store.publish(&k, s.clone()));
        let mut rx = store.subscribe(&k).unwrap();
        rx.mark_unchanged();
        assert!(!store.publish(&k, s.clone()));
        assert!(!rx.has_changed().unwrap());
        s.insert(HTTP_FILTER, http_filter("/x", "{\"x\":1}"));
        assert!(store.publish(&k, s));
        assert!(rx.has_changed().unwrap());
        store.retain(&Default::default());
        assert!(rx.has_changed().is_err());
    }
}
