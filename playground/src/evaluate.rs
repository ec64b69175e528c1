//! The page's one question: these resources, this workload, these requests → what does
//! peerguard decide, and why. Every step is the library's own, in the order `peerguard
//! explain` takes them: `istio::parse::parse_str` → `compile::compile` → `decide::Engine` →
//! `hcm::decide` (Envoy's connection manager, then the engine). Nothing here decides.

use crate::locate::{locate, Location};
use peerguard_filter::compile::{compile, MeshConfig, Workload};
use peerguard_filter::decide::Engine;
use peerguard_filter::istio::parse::{parse_str, ParseError, Parsed};
use peerguard_filter::scenario::ScenarioRequest;
pub use peerguard_filter::schema::PolicySummary;
use peerguard_filter::schema::{Decision, ModeFrom, MtlsMode, Reason, RuleRef, WorkloadPolicy};
use serde::{Deserialize, Serialize};

/// The file name the editor's text is given in errors (what `explain --config` would print
/// for a file of that name).
pub const RESOURCES_FILE: &str = "resources.yaml";

/// What the page holds: the same fields a scenario file has, the resources as editor text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub about: Option<String>,
    /// Multi-document YAML (or JSON), as typed.
    #[serde(default)]
    pub resources: String,
    #[serde(default)]
    pub mesh: MeshInput,
    pub workload: Workload,
    /// Scenario-format requests (`expect` optional: the page has no expectation to check
    /// until one is imported or written).
    #[serde(default)]
    pub requests: Vec<serde_json::Value>,
}

/// `meshConfig` as a scenario file spells it; absent fields take the mesh defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshInput {
    #[serde(default)]
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
    #[serde(default)]
    pub root_namespace: Option<String>,
    #[serde(default)]
    pub path_normalization: Option<String>,
    #[serde(default)]
    pub num_trusted_proxies: u32,
}

