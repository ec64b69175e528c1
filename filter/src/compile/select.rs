//! Shared selection helpers: label selectors and creation-time ordering.

use super::values::rfc3339_seconds;
use super::Diagnostics;
use crate::istio::ObjectMeta;
use std::collections::BTreeMap;

/// A `matchLabels` map, `None` when empty (an empty selector counts as no selector).
pub(super) fn selector_labels(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then(|| m.clone())
}

/// The selector of an object that failed validation, read from its raw `spec.selector`:
/// `None` (no selector: the whole namespace) unless it is `matchLabels` that Istio would
/// accept. A selector that is itself the problem (`app: "*"`, an empty key, a number) must
/// not be read literally: it would select no workload and make a DENY or a STRICT vanish.
pub(super) fn raw_selector(
    selector: Option<&serde_json::Value>,
) -> Option<BTreeMap<String, String>> {
    let labels = selector?.get("matchLabels")?;
    let labels = serde_json::from_value::<BTreeMap<String, String>>(labels.clone()).ok()?;
    if !crate::istio::parse::selector_is_valid(&labels) {
        return None;
    }
    selector_labels(&labels)
}

/// Exact key/value subset (`labels.Instance.SubsetOf`).
pub(super) fn labels_subset(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Creation time in seconds. Objects without a timestamp count as created at the same
/// instant, before any timestamped one (Go's zero `time.Time` sorts first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Created(pub i64);

impl Created {
    pub fn of(meta: &ObjectMeta, kind: &str, namespace: &str, diags: &mut Diagnostics) -> Self {
        match meta.creation_timestamp.as_deref() {
            None => Created(i64::MIN),
            Some(ts) => match rfc3339_seconds(ts) {
                Some(s) => Created(s),
                None => {
                    diags.push(format!(
                        "{kind} {namespace}/{}: metadata.creationTimestamp {ts:?} is not RFC 3339; treated as absent",
                        meta.name
                    ));
                    Created(i64::MIN)
                }
            },
        }
    }
}
