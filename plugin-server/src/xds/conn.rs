//! The per-stream SotW protocol state machine. Pure: requests and snapshots in, responses and
//! events out; the tonic task around it does the I/O.
//!
//! Per type URL it keeps the subscribed names, the last response sent (nonce, version) and
//! the version the client has or is about to have. Rules:
//! - a request whose `response_nonce` is not the last one sent is stale and ignored (the
//!   client has not yet seen our newer response);
//! - an ACK records the accepted version;
//! - a NACK (`error_detail`) is reported; the client keeps its last accepted version and we
//!   do not resend the rejected one (no NACK storm) until the snapshot changes;
//! - a new snapshot is pushed at once, even while an ACK is pending; the pending ACK then
//!   becomes stale;
//! - a client reconnecting with `version_info` equal to what we would send gets nothing (the
//!   version is a content hash, so it survives a server restart);
//! - an empty set is never sent: the client keeps what it has.

use crate::registry::WorkloadKey;
use crate::snapshot::{NodeSnapshot, ECDS_TYPE, SECRET_TYPE};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refuse {
    #[error("node {0} asked for secrets without a valid bootstrap token (x-peerguard-token)")]
    Unauthenticated(WorkloadKey),
    #[error("type {0:?} is not served on this stream")]
    UnsupportedType(String),
}

/// Something worth logging and counting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ack {
        type_url: String,
        version: String,
    },
    Nack {
        type_url: String,
        rejected_version: String,
        kept_version: String,
        detail: String,
    },
    Stale {
        type_url: String,
        nonce: String,
    },
    Push {
        type_url: String,
        version: String,
        names: Vec<String>,
    },
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub responses: Vec<DiscoveryResponse>,
    pub events: Vec<Event>,
}

#[derive(Debug, Default, Clone)]
struct TypeState {
    /// Empty: everything of this type the node may see.
    names: BTreeSet<String>,
    last_nonce: Option<String>,
    /// What the client has, or will have once it processes our last response.
    known_version: String,
    /// What it last accepted.
    acked_version: Option<String>,
}

#[derive(Debug)]
pub struct Conn {
    pub node: WorkloadKey,
    may_get_secrets: bool,
    /// Type assumed when a request has none (standalone ECDS/SDS); `None` on ADS.
    default_type: Option<&'static str>,
    allowed: &'static [&'static str],
    nonce: u64,
    types: BTreeMap<String, TypeState>,
}

/// The version of a set of resources: a hash of their names and versions; "" for none.
fn set_version(items: &[(&String, &crate::snapshot::Versioned)]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let mut h = Sha256::new();
    for (name, v) in items {
        h.update(name.as_bytes());
        h.update(b"=");
        h.update(v.version.as_bytes());
        h.update(b"\n");
    }
    crate::node::hex(&h.finalize()[..8])
}