impl MeshInput {
    pub fn resolve(&self) -> Result<MeshConfig, String> {
        let d = MeshConfig::default();
        let path_normalization = match self.path_normalization.as_deref() {
            None | Some("") => d.path_normalization,
            Some(s) => s
                .parse()
                .map_err(|e| format!("mesh.path_normalization: {e}"))?,
        };
        Ok(MeshConfig {
            trust_domain: non_empty(&self.trust_domain).unwrap_or(d.trust_domain),
            trust_domain_aliases: self.trust_domain_aliases.clone(),
            root_namespace: non_empty(&self.root_namespace).unwrap_or(d.root_namespace),
            path_normalization,
            num_trusted_proxies: self.num_trusted_proxies,
        })
    }
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evaluation {
    /// The state itself could not be read (a request or mesh field): nothing was decided.
    pub input_error: Option<String>,
    /// Parser errors, each with where it points in the editor.
    pub errors: Vec<ShownError>,
    /// Objects of kinds peerguard does not handle.
    pub skipped: Vec<String>,
    /// Set when some input could not be read at all: every request is denied, as in
    /// `peerguard explain` and in the filter.
    pub config_invalid: Option<String>,
    /// Compile diagnostics for this workload.
    pub diagnostics: Vec<String>,
    pub policies: Vec<PolicySummary>,
    pub results: Vec<RequestResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShownError {
    /// The one rendering: `file: Kind ns/name: field: message`.
    pub text: String,
    pub file: String,
    pub object: Option<String>,
    pub field: Option<String>,
    pub message: String,
    /// 1-based line in the editor the error points at, when it can be found.
    pub location: Option<Location>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestResult {
    /// `e2e_only` requests are decided by the TLS handshake with real certificates; the
    /// engine is not asked (as in `peerguard test`).
    pub e2e_only: bool,
    pub decision: Option<Decision>,
    /// `Reason`'s `Display`.
    pub reason: Option<String>,
    /// The policy rule that decided, when one did.
    pub decided_by: Option<String>,
    pub mtls: PortMode,
    /// Against `expect`/`expect_audit`/`expect_dry_run`, when the request has them.
    pub mismatches: Option<Vec<String>>,
    /// This request's own input error (its other fields are then empty).
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortMode {
    pub port: u16,
    pub mode: String,
    pub from: Option<String>,
}

fn port_mode(policy: &WorkloadPolicy, port: u16) -> PortMode {
    let m = policy.mtls.for_port(port);
    let ModeFrom { mode, from, .. } = m;
    PortMode {
        port,
        mode: match mode {
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict if m.is_dry_run_strict() => "STRICT (dry-run)",
            MtlsMode::Strict => "STRICT",
        }
        .to_string(),
        from: from.clone(),
    }
}

/// Parse `text` as the editor's file, with each error located in it.
pub fn parse_resources(text: &str) -> (Parsed, Vec<ShownError>) {
    let parsed = parse_str(text, RESOURCES_FILE);
    let errors = parsed.errors.iter().map(|e| shown(text, e)).collect();
    (parsed, errors)
}

fn shown(text: &str, e: &ParseError) -> ShownError {
    ShownError {
        text: e.to_string(),
        file: e.file.clone(),
        object: e.object.clone(),
        field: e.field.clone(),
        message: e.message.clone(),
        location: locate(text, e),
    }
}

/// A scenario-format request from the page; `expect` may be absent.
pub fn read_request(value: &serde_json::Value) -> Result<(ScenarioRequest, bool), String> {
    let mut v = value.clone();
    let has_expect = v.get("expect").is_some_and(|e| !e.is_null());
    if let Some(map) = v.as_object_mut() {
        if !has_expect {
            // A placeholder so the scenario type reads it; never checked (has_expect false).
            map.insert("expect".into(), serde_json::Value::String("allow".into()));
        }
    }
    let r: ScenarioRequest = serde_json::from_value(v).map_err(|e| e.to_string())?;
    r.validate()?;
    Ok((r, has_expect))
}

pub fn evaluate(state: &State) -> Evaluation {
    let mesh = match state.mesh.resolve() {
        Ok(m) => m,
        Err(e) => {
            return Evaluation {
                input_error: Some(e),
                ..Evaluation::default()
            }
        }
    };
    let (parsed, errors) = parse_resources(&state.resources);
    let policy = compile(&parsed.resources, &state.workload, &mesh);
    let config_invalid = parsed.unreadable();
    let engine = Engine::new(policy.clone());
    let results = state
        .requests
        .iter()
        .enumerate()
        .map(|(i, raw)| match read_request(raw) {
            Ok((r, has_expect)) => {
                decide_one(&policy, &engine, config_invalid.as_deref(), &r, has_expect)
            }
            Err(e) => RequestResult {
                e2e_only: false,
                decision: None,
                reason: None,
                decided_by: None,
                mtls: port_mode(
                    &policy,
                    raw.get("port").and_then(|p| p.as_u64()).unwrap_or(0) as u16,
                ),
                mismatches: None,
                error: Some(format!("requests[{i}].{e}")),
            },
        })
        .collect();
    Evaluation {
        input_error: None,
        errors,
        skipped: parsed.skipped.clone(),
        config_invalid,
        diagnostics: policy.diagnostics.clone(),
        policies: PolicySummary::of(&policy),
        results,
    }
}

fn decide_one(
    policy: &WorkloadPolicy,
    engine: &Result<Engine, peerguard_filter::decide::EngineError>,
    config_invalid: Option<&str>,
    r: &ScenarioRequest,
    has_expect: bool,
) -> RequestResult {
    let mtls = port_mode(policy, r.port);
    let Some(request) = r.to_request() else {
        return RequestResult {
            e2e_only: true,
            decision: None,
            reason: None,
            decided_by: None,
            mtls,
            mismatches: None,
            error: None,
        };
    };
    // As `peerguard explain`: input that could not be read may hold the only DENY or STRICT
    // that applies, so nothing is decided as if it were not there.
    let decision = match (config_invalid, engine) {
        (Some(why), _) => Decision::deny(Reason::NoConfig {
            why: why.to_string(),
        }),
        (None, Ok(engine)) => peerguard_filter::hcm::decide(engine, &request),
        (None, Err(e)) => Decision::deny(Reason::NoConfig { why: e.to_string() }),
    };
    RequestResult {
        e2e_only: false,
        reason: Some(decision.reason.to_string()),
        decided_by: decided_by(&decision.reason).map(ToString::to_string),
        mismatches: has_expect.then(|| r.check(&decision)),
        decision: Some(decision),
        mtls,
        error: None,
    }
}

fn decided_by(reason: &Reason) -> Option<&RuleRef> {
    match reason {
        Reason::CustomDenied { matched, .. }
        | Reason::Denied { matched }
        | Reason::Allowed { matched } => Some(matched),
        _ => None,
    }
}
