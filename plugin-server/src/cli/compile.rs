//! `peerguard compile`: print the `WorkloadPolicy` JSON (the filter's configuration) for one
//! workload, for a static Envoy config, an Istio `WasmPlugin`'s `pluginConfig`, or an
//! EnvoyFilter. `peerguard serve` sends the same bytes over ECDS.
//!
//! With `--envoy-rbac`, the native form instead: the workload's AuthorizationPolicies as
//! Envoy's own RBAC filters, as Istio's sidecar gets them ([`crate::envoy_config::rbac`]),
//! `{"http_filters": [...], "network_filters": [...], "mtls": {...}}`: the HTTP filters go
//! into the connection manager's `http_filters` before the router, the network filters
//! before `tcp_proxy`. The filters cover authorization only; the mTLS mode (per port) is
//! printed next to them because Istio enforces it with the listener's filter chains, not
//! with RBAC. What the native form cannot express as peerguard enforces it (CUSTOM, JWT
//! attributes, invalid objects, Envoy-metadata conditions) is refused, never emitted wider.
//!
//! Exit code: 0; 2 for invalid input (bad arguments, unreadable `--config`, or resources with
//! errors: then nothing is printed, so a broken configuration is never deployed by a script)
//! and for a policy the native form refuses.

use crate::envoy_config::hcm_fields;
use crate::envoy_config::rbac::{self, RbacFilters};
use crate::serve::build::scoped;
use peerguard_filter::compile::Workload;
use peerguard_filter::schema::{ModeFrom, MtlsMode, MtlsPolicy};
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: super::workload::WorkloadArgs,
    /// Indented JSON.
    #[arg(long)]
    pub pretty: bool,
    /// Print Envoy's native RBAC filters (HTTP and network, as Istio generates them) and the
    /// per-port mTLS mode instead of the WorkloadPolicy; exit 2 when the policies use what
    /// the native form cannot express (CUSTOM, JWT attributes, invalid objects).
    #[arg(long, conflicts_with = "decision_log_sample")]
    pub envoy_rbac: bool,
    #[command(flatten)]
    pub decision_log: crate::serve::decision_log::DecisionLogArgs,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let (mesh, target) = match args.target.load() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    let errors = mesh.config_errors();
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Ok(2);
    }
    for s in &mesh.inputs.skipped {
        eprintln!("note: {s}");
    }
    if target.registered.is_none() {
        eprintln!(
            "note: {} is not in the registry of {}; using the workload described on the command line",
            args.target.workload, mesh.origin
        );
    }
    if args.envoy_rbac {
        return envoy_rbac(&mesh, &target.workload, args.pretty);
    }
    let mut policy = mesh.compile(&target.workload);
    args.decision_log.apply(&mut policy);
    for d in &policy.diagnostics {
        eprintln!("warning: {d}");
    }
    let json = if args.pretty {
        serde_json::to_string_pretty(&policy)?
    } else {
        serde_json::to_string(&policy)?
    };
    super::output::write_stdout(&(json + "\n"))?;
    Ok(0)
}

/// `--envoy-rbac`: the filters from the resources `serve` would compile for the workload, the
/// mode from peerguard's own resolution (the same `WorkloadPolicy`).
fn envoy_rbac(
    mesh: &super::workload::Mesh,
    workload: &Workload,
    pretty: bool,
) -> anyhow::Result<u8> {
    let view = scoped(
        &mesh.inputs.resources,
        &workload.namespace,
        &mesh.config.root_namespace,
    );
    let filters = match rbac::translate(&view, workload, &mesh.config) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!(
                "error: no native RBAC form for {}/{}; serve it with peerguard's filter",
                workload.namespace, workload.name
            );
            return Ok(2);
        }
    };
    for o in &filters.omitted {
        eprintln!("note: {o}");
    }
    let (normalize_path, merge_slashes, escaped) = hcm_fields(mesh.config.path_normalization);
    eprintln!(
        "note: the connection manager must match the mesh: normalize_path {normalize_path}, merge_slashes {merge_slashes}, path_with_escaped_slashes_action {escaped}, use_remote_address true, xff_num_trusted_hops {}",
        mesh.config.num_trusted_proxies
    );
    let policy = mesh.compile(workload);
    for d in &policy.diagnostics {
        eprintln!("warning: {d}");
    }
    let out = native_form(&filters, &policy.mtls);
    let json = if pretty {
        serde_json::to_string_pretty(&out)?
    } else {
        serde_json::to_string(&out)?
    };
    super::output::write_stdout(&(json + "\n"))?;
    Ok(0)
}

/// The printed form: the filters, and the mTLS mode per port with the filter chains Istio
/// builds for it ([`crate::envoy_config::Chains::Istio`]).
pub fn native_form(filters: &RbacFilters, mtls: &MtlsPolicy) -> Value {
    let mode = |m: &ModeFrom| {
        json!({
            "mode": m.mode,
            "from": m.from,
            "filter_chains": chains_for(m.mode),
        })
    };
    let ports: serde_json::Map<String, Value> = mtls
        .ports
        .iter()
        .map(|(p, m)| (p.to_string(), mode(m)))
        .collect();
    json!({
        "http_filters": filters.http,
        "network_filters": filters.network,
        "mtls": {
            "enforced_by": "the listener's filter chains, not the RBAC filters above (which cover authorization only)",
            "default": mode(&mtls.default),
            "ports": ports,
        },
    })
}

fn chains_for(mode: MtlsMode) -> &'static str {
    match mode {
        MtlsMode::Strict => "only the mTLS chain (client certificate from the mesh CA required)",
        MtlsMode::Permissive => "an mTLS chain (selected by Istio's ALPN) and a plaintext chain",
        MtlsMode::Disable => "only the plaintext chain (no TLS inspector)",
    }
}
