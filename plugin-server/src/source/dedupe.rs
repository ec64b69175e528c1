//! Objects defined more than once.
//!
//! In Kubernetes a `kind namespace/name` names one object; in a directory two files (or two
//! documents of one file) can both define it, and which one the operator meant is unknown.
//! The rule (fail closed, and never "drop everything"):
//!
//! - Identical definitions (wherever they are) are one object, with a warning.
//! - Different definitions are an error naming every file. The object's last unambiguous
//!   definition (from an earlier read) stays in force until only one definition remains, as
//!   an unreadable file's last good content does.
//! - With no earlier definition, an Istio object is compiled fail-closed from each
//!   definition as an invalid object (an invalid ALLOW matches nothing, an invalid DENY
//!   matches everything its readable selector selects, an invalid PeerAuthentication is
//!   STRICT), so no copy can open what another closes; a `Workload` is left out (its Envoy
//!   gets no configuration and keeps its last one).
//!
//! Keeping both definitions would apply the union of two ALLOW policies, wider than either;
//! keeping the first in file order would let a new file silently replace a DENY.

use crate::registry::{WorkloadEntry, WorkloadKey};
use peerguard_filter::istio::{InvalidObject, Object, ObjectKey, Origin, Resource};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The last unambiguous definition of every object, across reads.
#[derive(Debug, Default)]
pub struct Objects {
    resources: BTreeMap<ObjectKey, Resource>,
    workloads: BTreeMap<WorkloadKey, WorkloadEntry>,
}

/// `kind namespace/name` of a resource; `None` when it has no name to tell it by.
fn key(r: &Resource) -> Option<ObjectKey> {
    let (kind, meta) = match r {
        Resource::PeerAuthentication(o) => ("PeerAuthentication", &o.metadata),
        Resource::AuthorizationPolicy(o) => ("AuthorizationPolicy", &o.metadata),
        Resource::DestinationRule(o) => ("DestinationRule", &o.metadata),
        Resource::LegacyPolicy(o) => ("Policy", &o.metadata),
        Resource::MeshPolicy(o) => ("MeshPolicy", &o.metadata),
        Resource::RequestAuthentication(o) => ("RequestAuthentication", &o.metadata),
        Resource::Invalid(o) => (o.kind.as_str(), &o.metadata),
    };
    (!meta.name.is_empty()).then(|| ObjectKey {
        kind: kind.to_string(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
    })
}

fn origin(r: &Resource) -> &Origin {
    match r {
        Resource::PeerAuthentication(o) => &o.origin,
        Resource::AuthorizationPolicy(o) => &o.origin,
        Resource::DestinationRule(o) => &o.origin,
        Resource::LegacyPolicy(o) | Resource::MeshPolicy(o) => &o.origin,
        Resource::RequestAuthentication(o) => &o.origin,
        Resource::Invalid(o) => &o.origin,
    }
}

/// The definition without where it was written, for comparing.
fn content(r: &Resource) -> Resource {
    let mut r = r.clone();
    let blank = Origin::default();
    match &mut r {
        Resource::PeerAuthentication(o) => o.origin = blank,
        Resource::AuthorizationPolicy(o) => o.origin = blank,
        Resource::DestinationRule(o) => o.origin = blank,
        Resource::LegacyPolicy(o) | Resource::MeshPolicy(o) => o.origin = blank,
        Resource::RequestAuthentication(o) => o.origin = blank,
        Resource::Invalid(o) => o.origin = blank,
    }
    r
}

fn invalid<S: Serialize>(kind: &str, o: &Object<S>, why: &str) -> InvalidObject {
    // The shape the compiler reads an invalid object's selector and action from.
    let raw = serde_json::json!({
        "apiVersion": o.api_version,
        "kind": kind,
        "metadata": serde_json::to_value(&o.metadata).unwrap_or_default(),
        "spec": serde_json::to_value(&o.spec).unwrap_or_default(),
    });
    InvalidObject {
        kind: kind.to_string(),
        api_version: o.api_version.clone(),
        metadata: o.metadata.clone(),
        origin: o.origin.clone(),
        raw,
        error: why.to_string(),
    }
}

fn as_invalid(r: &Resource, kind: &str, why: &str) -> Resource {
    Resource::Invalid(match r {
        Resource::PeerAuthentication(o) => invalid(kind, o, why),
        Resource::AuthorizationPolicy(o) => invalid(kind, o, why),
        Resource::DestinationRule(o) => invalid(kind, o, why),
        Resource::LegacyPolicy(o) | Resource::MeshPolicy(o) => invalid(kind, o, why),
        Resource::RequestAuthentication(o) => invalid(kind, o, why),
        Resource::Invalid(o) => InvalidObject {
            error: format!("{why}; {}", o.error),
            ..o.clone()
        },
    })
}

fn files<'a>(list: impl Iterator<Item = &'a str>) -> String {
    list.collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ")
}

