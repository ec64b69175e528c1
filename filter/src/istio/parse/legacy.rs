//! `authentication.istio.io/v1alpha1` `Policy`/`MeshPolicy` spec decoding.
//!
//! Hand-written because the 1.4 proto has shapes serde derives cannot express with exact
//! paths: a bare `- mtls:` (YAML null) is an mTLS peer meaning STRICT, `peers` entries are a
//! oneof, and port selectors are `{number}` or `{name}`.

use super::super::{
    LegacyMtls, LegacyMtlsMode, LegacyPeer, LegacyPolicySpec, LegacyPortSelector, LegacyTarget,
};
use serde_json::{Map, Value};

type Errors = Vec<(Option<String>, String)>;

/// Decode `spec`; `None` (with errors recorded) when its shape is wrong.
pub(super) fn decode(spec: &Value, errors: &mut Errors) -> Option<LegacyPolicySpec> {
    let before = errors.len();
    let mut out = LegacyPolicySpec::default();
    let map = object(spec, "spec", errors)?;
    for (key, value) in map {
        let path = format!("spec.{key}");
        match key.as_str() {
            "targets" => {
                for (i, target) in array(value, &path, errors).iter().enumerate() {
                    if let Some(t) = decode_target(target, &format!("{path}[{i}]"), errors) {
                        out.targets.push(t);
                    }
                }
            }
            "peers" => {
                for (i, peer) in array(value, &path, errors).iter().enumerate() {
                    if let Some(p) = decode_peer(peer, &format!("{path}[{i}]"), errors) {
                        out.peers.push(p);
                    }
                }
            }
            "peerIsOptional" => out.peer_is_optional = boolean(value, &path, errors),
            "originIsOptional" => {
                boolean(value, &path, errors);
            }
            "origins" => {
                // End-user (JWT) authentication: out of scope, only its presence is kept.
                if !array(value, &path, errors).is_empty() {
                    out.has_origins = true;
                }
            }
            "principalBinding" => match value {
                Value::Null => {}
                Value::String(s) if s == "USE_PEER" => {}
                Value::String(s) if s == "USE_ORIGIN" => out.has_origins = true,
                other => errors.push((
                    Some(path),
                    format!("unknown value {}, allowed values are `USE_PEER`, `USE_ORIGIN`", enum_value(other)),
                )),
            },
            other => errors.push((
                Some(path.clone()),
                format!(
                    "unknown field `{other}`, expected one of `targets`, `peers`, `peerIsOptional`, `origins`, `originIsOptional`, `principalBinding`"
                ),
            )),
        }
    }
    (errors.len() == before).then_some(out)
}

fn decode_target(value: &Value, path: &str, errors: &mut Errors) -> Option<LegacyTarget> {
    let map = object(value, path, errors)?;
    let mut target = LegacyTarget::default();
    let mut ok = true;
    for (key, value) in map {
        let field = format!("{path}.{key}");
        match key.as_str() {
            "name" => target.name = string(value, &field, errors).unwrap_or_default(),
            "ports" => {
                for (i, port) in array(value, &field, errors).iter().enumerate() {
                    match decode_port(port, &format!("{field}[{i}]"), errors) {
                        Some(p) => target.ports.push(p),
                        None => ok = false,
                    }
                }
            }
            other => {
                ok = false;
                errors.push((
                    Some(field.clone()),
                    format!("unknown field `{other}`, expected one of `name`, `ports`"),
                ));
            }
        }
    }
    if target.name.is_empty() {
        errors.push((
            Some(format!("{path}.name")),
            "a target must name a Service".to_string(),
        ));
        ok = false;
    }
    ok.then_some(target)
}

