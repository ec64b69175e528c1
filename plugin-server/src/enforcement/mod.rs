//! Adaptive enforcement: per workload, which filter fills each of the two ECDS slots that
//! `peerguard serve` feeds (`peerguard-http`, `peerguard-tcp`): Envoy's native RBAC filter,
//! holding what Istio's authorization builder generates ([`crate::envoy_config::rbac`]), or
//! peerguard's wasm filter.
//!
//! Native RBAC costs a few hundred nanoseconds per matcher and nothing per VM, so it is
//! cheaper for small policy sets; peerguard's compiled engine is flat in the number of
//! policies and wins above a few dozen matchers. Pure: no I/O, the same answer for `serve`,
//! `explain`, `describe` and the benchmark.
//!
//! A slot is native only when one RBAC filter decides exactly what the wasm filter decides
//! (the differential harness checks this in real Envoy, `integration/differential`):
//!
//! - the native form exists ([`crate::envoy_config::rbac::translate`] refuses CUSTOM, JWT
//!   attributes, invalid objects, Envoy-metadata conditions);
//! - at most one RBAC filter (DENY or ALLOW policies, not both: a slot holds one filter);
//! - one mTLS mode on every port, not a dry-run STRICT, no decision log (the filter's own
//!   features);
//! - no `numTrustedProxies` (the wasm filter reads X-Forwarded-For itself; the connection
//!   manager's `xff_num_trusted_hops` stays 0, so RBAC's `remote_ip` would differ);
//! - the slot also enforces the mode, since `serve`'s listener keeps both transport chains:
//!   STRICT refuses connections without a client certificate (`authenticated`), DISABLE
//!   refuses those with one;
//! - HTTP: only under PERMISSIVE. Under STRICT or DISABLE the filter refuses the other
//!   transport as Istio's listener does (no chain for it: the client gets no response), by
//!   resetting the stream; the HTTP RBAC filter can only answer `403` (the differential
//!   harness's adaptive comparison, `cases/adaptive/*-refusal-http.yaml`);
//! - TCP: RBAC's network filter decides on the first byte, peerguard's refuses a plaintext
//!   connection as it opens (nothing reaches a server-first app). So the TCP slot is native
//!   only when no plaintext connection can be refused there: no STRICT, no enforced network
//!   policy.
//!
//! [`Mode::Auto`] also keeps the filter where it is cheaper (more than
//! [`Options::max_native_matchers`] matchers) and under PERMISSIVE, where the filter counts
//! the connections `peerguard readiness` reads before a move to STRICT. [`Mode::Native`]
//! drops those two preferences, never the equivalence conditions; [`Mode::Wasm`] always
//! uses the filter.

#[cfg(test)]
mod tests;

use crate::envoy_config::listener::{
    wasm_http_filter, wasm_network_filter, HTTP_FILTER, TCP_FILTER,
};
use crate::envoy_config::rbac;
use crate::envoy_config::{Authz, HTTP_RBAC_TYPE, NETWORK_RBAC_TYPE};
use peerguard_filter::compile::{MeshConfig, Workload};
use peerguard_filter::istio::Resource;
use peerguard_filter::schema::MtlsMode;
use peerguard_filter::WorkloadPolicy;
use serde_json::{json, Map, Value};
use std::fmt;

/// `--enforcement`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Native RBAC where it decides the same and is cheaper, the wasm filter elsewhere.
    #[default]
    Auto,
    /// Always peerguard's wasm filter.
    Wasm,
    /// Native RBAC wherever it decides the same (whatever the size or mode).
    Native,
}

/// Matchers (principal and permission leaves) up to which `auto` prefers native RBAC. The
/// benchmark (`integration/bench`) measures both paths at 10 and 100 policies; Envoy's
/// RBAC costs about 1 µs per `authenticated` matcher (it reads the peer certificate's SANs
/// each time), the wasm filter a flat few tens of microseconds.
pub const DEFAULT_MAX_NATIVE_MATCHERS: usize = 32;

