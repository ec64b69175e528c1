//! Legacy `authentication.istio.io/v1alpha1` Policy / MeshPolicy → per-port mTLS mode
//! (spec 3). Precedence per port (3.4): port-specific service policy, port-less service
//! policy, namespace `default` Policy, MeshPolicy `default`, else nothing (PERMISSIVE, 7.3).

use super::select::Created;
use super::{Diagnostics, Workload, JWT_NOT_ENFORCED, UNREADABLE_NAMESPACE};
use crate::istio::{
    InvalidObject, LegacyMtlsMode, LegacyPeer, LegacyPolicySpec, LegacyPortSelector, LegacyTarget,
    Object, Resource,
};
use crate::schema::{ModeFrom, MtlsMode, MtlsPolicy};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
struct Candidate {
    /// `None` for the cluster-scoped MeshPolicy.
    namespace: Option<String>,
    /// An invalid Policy whose namespace cannot be read: it counts as being in the
    /// workload's namespace (fail closed).
    any_namespace: bool,
    name: String,
    created: Created,
    targets: Vec<LegacyTarget>,
    mode: MtlsMode,
}

impl Candidate {
    fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("Policy {ns}/{}", self.name),
            None => format!("MeshPolicy {}", self.name),
        }
    }

    fn mode_from(&self) -> ModeFrom {
        ModeFrom::new(self.mode, Some(self.label()))
    }

    fn from_object(
        o: &Object<LegacyPolicySpec>,
        mesh_policy: bool,
        diags: &mut Diagnostics,
    ) -> Self {
        let namespace = if mesh_policy {
            None
        } else {
            Some(
                o.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            )
        };
        let kind = if mesh_policy { "MeshPolicy" } else { "Policy" };
        Candidate {
            created: Created::of(&o.metadata, kind, namespace.as_deref().unwrap_or(""), diags),
            targets: o.spec.targets.clone(),
            mode: legacy_mode(&o.spec),
            name: o.metadata.name.clone(),
            namespace,
            any_namespace: false,
        }
    }

    /// peerguard choice (fail closed): an invalid legacy policy counts as STRICT for the
    /// targets that can still be read (none readable: namespace/mesh-wide).
    fn from_invalid(o: &InvalidObject, mesh_policy: bool, diags: &mut Diagnostics) -> Self {
        let any_namespace = !mesh_policy && o.namespace_unreadable();
        let namespace = if mesh_policy {
            None
        } else {
            Some(
                o.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| UNREADABLE_NAMESPACE.into()),
            )
        };
        let targets = o
            .raw
            .pointer("/spec/targets")
            .and_then(|t| t.as_array())
            .map(|ts| ts.iter().filter_map(raw_target).collect())
            .unwrap_or_default();
        Candidate {
            created: Created::of(
                &o.metadata,
                &o.kind,
                namespace.as_deref().unwrap_or(""),
                diags,
            ),
            targets,
            mode: MtlsMode::Strict,
            name: o.metadata.name.clone(),
            namespace,
            any_namespace,
        }
    }
}

fn raw_target(v: &serde_json::Value) -> Option<LegacyTarget> {
    let name = v.get("name")?.as_str()?.to_string();
    let ports = v
        .get("ports")
        .and_then(|p| p.as_array())
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    if let Some(n) = p.get("number").and_then(|n| n.as_u64()) {
                        u32::try_from(n).ok().map(LegacyPortSelector::Number)
                    } else {
                        p.get("name")
                            .and_then(|n| n.as_str())
                            .map(|n| LegacyPortSelector::Name(n.to_string()))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Some(LegacyTarget { name, ports })
}

/// First `mtls` peer decides; `mtls: {}` is STRICT; no mtls peer = plaintext only (3.1).
fn legacy_mode(spec: &LegacyPolicySpec) -> MtlsMode {
    match spec.mtls_mode() {
        Some(LegacyMtlsMode::Strict) => MtlsMode::Strict,
        Some(LegacyMtlsMode::Permissive) => MtlsMode::Permissive,
        None => MtlsMode::Disable,
    }
}

fn oldest<'a>(cs: impl Iterator<Item = &'a Candidate>) -> Option<&'a Candidate> {
    cs.min_by(|a, b| (a.created, &a.name, &a.namespace).cmp(&(b.created, &b.name, &b.namespace)))
}