fn decode_port(value: &Value, path: &str, errors: &mut Errors) -> Option<LegacyPortSelector> {
    let map = object(value, path, errors)?;
    let number = map.get("number").filter(|v| !v.is_null());
    let name = map.get("name").filter(|v| !v.is_null());
    if let Some(other) = map.keys().find(|k| *k != "number" && *k != "name") {
        errors.push((
            Some(format!("{path}.{other}")),
            format!("unknown field `{other}`, expected one of `number`, `name`"),
        ));
        return None;
    }
    match (number, name) {
        (Some(n), None) => match n.as_u64() {
            Some(n @ 1..=65535) => u32::try_from(n).ok().map(LegacyPortSelector::Number),
            _ => {
                errors.push((
                    Some(format!("{path}.number")),
                    format!("invalid port {}: must be 1..65535", show(n)),
                ));
                None
            }
        },
        (None, Some(n)) => match n.as_str() {
            Some(s) if !s.is_empty() => Some(LegacyPortSelector::Name(s.to_string())),
            _ => {
                errors.push((
                    Some(format!("{path}.name")),
                    format!("invalid port name {}: must be a non-empty string", show(n)),
                ));
                None
            }
        },
        _ => {
            errors.push((
                Some(path.to_string()),
                "a port selector needs exactly one of `number` or `name`".to_string(),
            ));
            None
        }
    }
}

fn decode_peer(value: &Value, path: &str, errors: &mut Errors) -> Option<LegacyPeer> {
    let map = object(value, path, errors)?;
    if map.len() != 1 {
        errors.push((
            Some(path.to_string()),
            "a peer needs exactly one of `mtls` or `jwt`".to_string(),
        ));
        return None;
    }
    let (key, value) = map.iter().next()?;
    let field = format!("{path}.{key}");
    match key.as_str() {
        "mtls" => decode_mtls(value, &field, errors).map(LegacyPeer::Mtls),
        "jwt" => Some(LegacyPeer::Jwt(value.clone())),
        other => {
            errors.push((
                Some(field),
                format!("unknown field `{other}`, expected one of `mtls`, `jwt`"),
            ));
            None
        }
    }
}

/// `mtls:` (null) and `mtls: {}` are STRICT: STRICT is enum value 0 in the 1.4 proto.
fn decode_mtls(value: &Value, path: &str, errors: &mut Errors) -> Option<LegacyMtls> {
    let mut mtls = LegacyMtls::default();
    if value.is_null() {
        return Some(mtls);
    }
    let map = object(value, path, errors)?;
    let before = errors.len();
    for (key, value) in map {
        let field = format!("{path}.{key}");
        match key.as_str() {
            "mode" => match value {
                Value::Null => {}
                Value::String(s) if s == "STRICT" => mtls.mode = LegacyMtlsMode::Strict,
                Value::String(s) if s == "PERMISSIVE" => mtls.mode = LegacyMtlsMode::Permissive,
                other => errors.push((
                    Some(field),
                    format!(
                        "unknown value {}, allowed values are `STRICT`, `PERMISSIVE`",
                        enum_value(other)
                    ),
                )),
            },
            "allowTls" => mtls.allow_tls = boolean(value, &field, errors),
            other => errors.push((
                Some(field.clone()),
                format!("unknown field `{other}`, expected one of `mode`, `allowTls`"),
            )),
        }
    }
    (errors.len() == before).then_some(mtls)
}

fn object<'a>(value: &'a Value, path: &str, errors: &mut Errors) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        other => {
            errors.push((
                Some(path.to_string()),
                format!("invalid type: {}, expected a mapping", show(other)),
            ));
            None
        }
    }
}

/// A list; `null` is an empty list, anything else is an error (and an empty list).
fn array<'a>(value: &'a Value, path: &str, errors: &mut Errors) -> &'a [Value] {
    match value {
        Value::Array(items) => items,
        Value::Null => &[],
        other => {
            errors.push((
                Some(path.to_string()),
                format!("invalid type: {}, expected a sequence", show(other)),
            ));
            &[]
        }
    }
}

fn boolean(value: &Value, path: &str, errors: &mut Errors) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Null => false,
        other => {
            errors.push((
                Some(path.to_string()),
                format!("invalid type: {}, expected a boolean", show(other)),
            ));
            false
        }
    }
}

fn string(value: &Value, path: &str, errors: &mut Errors) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        other => {
            errors.push((
                Some(path.to_string()),
                format!("invalid type: {}, expected a string", show(other)),
            ));
            None
        }
    }
}

/// Mirrors serde's `invalid type` wording: `string "x"`, `integer `1``, `map`, `sequence`.
fn show(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "sequence".to_string(),
        Value::Object(_) => "map".to_string(),
    }
}

/// An enum value as serde words it for derived enums: `` `STRCT` ``.
fn enum_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("`{s}`"),
        other => show(other),
    }
}
