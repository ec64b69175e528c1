//! Effective mTLS mode per workload port from PeerAuthentication (spec 2.2–2.4).

use super::select::{labels_subset, raw_selector, selector_labels, Created};
use super::values;
use super::{Diagnostics, MeshConfig, Workload, UNREADABLE_NAMESPACE};
use crate::istio::{InvalidObject, Object, PeerAuthenticationSpec, PeerMode, Resource};
use crate::schema::{ModeFrom, MtlsMode, MtlsPolicy};
use std::collections::BTreeMap;

pub use crate::readiness::MTLS_DRY_RUN_ANNOTATION;

/// One PeerAuthentication reduced to what scope resolution needs.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub namespace: String,
    /// The namespace could not be read: the object counts as being in the workload's own
    /// namespace, whatever it is (fail closed).
    pub any_namespace: bool,
    pub name: String,
    pub created: Created,
    /// Non-empty `matchLabels` only; an empty selector counts as none.
    pub selector: Option<BTreeMap<String, String>>,
    pub mode: PeerMode,
    pub port_level: BTreeMap<u32, PeerMode>,
    /// `peerguard.dev/dry-run` parsed true (only ever on a valid object).
    pub dry_run: bool,
}

impl Candidate {
    fn label(&self) -> String {
        format!("PeerAuthentication {}/{}", self.namespace, self.name)
    }

    pub fn from_object(o: &Object<PeerAuthenticationSpec>, diags: &mut Diagnostics) -> Self {
        let namespace = o
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let label = format!("PeerAuthentication {namespace}/{}", o.metadata.name);
        Candidate {
            dry_run: dry_run(
                o.metadata.annotations.get(MTLS_DRY_RUN_ANNOTATION),
                &label,
                diags,
            ),
            created: Created::of(&o.metadata, "PeerAuthentication", &namespace, diags),
            selector: o
                .spec
                .selector
                .as_ref()
                .and_then(|s| selector_labels(&s.match_labels)),
            mode: o.spec.mtls.as_ref().map(|m| m.mode).unwrap_or_default(),
            port_level: o
                .spec
                .port_level_mtls
                .iter()
                .map(|(p, m)| (*p, m.mode))
                .collect(),
            name: o.metadata.name.clone(),
            namespace,
            any_namespace: false,
        }
    }

    /// peerguard choice (fail closed): an invalid PeerAuthentication counts as STRICT at
    /// the scope its readable selector gives it (none readable, or one Istio would refuse:
    /// namespace/mesh scope; an unreadable namespace: the workload's own namespace).
    pub fn from_invalid(o: &InvalidObject, diags: &mut Diagnostics) -> Self {
        let any_namespace = o.namespace_unreadable();
        let namespace = o
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| UNREADABLE_NAMESPACE.into());
        let selector = raw_selector(o.raw.pointer("/spec/selector"));
        Candidate {
            any_namespace,
            created: Created::of(&o.metadata, "PeerAuthentication", &namespace, diags),
            selector,
            mode: PeerMode::Strict,
            port_level: BTreeMap::new(),
            // Fail closed: an invalid object's STRICT is enforced, whatever it says.
            dry_run: false,
            name: o.metadata.name.clone(),
            namespace,
        }
    }
}

pub(super) fn candidates(
    resources: &[Resource],
    diags: &mut Diagnostics,
) -> Vec<(Candidate, Option<String>)> {
    let mut out = Vec::new();
    for r in resources {
        match r {
            Resource::PeerAuthentication(o) => out.push((Candidate::from_object(o, diags), None)),
            Resource::Invalid(o) if o.kind == "PeerAuthentication" => {
                out.push((Candidate::from_invalid(o, diags), Some(o.error.clone())))
            }
            _ => {}
        }
    }
    out
}