impl Conn {
    pub fn new(
        node: WorkloadKey,
        may_get_secrets: bool,
        default_type: Option<&'static str>,
        allowed: &'static [&'static str],
    ) -> Self {
        Conn {
            node,
            may_get_secrets,
            default_type,
            allowed,
            nonce: 0,
            types: BTreeMap::new(),
        }
    }

    #[cfg(test)]
    pub fn acked_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.acked_version.as_deref()
    }

    pub fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snap: &NodeSnapshot,
    ) -> Result<Outcome, Refuse> {
        let type_url = match (req.type_url.as_str(), self.default_type) {
            ("", Some(d)) => d.to_string(),
            (t, _) => t.to_string(),
        };
        if !self.allowed.contains(&type_url.as_str()) {
            return Err(Refuse::UnsupportedType(type_url));
        }
        if type_url == SECRET_TYPE && !self.may_get_secrets {
            return Err(Refuse::Unauthenticated(self.node.clone()));
        }
        let mut out = Outcome::default();
        let state = self.types.entry(type_url.clone()).or_default();
        if req.response_nonce.is_empty() {
            // First request for this type on this stream: the client tells what it has.
            state.known_version = req.version_info.clone();
            state.acked_version = (!req.version_info.is_empty()).then(|| req.version_info.clone());
        } else if state.last_nonce.as_deref() != Some(req.response_nonce.as_str()) {
            out.events.push(Event::Stale {
                type_url,
                nonce: req.response_nonce.clone(),
            });
            return Ok(out);
        } else if let Some(err) = &req.error_detail {
            out.events.push(Event::Nack {
                type_url: type_url.clone(),
                rejected_version: state.known_version.clone(),
                kept_version: req.version_info.clone(),
                detail: err.message.clone(),
            });
        } else {
            state.acked_version = Some(req.version_info.clone());
            out.events.push(Event::Ack {
                type_url: type_url.clone(),
                version: req.version_info.clone(),
            });
        }
        state.names = req.resource_names.iter().cloned().collect();
        if let Some((resp, ev)) = self.respond_if_needed(&type_url, snap) {
            out.responses.push(resp);
            out.events.push(ev);
        }
        Ok(out)
    }

    /// A new snapshot for this node: push every subscribed type whose content changed.
    pub fn on_snapshot(&mut self, snap: &NodeSnapshot) -> Outcome {
        let mut out = Outcome::default();
        let types: Vec<String> = self.types.keys().cloned().collect();
        for t in types {
            if let Some((resp, ev)) = self.respond_if_needed(&t, snap) {
                out.responses.push(resp);
                out.events.push(ev);
            }
        }
        out
    }

    fn respond_if_needed(
        &mut self,
        type_url: &str,
        snap: &NodeSnapshot,
    ) -> Option<(DiscoveryResponse, Event)> {
        let state = self.types.get_mut(type_url)?;
        let empty = BTreeMap::new();
        let all = snap.by_type.get(type_url).unwrap_or(&empty);
        let items: Vec<_> = all
            .iter()
            .filter(|(n, _)| state.names.is_empty() || state.names.contains(*n))
            .collect();
        // Nothing to offer (e.g. policy updates held before any policy was computed): say
        // nothing, so the client keeps what it has; an empty ECDS response would be a NACK.
        if items.is_empty() {
            return None;
        }
        let version = set_version(&items);
        if version == state.known_version {
            return None;
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        state.last_nonce = Some(nonce.clone());
        state.known_version = version.clone();
        let names = items.iter().map(|(n, _)| (*n).clone()).collect();
        let resp = DiscoveryResponse {
            version_info: version.clone(),
            resources: items.iter().map(|(_, v)| v.any.clone()).collect(),
            type_url: type_url.to_string(),
            nonce,
            ..Default::default()
        };
        Some((
            resp,
            Event::Push {
                type_url: type_url.to_string(),
                version,
                names,
            },
        ))
    }
}

