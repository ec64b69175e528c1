//! `peerguard test PATH...`: run conformance-format scenario files, in-process (compile +
//! decide) or, with `--envoy`, through a real Envoy with the wasm filter.
//!
//! Exit code: 0 when every request passed, 1 when any failed, 2 when some input could not
//! be used (the usable files are still run and reported).
//!
//! The Envoy backend is not part of this crate (it needs Envoy, a test PKI and TLS clients):
//! the `peerguard` binary passes the harness's runner ([`EnvoyBackend`]).

use peerguard_filter::compile::{compile, JWT_NOT_ENFORCED};
use peerguard_filter::scenario::{self, Outcome, Scenario};
use peerguard_filter::WorkloadPolicy;
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scenario files or directories of them.
    #[arg(required = true)]
    pub paths: Vec<std::path::PathBuf>,
    /// Run the requests through a real Envoy with the built wasm filter.
    #[arg(long)]
    pub envoy: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// What the Envoy backend observed for one request.
#[derive(Debug, Clone)]
pub struct Observed {
    pub allowed: bool,
    /// e.g. `HTTP 403 RBAC: access denied`, `TLS handshake failed: ...`, `payload echoed`.
    pub detail: String,
}

/// Runs compiled scenarios through a real Envoy: per scenario, per request (in file
/// order), what was observed.
pub type EnvoyBackend<'a> =
    &'a dyn Fn(&[(Scenario, WorkloadPolicy)]) -> anyhow::Result<Vec<Vec<Observed>>>;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Serialize)]
struct RequestReport {
    file: String,
    scenario: String,
    request: usize,
    about: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mismatches: Vec<String>,
}

#[derive(Debug, Serialize, Default)]
struct Report {
    passed: usize,
    failed: usize,
    skipped: usize,
    invalid: Vec<String>,
    /// What the scenarios rely on that peerguard does not enforce (JWT).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    requests: Vec<RequestReport>,
}

impl Report {
    fn record(&mut self, s: &Scenario, index: usize, outcome: Outcome) {
        let (status, mismatches) = match outcome {
            Outcome::Passed => {
                self.passed += 1;
                ("passed", Vec::new())
            }
            Outcome::Skipped => {
                self.skipped += 1;
                ("skipped", Vec::new())
            }
            Outcome::Failed(m) => {
                self.failed += 1;
                ("failed", m)
            }
        };
        self.requests.push(RequestReport {
            file: s.file.display().to_string(),
            scenario: s.name.clone(),
            request: index,
            about: s
                .requests
                .get(index)
                .map(|r| r.label().to_string())
                .unwrap_or_default(),
            status,
            mismatches,
        });
    }

    /// The compile diagnostics a user must not miss: peerguard does not enforce JWT.
    fn warn(&mut self, policy: &WorkloadPolicy) {
        for d in &policy.diagnostics {
            if d.starts_with(JWT_NOT_ENFORCED) && !self.warnings.contains(d) {
                self.warnings.push(d.clone());
            }
        }
    }

    fn exit_code(&self) -> u8 {
        if !self.invalid.is_empty() {
            2
        } else if self.failed > 0 {
            1
        } else {
            0
        }
    }
}

/// `envoy`: the backend for `--envoy` (`None`: `--envoy` is refused).
pub fn run(args: Args, envoy: Option<EnvoyBackend<'_>>) -> anyhow::Result<u8> {
    let loaded = scenario::load_paths(&args.paths);
    let mut report = Report {
        invalid: loaded.errors.iter().map(ToString::to_string).collect(),
        ..Default::default()
    };
    if loaded.scenarios.is_empty() && loaded.errors.is_empty() {
        report.invalid.push(format!(
            "no scenario files (*.yaml, *.yml, *.json) found in {}",
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if args.envoy {
        let Some(backend) = envoy else {
            anyhow::bail!("--envoy: this build has no Envoy backend");
        };
        run_envoy(&loaded.scenarios, &mut report, backend)?;
    } else {
        for s in &loaded.scenarios {
            let (policy, results) = scenario::run_in_process(s);
            report.warn(&policy);
            for r in results {
                report.record(s, r.index, r.outcome);
            }
        }
    }
    print(&report, &loaded.scenarios, args.output)?;
    Ok(report.exit_code())
}

/// Same loading and compiling; the e2e backend observes each request. Nothing is skipped.
fn run_envoy(
    scenarios: &[Scenario],
    report: &mut Report,
    backend: EnvoyBackend<'_>,
) -> anyhow::Result<()> {
    let compiled: Vec<(Scenario, WorkloadPolicy)> = scenarios
        .iter()
        .map(|s| (s.clone(), compile(&s.resources, &s.workload, &s.mesh())))
        .collect();
    let observed = backend(&compiled)?;
    if observed.len() != compiled.len() {
        anyhow::bail!(
            "e2e backend returned results for {} scenarios, expected {}",
            observed.len(),
            compiled.len()
        );
    }
    for ((s, policy), obs) in compiled.iter().zip(observed) {
        report.warn(policy);
        for (index, request) in s.requests.iter().enumerate() {
            let outcome = match obs.get(index) {
                None => Outcome::Failed(vec![
                    "e2e backend returned no observation for this request".into(),
                ]),
                Some(o) => {
                    let m = request.check_observed(o.allowed, &o.detail);
                    if m.is_empty() {
                        Outcome::Passed
                    } else {
                        Outcome::Failed(m)
                    }
                }
            };
            report.record(s, index, outcome);
        }
    }
    Ok(())
}

fn print(report: &Report, scenarios: &[Scenario], format: Format) -> anyhow::Result<()> {
    let mut out = String::new();
    match format {
        Format::Json => out = serde_json::to_string_pretty(report)? + "\n",
        Format::Text => {
            for e in &report.invalid {
                out += &format!("INVALID {e}\n");
            }
            for w in &report.warnings {
                out += &format!("WARNING {w}\n");
            }
            for r in report.requests.iter().filter(|r| r.status == "failed") {
                if let Some(s) = scenarios.iter().find(|s| s.name == r.scenario) {
                    out += &scenario::failure_line(s, r.request, &r.mismatches);
                    out.push('\n');
                }
            }
            out += &scenario::summary_line(report.passed, report.failed, report.skipped);
            out.push('\n');
        }
    }
    super::output::write_stdout(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let mut r = Report::default();
        assert_eq!(r.exit_code(), 0);
        r.failed = 1;
        assert_eq!(r.exit_code(), 1);
        r.invalid.push("x.yaml: bad".into());
        assert_eq!(r.exit_code(), 2);
    }
}
