//! PeerAuthentications for the adaptive comparison (`crate::run::Comparison::Adaptive`):
//! none (PERMISSIVE by default), or one to three of mesh-wide (root namespace), namespace-wide
//! and workload-selected, each STRICT, PERMISSIVE, DISABLE or UNSET, the workload one
//! sometimes with `portLevelMtls` (on a served port or not, the same mode as the workload's
//! or another). Istio's precedence (workload over namespace over mesh) decides the mode; the
//! generator only varies the inputs.

use super::rng::Rng;
use super::{HTTP_PORTS, TCP_PORT};
use serde_json::{json, Map, Value};

/// PERMISSIVE (or UNSET, inherited) more often than the others: it is the one mode where
/// both slots can be native (`enforcement::Why::TcpStrict`).
const MODES: &[&str] = &["STRICT", "PERMISSIVE", "PERMISSIVE", "DISABLE", "UNSET"];

/// 0–3 PeerAuthentication documents.
pub fn peer_authentications(rng: &mut Rng) -> Vec<Value> {
    let mut docs = Vec::new();
    if rng.chance(15) {
        return docs;
    }
    // At least one scope, usually one or two.
    let scopes = loop {
        let s = [rng.chance(45), rng.chance(35), rng.chance(45)];
        if s.iter().any(|x| *x) {
            break s;
        }
    };
    if scopes[0] {
        docs.push(doc("istio-system", "default", None, mtls(rng), None));
    }
    if scopes[1] {
        docs.push(doc("foo", "default", None, mtls(rng), None));
    }
    if scopes[2] {
        let mode = mtls(rng);
        let ports = rng.chance(30).then(|| port_level(rng, &mode));
        let selector = json!({"matchLabels": {"app": "httpbin"}});
        docs.push(doc("foo", "httpbin", Some(selector), mode, ports));
    }
    docs
}

/// `{"mode": ...}`, now and then without `mtls` at all (inherits, as UNSET).
fn mtls(rng: &mut Rng) -> Option<Value> {
    (!rng.chance(8)).then(|| json!({"mode": rng.word(MODES)}))
}

/// One or two ports: a served one (HTTP or TCP) or one no client uses, with the workload's
/// own mode (native RBAC stays possible) or another (the filter keeps the slot).
fn port_level(rng: &mut Rng, own: &Option<Value>) -> Value {
    let ports = [HTTP_PORTS[0], HTTP_PORTS[1], TCP_PORT, 1234];
    let mut m = Map::new();
    for _ in 0..rng.range(1, 2) {
        let port = *rng.pick(&ports);
        let mode = match own {
            Some(o) if rng.chance(50) => o.clone(),
            _ => json!({"mode": rng.word(MODES)}),
        };
        m.insert(port.to_string(), mode);
    }
    Value::Object(m)
}

fn doc(
    namespace: &str,
    name: &str,
    selector: Option<Value>,
    mtls: Option<Value>,
    ports: Option<Value>,
) -> Value {
    let mut spec = Map::new();
    if let Some(s) = selector {
        spec.insert("selector".into(), s);
    }
    if let Some(m) = mtls {
        spec.insert("mtls".into(), m);
    }
    if let Some(p) = ports {
        spec.insert("portLevelMtls".into(), p);
    }
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}