/// The mTLS policy from PeerAuthentication, or `None` when no PeerAuthentication applies to
/// the workload at any scope (legacy policies may then decide, spec 3.5).
pub(super) fn resolve(
    all: &[(Candidate, Option<String>)],
    workload: &Workload,
    mesh: &MeshConfig,
    diags: &mut Diagnostics,
) -> Option<MtlsPolicy> {
    let mut mesh_scope = Vec::new();
    let mut ns_scope = Vec::new();
    let mut wl_scope = Vec::new();
    for (c, invalid) in all {
        let applies_by_labels = c
            .selector
            .as_ref()
            .is_none_or(|s| labels_subset(s, &workload.labels));
        let namespace = if c.any_namespace {
            &workload.namespace
        } else {
            &c.namespace
        };
        if *namespace == mesh.root_namespace {
            if c.selector.is_some() {
                if applies_by_labels {
                    diags.push(format!(
                        "{} ignored: a PeerAuthentication with a selector in the root namespace {} applies to no workload (Istio ignores it)",
                        c.label(),
                        mesh.root_namespace
                    ));
                }
                continue;
            }
            mesh_scope.push(c);
        } else if *namespace == workload.namespace {
            match &c.selector {
                None => ns_scope.push(c),
                Some(_) if applies_by_labels => wl_scope.push(c),
                Some(_) => continue,
            }
        } else {
            continue;
        }
        if let Some(err) = invalid {
            diags.push(format!(
                "{} is invalid, treated as STRICT (fail closed): {err}",
                c.label()
            ));
        }
    }
    if mesh_scope.is_empty() && ns_scope.is_empty() && wl_scope.is_empty() {
        return None;
    }
    let mesh_pa = oldest(mesh_scope, "mesh", diags);
    let ns_pa = oldest(ns_scope, "namespace", diags);
    let wl_pa = oldest(wl_scope, "workload", diags);

    let mut resolved = ModeFrom::new(MtlsMode::Permissive, None);
    for c in [mesh_pa, ns_pa, wl_pa].into_iter().flatten() {
        if let Some(mode) = resolved_mode(c.mode) {
            resolved = setting(c, mode, c.label(), &resolved, diags);
        }
    }
    let mut ports = BTreeMap::new();
    if let Some(wl) = wl_pa {
        for (port, m) in &wl.port_level {
            let Ok(p) = u16::try_from(*port) else {
                diags.push(format!(
                    "{}: portLevelMtls port {port} is out of range and ignored",
                    wl.label()
                ));
                continue;
            };
            if p == 0 {
                diags.push(format!(
                    "{}: portLevelMtls port 0 is invalid and ignored",
                    wl.label()
                ));
                continue;
            }
            let entry = match resolved_mode(*m) {
                Some(mode) => setting(
                    wl,
                    mode,
                    format!("{} portLevelMtls[{p}]", wl.label()),
                    &resolved,
                    diags,
                ),
                None => resolved.clone(),
            };
            ports.insert(p, entry);
        }
    }
    for c in [mesh_pa, ns_pa].into_iter().flatten() {
        if !c.port_level.is_empty() {
            diags.push(format!(
                "{}: portLevelMtls without a selector has no effect",
                c.label()
            ));
        }
    }
    Some(MtlsPolicy {
        default: resolved,
        ports,
    })
}

/// `peerguard.dev/dry-run`, parsed like Go `strconv.ParseBool` (as `istio.io/dry-run` is);
/// unparsable → not a dry-run (the safer direction: the STRICT is enforced).
fn dry_run(value: Option<&String>, label: &str, diags: &mut Diagnostics) -> bool {
    let Some(v) = value else { return false };
    values::parse_go_bool(v).unwrap_or_else(|| {
        diags.push(format!(
            "{label}: annotation {MTLS_DRY_RUN_ANNOTATION}={v:?} is not a boolean; its mTLS mode is enforced"
        ));
        false
    })
}

/// The mode `c` sets (at its scope or one of its ports), `overrides` being what the wider
/// scopes resolved to. Only a STRICT can be a dry-run: another mode is enforced as written.
/// A dry-run STRICT never loosens an enforced STRICT from a wider scope (Istio, which
/// ignores the annotation, would enforce it): that stays enforced.
fn setting(
    c: &Candidate,
    mode: MtlsMode,
    from: String,
    overrides: &ModeFrom,
    diags: &mut Diagnostics,
) -> ModeFrom {
    if !c.dry_run {
        return ModeFrom::new(mode, Some(from));
    }
    if mode != MtlsMode::Strict {
        diags.push(format!(
            "{from}: {MTLS_DRY_RUN_ANNOTATION} applies to STRICT only; mode {mode:?} is enforced as written"
        ));
        return ModeFrom::new(mode, Some(from));
    }
    if overrides.mode == MtlsMode::Strict && !overrides.dry_run {
        diags.push(format!(
            "{from}: dry-run STRICT does not relax the enforced STRICT of {}; STRICT is enforced",
            overrides.from.as_deref().unwrap_or("a wider scope")
        ));
        return ModeFrom::new(mode, Some(from));
    }
    ModeFrom {
        mode,
        from: Some(from),
        dry_run: true,
    }
}

fn resolved_mode(m: PeerMode) -> Option<MtlsMode> {
    match m {
        PeerMode::Unset => None,
        PeerMode::Disable => Some(MtlsMode::Disable),
        PeerMode::Permissive => Some(MtlsMode::Permissive),
        PeerMode::Strict => Some(MtlsMode::Strict),
    }
}

/// Istio keeps the oldest policy of a scope (ties: name, then namespace) and ignores the rest.
fn oldest<'a>(
    mut cs: Vec<&'a Candidate>,
    scope: &str,
    diags: &mut Diagnostics,
) -> Option<&'a Candidate> {
    cs.sort_by(|a, b| (a.created, &a.name, &a.namespace).cmp(&(b.created, &b.name, &b.namespace)));
    let winner = cs.first().copied()?;
    for c in &cs[1..] {
        diags.push(format!(
            "{} ignored: {} is older at {scope} scope (oldest wins)",
            c.label(),
            winner.label()
        ));
    }
    Some(winner)
}