/// The legacy result for `workload`, or `None` when no legacy policy applies to it.
pub(super) fn resolve(
    resources: &[Resource],
    workload: &Workload,
    diags: &mut Diagnostics,
) -> Option<MtlsPolicy> {
    let mut service = Vec::new();
    let mut namespace = Vec::new();
    let mut meshwide = Vec::new();
    for r in resources {
        let (c, invalid, spec) = match r {
            Resource::LegacyPolicy(o) => (
                Candidate::from_object(o, false, diags),
                None,
                Some((&o.spec, &o.origin.file)),
            ),
            Resource::MeshPolicy(o) => (
                Candidate::from_object(o, true, diags),
                None,
                Some((&o.spec, &o.origin.file)),
            ),
            Resource::Invalid(o) if o.kind == "Policy" || o.kind == "MeshPolicy" => (
                Candidate::from_invalid(o, o.kind == "MeshPolicy", diags),
                Some(o.error.as_str()),
                None,
            ),
            _ => continue,
        };
        let applies = match &c.namespace {
            None => {
                if c.name != "default" {
                    diags.push(format!(
                        "{} ignored: only the MeshPolicy named default is used",
                        c.label()
                    ));
                    continue;
                }
                meshwide.push(c.clone());
                true
            }
            Some(ns) if *ns == workload.namespace || c.any_namespace => {
                if c.targets.is_empty() {
                    if c.name != "default" && invalid.is_none() {
                        diags.push(format!(
                            "{} ignored: a Policy without targets must be named default",
                            c.label()
                        ));
                        continue;
                    }
                    namespace.push(c.clone());
                    true
                } else if c
                    .targets
                    .iter()
                    .any(|t| workload.services.contains(&t.name))
                {
                    service.push(c.clone());
                    true
                } else {
                    false
                }
            }
            Some(_) => false,
        };
        if !applies {
            continue;
        }
        if let Some(err) = invalid {
            diags.push(format!(
                "{} is invalid, treated as STRICT (fail closed): {err}",
                c.label()
            ));
        }
        if let Some((spec, file)) = spec {
            let jwt_peer = spec
                .peers
                .iter()
                .position(|p| matches!(p, LegacyPeer::Jwt(_)));
            if let Some(i) = jwt_peer {
                diags.push(format!(
                    "{JWT_NOT_ENFORCED}: {file}: {}: spec.peers[{i}].jwt: a jwt peer authenticates nobody here and is ignored",
                    c.label()
                ));
            }
            if spec.has_origins {
                diags.push(format!(
                    "{JWT_NOT_ENFORCED}: {file}: {}: spec.origins/principalBinding: end-user authentication is ignored",
                    c.label()
                ));
            }
        }
    }
    if service.is_empty() && namespace.is_empty() && meshwide.is_empty() {
        return None;
    }

    // Ports each service policy selects explicitly (as workload ports).
    let covered: Vec<BTreeSet<u16>> = service.iter().map(|c| covered_ports(c, workload)).collect();
    let portless = |c: &Candidate| {
        c.targets
            .iter()
            .any(|t| t.ports.is_empty() && workload.services.contains(&t.name))
    };
    let fallback = oldest(service.iter().filter(|c| portless(c)))
        .or_else(|| oldest(namespace.iter()))
        .or_else(|| oldest(meshwide.iter()));
    let default = fallback
        .map(Candidate::mode_from)
        .unwrap_or(ModeFrom::new(MtlsMode::Permissive, None));

    let all_ports: BTreeSet<u16> = covered.iter().flatten().copied().collect();
    let mut ports = BTreeMap::new();
    for p in all_ports {
        let winner = oldest(
            service
                .iter()
                .zip(&covered)
                .filter(|(_, set)| set.contains(&p))
                .map(|(c, _)| c),
        );
        if let Some(w) = winner {
            ports.insert(p, w.mode_from());
        }
    }
    Some(MtlsPolicy { default, ports })
}

/// Workload ports selected by the port lists of `c`'s targets that name this workload's
/// Services. Service ports map to target ports through `workload.service_ports`; without a
/// mapping for that Service a number is taken as the workload port and a name selects nothing.
fn covered_ports(c: &Candidate, workload: &Workload) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for t in c
        .targets
        .iter()
        .filter(|t| workload.services.contains(&t.name))
    {
        let mapped: Vec<_> = workload
            .service_ports
            .iter()
            .filter(|sp| sp.service == t.name)
            .collect();
        for sel in &t.ports {
            match sel {
                LegacyPortSelector::Number(n) if mapped.is_empty() => {
                    if let Ok(p) = u16::try_from(*n) {
                        out.insert(p);
                    }
                }
                LegacyPortSelector::Number(n) => {
                    out.extend(
                        mapped
                            .iter()
                            .filter(|sp| u32::from(sp.port) == *n)
                            .map(|sp| sp.target_port),
                    );
                }
                LegacyPortSelector::Name(name) => {
                    out.extend(
                        mapped
                            .iter()
                            .filter(|sp| sp.name.as_deref() == Some(name.as_str()))
                            .map(|sp| sp.target_port),
                    );
                }
            }
        }
    }
    out
}
