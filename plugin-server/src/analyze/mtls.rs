//! PG1xx: mutual TLS migration traps (Istio's security FAQ, security best practices and the
//! auto mTLS task).
//!
//! - PG101 error: a DestinationRule makes client sidecars send plaintext (`DISABLE`) or TLS
//!   without the mesh certificate (`SIMPLE`) to a port that is STRICT: the server closes the
//!   connection, clients see 503.
//! - PG102 error: `ISTIO_MUTUAL` towards a workload without a sidecar.
//! - PG103 error: `ISTIO_MUTUAL` towards a port whose mode is DISABLE (the 503 of the auto
//!   mTLS task's last step).
//! - PG104 warning: several PeerAuthentications at one scope: only the oldest is used.
//! - PG105 error: `portLevelMtls` without a selector (refused by Istio; fail-closed STRICT here).
//! - PG106 warning: a PeerAuthentication with a selector in the root namespace (ignored).
//! - PG107 warning: the mesh is still PERMISSIVE (or DISABLE) mesh-wide.
//! - PG108 warning: a PeerAuthentication selector that matches no registered workload.

use super::{compiled, key_of, mesh_probe, namespace_of, Compiled, Ctx, Finding, Severity};
use peerguard_filter::client::{
    choose, ChoiceSource, ClientContext, ClientTls, Destination, Endpoint,
};
use peerguard_filter::compile::Workload;
use peerguard_filter::istio::{DestinationRuleSpec, Object, Resource, TlsMode};
use peerguard_filter::schema::MtlsMode;
use std::collections::{BTreeMap, BTreeSet};

const AUTO_MTLS: &str = "Istio: auto mutual TLS task, \"Working with sidecar migration\"; security FAQ \"503 errors after setting a DestinationRule\"";

pub(super) fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    destination_rules(ctx, out);
    shadowed(ctx, out);
    peer_authentications(ctx, out);
    still_permissive(ctx, out);
}

fn mode_name(m: MtlsMode) -> &'static str {
    match m {
        MtlsMode::Strict => "STRICT",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Disable => "DISABLE",
    }
}

fn tls_name(m: TlsMode) -> &'static str {
    match m {
        TlsMode::Disable => "DISABLE",
        TlsMode::Simple => "SIMPLE",
        TlsMode::Mutual => "MUTUAL",
        TlsMode::IstioMutual => "ISTIO_MUTUAL",
    }
}

/// The field of `rule` that holds the TLS settings used for `port` (and `subset`), mirroring
/// the order the client module reads them in (subset, then top level; port level first).
fn tls_field(rule: &DestinationRuleSpec, port: u16, subset: Option<&str>) -> String {
    let in_policy = |prefix: String, p: &peerguard_filter::istio::TrafficPolicy| match p
        .port_level_settings
        .iter()
        .position(|s| s.port.as_ref().and_then(|n| n.number) == Some(u32::from(port)))
    {
        Some(i) if p.port_level_settings[i].tls.is_some() => {
            Some(format!("{prefix}.portLevelSettings[{i}].tls.mode"))
        }
        Some(_) => None,
        None => p.tls.as_ref().map(|_| format!("{prefix}.tls.mode")),
    };
    if let Some(name) = subset {
        if let Some((i, s)) = rule
            .subsets
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
        {
            if let Some(f) = s
                .traffic_policy
                .as_ref()
                .and_then(|p| in_policy(format!("spec.subsets[{i}].trafficPolicy"), p))
            {
                return f;
            }
        }
    }
    rule.traffic_policy
        .as_ref()
        .and_then(|p| in_policy("spec.trafficPolicy".into(), p))
        .unwrap_or_else(|| "spec.trafficPolicy.tls.mode".into())
}

