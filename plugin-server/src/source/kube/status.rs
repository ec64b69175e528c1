//! Telling users about invalid objects where they look: `status.peerguard` on the object
//! (server-side apply, field manager `peerguard`, so Istio's own status fields are left alone)
//! and a Warning Event (`kubectl describe`), besides the log.
//!
//! Only objects peerguard finds invalid get a status, and an object whose status says invalid
//! gets `valid: true` once fixed; valid objects are not written to (10,000 policies must not
//! cost 10,000 writes per replica at start). Replicas write the same status with the same
//! field manager (idempotent), and an Event's name is derived from the object and its
//! messages, so a second replica's create of the same Event is refused as existing.

use super::feeds::{Feeds, ObjKey};
use super::objects::IstioEntry;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use peerguard_filter::istio::Resource;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const FIELD_MANAGER: &str = "peerguard";

/// `status.peerguard` of an Istio object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerguardStatus {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
}

/// `status.peerguard` as delivered by the watch, if any.
pub fn read(value: &serde_json::Value) -> Option<PeerguardStatus> {
    serde_json::from_value(value.get("status")?.get("peerguard")?.clone()).ok()
}

/// What `status.peerguard` should say, or `None` when nothing needs writing.
pub fn desired(entry: &IstioEntry, origin: &str) -> Option<PeerguardStatus> {
    let invalid = !entry.errors.is_empty() || matches!(entry.resource, Some(Resource::Invalid(_)));
    let want = if invalid {
        let prefix = format!("{origin}: ");
        let messages = entry
            .errors
            .iter()
            .map(|e| e.strip_prefix(&prefix).unwrap_or(e).to_string())
            .collect();
        PeerguardStatus {
            valid: false,
            observed_generation: entry.generation,
            messages,
        }
    } else if entry.status.as_ref().is_some_and(|s| !s.valid) {
        PeerguardStatus {
            valid: true,
            observed_generation: entry.generation,
            messages: Vec::new(),
        }
    } else {
        return None;
    };
    (entry.status.as_ref() != Some(&want)).then_some(want)
}

/// Writes statuses and Events; remembers writes in flight so a flush before the watch shows
/// the new status does not write again.
pub struct StatusWriter {
    client: Client,
    inflight: BTreeMap<(usize, ObjKey), PeerguardStatus>,
}

impl StatusWriter {
    pub fn new(client: Client) -> Self {
        StatusWriter {
            client,
            inflight: BTreeMap::new(),
        }
    }

    /// Lets the next [`StatusWriter::reconcile`] write again what is still not shown (a
    /// write that failed).
    pub fn forget_inflight(&mut self) {
        self.inflight.clear();
    }

    /// Starts the writes the current objects need (`apis`: feed index → its API).
    pub fn reconcile(&mut self, feeds: &Feeds, apis: &BTreeMap<usize, ApiResource>) {
        let mut seen = BTreeMap::new();
        for (feed, key, entry) in feeds.istio_entries() {
            let Some(ar) = apis.get(&feed) else { continue };
            let Some(want) = desired(entry, feeds.name(feed)) else {
                continue;
            };
            let id = (feed, key.clone());
            if self.inflight.get(&id) == Some(&want) {
                seen.insert(id, want);
                continue;
            }
            seen.insert(id, want.clone());
            tokio::spawn(write(
                self.client.clone(),
                ar.clone(),
                key.clone(),
                entry.uid.clone(),
                want,
            ));
        }
        // Forget writes whose result the watch has shown (or whose object is gone).
        self.inflight = seen;
    }
}

