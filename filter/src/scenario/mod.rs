//! Conformance scenario files (format: `integration/conformance/README.md`): loading,
//! conversion of each request into a [`Request`], and comparison of a [`Decision`] with the
//! expectations. Shared by the conformance test, `peerguard test` and the e2e runner.

use crate::compile::{MeshConfig, Workload};
use crate::istio::parse::{parse_value, ValueOutcome};
use crate::istio::{Origin, Resource};
use crate::schema::{Decision, HttpRequest, Peer, Reason, Request, ShadowResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// One scenario file, validated, with its resources parsed.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file it was read from.
    pub file: PathBuf,
    pub name: String,
    pub about: Option<String>,
    pub source: Option<String>,
    pub trust_domain: String,
    pub trust_domain_aliases: Vec<String>,
    pub root_namespace: String,
    /// `path_normalization:` (meshConfig.pathNormalization), default BASE.
    pub path_normalization: crate::schema::PathNormalization,
    /// `num_trusted_proxies:`, default 0.
    pub num_trusted_proxies: u32,
    /// `resources` as written (JSON form), for runners that need the raw objects.
    pub raw_resources: Vec<serde_json::Value>,
    /// `resources` parsed by the Istio parser (every one valid).
    pub resources: Vec<Resource>,
    /// Objects of kinds peerguard does not handle (kept out of `resources`).
    pub skipped: Vec<String>,
    pub workload: Workload,
    pub requests: Vec<ScenarioRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    #[serde(default)]
    about: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    trust_domain: Option<String>,
    #[serde(default)]
    trust_domain_aliases: Vec<String>,
    #[serde(default)]
    root_namespace: Option<String>,
    #[serde(default)]
    path_normalization: crate::schema::PathNormalization,
    #[serde(default)]
    num_trusted_proxies: u32,
    #[serde(default)]
    resources: Vec<serde_json::Value>,
    workload: Workload,
    requests: Vec<ScenarioRequest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioRequest {
    #[serde(default)]
    pub about: Option<String>,
    /// `None`: plaintext.
    pub peer: Option<ScenarioPeer>,
    #[serde(default)]
    pub source_ip: Option<IpAddr>,
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default)]
    pub http: Option<ScenarioHttp>,
    pub expect: Expect,
    #[serde(default)]
    pub expect_audit: Option<bool>,
    #[serde(default)]
    pub expect_dry_run: Option<ExpectDryRun>,
    #[serde(default)]
    pub e2e_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioPeer {
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub ca: Option<PeerCa>,
    #[serde(default)]
    pub expired: bool,
    #[serde(default)]
    pub uri_san: Option<UriSans>,
}

