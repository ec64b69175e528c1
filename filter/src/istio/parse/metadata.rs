//! `metadata`, read leniently (Kubernetes adds many fields peerguard does not use) but with
//! every field that decides scope or order checked: a namespace that cannot be read must not
//! become `default` (its objects would leave their real namespace unprotected), and a
//! malformed `creationTimestamp` must not count as the oldest object.

use super::{prefixed, Errors};
use crate::istio::time::rfc3339_seconds;
use crate::istio::{ObjectKey, ObjectMeta};
use serde_json::Value;
use std::collections::BTreeMap;

/// Namespaced objects without a namespace go to `default`, as kubectl does; cluster-scoped
/// ones have none. A namespace that is written but unreadable is an error and is left
/// `None`, which [`crate::istio::InvalidObject::namespace_unreadable`] reads as "any".
pub(super) fn decode(raw: Option<&Value>, cluster_scoped: bool, errors: &mut Errors) -> ObjectMeta {
    let mut metadata = match raw {
        None | Some(Value::Null) => ObjectMeta::default(),
        Some(raw) => match serde_path_to_error::deserialize::<_, ObjectMeta>(raw) {
            Ok(metadata) => metadata,
            Err(e) => {
                errors.push((
                    Some(prefixed("metadata", &e.path().to_string())),
                    e.into_inner().to_string(),
                ));
                // Keep what can still be read, for the error label and fail-closed scoping.
                salvage(raw)
            }
        },
    };
    if cluster_scoped {
        metadata.namespace = None;
        return metadata;
    }
    let written = raw
        .and_then(|m| m.get("namespace"))
        .filter(|v| !v.is_null());
    match (written, metadata.namespace.as_deref()) {
        // Absent, null or empty: the default namespace.
        (None, _) | (Some(_), Some("")) => metadata.namespace = Some("default".to_string()),
        // Written but not a string (already reported by serde), or metadata not a mapping.
        (Some(_), None) => {}
        (Some(_), Some(ns)) => {
            if !is_dns1123_label(ns) {
                errors.push((
                    Some("metadata.namespace".to_string()),
                    format!(
                        "invalid namespace {ns:?}: a namespace is a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters); the object is read as being in every namespace"
                    ),
                ));
                metadata.namespace = None;
            }
        }
    }
    // `metadata: 5` and the like: nothing readable, so the namespace is unknown too.
    if raw.is_some_and(|m| !m.is_object() && !m.is_null()) {
        metadata.namespace = None;
    }
    if let Some(ts) = &metadata.creation_timestamp {
        if rfc3339_seconds(ts).is_none() {
            errors.push((
                Some("metadata.creationTimestamp".to_string()),
                format!("invalid timestamp {ts:?}: expected RFC 3339, e.g. 2024-01-31T12:00:00Z"),
            ));
        }
    }
    metadata
}

/// Field by field, what a metadata that failed to decode as a whole still says.
fn salvage(raw: &Value) -> ObjectMeta {
    let string = |key: &str| raw.get(key).and_then(Value::as_str).map(str::to_string);
    let map = |key: &str| {
        raw.get(key)
            .and_then(|m| serde_json::from_value::<BTreeMap<String, String>>(m.clone()).ok())
            .unwrap_or_default()
    };
    ObjectMeta {
        name: string("name").unwrap_or_default(),
        namespace: string("namespace"),
        labels: map("labels"),
        annotations: map("annotations"),
        creation_timestamp: string("creationTimestamp"),
    }
}

/// Kubernetes namespace names: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

/// `kind ns/name` (or `kind name` without a namespace), as errors and `serve` name objects.
pub(super) fn object_label(kind: &str, metadata: &ObjectMeta) -> String {
    let name = if metadata.name.is_empty() {
        "<unnamed>".to_string()
    } else {
        metadata.name.clone()
    };
    ObjectKey {
        kind: kind.to_string(),
        namespace: metadata.namespace.clone(),
        name,
    }
    .to_string()
}

/// Label for a skipped object of unknown scope: `kind ns/name`, or `kind name` without a namespace.
pub(super) fn loose_label(kind: &str, metadata: Option<&Value>) -> String {
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    ObjectKey {
        kind: kind.to_string(),
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
    }
    .to_string()
}
