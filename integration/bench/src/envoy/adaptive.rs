//! The `adaptive/N` variant: what `peerguard serve` pushes for the benchmark's workload.
//!
//! The workload's Istio objects are written as a user would (N ALLOW AuthorizationPolicies
//! in its namespace, each naming one principal, the client's last; a mesh-wide
//! PeerAuthentication in the benchmark's mode), parsed and compiled by the product's own
//! code, and `enforcement::choose` (default options, as `serve` runs) decides each slot:
//! native RBAC or the wasm filter. The static listener then holds exactly those filters.

use super::setup::{self, NAMESPACE};
use anyhow::Context as _;
use peerguard_filter::compile::{compile, MeshConfig, Workload};
use peerguard_filter::istio::parse::parse_str;
use peerguard_filter::schema::MtlsMode;
use peerguard_server::enforcement::{self, Options};
use peerguard_server::envoy_config::Authz;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What was chosen for one policy count (in the table and the JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub policies: usize,
    pub http_native: bool,
    pub tcp_native: bool,
    /// `enforcement::Slot`'s own rendering: "native RBAC (10 matchers)" or
    /// "peerguard filter (why)".
    pub http: String,
    pub tcp: String,
}

fn workload() -> Workload {
    Workload {
        namespace: NAMESPACE.into(),
        name: "server".into(),
        service_account: "server".into(),
        labels: BTreeMap::from([("app".to_string(), "server".to_string())]),
        ..Workload::default()
    }
}

fn mode_name(mode: MtlsMode) -> &'static str {
    match mode {
        MtlsMode::Strict => "STRICT",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Disable => "DISABLE",
    }
}

/// The workload's Istio YAML: the PeerAuthentication, then `n` AuthorizationPolicies
/// (the same principals and names as the other variants, [`setup::policy_at`]).
pub fn istio_yaml(n: usize, mode: MtlsMode) -> String {
    let mut y = format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: istio-system}}\nspec: {{mtls: {{mode: {}}}}}\n",
        mode_name(mode)
    );
    for i in 0..n {
        let (name, principal) = setup::policy_at(i, n);
        let _ = write!(
            y,
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\nspec:\n  action: ALLOW\n  rules: [{{from: [{{source: {{principals: [\"{principal}\"]}}}}]}}]\n"
        );
    }
    y
}

/// The `adaptive` filters for `n` policies, with `module` where a slot keeps the filter.
pub fn build(n: usize, mode: MtlsMode, module: &str) -> anyhow::Result<(Authz, Choice)> {
    let parsed = parse_str(&istio_yaml(n, mode), "bench.yaml");
    if !parsed.errors.is_empty() {
        anyhow::bail!(
            "the benchmark's own Istio YAML ({n} policies) did not parse: {:?}",
            parsed.errors.first()
        );
    }
    let mesh = MeshConfig::default();
    let w = workload();
    let policy = compile(&parsed.resources, &w, &mesh);
    if policy.policies.len() != n || !policy.diagnostics.is_empty() {
        anyhow::bail!(
            "compiling the benchmark's {n} policies gave {} policies, diagnostics {:?}",
            policy.policies.len(),
            policy.diagnostics
        );
    }
    let chosen = enforcement::choose(&parsed.resources, &w, &mesh, &policy, &Options::default());
    let json = serde_json::to_string(&policy).context("serializing the compiled policy")?;
    let choice = Choice {
        policies: n,
        http_native: chosen.http.is_native(),
        tcp_native: chosen.tcp.is_native(),
        http: chosen.http.to_string(),
        tcp: chosen.tcp.to_string(),
    };
    Ok((chosen.authz(module, &json), choice))
}

/// One line per policy count, for the text output.
pub fn render(choices: &[Choice]) -> String {
    let mut s = String::new();
    for c in choices {
        let _ = writeln!(
            s,
            "  adaptive/{:<6} HTTP: {}; TCP: {}",
            c.policies, c.http, c.tcp
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_policies_compile_to_ten_and_a_stranger_is_not_named() -> anyhow::Result<()> {
        // `build` fails unless the YAML compiles to exactly 10 policies without diagnostics.
        let (_, c) = build(10, MtlsMode::Strict, "/nonexistent/peerguard.wasm")?;
        assert_eq!(c.policies, 10);
        let y = istio_yaml(3, MtlsMode::Strict);
        assert!(y.contains(setup::CLIENT_PRINCIPAL));
        assert!(!y.contains(setup::STRANGER_PRINCIPAL));
        Ok(())
    }

    #[test]
    fn ten_thousand_policies_keep_the_wasm_filter() -> anyhow::Result<()> {
        // Far above any native size limit: the engine is cheaper there.
        let (_, c) = build(10_000, MtlsMode::Strict, "/m.wasm")?;
        assert!(!c.http_native, "{c:?}");
        Ok(())
    }
}
