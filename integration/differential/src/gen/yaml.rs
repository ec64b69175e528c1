//! JSON values as block YAML, for the policy files the harness prints and parses. Scalars
//! are written as JSON strings (a YAML subset), so no value is ever reinterpreted (`on`,
//! `1e3`, `*x`...).

use serde_json::Value;

/// One YAML document (no `---`).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    block(v, 0, &mut out);
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => Value::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

/// Plain when it is an identifier-like key (`apiVersion`, `istio.io/dry-run`), else quoted.
fn key(k: &str) -> String {
    let plain = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c));
    if plain {
        k.to_string()
    } else {
        scalar(&Value::String(k.to_string()))
    }
}

fn is_empty_collection(v: &Value) -> bool {
    matches!(v, Value::Array(a) if a.is_empty()) || matches!(v, Value::Object(o) if o.is_empty())
}

fn block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                let key = key(k);
                match val {
                    Value::Object(_) | Value::Array(_) if !is_empty_collection(val) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        block(val, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}{key}: {}\n", flow(val))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(_) | Value::Array(_) if !is_empty_collection(item) => {
                        // `- ` then the first line of the nested block on the same line.
                        let mut nested = String::new();
                        block(item, indent + 2, &mut nested);
                        let trimmed = nested.trim_start_matches(' ');
                        out.push_str(&format!("{pad}- {trimmed}"));
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", flow(item))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", flow(other))),
    }
}

fn flow(v: &Value) -> String {
    match v {
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        other => scalar(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_peerguards_parser() {
        let v = json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "foo", "annotations": {"istio.io/dry-run": "true"}},
            "spec": {"action": "DENY", "rules": [
                {"from": [{"source": {"principals": ["*", "*/ns/a"]}}], "to": [{"operation": {"paths": ["/x/{*}"]}}]},
                {},
                {"when": [{"key": "request.headers[x-role]", "values": ["on", "1e3"]}]}
            ]},
        });
        let text = to_yaml(&v);
        let parsed = peerguard_filter::istio::parse::parse_str(&text, "t.yaml");
        assert!(parsed.errors.is_empty(), "{text}\n{:?}", parsed.errors);
        let Some(peerguard_filter::istio::Resource::AuthorizationPolicy(o)) =
            parsed.resources.first()
        else {
            panic!("not parsed as an AuthorizationPolicy:\n{text}");
        };
        let rules = o.spec.rules.clone().unwrap_or_default();
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules[2].when.as_ref().and_then(|w| w[0].values.clone()),
            Some(vec!["on".to_string(), "1e3".to_string()])
        );
    }
}