impl Objects {
    /// Applies the rule to one read's objects; returns what to use and the errors.
    pub fn resolve(
        &mut self,
        resources: Vec<Resource>,
        workloads: Vec<WorkloadEntry>,
    ) -> (Vec<Resource>, Vec<WorkloadEntry>, Vec<String>) {
        let mut errors = Vec::new();
        let (resources, memory) = self.resolve_resources(resources, &mut errors);
        self.resources = memory;
        let (workloads, memory) = self.resolve_workloads(workloads, &mut errors);
        self.workloads = memory;
        (resources, workloads, errors)
    }

    fn resolve_resources(
        &self,
        resources: Vec<Resource>,
        errors: &mut Vec<String>,
    ) -> (Vec<Resource>, BTreeMap<ObjectKey, Resource>) {
        let mut groups: BTreeMap<ObjectKey, Vec<&Resource>> = BTreeMap::new();
        for r in &resources {
            if let Some(k) = key(r) {
                groups.entry(k).or_default().push(r);
            }
        }
        let mut memory = BTreeMap::new();
        // Keys already emitted (the first copy stands for identical ones).
        let mut done = BTreeSet::new();
        let mut out = Vec::new();
        for r in &resources {
            let Some(k) = key(r) else {
                out.push(r.clone());
                continue;
            };
            if !done.insert(k.clone()) {
                continue;
            }
            let group = groups.get(&k).map(Vec::as_slice).unwrap_or_default();
            let where_ = files(group.iter().map(|r| origin(r).file.as_str()));
            // One definition (the common case) needs no comparing, nor the copies it takes.
            let identical = group.len() <= 1 || {
                let first = content(r);
                group.iter().all(|g| content(g) == first)
            };
            if identical {
                if group.len() > 1 {
                    errors.push(format!(
                        "{where_}: {k}: defined {} times, identically; read as one object",
                        group.len()
                    ));
                }
                memory.insert(k, r.clone());
                out.push(r.clone());
            } else if let Some(previous) = self.resources.get(&k) {
                errors.push(format!(
                    "{where_}: {k}: defined more than once, differently; the definition read before (from {}) stays in force until only one remains",
                    origin(previous).file
                ));
                memory.insert(k, previous.clone());
                out.push(previous.clone());
            } else {
                let why = format!("defined more than once, differently ({where_}), with no earlier definition: each definition is compiled as invalid (fail closed) until only one remains");
                errors.push(format!("{where_}: {k}: {why}"));
                out.extend(group.iter().map(|g| as_invalid(g, &k.kind, &why)));
            }
        }
        (out, memory)
    }