/// PG101–PG103: every registered destination (each Service port, each subset that selects
/// it) as seen from every client namespace, through the client module's choice.
fn destination_rules(ctx: &Ctx, out: &mut Vec<Finding>) {
    let rules: Vec<&Object<DestinationRuleSpec>> = ctx
        .inputs
        .resources
        .iter()
        .filter_map(|r| match r {
            Resource::DestinationRule(o) => Some(o),
            _ => None,
        })
        .collect();
    if rules.is_empty() {
        return;
    }
    let mut client_namespaces: BTreeSet<String> = ctx
        .workloads
        .iter()
        .map(|w| w.workload.namespace.clone())
        .collect();
    client_namespaces.extend(rules.iter().map(|r| namespace_of(r).to_string()));
    client_namespaces.insert(ctx.mesh.root_namespace.clone());
    let mut seen = BTreeSet::new();
    for c in &ctx.workloads {
        let subsets: Vec<Option<String>> = std::iter::once(None)
            .chain(rules.iter().flat_map(|r| {
                r.spec
                    .subsets
                    .iter()
                    .filter(|s| {
                        s.labels
                            .iter()
                            .all(|(k, v)| c.workload.labels.get(k) == Some(v))
                    })
                    .map(|s| Some(s.name.clone()))
            }))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for svc in &c.entry.spec.services {
            for port in &svc.ports {
                let target = port.target_port.unwrap_or(port.port);
                let server = c.policy.mtls.for_port(target);
                let endpoint = if c.entry.spec.sidecar {
                    Endpoint {
                        has_sidecar: true,
                        server_mode: server.mode,
                    }
                } else {
                    Endpoint::no_sidecar()
                };
                for subset in &subsets {
                    let dest = Destination {
                        service: svc.name.clone(),
                        namespace: c.workload.namespace.clone(),
                        port: port.port,
                        subset: subset.clone(),
                    };
                    for ns in &client_namespaces {
                        let client = ClientContext {
                            namespace: ns.clone(),
                            root_namespace: ctx.mesh.root_namespace.clone(),
                            ..ClientContext::default()
                        };
                        let choice = choose(&ctx.inputs.resources, &client, &dest, endpoint);
                        let ChoiceSource::DestinationRule { object, settings } = &choice.source
                        else {
                            continue;
                        };
                        let code = match (choice.tls, c.entry.spec.sidecar, server.mode) {
                            (ClientTls::Plaintext | ClientTls::Simple, true, MtlsMode::Strict) => {
                                "PG101"
                            }
                            (ClientTls::IstioMutual, false, _) => "PG102",
                            (ClientTls::IstioMutual, true, MtlsMode::Disable) => "PG103",
                            _ => continue,
                        };
                        if !seen.insert((
                            object.clone(),
                            c.entry.key.clone(),
                            svc.name.clone(),
                            port.port,
                            subset.clone(),
                        )) {
                            continue;
                        }
                        let rule = rules
                            .iter()
                            .find(|r| key_of("DestinationRule", r) == *object);
                        let field = rule
                            .map(|r| tls_field(&r.spec, port.port, subset.as_deref()))
                            .unwrap_or_default();
                        let at = format!(
                            "{}.{}:{}{} (workload {} port {target})",
                            svc.name,
                            c.workload.namespace,
                            port.port,
                            subset
                                .as_ref()
                                .map(|s| format!(" subset {s}"))
                                .unwrap_or_default(),
                            c.entry.key
                        );
                        let from = server
                            .from
                            .clone()
                            .unwrap_or_else(|| "nothing configured".into());
                        let mode = tls_name(settings.mode);
                        let (message, hint) = match code {
                            "PG101" => (
                                format!("tls.mode {mode} towards {at}, which is STRICT (from {from}): the server refuses the connection and clients see 503 ({AUTO_MTLS}; istio-semantics 5.3)"),
                                format!("remove `tls` from the DestinationRule (auto mTLS then sends ISTIO_MUTUAL) or set it to ISTIO_MUTUAL; or, if plaintext is intended, make port {target} PERMISSIVE with a workload PeerAuthentication (portLevelMtls)"),
                            ),
                            "PG102" => (
                                format!("tls.mode ISTIO_MUTUAL towards {at}, which runs without a sidecar: nothing terminates mTLS there, the connection fails (503) ({AUTO_MTLS}; istio-semantics 5.3)"),
                                "remove `tls` from the DestinationRule (auto mTLS sends plaintext to endpoints without a sidecar), or inject a sidecar into the workload".into(),
                            ),
                            _ => (
                                format!("tls.mode ISTIO_MUTUAL towards {at}, whose mTLS mode is DISABLE (from {from}): the server accepts plaintext only, clients see 503 (Istio: auto mutual TLS task, last step; istio-semantics 5.4)"),
                                format!("remove `tls` from the DestinationRule (auto mTLS follows the server's mode), or make port {target} PERMISSIVE/STRICT"),
                            ),
                        };
                        out.push(Finding {
                            code,
                            severity: Severity::Error,
                            object: object.clone(),
                            file: rule.map(|r| r.origin.file.clone()).unwrap_or_default(),
                            field,
                            message,
                            hint,
                        });
                    }
                }
            }
        }
    }
}