impl ScenarioPeer {
    /// The URI SANs the client certificate carries, in order.
    pub fn uri_sans(&self) -> Vec<String> {
        match (&self.uri_san, &self.principal) {
            (Some(UriSans::One(s)), _) => vec![s.clone()],
            (Some(UriSans::Many(v)), _) => v.clone(),
            (None, Some(p)) => vec![format!("spiffe://{p}")],
            (None, None) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerCa {
    /// Signed by a CA the mesh does not trust.
    Untrusted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UriSans {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioHttp {
    pub method: String,
    pub path: String,
    pub host: String,
    /// A list value is a header sent several times, in that order.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    #[serde(default)]
    pub version: Option<HttpVersion>,
}

/// One header value, or several occurrences of the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

impl HeaderValues {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let s: &[String] = match self {
            HeaderValues::One(v) => std::slice::from_ref(v),
            HeaderValues::Many(v) => v,
        };
        s.iter().map(String::as_str)
    }
}

pub use crate::schema::HttpVersion;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Allow,
    Deny,
}

impl Expect {
    pub fn allowed(self) -> bool {
        self == Expect::Allow
    }
}

fn word(allowed: bool) -> &'static str {
    if allowed {
        "allow"
    } else {
        "deny"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectDryRun {
    #[serde(default)]
    pub deny: Option<ShadowResult>,
    #[serde(default)]
    pub allow: Option<ShadowResult>,
}

/// A scenario file that could not be used; `Display` names the file and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct LoadError {
    pub file: String,
    pub message: String,
}

/// What a set of paths held: the usable scenarios and the files that were not.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub scenarios: Vec<Scenario>,
    pub errors: Vec<LoadError>,
}

/// Read scenario files and directories (recursively: `*.yaml`, `*.yml`, `*.json`, in sorted
/// path order). A bad file is reported and contributes nothing; the others still load.
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            if let Err(e) = collect(p, &mut found) {
                loaded.errors.push(LoadError {
                    file: p.display().to_string(),
                    message: format!("cannot read directory: {e}"),
                });
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    for f in files {
        match load_file(&f) {
            Ok(s) => {
                if let Some(first) = names.get(&s.name) {
                    loaded.errors.push(LoadError {
                        file: f.display().to_string(),
                        message: format!(
                            "name: scenario name {:?} is already used by {}",
                            s.name,
                            first.display()
                        ),
                    });
                    continue;
                }
                names.insert(s.name.clone(), f.clone());
                loaded.scenarios.push(s);
            }
            Err(e) => loaded.errors.push(e),
        }
    }
    loaded
}

/// [`load_paths`], failing when any file is bad.
pub fn load_dir(paths: &[PathBuf]) -> Result<Vec<Scenario>, Vec<LoadError>> {
    let loaded = load_paths(paths);
    if loaded.errors.is_empty() {
        Ok(loaded.scenarios)
    } else {
        Err(loaded.errors)
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Read and validate one scenario file.
pub fn load_file(path: &Path) -> Result<Scenario, LoadError> {
    let file = path.display().to_string();
    let err = |message: String| LoadError {
        file: file.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    parse_scenario(&text, path)
}

/// Validate one scenario given as text (`path` names it in errors).
pub fn parse_scenario(text: &str, path: &Path) -> Result<Scenario, LoadError> {
    let file = path.display().to_string();
    let err = |message: String| LoadError {
        file: file.clone(),
        message,
    };
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
        let msg = e.to_string();
        err(format!(
            "invalid YAML: {}",
            msg.lines().next().unwrap_or_default()
        ))
    })?;
    let f: ScenarioFile = serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        let at = if at == "." {
            String::new()
        } else {
            format!("{at}: ")
        };
        err(format!("{at}{}", e.inner()))
    })?;
    if f.name.trim().is_empty() {
        return Err(err("name: must not be empty".into()));
    }
    for (i, r) in f.requests.iter().enumerate() {
        validate_request(r).map_err(|m| err(format!("requests[{i}].{m}")))?;
    }
    let mut resources = Vec::new();
    let mut skipped = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in f.resources.iter().enumerate() {
        let origin = Origin {
            file: format!("{file}: resources[{i}]"),
            index: i,
        };
        match parse_value(raw.clone(), origin) {
            ValueOutcome::Resource { resource, errors } => {
                if errors.is_empty() && !matches!(resource, Resource::Invalid(_)) {
                    resources.push(resource);
                } else if errors.is_empty() {
                    problems.push(format!("resources[{i}]: invalid object"));
                } else {
                    problems.extend(errors.iter().map(ToString::to_string));
                }
            }
            ValueOutcome::Skipped(m) => skipped.push(m),
            ValueOutcome::Error(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(err(format!(
            "invalid resources:\n  {}",
            problems.join("\n  ")
        )));
    }
    Ok(Scenario {
        file: path.to_path_buf(),
        name: f.name,
        about: f.about,
        source: f.source,
        trust_domain: f
            .trust_domain
            .unwrap_or_else(|| MeshConfig::default().trust_domain),
        trust_domain_aliases: f.trust_domain_aliases,
        root_namespace: f
            .root_namespace
            .unwrap_or_else(|| MeshConfig::default().root_namespace),
        path_normalization: f.path_normalization,
        num_trusted_proxies: f.num_trusted_proxies,
        raw_resources: f.resources,
        resources,
        skipped,
        workload: f.workload,
        requests: f.requests,
    })
}

fn validate_request(r: &ScenarioRequest) -> Result<(), String> {
    match (r.protocol, &r.http) {
        (Protocol::Http, None) => return Err("http: required when protocol is http".into()),
        (Protocol::Tcp, Some(_)) => return Err("http: not allowed when protocol is tcp".into()),
        _ => {}
    }
    if r.port == 0 {
        return Err("port: must be 1-65535".into());
    }
    if let Some(p) = &r.peer {
        if p.principal.is_none() && p.uri_san.is_none() {
            return Err("peer: needs principal or uri_san (use `peer: null` for plaintext)".into());
        }
        if matches!(&p.uri_san, Some(UriSans::Many(v)) if v.is_empty()) {
            return Err("peer.uri_san: must not be an empty list".into());
        }
        let handshake_only = p.ca.is_some() || p.expired || p.uri_san.is_some();
        if handshake_only && !r.e2e_only {
            return Err("e2e_only: must be true when peer uses ca, expired or uri_san".into());
        }
    }
    Ok(())
}

impl Scenario {
    pub fn mesh(&self) -> MeshConfig {
        MeshConfig {
            trust_domain: self.trust_domain.clone(),
            trust_domain_aliases: self.trust_domain_aliases.clone(),
            root_namespace: self.root_namespace.clone(),
            path_normalization: self.path_normalization,
            num_trusted_proxies: self.num_trusted_proxies,
        }
    }

    pub fn workload(&self) -> Workload {
        self.workload.clone()
    }
}

impl ScenarioRequest {
    /// The checks a scenario file's request gets (protocol/http agree, port, peer shape),
    /// as `field: message`, for tools that build requests outside a file (the playground).
    pub fn validate(&self) -> Result<(), String> {
        validate_request(self)
    }

    /// The in-process request, or `None` for `e2e_only` requests (decided by the handshake).
    pub fn to_request(&self) -> Option<Request> {
        if self.e2e_only {
            return None;
        }
        Some(Request {
            peer: self.peer.as_ref().map(|p| Peer {
                uri_sans: p.uri_sans(),
            }),
            source_ip: self.source_ip,
            destination_ip: None,
            port: self.port,
            sni: None,
            http: self.http.as_ref().map(|h| HttpRequest {
                method: h.method.clone(),
                path: h.path.clone(),
                host: h.host.clone(),
                headers: h
                    .headers
                    .iter()
                    .flat_map(|(k, v)| {
                        v.iter()
                            .map(move |v| (k.to_ascii_lowercase(), v.to_string()))
                    })
                    .collect(),
                version: h.version.unwrap_or_default(),
            }),
        })
    }

    /// `about`, or a placeholder.
    pub fn label(&self) -> &str {
        self.about.as_deref().unwrap_or("no description")
    }

    /// Every difference between `decision` and the expectations (empty: it passed).
    pub fn check(&self, decision: &Decision) -> Vec<String> {
        let mut out = Vec::new();
        if decision.allowed != self.expect.allowed() {
            out.push(format!(
                "expected {}, got {} (reason: {})",
                word(self.expect.allowed()),
                word(decision.allowed),
                decision.reason
            ));
        }
        let want_audit = self.expect_audit.unwrap_or(false);
        match (&decision.audit, want_audit) {
            (None, true) => out.push("expected audit, got no AUDIT match".into()),
            (Some(by), false) => out.push(format!("expected no audit, got audit by {by}")),
            _ => {}
        }
        if let Some(dr) = &self.expect_dry_run {
            let shadow = |want: Option<ShadowResult>,
                          got: Option<ShadowResult>,
                          action: &str,
                          out: &mut Vec<String>| {
                if let Some(w) = want {
                    if got != Some(w) {
                        out.push(format!(
                            "expected dry-run {action}: {}, got {}",
                            shadow_word(Some(w)),
                            shadow_word(got)
                        ));
                    }
                }
            };
            shadow(dr.deny, decision.dry_run.deny, "deny", &mut out);
            shadow(dr.allow, decision.dry_run.allow, "allow", &mut out);
        }
        out
    }

    /// End to end only the outcome is observable.
    pub fn check_observed(&self, allowed: bool, detail: &str) -> Vec<String> {
        if allowed == self.expect.allowed() {
            Vec::new()
        } else {
            vec![format!(
                "expected {}, got {} ({detail})",
                word(self.expect.allowed()),
                word(allowed)
            )]
        }
    }
}

/// The result of one request of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    /// The mismatches, in words.
    Failed(Vec<String>),
    /// `e2e_only`: the in-process runner cannot exercise it.
    Skipped,
}

#[derive(Debug, Clone)]
pub struct RequestResult {
    pub index: usize,
    pub outcome: Outcome,
    pub decision: Option<Decision>,
}

/// Compile the scenario's resources for its workload and decide every request in-process.
pub fn run_in_process(s: &Scenario) -> (crate::schema::WorkloadPolicy, Vec<RequestResult>) {
    let policy = crate::compile::compile(&s.resources, &s.workload, &s.mesh());
    let engine = crate::decide::Engine::new(policy.clone());
    let results = s
        .requests
        .iter()
        .enumerate()
        .map(|(index, r)| {
            let Some(request) = r.to_request() else {
                return RequestResult {
                    index,
                    outcome: Outcome::Skipped,
                    decision: None,
                };
            };
            let decision = match &engine {
                Ok(e) => crate::hcm::decide(e, &request),
                Err(e) => Decision::deny(Reason::NoConfig { why: e.to_string() }),
            };
            let mismatches = r.check(&decision);
            let outcome = if mismatches.is_empty() {
                Outcome::Passed
            } else {
                Outcome::Failed(mismatches)
            };
            RequestResult {
                index,
                outcome,
                decision: Some(decision),
            }
        })
        .collect();
    (policy, results)
}

/// `FAIL <file> <scenario> request[i] (<about>): <mismatches>`.
pub fn failure_line(s: &Scenario, index: usize, mismatches: &[String]) -> String {
    let about = s
        .requests
        .get(index)
        .map(ScenarioRequest::label)
        .unwrap_or_default();
    format!(
        "FAIL {} {} request[{index}] ({about}): {}",
        s.file.display(),
        s.name,
        mismatches.join("; ")
    )
}

/// `N passed, N failed` plus `, N skipped` when any.
pub fn summary_line(passed: usize, failed: usize, skipped: usize) -> String {
    if skipped > 0 {
        format!("{passed} passed, {failed} failed, {skipped} skipped")
    } else {
        format!("{passed} passed, {failed} failed")
    }
}

fn shadow_word(r: Option<ShadowResult>) -> &'static str {
    match r {
        Some(ShadowResult::Allowed) => "allowed",
        Some(ShadowResult::Denied) => "denied",
        None => "no result",
    }
}

#[cfg(test)]
mod tests;