/// The choice's settings (`serve`, `explain`, `describe`, `compile`).
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Which filter enforces each workload's policies: `auto` (native RBAC for small policy
    /// sets the native filter decides identically, peerguard's filter otherwise), `wasm`
    /// (always the filter), `native` (native RBAC wherever it decides identically).
    #[arg(long = "enforcement", value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// With `--enforcement auto`: the most RBAC matchers a native slot may hold.
    #[arg(long, default_value_t = DEFAULT_MAX_NATIVE_MATCHERS, value_name = "N")]
    pub max_native_matchers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Auto,
            max_native_matchers: DEFAULT_MAX_NATIVE_MATCHERS,
        }
    }
}

/// Why a slot keeps peerguard's filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// `--enforcement wasm`.
    Forced,
    /// The native form does not exist ([`rbac::TranslateError`]).
    NoNativeForm(String),
    /// DENY and ALLOW policies both apply: two RBAC filters, one slot.
    DenyAndAllow,
    /// Ports with different modes.
    PerPortMtls,
    /// A dry-run STRICT (`peerguard.dev/dry-run`) counts what it would refuse.
    MtlsDryRun,
    /// `--decision-log-sample`.
    DecisionLog,
    /// `numTrustedProxies` > 0.
    TrustedProxies(u32),
    /// HTTP under STRICT or DISABLE: the filter resets the refused transport's requests.
    HttpModeRefusal(MtlsMode),
    /// TCP under STRICT: the filter refuses plaintext as it connects.
    TcpStrict,
    /// TCP with enforced policies: the filter decides a plaintext connection as it opens.
    TcpPolicies,
    /// `auto` under PERMISSIVE: the readiness counters.
    Permissive,
    /// `auto` above the size limit.
    Larger { matchers: usize, max: usize },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Forced => write!(f, "--enforcement wasm"),
            Why::NoNativeForm(e) => write!(f, "no native RBAC form: {e}"),
            Why::DenyAndAllow => write!(f, "DENY and ALLOW policies need two RBAC filters"),
            Why::PerPortMtls => write!(f, "ports have different mTLS modes"),
            Why::MtlsDryRun => write!(f, "a dry-run STRICT counts plaintext instead of refusing it"),
            Why::DecisionLog => write!(f, "the decision log is on"),
            Why::TrustedProxies(n) => write!(f, "numTrustedProxies is {n}: the filter reads X-Forwarded-For"),
            Why::HttpModeRefusal(m) => write!(f, "{} on HTTP: the filter refuses the other transport as the listener would (no response), native RBAC only with a 403", mode_name(*m)),
            Why::TcpStrict => write!(f, "STRICT on TCP: the filter refuses plaintext as it connects, native RBAC only on the first byte"),
            Why::TcpPolicies => write!(f, "TCP policies: the filter decides a plaintext connection as it opens, native RBAC only on the first byte"),
            Why::Permissive => write!(f, "PERMISSIVE: the filter counts connections for `peerguard readiness`"),
            Why::Larger { matchers, max } => write!(f, "{matchers} RBAC matchers, above {max}: the filter's engine is cheaper"),
        }
    }
}

/// What one slot holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// One RBAC filter's `typed_config` (with `@type`), mTLS mode included.
    Native {
        typed_config: Value,
        matchers: usize,
    },
    /// peerguard's filter, and why.
    Wasm { why: Why },
}

impl Slot {
    pub fn is_native(&self) -> bool {
        matches!(self, Slot::Native { .. })
    }
}

/// The one rendering of a slot's choice (`explain`, `describe`, logs).
impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Native { matchers, .. } => write!(f, "native RBAC ({matchers} matchers)"),
            Slot::Wasm { why } => write!(f, "peerguard filter ({why})"),
        }
    }
}

/// Both slots of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Enforcement {
    pub http: Slot,
    pub tcp: Slot,
}