/// PG104: what `compile` reports as ignored at a scope ("X ignored: Y is older at S scope"),
/// for the mesh, each namespace holding PeerAuthentications, and each registered workload.
fn shadowed(ctx: &Ctx, out: &mut Vec<Finding>) {
    let mut probes: Vec<Workload> = vec![mesh_probe()];
    let namespaces: BTreeSet<&str> = ctx
        .inputs
        .resources
        .iter()
        .filter_map(|r| match r {
            Resource::PeerAuthentication(o) => Some(namespace_of(o)),
            _ => None,
        })
        .collect();
    for ns in namespaces {
        probes.push(Workload {
            namespace: ns.to_string(),
            ..mesh_probe()
        });
    }
    let mut diags: Vec<String> = probes
        .iter()
        .flat_map(|w| compiled(ctx.inputs, ctx.mesh, w).diagnostics)
        .collect();
    diags.extend(
        ctx.workloads
            .iter()
            .flat_map(|c| c.policy.diagnostics.iter().cloned()),
    );
    let mut seen = BTreeSet::new();
    for d in diags {
        let Some((ignored, rest)) = d.split_once(" ignored: ") else {
            continue;
        };
        let Some((winner, scope)) = rest.split_once(" is older at ") else {
            continue;
        };
        if !ignored.starts_with("PeerAuthentication ") || !seen.insert(ignored.to_string()) {
            continue;
        }
        let scope = scope.split(' ').next().unwrap_or_default();
        out.push(Finding {
            code: "PG104",
            severity: Severity::Warning,
            object: ignored.to_string(),
            file: ctx.file_of(ignored),
            field: if scope == "workload" {
                "spec.selector".into()
            } else {
                "metadata.name".into()
            },
            message: format!("shadowed: {winner} is older at {scope} scope, and Istio uses only the oldest PeerAuthentication of a scope; this one is ignored (Istio: PeerAuthentication reference, \"the oldest one is used\"; istio-semantics 2.3)"),
            hint: format!("merge it into {winner} and delete it (one PeerAuthentication per {scope} scope)"),
        });
    }
}

/// PG105, PG106, PG108: single-object checks.
fn peer_authentications(ctx: &Ctx, out: &mut Vec<Finding>) {
    let root = &ctx.mesh.root_namespace;
    for r in &ctx.inputs.resources {
        match r {
            Resource::PeerAuthentication(o) => {
                let selector = o
                    .spec
                    .selector
                    .as_ref()
                    .map(|s| &s.match_labels)
                    .filter(|m| !m.is_empty());
                let Some(selector) = selector else { continue };
                let key = key_of("PeerAuthentication", o);
                if namespace_of(o) == root {
                    out.push(Finding {
                        code: "PG106",
                        severity: Severity::Warning,
                        object: key,
                        file: o.origin.file.clone(),
                        field: "spec.selector".into(),
                        message: format!("a PeerAuthentication with a selector in the root namespace {root} applies to no workload: Istio ignores it (it is neither mesh-wide nor workload-level; istio-semantics 2.2)"),
                        hint: "move it to the namespace of the workloads it selects, or drop the selector to make it mesh-wide".into(),
                    });
                    continue;
                }
                let selects_any = ctx.workloads.iter().any(|c| {
                    c.workload.namespace == namespace_of(o)
                        && selector
                            .iter()
                            .all(|(k, v)| c.workload.labels.get(k) == Some(v))
                });
                if ctx.has_registry() && !selects_any {
                    out.push(Finding {
                        code: "PG108",
                        severity: Severity::Warning,
                        object: key,
                        file: o.origin.file.clone(),
                        field: "spec.selector.matchLabels".into(),
                        message: format!("selects no registered workload in namespace {} (a selector only matches workloads of the policy's own namespace, by exact labels; istio-semantics 2.2)", namespace_of(o)),
                        hint: "check the labels against the workloads' (`kubectl get pods --show-labels`), or delete the policy".into(),
                    });
                }
            }
            Resource::Invalid(o) if o.kind == "PeerAuthentication" => {
                let port_level = o
                    .raw
                    .pointer("/spec/portLevelMtls")
                    .and_then(|v| v.as_object())
                    .is_some_and(|m| !m.is_empty());
                let has_selector = o
                    .raw
                    .pointer("/spec/selector/matchLabels")
                    .and_then(|v| v.as_object())
                    .is_some_and(|m| !m.is_empty());
                if port_level && !has_selector {
                    let ns = o.metadata.namespace.as_deref().unwrap_or("?");
                    out.push(Finding {
                        code: "PG105",
                        severity: Severity::Error,
                        object: format!("PeerAuthentication {ns}/{}", o.metadata.name),
                        file: o.origin.file.clone(),
                        field: "spec.portLevelMtls".into(),
                        message: "portLevelMtls without a selector: Istio refuses it (\"portLevelMtls requires selector\", CRD and webhook; istio-semantics 2.4), and peerguard reads the invalid object as STRICT for its whole namespace (mesh, in the root namespace), fail closed".into(),
                        hint: "add `selector.matchLabels` naming the workload whose ports these are, or move the port modes into a workload-level PeerAuthentication".into(),
                    });
                }
            }
            _ => {}
        }
    }
}