    fn resolve_workloads(
        &self,
        workloads: Vec<WorkloadEntry>,
        errors: &mut Vec<String>,
    ) -> (Vec<WorkloadEntry>, BTreeMap<WorkloadKey, WorkloadEntry>) {
        let mut groups: BTreeMap<WorkloadKey, Vec<WorkloadEntry>> = BTreeMap::new();
        for w in workloads {
            groups.entry(w.key.clone()).or_default().push(w);
        }
        let mut memory = BTreeMap::new();
        let mut out = Vec::new();
        let same = |a: &WorkloadEntry, b: &WorkloadEntry| a.labels == b.labels && a.spec == b.spec;
        for (k, group) in groups {
            let where_ = files(group.iter().map(|w| w.file.as_str()));
            let Some(first) = group.first() else { continue };
            let object = format!("{} {k}", crate::registry::KIND);
            if group.iter().all(|w| same(w, first)) {
                if group.len() > 1 {
                    errors.push(format!(
                        "{where_}: {object}: defined {} times, identically; read as one object",
                        group.len()
                    ));
                }
                memory.insert(k, first.clone());
                out.push(first.clone());
            } else if let Some(previous) = self.workloads.get(&k) {
                errors.push(format!(
                    "{where_}: {object}: defined more than once, differently; the definition read before (from {}) stays in force until only one remains",
                    previous.file
                ));
                memory.insert(k, previous.clone());
                out.push(previous.clone());
            } else {
                errors.push(format!(
                    "{where_}: {object}: defined more than once, differently, with no earlier definition: left out (no configuration, no certificate) until only one remains"
                ));
            }
        }
        (out, memory)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::registry::parse_workload;
    use peerguard_filter::istio::parse::parse_str;

    const ALLOW_A: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow, namespace: foo}\nspec:\n  action: ALLOW\n  rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/a]}}]}]\n";

    fn parse(text: &str, file: &str) -> Vec<Resource> {
        parse_str(text, file).resources
    }

    fn workload(sa: &str, file: &str) -> WorkloadEntry {
        let doc: serde_json::Value = serde_saphyr::from_str(&format!(
            "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w, namespace: foo}}\nspec: {{serviceAccount: {sa}}}\n"
        ))
        .unwrap();
        parse_workload(&doc, file).unwrap()
    }

    #[test]
    fn identical_copies_are_one_object() {
        let mut objects = Objects::default();
        let mut rs = parse(ALLOW_A, "a.yaml");
        rs.extend(parse(ALLOW_A, "b.yaml"));
        let (out, wl, errors) =
            objects.resolve(rs, vec![workload("a", "1.yaml"), workload("a", "2.yaml")]);
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0], Resource::AuthorizationPolicy(_)));
        assert_eq!(wl.len(), 1);
        assert_eq!(errors.len(), 2);
        assert!(
            errors[0].starts_with(
                "a.yaml, b.yaml: AuthorizationPolicy foo/allow: defined 2 times, identically"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn a_conflict_keeps_the_earlier_definition_or_fails_closed() {
        let other = ALLOW_A.replace("sa/a]", "sa/b]");
        // Never unambiguous: every copy is compiled as an invalid object (an invalid ALLOW
        // matches nothing), never as the union of both.
        let mut fresh = Objects::default();
        let mut rs = parse(ALLOW_A, "a.yaml");
        rs.extend(parse(&other, "b.yaml"));
        let (out, wl, errors) = fresh.resolve(
            rs.clone(),
            vec![workload("a", "1.yaml"), workload("b", "2.yaml")],
        );
        assert_eq!(out.len(), 2);
        for r in &out {
            let Resource::Invalid(o) = r else {
                panic!("{r:?}")
            };
            assert_eq!(o.kind, "AuthorizationPolicy");
            assert_eq!(
                o.raw.pointer("/spec/action").and_then(|a| a.as_str()),
                Some("ALLOW")
            );
        }
        assert!(
            wl.is_empty(),
            "a conflicting Workload with no history is left out"
        );
        assert!(errors.iter().any(|e| e.starts_with("a.yaml, b.yaml: AuthorizationPolicy foo/allow: defined more than once, differently")), "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("1.yaml, 2.yaml: Workload foo/w: defined more than once")),
            "{errors:?}"
        );

        // With history: the earlier definition stays, for as long as the conflict lasts.
        let mut objects = Objects::default();
        let (_, _, e) = objects.resolve(parse(ALLOW_A, "a.yaml"), vec![workload("a", "1.yaml")]);
        assert!(e.is_empty());
        for _ in 0..2 {
            let (out, wl, errors) = objects.resolve(
                rs.clone(),
                vec![workload("a", "1.yaml"), workload("b", "2.yaml")],
            );
            assert_eq!(out, parse(ALLOW_A, "a.yaml"));
            assert_eq!(wl[0].spec.service_account, "a");
            assert!(
                errors
                    .iter()
                    .all(|e| e.contains("the definition read before (from")),
                "{errors:?}"
            );
        }
        // Resolved: the one remaining definition is used.
        let (out, wl, errors) =
            objects.resolve(parse(&other, "b.yaml"), vec![workload("b", "2.yaml")]);
        assert_eq!(out, parse(&other, "b.yaml"));
        assert_eq!(wl[0].spec.service_account, "b");
        assert!(errors.is_empty());
    }
}
