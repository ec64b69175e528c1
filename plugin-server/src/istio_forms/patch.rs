//! The EnvoyFilter patch semantics peerguard's EnvoyFilter uses, as Istio applies them
//! (`pilot/pkg/networking/core/envoyfilter`), over an Envoy configuration in JSON (a sidecar's
//! listeners and clusters as a config dump shows them). The tests apply the rendered
//! EnvoyFilter to a recorded Istio inbound listener with this and load the result into real
//! Envoy.
//!
//! Supported: `CLUSTER` `ADD`; `NETWORK_FILTER` and `HTTP_FILTER` with `INSERT_BEFORE`,
//! `INSERT_AFTER`, `INSERT_FIRST`, `ADD` (append), `MERGE` and `REMOVE`; matches on `context`
//! (`SIDECAR_INBOUND`: listeners with `traffic_direction: INBOUND`, `SIDECAR_OUTBOUND`: the
//! others, `ANY`), `listener.name`, `listener.portNumber` (for inbound: the chain's
//! `destination_port`, as Istio matches `virtualInbound`), `listener.filterChain.name`,
//! `.transportProtocol`, `.destinationPort`, `.filter.name` and `.filter.subFilter.name`.
//! Anything else is refused, never ignored.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("configPatches[{index}]: {field}: {message}")]
    Unsupported {
        index: usize,
        field: String,
        message: String,
    },
}

/// A sidecar's dynamic configuration: its listeners and clusters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub listeners: Vec<Value>,
    pub clusters: Vec<Value>,
}

fn unsupported(index: usize, field: &str, message: impl Into<String>) -> PatchError {
    PatchError::Unsupported {
        index,
        field: field.into(),
        message: message.into(),
    }
}

const KNOWN_LISTENER_MATCH: [&str; 3] = ["name", "portNumber", "filterChain"];
const KNOWN_CHAIN_MATCH: [&str; 4] = ["name", "transportProtocol", "destinationPort", "filter"];