pub const ECDS_ONLY: &[&str] = &[ECDS_TYPE];
pub const SDS_ONLY: &[&str] = &[SECRET_TYPE];
pub const ADS_TYPES: &[&str] = &[ECDS_TYPE, SECRET_TYPE];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{http_filter, root_secret, HTTP_FILTER, SECRET_ROOT};
    use envoy_types::pb::google::rpc::Status;

    fn key() -> WorkloadKey {
        WorkloadKey {
            namespace: "foo".into(),
            name: "httpbin".into(),
        }
    }

    fn snap(policy: &str) -> NodeSnapshot {
        let mut s = NodeSnapshot::default();
        s.insert(HTTP_FILTER, http_filter("/m.wasm", policy));
        s.insert(SECRET_ROOT, root_secret("PEM"));
        s
    }

    fn req(version: &str, nonce: &str, nack: Option<&str>) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: version.into(),
            resource_names: vec![HTTP_FILTER.into()],
            type_url: ECDS_TYPE.into(),
            response_nonce: nonce.into(),
            error_detail: nack.map(|m| Status {
                code: 3,
                message: m.into(),
                details: vec![],
            }),
            ..Default::default()
        }
    }

    fn ecds() -> Conn {
        Conn::new(key(), false, Some(ECDS_TYPE), ECDS_ONLY)
    }

    #[test]
    fn initial_request_gets_the_resource_and_ack_is_recorded() {
        let s = snap("{}");
        let mut c = ecds();
        let out = c.on_request(&req("", "", None), &s).unwrap();
        assert_eq!(out.responses.len(), 1);
        let r = &out.responses[0];
        assert_eq!(r.resources.len(), 1);
        assert_eq!(r.type_url, ECDS_TYPE);
        let out = c
            .on_request(&req(&r.version_info, &r.nonce, None), &s)
            .unwrap();
        assert!(out.responses.is_empty());
        assert_eq!(
            out.events,
            vec![Event::Ack {
                type_url: ECDS_TYPE.into(),
                version: r.version_info.clone()
            }]
        );
        assert_eq!(c.acked_version(ECDS_TYPE), Some(r.version_info.as_str()));
    }

    #[test]
    fn nack_keeps_last_accepted_and_is_not_resent() {
        let mut c = ecds();
        let r1 = c
            .on_request(&req("", "", None), &snap("{}"))
            .unwrap()
            .responses
            .remove(0);
        c.on_request(&req(&r1.version_info, &r1.nonce, None), &snap("{}"))
            .unwrap();
        let bad = snap("{\"bad\":true}");
        let r2 = c.on_snapshot(&bad).responses.remove(0);
        assert_ne!(r2.version_info, r1.version_info);
        let out = c
            .on_request(
                &req(&r1.version_info, &r2.nonce, Some("on_configure failed")),
                &bad,
            )
            .unwrap();
        assert!(
            out.responses.is_empty(),
            "a rejected version is not re-sent"
        );
        assert!(
            matches!(&out.events[0], Event::Nack { detail, kept_version, .. } if detail == "on_configure failed" && *kept_version == r1.version_info)
        );
        assert_eq!(c.acked_version(ECDS_TYPE), Some(r1.version_info.as_str()));
        // A fixed config goes out again.
        let out = c.on_snapshot(&snap("{\"fixed\":1}"));
        assert_eq!(out.responses.len(), 1);
    }

    #[test]
    fn update_during_pending_ack_makes_the_old_ack_stale() {
        let mut c = ecds();
        let r1 = c
            .on_request(&req("", "", None), &snap("{}"))
            .unwrap()
            .responses
            .remove(0);
        let s2 = snap("{\"v\":2}");
        let r2 = c.on_snapshot(&s2).responses.remove(0);
        assert_ne!(r1.nonce, r2.nonce);
        let out = c
            .on_request(&req(&r1.version_info, &r1.nonce, None), &s2)
            .unwrap();
        assert!(out.responses.is_empty());
        assert!(matches!(out.events[0], Event::Stale { .. }));
        assert_eq!(c.acked_version(ECDS_TYPE), None);
        let out = c
            .on_request(&req(&r2.version_info, &r2.nonce, None), &s2)
            .unwrap();
        assert!(matches!(out.events[0], Event::Ack { .. }));
        assert_eq!(c.acked_version(ECDS_TYPE), Some(r2.version_info.as_str()));
    }

    #[test]
    fn reconnect_with_known_version_gets_nothing_until_a_change() {
        let s = snap("{}");
        let v = ecds()
            .on_request(&req("", "", None), &s)
            .unwrap()
            .responses
            .remove(0)
            .version_info;
        let mut c = ecds();
        let out = c.on_request(&req(&v, "", None), &s).unwrap();
        assert!(out.responses.is_empty());
        assert_eq!(c.acked_version(ECDS_TYPE), Some(v.as_str()));
        assert!(
            c.on_snapshot(&s).responses.is_empty(),
            "unchanged snapshot: no push"
        );
        assert_eq!(c.on_snapshot(&snap("{\"n\":1}")).responses.len(), 1);
        // Reconnecting with an old version gets the current one.
        let out = ecds().on_request(&req("0000", "", None), &s).unwrap();
        assert_eq!(out.responses[0].version_info, v);
    }

    #[test]
    fn only_subscribed_names_are_sent() {
        let s = snap("{}");
        let mut c = ecds();
        let mut r = req("", "", None);
        r.resource_names = vec!["something-else".into()];
        assert!(c.on_request(&r, &s).unwrap().responses.is_empty());
    }

    #[test]
    fn secrets_need_a_valid_token_and_types_are_checked() {
        let s = snap("{}");
        let mut r = req("", "", None);
        r.type_url = SECRET_TYPE.into();
        r.resource_names = vec![SECRET_ROOT.into()];
        let mut c = Conn::new(key(), false, None, ADS_TYPES);
        assert_eq!(
            c.on_request(&r, &s).unwrap_err(),
            Refuse::Unauthenticated(key())
        );
        let mut c = Conn::new(key(), true, None, ADS_TYPES);
        assert_eq!(c.on_request(&r, &s).unwrap().responses.len(), 1);
        let mut c = ecds();
        assert!(matches!(
            c.on_request(&r, &s),
            Err(Refuse::UnsupportedType(_))
        ));
    }
}