impl Enforcement {
    fn wasm(why: Why) -> Self {
        Enforcement {
            http: Slot::Wasm { why: why.clone() },
            tcp: Slot::Wasm { why },
        }
    }

    /// The filters for a static configuration with both transport chains
    /// ([`crate::envoy_config::Chains::Both`]): the module from `wasm_module` with
    /// `policy_json` where a slot keeps the filter.
    pub fn authz(&self, wasm_module: &str, policy_json: &str) -> Authz {
        let http = match &self.http {
            Slot::Native { typed_config, .. } => {
                json!({"name": HTTP_FILTER, "typed_config": typed_config})
            }
            Slot::Wasm { .. } => wasm_http_filter(wasm_module, policy_json),
        };
        let network = match &self.tcp {
            Slot::Native { typed_config, .. } => {
                json!({"name": TCP_FILTER, "typed_config": typed_config})
            }
            Slot::Wasm { .. } => wasm_network_filter(wasm_module, policy_json),
        };
        Authz::Custom { http, network }
    }

    /// JSON for `explain`/`describe --output json`.
    pub fn to_json(&self) -> Value {
        let slot = |s: &Slot| match s {
            Slot::Native { matchers, .. } => {
                json!({"filter": "native-rbac", "matchers": matchers, "by": s.to_string()})
            }
            Slot::Wasm { why } => {
                json!({"filter": "wasm", "why": why.to_string(), "by": s.to_string()})
            }
        };
        json!({"http": slot(&self.http), "tcp": slot(&self.tcp)})
    }
}

/// Chooses both slots for a workload. `view`: the resources `compile` read for it (its
/// namespace and the root namespace); `policy`: what `compile` made of them.
pub fn choose(
    view: &[Resource],
    workload: &Workload,
    mesh: &MeshConfig,
    policy: &WorkloadPolicy,
    opts: &Options,
) -> Enforcement {
    if opts.mode == Mode::Wasm {
        return Enforcement::wasm(Why::Forced);
    }
    let filters = match rbac::translate(view, workload, mesh) {
        Ok(f) => f,
        Err(e) => return Enforcement::wasm(Why::NoNativeForm(e.to_string())),
    };
    let mtls = &policy.mtls;
    if mtls.default.dry_run || mtls.ports.values().any(|m| m.dry_run) {
        return Enforcement::wasm(Why::MtlsDryRun);
    }
    let mode = mtls.default.mode;
    if mtls.ports.values().any(|m| m.mode != mode) {
        return Enforcement::wasm(Why::PerPortMtls);
    }
    if policy.decision_log.is_some() {
        return Enforcement::wasm(Why::DecisionLog);
    }
    if policy.num_trusted_proxies > 0 {
        return Enforcement::wasm(Why::TrustedProxies(policy.num_trusted_proxies));
    }
    let http = if mode == MtlsMode::Permissive {
        slot(&filters.http, HTTP_RBAC_TYPE, None, mode, opts)
    } else {
        Slot::Wasm {
            why: Why::HttpModeRefusal(mode),
        }
    };
    let tcp = if mode == MtlsMode::Strict {
        Slot::Wasm {
            why: Why::TcpStrict,
        }
    } else if filters
        .network
        .iter()
        .any(|f| f["typed_config"].get("rules").is_some())
    {
        Slot::Wasm {
            why: Why::TcpPolicies,
        }
    } else {
        slot(
            &filters.network,
            NETWORK_RBAC_TYPE,
            Some("tcp."),
            mode,
            opts,
        )
    };
    Enforcement { http, tcp }
}

fn mode_name(m: MtlsMode) -> &'static str {
    match m {
        MtlsMode::Strict => "STRICT",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Disable => "DISABLE",
    }
}

/// Name of the policy that enforces the mTLS mode inside a DENY filter.
pub const MTLS_MODE_POLICY: &str = "peerguard-mtls-mode";

