#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
//! Differential testing of peerguard against Envoy's own RBAC filters.
//!
//! For one seed: a generated set of AuthorizationPolicies ([`gen`]) is parsed by peerguard,
//! then (a) compiled by peerguard into the `WorkloadPolicy` its wasm filter runs, and
//! (b) translated into the Envoy RBAC filters Istio would generate (the product's translator,
//! [`peerguard_server::envoy_config::rbac::translate_as_istiod`]). One Envoy
//! serves both sides behind identical listeners ([`envoy`]); the same raw requests are
//! sent to both ([`client`]) and the outcomes compared ([`compare`], [`run`]).

pub mod cases;
pub mod client;
pub mod compare;
pub mod envoy;
pub mod gen;
pub mod harness;
pub mod run;

/// The policies, requests and both sides' configuration of one seed, for humans.
pub fn show(seed: u64, requests: usize) -> anyhow::Result<String> {
    show_set(&gen::generate(seed, requests))
}

/// As [`show`] for any set (a case file).
pub fn show_set(g: &gen::Generated) -> anyhow::Result<String> {
    let p = run::prepare(g, envoy::SetAddrs::of(100, 0)?)?;
    let mut s = format!("# {}\n{}\n", g.origin, p.yaml);
    s.push_str("# requests\n");
    for (i, c) in p.cases.iter().enumerate() {
        s.push_str(&format!(
            "{i}: {} from {} to port {}{}: {}\n",
            run::describe_peer(c.peer),
            c.source,
            c.port,
            run::h2_note(c),
            c.payload.describe()
        ));
    }
    s.push_str(&format!(
        "# peerguard WorkloadPolicy\n{}\n",
        serde_json::to_string_pretty(&p.policy)?
    ));
    s.push_str(&format!(
        "# Envoy RBAC, HTTP filters\n{}\n# Envoy RBAC, network filters\n{}\n",
        serde_json::to_string_pretty(&p.rbac.http)?,
        serde_json::to_string_pretty(&p.rbac.network)?
    ));
    Ok(s)
}