/// PG107: the mesh-wide mode, as compiled for a workload only mesh-wide objects reach.
fn still_permissive(ctx: &Ctx, out: &mut Vec<Finding>) {
    let mesh = compiled(ctx.inputs, ctx.mesh, &mesh_probe());
    let mode = mesh.mtls.default.mode;
    if mode == MtlsMode::Strict {
        return;
    }
    let plaintext: Vec<String> = ctx
        .workloads
        .iter()
        .filter(|c| c.entry.spec.sidecar && accepts_plaintext(c))
        .map(|c| c.entry.key.to_string())
        .collect();
    let sidecars = ctx
        .workloads
        .iter()
        .filter(|c| c.entry.spec.sidecar)
        .count();
    let (object, file) = match &mesh.mtls.default.from {
        Some(from) => (from.clone(), ctx.file_of(from)),
        None => ("mesh".to_string(), String::new()),
    };
    let why = match &mesh.mtls.default.from {
        Some(from) => format!("set by {from}"),
        None => "nothing is configured mesh-wide, and Istio's default is PERMISSIVE".into(),
    };
    let shown: Vec<&str> = plaintext.iter().take(5).map(String::as_str).collect();
    let workloads = if !ctx.has_registry() {
        String::new()
    } else if plaintext.is_empty() {
        format!("; every one of the {sidecars} registered workloads with a sidecar is STRICT through its own namespace or workload policy")
    } else {
        format!(
            "; {} of {sidecars} registered workloads with a sidecar still accept plaintext on some port: {}{}",
            plaintext.len(),
            shown.join(", "),
            if plaintext.len() > shown.len() { ", …" } else { "" }
        )
    };
    out.push(Finding {
        code: "PG107",
        severity: if ctx.has_registry() && plaintext.is_empty() {
            Severity::Info
        } else {
            Severity::Warning
        },
        object,
        file,
        field: "spec.mtls.mode".into(),
        message: format!("the mesh is still {} mesh-wide ({why}){workloads}: plaintext is accepted and a peer without a certificate has no identity (Istio: security best practices, \"migrate to strict mode when possible\")", mode_name(mode)),
        hint: format!("once every client has a sidecar, lock down: a PeerAuthentication named default in the root namespace {} with `mtls: {{mode: STRICT}}`", ctx.mesh.root_namespace),
    });
}

/// Some port of the workload (its default, or a service target port, or a port-level entry)
/// is not STRICT.
pub(super) fn accepts_plaintext(c: &Compiled) -> bool {
    let m = &c.policy.mtls;
    let mut modes: BTreeMap<u16, MtlsMode> = m.ports.iter().map(|(p, f)| (*p, f.mode)).collect();
    for s in &c.entry.spec.services {
        for p in &s.ports {
            let t = p.target_port.unwrap_or(p.port);
            modes.insert(t, m.for_port(t).mode);
        }
    }
    m.default.mode != MtlsMode::Strict || modes.values().any(|m| *m != MtlsMode::Strict)
}