fn slot(
    filters: &[Value],
    type_url: &str,
    stat_prefix: Option<&str>,
    mode: MtlsMode,
    opts: &Options,
) -> Slot {
    let mut config = match filters {
        [] => {
            let mut c = json!({"@type": type_url});
            if let Some(p) = stat_prefix {
                c["stat_prefix"] = json!(p);
            }
            c
        }
        [one] => one["typed_config"].clone(),
        _ => {
            return Slot::Wasm {
                why: Why::DenyAndAllow,
            }
        }
    };
    // The policies' own matchers: the mode adds one cheap check (no certificate read).
    let matchers = ["rules", "shadow_rules"]
        .iter()
        .filter_map(|k| config.get(*k))
        .map(count_matchers)
        .sum();
    enforce_mode(&mut config, mode);
    if opts.mode == Mode::Auto {
        if mode == MtlsMode::Permissive {
            return Slot::Wasm {
                why: Why::Permissive,
            };
        }
        if matchers > opts.max_native_matchers {
            return Slot::Wasm {
                why: Why::Larger {
                    matchers,
                    max: opts.max_native_matchers,
                },
            };
        }
    }
    Slot::Native {
        typed_config: config,
        matchers,
    }
}

/// Adds the mode to an RBAC config: STRICT denies a connection without a client
/// certificate, DISABLE one with a certificate (on `serve`'s listener, TLS always means a
/// verified client certificate: the mTLS chain requires one). `authenticated` without a
/// `principal_name` matches any TLS connection.
fn enforce_mode(config: &mut Value, mode: MtlsMode) {
    let authenticated = json!({"authenticated": {}});
    let (refused, required) = match mode {
        MtlsMode::Permissive => return,
        MtlsMode::Strict => (json!({"not_id": authenticated}), authenticated),
        MtlsMode::Disable => (authenticated.clone(), json!({"not_id": authenticated})),
    };
    let Some(c) = config.as_object_mut() else {
        return;
    };
    match c.get_mut("rules") {
        None => {
            let mut policies = Map::new();
            policies.insert(MTLS_MODE_POLICY.into(), refusal(refused));
            c.insert(
                "rules".into(),
                json!({"action": "DENY", "policies": policies}),
            );
        }
        Some(rules) if rules["action"] == "DENY" => {
            if let Some(p) = rules["policies"].as_object_mut() {
                p.insert(MTLS_MODE_POLICY.into(), refusal(refused));
            }
        }
        Some(rules) => {
            // ALLOW: every policy also requires the transport.
            if let Some(policies) = rules["policies"].as_object_mut() {
                for p in policies.values_mut() {
                    let ids = p["principals"].take();
                    p["principals"] = json!([{"and_ids": {"ids": [
                        required.clone(),
                        {"or_ids": {"ids": ids}},
                    ]}}]);
                }
            }
        }
    }
}

fn refusal(principal: Value) -> Value {
    json!({"permissions": [{"any": true}], "principals": [principal]})
}

/// Leaf matchers (what RBAC evaluates one by one) in a rule set
/// (`{"action", "policies": {name: {"permissions", "principals"}}}`).
fn count_matchers(rules: &Value) -> usize {
    let Some(policies) = rules.get("policies").and_then(Value::as_object) else {
        return 0;
    };
    policies
        .values()
        .flat_map(|p| ["permissions", "principals"].map(|k| p.get(k)))
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .map(leaves)
        .sum()
}

/// Leaves of one permission or principal: `any` costs nothing, the combinators what they
/// hold, every other matcher one.
fn leaves(node: &Value) -> usize {
    let Some((key, inner)) = node.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match key.as_str() {
        "any" => 0,
        "not_rule" | "not_id" => leaves(inner),
        "and_rules" | "or_rules" => list(inner, "rules"),
        "and_ids" | "or_ids" => list(inner, "ids"),
        _ => 1,
    }
}

fn list(v: &Value, key: &str) -> usize {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(0, |a| a.iter().map(leaves).sum())
}