async fn write(
    client: Client,
    ar: ApiResource,
    (namespace, name): ObjKey,
    uid: Option<String>,
    status: PeerguardStatus,
) {
    let api: Api<DynamicObject> = if namespace.is_empty() {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), &namespace, &ar)
    };
    let patch = serde_json::json!({
        "apiVersion": ar.api_version, "kind": ar.kind,
        "status": {"peerguard": status},
    });
    let object = format!(
        "{} {}{}",
        ar.kind,
        if namespace.is_empty() {
            String::new()
        } else {
            format!("{namespace}/")
        },
        name
    );
    if let Err(e) = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        tracing::warn!("cannot write status.peerguard of {object}: {e}");
    }
    if status.valid {
        return;
    }
    let message = format!(
        "invalid, enforced fail-closed: {}",
        status.messages.join("; ")
    );
    let digest = Sha256::digest(
        format!(
            "{}/{namespace}/{name}/{:?}/{message}",
            ar.kind, status.observed_generation
        )
        .as_bytes(),
    );
    let event_ns = if namespace.is_empty() {
        "default".to_string()
    } else {
        namespace.clone()
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            // Deterministic: replicas reporting the same thing create one Event.
            name: Some(format!(
                "{}.peerguard-{}",
                name.chars().take(200).collect::<String>(),
                crate::node::hex(&digest[..8])
            )),
            namespace: Some(event_ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(ar.api_version.clone()),
            kind: Some(ar.kind.clone()),
            name: Some(name.clone()),
            namespace: (!namespace.is_empty()).then(|| namespace.clone()),
            uid,
            ..Default::default()
        },
        reason: Some("InvalidConfig".into()),
        message: Some(message.chars().take(1024).collect()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("peerguard".into()),
            ..Default::default()
        }),
        reporting_component: Some("peerguard".into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    let events: Api<Event> = Api::namespaced(client, &event_ns);
    match events.create(&PostParams::default(), &event).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => tracing::warn!("cannot create the Event for {object}: {e}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::objects::istio_entry;
    use super::*;

    const ORIGIN: &str = "apiserver security.istio.io/v1 authorizationpolicies";

    fn entry(spec: serde_json::Value, status: Option<serde_json::Value>) -> IstioEntry {
        let mut v = serde_json::json!({"metadata": {"name": "p", "namespace": "foo", "generation": 2, "uid": "u-1"}, "spec": spec});
        if let Some(s) = status {
            v["status"] = serde_json::json!({"peerguard": s, "validationMessages": []});
        }
        istio_entry(v, "security.istio.io/v1", "AuthorizationPolicy", ORIGIN)
    }

    #[test]
    fn invalid_objects_get_a_status_and_fixed_ones_are_cleared_once() {
        let bad = entry(serde_json::json!({"action": "DENY", "rulez": []}), None);
        assert_eq!(bad.uid.as_deref(), Some("u-1"));
        let want = desired(&bad, ORIGIN).unwrap();
        assert!(!want.valid);
        assert_eq!(want.observed_generation, Some(2));
        assert!(
            want.messages[0].starts_with("AuthorizationPolicy foo/p: spec"),
            "{:?}",
            want.messages
        );
        // Already reported: nothing to write.
        let reported = entry(
            serde_json::json!({"action": "DENY", "rulez": []}),
            Some(serde_json::to_value(&want).unwrap()),
        );
        assert_eq!(desired(&reported, ORIGIN), None);
        // Fixed: `valid: true` once, then nothing.
        let fixed = entry(
            serde_json::json!({"action": "DENY", "rules": [{}]}),
            Some(serde_json::to_value(&want).unwrap()),
        );
        assert_eq!(
            desired(&fixed, ORIGIN),
            Some(PeerguardStatus {
                valid: true,
                observed_generation: Some(2),
                messages: vec![]
            })
        );
        let cleared = entry(
            serde_json::json!({"action": "DENY", "rules": [{}]}),
            Some(serde_json::json!({"valid": true, "observedGeneration": 2})),
        );
        assert_eq!(desired(&cleared, ORIGIN), None);
        // Valid and never reported: no write at all.
        assert_eq!(
            desired(
                &entry(serde_json::json!({"action": "DENY", "rules": [{}]}), None),
                ORIGIN
            ),
            None
        );
    }
}