/// Applies every patch of an EnvoyFilter's `spec.configPatches`; returns, per patch, how many
/// places it changed.
pub fn apply(config: &mut Config, patches: &[Value]) -> Result<Vec<usize>, PatchError> {
    patches
        .iter()
        .enumerate()
        .map(|(i, p)| apply_one(config, i, p))
        .collect()
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn apply_one(config: &mut Config, i: usize, p: &Value) -> Result<usize, PatchError> {
    let apply_to = str_at(p, "/applyTo").unwrap_or_default();
    let op = str_at(p, "/patch/operation").unwrap_or_default();
    let value = p.pointer("/patch/value").cloned().unwrap_or(Value::Null);
    let m = p.get("match").cloned().unwrap_or(Value::Null);
    let context = str_at(&m, "/context").unwrap_or("ANY");
    if !matches!(context, "ANY" | "SIDECAR_INBOUND" | "SIDECAR_OUTBOUND") {
        return Err(unsupported(i, "match.context", format!("{context:?}")));
    }
    match apply_to {
        "CLUSTER" => {
            if op != "ADD" {
                return Err(unsupported(
                    i,
                    "patch.operation",
                    format!("{op:?} on CLUSTER"),
                ));
            }
            if m.get("cluster").is_some() {
                return Err(unsupported(i, "match.cluster", "not supported with ADD"));
            }
            config.clusters.push(value);
            Ok(1)
        }
        "NETWORK_FILTER" | "HTTP_FILTER" => {
            let http = apply_to == "HTTP_FILTER";
            let lm = m.get("listener").cloned().unwrap_or(Value::Null);
            if let Some(o) = lm.as_object() {
                if let Some(k) = o
                    .keys()
                    .find(|k| !KNOWN_LISTENER_MATCH.contains(&k.as_str()))
                {
                    return Err(unsupported(
                        i,
                        &format!("match.listener.{k}"),
                        "not supported",
                    ));
                }
            }
            let cm = lm.get("filterChain").cloned().unwrap_or(Value::Null);
            if let Some(o) = cm.as_object() {
                if let Some(k) = o.keys().find(|k| !KNOWN_CHAIN_MATCH.contains(&k.as_str())) {
                    return Err(unsupported(
                        i,
                        &format!("match.listener.filterChain.{k}"),
                        "not supported",
                    ));
                }
            }
            let filter_name = str_at(&cm, "/filter/name");
            let sub_name = str_at(&cm, "/filter/subFilter/name");
            if http && filter_name != Some(crate::envoy_config::istio::HCM) {
                return Err(unsupported(
                    i,
                    "match.listener.filterChain.filter.name",
                    "HTTP_FILTER needs the connection manager",
                ));
            }
            let mut count = 0;
            for l in &mut config.listeners {
                let inbound = str_at(l, "/traffic_direction") == Some("INBOUND");
                let ctx_ok = match context {
                    "SIDECAR_INBOUND" => inbound,
                    "SIDECAR_OUTBOUND" => !inbound,
                    _ => true,
                };
                if !ctx_ok {
                    continue;
                }
                if let Some(n) = str_at(&lm, "/name") {
                    if str_at(l, "/name") != Some(n) {
                        continue;
                    }
                }
                let listener_port = l
                    .pointer("/address/socket_address/port_value")
                    .and_then(Value::as_u64);
                let Some(chains) = l.get_mut("filter_chains").and_then(Value::as_array_mut) else {
                    continue;
                };
                for chain in chains.iter_mut() {
                    if !chain_matches(chain, &lm, &cm, inbound, listener_port) {
                        continue;
                    }
                    let Some(filters) = chain.get_mut("filters").and_then(Value::as_array_mut)
                    else {
                        continue;
                    };
                    if http {
                        for f in filters.iter_mut() {
                            if str_at(f, "/name") != filter_name {
                                continue;
                            }
                            let Some(list) = f
                                .pointer_mut("/typed_config/http_filters")
                                .and_then(Value::as_array_mut)
                            else {
                                continue;
                            };
                            count += patch_list(list, sub_name, op, &value, i)?;
                        }
                    } else {
                        count += patch_list(filters, filter_name, op, &value, i)?;
                    }
                }
            }
            Ok(count)
        }
        other => Err(unsupported(i, "applyTo", format!("{other:?}"))),
    }
}

fn chain_matches(
    chain: &Value,
    lm: &Value,
    cm: &Value,
    inbound: bool,
    listener_port: Option<u64>,
) -> bool {
    let fcm = chain
        .get("filter_chain_match")
        .cloned()
        .unwrap_or(Value::Null);
    let dest = fcm.get("destination_port").and_then(Value::as_u64);
    if let Some(p) = lm.get("portNumber").and_then(Value::as_u64) {
        // Istio: on the inbound listener the port is the chain's destination port.
        let port = if inbound { dest } else { listener_port };
        if port != Some(p) {
            return false;
        }
    }
    if let Some(p) = cm.get("destinationPort").and_then(Value::as_u64) {
        if dest != Some(p) {
            return false;
        }
    }
    if let Some(n) = str_at(cm, "/name") {
        if str_at(chain, "/name") != Some(n) {
            return false;
        }
    }
    if let Some(t) = str_at(cm, "/transportProtocol") {
        if str_at(&fcm, "/transport_protocol").unwrap_or("") != t {
            return false;
        }
    }
    true
}

/// One named list (network filters of a chain, HTTP filters of a connection manager).
fn patch_list(
    list: &mut Vec<Value>,
    target: Option<&str>,
    op: &str,
    value: &Value,
    i: usize,
) -> Result<usize, PatchError> {
    let pos = target.and_then(|t| list.iter().position(|f| str_at(f, "/name") == Some(t)));
    match op {
        "INSERT_FIRST" => {
            if target.is_some() && pos.is_none() {
                return Ok(0);
            }
            list.insert(0, value.clone());
            Ok(1)
        }
        "ADD" => {
            if target.is_some() && pos.is_none() {
                return Ok(0);
            }
            list.push(value.clone());
            Ok(1)
        }
        "INSERT_BEFORE" | "INSERT_AFTER" => {
            let Some(p) = pos else { return Ok(0) };
            let at = if op == "INSERT_BEFORE" { p } else { p + 1 };
            list.insert(at, value.clone());
            Ok(1)
        }
        "MERGE" => {
            let Some(p) = pos else { return Ok(0) };
            merge(&mut list[p], value);
            Ok(1)
        }
        "REMOVE" => {
            let Some(p) = pos else { return Ok(0) };
            list.remove(p);
            Ok(1)
        }
        other => Err(unsupported(i, "patch.operation", format!("{other:?}"))),
    }
}

/// Istio's MERGE is proto merge: messages merge field by field, repeated fields append,
/// scalars replace.
pub fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => merge_maps(a, b),
        (Value::Array(a), Value::Array(b)) => a.extend(b.iter().cloned()),
        (a, b) => *a = b.clone(),
    }
}

