//! PG301: the legacy `authentication.istio.io/v1alpha1` Policy and MeshPolicy (removed in
//! Istio 1.6), each with the equivalent `security.istio.io/v1` PeerAuthentication, mapped as
//! istio-semantics 3.6 says (Istio's "migrate alpha policy" blog and its conversion tool).

use super::{key_of, namespace_of, Ctx, Finding, Severity};
use crate::registry::WorkloadEntry;
use peerguard_filter::istio::{
    LegacyMtlsMode, LegacyPolicySpec, LegacyPortSelector, Object, Resource,
};
use std::collections::BTreeMap;

pub(super) fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    for r in &ctx.inputs.resources {
        let (kind, o) = match r {
            Resource::LegacyPolicy(o) => ("Policy", o),
            Resource::MeshPolicy(o) => ("MeshPolicy", o),
            _ => continue,
        };
        let (yaml, notes) = equivalent(ctx, kind, o);
        let mut hint = format!(
            "replace it with (then delete the {kind}):\n{}",
            yaml.trim_end()
        );
        for n in notes {
            hint.push_str(&format!("\nnote: {n}"));
        }
        out.push(Finding {
            code: "PG301",
            severity: Severity::Warning,
            object: key_of(kind, o),
            file: o.origin.file.clone(),
            field: "apiVersion".into(),
            message: format!("legacy authentication.istio.io/v1alpha1 {kind}: removed in Istio 1.6 (read by peerguard for migration only), and ignored for every workload a PeerAuthentication applies to (Istio 1.5 rule; istio-semantics 3.5)"),
            hint,
        });
    }
}

fn mode_name(spec: &LegacyPolicySpec) -> &'static str {
    // No `mtls` peer at all is plaintext only at run time (istio-semantics 3.1, 3.6).
    match spec.mtls_mode() {
        Some(LegacyMtlsMode::Strict) => "STRICT",
        Some(LegacyMtlsMode::Permissive) => "PERMISSIVE",
        None => "DISABLE",
    }
}

/// The PeerAuthentication(s) that do what `o` does, as YAML, and what cannot be carried over.
fn equivalent(ctx: &Ctx, kind: &str, o: &Object<LegacyPolicySpec>) -> (String, Vec<String>) {
    let mode = mode_name(&o.spec);
    let mut notes = Vec::new();
    if o.spec.has_origins
        || o.spec
            .peers
            .iter()
            .any(|p| matches!(p, peerguard_filter::istio::LegacyPeer::Jwt(_)))
    {
        notes.push("its JWT parts (origins, principalBinding, jwt peers) become a RequestAuthentication, which peerguard does not enforce".to_string());
    }
    if mode == "DISABLE" {
        notes.push("no `mtls` peer means plaintext only at run time (DISABLE); Istio's conversion tool writes PERMISSIVE instead, a migration convenience".to_string());
    }
    let header = |ns: &str, name: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {ns}\n")
    };
    if kind == "MeshPolicy" || o.spec.targets.is_empty() {
        let ns = if kind == "MeshPolicy" {
            ctx.mesh.root_namespace.as_str()
        } else {
            namespace_of(o)
        };
        return (
            format!(
                "{}spec:\n  mtls:\n    mode: {mode}\n",
                header(ns, "default")
            ),
            notes,
        );
    }
    let ns = namespace_of(o);
    let mut docs = Vec::new();
    for t in &o.spec.targets {
        let behind: Vec<&WorkloadEntry> = ctx
            .workloads
            .iter()
            .map(|c| c.entry)
            .filter(|e| e.key.namespace == ns && e.spec.services.iter().any(|s| s.name == t.name))
            .collect();
        // The labels every workload behind the Service shares stand for its selector.
        let mut labels: Option<BTreeMap<String, String>> = None;
        for e in &behind {
            labels = Some(match labels {
                None => e.labels.clone(),
                Some(l) => l
                    .into_iter()
                    .filter(|(k, v)| e.labels.get(k) == Some(v))
                    .collect(),
            });
        }
        let selector = match labels.filter(|l| !l.is_empty()) {
            Some(l) => {
                notes.push(format!("the selector lists the labels the registered workloads behind Service {ns}/{} share; the Service's own selector is the exact equivalent", t.name));
                l.iter()
                    .map(|(k, v)| format!("      {k}: {v:?}\n"))
                    .collect::<String>()
            }
            None => {
                notes.push(format!("no registered workload is behind Service {ns}/{}: use the Service's own selector", t.name));
                format!("      # the selector of Service {}\n", t.name)
            }
        };
        let name = if o.spec.targets.len() == 1 {
            o.metadata.name.clone()
        } else {
            format!("{}-{}", o.metadata.name, t.name)
        };
        let mut doc = format!(
            "{}spec:\n  selector:\n    matchLabels:\n{selector}",
            header(ns, &name)
        );
        if t.ports.is_empty() {
            doc.push_str(&format!("  mtls:\n    mode: {mode}\n"));
        } else {
            doc.push_str("  portLevelMtls:\n");
            for p in &t.ports {
                // portLevelMtls is keyed by the workload (target) port, the legacy target by
                // the Service port (istio-semantics 2.4, 3.6).
                let target = behind.iter().find_map(|e| {
                    e.spec
                        .services
                        .iter()
                        .filter(|s| s.name == t.name)
                        .flat_map(|s| &s.ports)
                        .find(|sp| match p {
                            LegacyPortSelector::Number(n) => u32::from(sp.port) == *n,
                            LegacyPortSelector::Name(n) => sp.name.as_deref() == Some(n),
                        })
                        .map(|sp| sp.target_port.unwrap_or(sp.port))
                });
                match (target, p) {
                    (Some(t), _) => doc.push_str(&format!("    {t}:\n      mode: {mode}\n")),
                    (None, LegacyPortSelector::Number(n)) => {
                        notes.push(format!(
                            "Service port {n} of {} is not known: write its targetPort",
                            t.name
                        ));
                        doc.push_str(&format!(
                            "    {n}: # the targetPort of Service port {n}\n      mode: {mode}\n"
                        ));
                    }
                    (None, LegacyPortSelector::Name(n)) => {
                        notes.push(format!(
                            "Service port {n:?} of {} is not known: write its targetPort",
                            t.name
                        ));
                        doc.push_str(&format!(
                            "    0: # the targetPort of Service port {n}\n      mode: {mode}\n"
                        ));
                    }
                }
            }
        }
        docs.push(doc);
    }
    (docs.join("---\n"), notes)
}
