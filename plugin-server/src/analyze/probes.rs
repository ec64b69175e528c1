//! PG5xx: health probes against mesh ports (Istio: security FAQ, "Health Checking of Istio
//! Services").
//!
//! Reading of Istio's docs: the kubelet sends probes without an Istio certificate, so an
//! HTTP (or gRPC) probe on a STRICT port fails (the handshake is refused), which fails the
//! readiness/liveness checks and restarts the pod. A TCP probe does not fail: the sidecar
//! accepts every TCP connection on an intercepted port, so the probe succeeds whatever the app
//! does. Istio's injector rewrites HTTP, TCP and gRPC probes to go through its agent by
//! default (`sidecar.istio.io/rewriteAppHTTPProbers`); a rewritten probe is no finding. Command
//! (`exec`) probes work in every mode.
//!
//! - PG501 error: an HTTP/gRPC probe, not rewritten, on a STRICT port.
//! - PG502 warning: a TCP probe, not rewritten, on a port with a sidecar in front.

use super::{Ctx, Finding, Severity};
use crate::registry::ProbeType;
use peerguard_filter::schema::MtlsMode;

const FAQ: &str = "Istio: security FAQ and \"Health Checking of Istio Services\"";

pub(super) fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    for c in &ctx.workloads {
        if !c.entry.spec.sidecar {
            continue;
        }
        let kind = if c.entry.file.starts_with("apiserver") {
            "Pod"
        } else {
            "Workload"
        };
        for (i, p) in c.entry.spec.probes.iter().enumerate() {
            let Some(port) = p.port else { continue };
            if p.rewritten {
                continue;
            }
            let mode = c.policy.mtls.for_port(port);
            let from = mode
                .from
                .clone()
                .unwrap_or_else(|| "nothing configured".into());
            let what = format!(
                "{} {} probe{} on port {port}",
                p.kind.as_str(),
                p.probe_type.as_str().to_uppercase(),
                p.container
                    .as_ref()
                    .map(|c| format!(" of container {c}"))
                    .unwrap_or_default()
            );
            let field = if kind == "Pod" {
                format!(
                    "spec.containers[{}].{}Probe",
                    p.container.as_deref().unwrap_or("?"),
                    p.kind.as_str()
                )
            } else {
                format!("spec.probes[{i}]")
            };
            let hint = "(1) let the probe be rewritten through the sidecar agent (Istio's injector: annotation sidecar.istio.io/rewriteAppHTTPProbers: \"true\", the default); (2) serve health on a separate port and give it a workload PeerAuthentication `portLevelMtls: {<port>: {mode: PERMISSIVE}}` (or DISABLE); (3) use a command (exec) probe".to_string();
            match (p.probe_type, mode.mode) {
                (ProbeType::Http | ProbeType::Grpc, MtlsMode::Strict) => out.push(Finding {
                    code: "PG501",
                    severity: Severity::Error,
                    object: format!("{kind} {}", c.entry.key),
                    file: c.entry.file.clone(),
                    field,
                    message: format!("the {what} fails: the port is STRICT (from {from}) and the kubelet has no mesh certificate, so the handshake is refused and the pod is never ready (liveness: restarted) ({FAQ})"),
                    hint,
                }),
                (ProbeType::Tcp, _) => out.push(Finding {
                    code: "PG502",
                    severity: Severity::Warning,
                    object: format!("{kind} {}", c.entry.key),
                    file: c.entry.file.clone(),
                    field,
                    message: format!("the {what} always succeeds: the sidecar accepts every TCP connection on the port ({} from {from}), so the probe checks the sidecar, not the app ({FAQ})", match mode.mode { MtlsMode::Strict => "STRICT", MtlsMode::Permissive => "PERMISSIVE", MtlsMode::Disable => "DISABLE" }),
                    hint,
                }),
                _ => {}
            }
        }
    }
}