fn merge_maps(a: &mut Map<String, Value>, b: &Map<String, Value>) {
    for (k, v) in b {
        match a.get_mut(k) {
            Some(existing) => merge(existing, v),
            None => {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listener() -> Value {
        json!({"name": "virtualInbound", "traffic_direction": "INBOUND", "filter_chains": [
            {"name": "a", "filter_chain_match": {"destination_port": 80, "transport_protocol": "raw_buffer"},
             "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {"http_filters": [{"name": "x"}, {"name": "envoy.filters.http.router"}]}}]},
            {"name": "b", "filter_chain_match": {"destination_port": 9000},
             "filters": [{"name": "envoy.filters.network.tcp_proxy"}]},
        ]})
    }

    #[test]
    fn inserts_before_the_router_and_tcp_proxy_only_where_they_are() {
        let mut c = Config {
            listeners: vec![
                listener(),
                json!({"name": "out", "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy"}]}]}),
            ],
            clusters: vec![],
        };
        let patches = vec![
            json!({"applyTo": "HTTP_FILTER", "match": {"context": "SIDECAR_INBOUND", "listener": {"filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager", "subFilter": {"name": "envoy.filters.http.router"}}}}}, "patch": {"operation": "INSERT_BEFORE", "value": {"name": "pg"}}}),
            json!({"applyTo": "NETWORK_FILTER", "match": {"context": "SIDECAR_INBOUND", "listener": {"filterChain": {"filter": {"name": "envoy.filters.network.tcp_proxy"}}}}, "patch": {"operation": "INSERT_BEFORE", "value": {"name": "pgt"}}}),
            json!({"applyTo": "CLUSTER", "match": {"context": "SIDECAR_OUTBOUND"}, "patch": {"operation": "ADD", "value": {"name": "peerguard-xds"}}}),
        ];
        assert_eq!(apply(&mut c, &patches).unwrap(), vec![1, 1, 1]);
        let hf = &c.listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
        assert_eq!(
            hf,
            &json!([{"name": "x"}, {"name": "pg"}, {"name": "envoy.filters.http.router"}])
        );
        assert_eq!(
            c.listeners[0]["filter_chains"][1]["filters"],
            json!([{"name": "pgt"}, {"name": "envoy.filters.network.tcp_proxy"}])
        );
        // The outbound listener is left alone.
        assert_eq!(
            c.listeners[1]["filter_chains"][0]["filters"],
            json!([{"name": "envoy.filters.network.tcp_proxy"}])
        );
        assert_eq!(c.clusters, vec![json!({"name": "peerguard-xds"})]);
    }

    #[test]
    fn port_number_selects_inbound_chains_by_destination_port() {
        let mut c = Config {
            listeners: vec![listener()],
            clusters: vec![],
        };
        let p = json!({"applyTo": "NETWORK_FILTER", "match": {"context": "SIDECAR_INBOUND", "listener": {"portNumber": 80, "filterChain": {"filter": {"name": "envoy.filters.network.tcp_proxy"}}}}, "patch": {"operation": "INSERT_FIRST", "value": {"name": "pgt"}}});
        assert_eq!(apply(&mut c, &[p]).unwrap(), vec![0]);
        let p = json!({"applyTo": "NETWORK_FILTER", "match": {"context": "SIDECAR_INBOUND", "listener": {"portNumber": 9000, "filterChain": {"transportProtocol": "raw_buffer", "filter": {"name": "envoy.filters.network.tcp_proxy"}}}}, "patch": {"operation": "INSERT_FIRST", "value": {"name": "pgt"}}});
        // Chain b has no transport_protocol: raw_buffer does not match it.
        assert_eq!(apply(&mut c, &[p]).unwrap(), vec![0]);
    }

    #[test]
    fn merge_is_proto_merge_and_unknown_things_are_refused() {
        let mut a = json!({"a": {"b": 1, "l": [1]}, "s": "x"});
        merge(&mut a, &json!({"a": {"c": 2, "l": [2]}, "s": "y"}));
        assert_eq!(a, json!({"a": {"b": 1, "c": 2, "l": [1, 2]}, "s": "y"}));
        let mut c = Config::default();
        let e = apply(
            &mut c,
            &[json!({"applyTo": "LISTENER", "patch": {"operation": "MERGE"}})],
        )
        .unwrap_err();
        assert!(e.to_string().contains("configPatches[0]: applyTo"), "{e}");
        let e = apply(&mut c, &[json!({"applyTo": "NETWORK_FILTER", "match": {"listener": {"filterChain": {"sni": "x"}}}, "patch": {"operation": "ADD"}})]).unwrap_err();
        assert!(e.to_string().contains("filterChain.sni"), "{e}");
    }
}
