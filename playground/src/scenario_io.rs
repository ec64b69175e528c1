//! Conformance-format scenarios in and out of the page (format:
//! `../shared/conformance/README.md`): a case built in the browser runs with `peerguard
//! test`, and a shared case opens in the browser. Both directions go through the library's
//! own scenario reader, so the page accepts exactly what `peerguard test` accepts.

use crate::evaluate::{evaluate, read_request, MeshInput, State, RESOURCES_FILE};
use peerguard_filter::istio::parse::documents;
use peerguard_filter::scenario::{parse_scenario, Expect};
use serde_json::{Map, Value};
use std::path::Path;

/// A scenario file's text → the page's state (resources rendered as YAML documents).
pub fn import(text: &str, file: &str) -> Result<State, String> {
    let s = parse_scenario(text, Path::new(file)).map_err(|e| e.to_string())?;
    let mut docs = Vec::new();
    for r in &s.raw_resources {
        docs.push(
            serde_saphyr::to_string(r)
                .map_err(|e| format!("cannot render resources as YAML: {e}"))?,
        );
    }
    let requests = s
        .requests
        .iter()
        .map(|r| serde_json::to_value(r).map(strip_nulls))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(State {
        name: s.name.clone(),
        about: s.about.clone(),
        resources: docs.join("---\n"),
        mesh: MeshInput {
            trust_domain: Some(s.trust_domain.clone()),
            trust_domain_aliases: s.trust_domain_aliases.clone(),
            root_namespace: Some(s.root_namespace.clone()),
            path_normalization: Some(s.path_normalization.as_str().to_string()),
            num_trusted_proxies: s.num_trusted_proxies,
        },
        workload: s.workload.clone(),
        requests,
    })
}

/// The page's state → a scenario file. Requests without `expect` get the decision the page
/// shows now (a record of today's behaviour, to be reviewed). Refused when the resources
/// have errors: `peerguard test` refuses such a file too.
pub fn export(state: &State) -> Result<String, String> {
    let evaluation = evaluate(state);
    if let Some(e) = evaluation.input_error {
        return Err(e);
    }
    if !evaluation.errors.is_empty() {
        let all: Vec<String> = evaluation.errors.iter().map(|e| e.text.clone()).collect();
        return Err(format!("fix the resources first:\n  {}", all.join("\n  ")));
    }
    let mut resources = Vec::new();
    for doc in documents(&state.resources, RESOURCES_FILE).0 {
        resources.push(doc.map_err(|e| e.to_string())?);
    }
    let mut requests = Vec::new();
    for (i, (raw, result)) in state.requests.iter().zip(&evaluation.results).enumerate() {
        let (mut r, has_expect) = read_request(raw).map_err(|e| format!("requests[{i}].{e}"))?;
        if !has_expect {
            match &result.decision {
                Some(d) => {
                    r.expect = if d.allowed {
                        Expect::Allow
                    } else {
                        Expect::Deny
                    }
                }
                None => return Err(format!("requests[{i}]: e2e_only needs an explicit expect")),
            }
        }
        requests.push(strip_nulls(
            serde_json::to_value(&r).map_err(|e| e.to_string())?,
        ));
    }
    let mesh = state.mesh.resolve()?;
    let mut file = Map::new();
    let name = if state.name.trim().is_empty() {
        "playground"
    } else {
        state.name.trim()
    };
    file.insert("name".into(), name.into());
    if let Some(a) = state.about.as_ref().filter(|a| !a.trim().is_empty()) {
        file.insert("about".into(), a.clone().into());
    }
    file.insert("trust_domain".into(), mesh.trust_domain.into());
    if !mesh.trust_domain_aliases.is_empty() {
        file.insert(
            "trust_domain_aliases".into(),
            mesh.trust_domain_aliases.into(),
        );
    }
    file.insert("root_namespace".into(), mesh.root_namespace.into());
    file.insert(
        "path_normalization".into(),
        mesh.path_normalization.as_str().into(),
    );
    if mesh.num_trusted_proxies > 0 {
        file.insert(
            "num_trusted_proxies".into(),
            mesh.num_trusted_proxies.into(),
        );
    }
    file.insert("resources".into(), Value::Array(resources));
    file.insert(
        "workload".into(),
        strip_nulls(serde_json::to_value(&state.workload).map_err(|e| e.to_string())?),
    );
    file.insert("requests".into(), Value::Array(requests));
    let text = serde_saphyr::to_string(&Value::Object(file)).map_err(|e| e.to_string())?;
    // What `peerguard test` will read: refuse to hand out a file it would reject.
    parse_scenario(&text, Path::new("exported.yaml"))
        .map_err(|e| format!("exported scenario does not load: {e}"))?;
    Ok(text)
}

/// Optional fields the scenario format defaults: left out, as a person writes them.
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, v)| keep(k, v))
                .filter(|(_, v)| !matches!(v, Value::Object(o) if o.is_empty()))
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// Whether a field is worth writing: not null, not the default `e2e_only: false`.
fn keep(key: &str, value: &Value) -> bool {
    let default_e2e = key == "e2e_only" && value == &Value::Bool(false);
    !value.is_null() && !default_e2e
}
