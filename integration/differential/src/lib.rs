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
pub fn show(comparison: run::Comparison, seed: u64, requests: usize) -> anyhow::Result<String> {
    let g = match comparison {
        run::Comparison::Istio => gen::generate(seed, requests),
        run::Comparison::Adaptive => gen::generate_adaptive(seed, requests),
    };
    show_set(comparison, &g)
}

/// As [`show`] for any set (a case file).
pub fn show_set(comparison: run::Comparison, g: &gen::Generated) -> anyhow::Result<String> {
    let addrs = envoy::SetAddrs::of(100, 0)?;
    let p = match comparison {
        run::Comparison::Istio => run::prepare(g, addrs)?,
        run::Comparison::Adaptive => run::prepare_adaptive(g, addrs)?,
    };
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
    if let Some(e) = &p.enforcement {
        s.push_str(&format!(
            "# adaptive enforcement (--enforcement native)\n# HTTP slot: {}\n# TCP slot: {}\n",
            e.http, e.tcp
        ));
        for (name, slot) in [("HTTP", &e.http), ("TCP", &e.tcp)] {
            if let peerguard_server::enforcement::Slot::Native { typed_config, .. } = slot {
                s.push_str(&format!(
                    "# {name} slot, native RBAC typed_config\n{}\n",
                    serde_json::to_string_pretty(typed_config)?
                ));
            }
        }
        return Ok(s);
    }
    s.push_str(&format!(
        "# Envoy RBAC, HTTP filters\n{}\n# Envoy RBAC, network filters\n{}\n",
        serde_json::to_string_pretty(&p.rbac.http)?,
        serde_json::to_string_pretty(&p.rbac.network)?
    ));
    Ok(s)
}
