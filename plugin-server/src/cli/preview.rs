//! `peerguard preview`: the impact of a configuration change, from recorded traffic.
//!
//! Reads the configuration in force (`--current DIR`, or `--source kubernetes`) and the
//! proposed one (`--proposed DIR`) with the shared mesh loader (so each compiles exactly as
//! `serve` would compile it), replays every recorded request (`--log FILE`, repeatable)
//! against both, and lists each request whose decision flips (ALLOW→DENY, DENY→ALLOW),
//! grouped by workload, the deciding policy (the new decision's reason for a flip to DENY,
//! the old one's for a flip to ALLOW) and the source (principal, or address for plaintext),
//! with counts.
//!
//! Log lines, auto-detected per line (or `--log-format`):
//! - the filter's decision log (`serve --decision-log-sample`): `peerguard-decision {json}`
//!   anywhere in a line (Envoy's log prefix is skipped), format
//!   `peerguard_filter::schema::DecisionLine`;
//! - Envoy's access log in peerguard's JSON format (`envoy_config::access_log`).
//!
//! Other lines (the rest of Envoy's log) are ignored and counted. A line names its workload;
//! the registry of each configuration says what that workload is (labels, service account,
//! services). A recorded request is decided with `hcm::decide`, as `explain` decides.
//!
//! Not replayable (counted and listed with the line number, never guessed): a line that
//! cannot be parsed; a workload either configuration does not register; a line that lacks a
//! header one of the configurations reads (the decision log records only the headers the
//! policies of the time read).
//!
//! Exit code: 0 when nothing flips, 1 when something flips, 2 on bad input (bad arguments,
//! an unreadable log file or configuration, resources with errors, or with `--strict` an
//! unparsable line).

use super::test::Format;
use super::workload::{Mesh, MeshArgs};
use crate::envoy_config::access_log;
use crate::registry::WorkloadKey;
use crate::serve::SourceKind;
use anyhow::{bail, Context};
use peerguard_filter::decide::Engine;
use peerguard_filter::schema::{DecisionLine, Reason, RuleRef};
use peerguard_filter::{Decision, WorkloadPolicy};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The configuration in force: a directory or file, read as `--config` is. Or leave it
    /// out and use `--source kubernetes` to take the cluster's current objects.
    #[arg(long)]
    pub current: Option<PathBuf>,
    /// The proposed configuration: a directory or file, read as `--config` is.
    #[arg(long)]
    pub proposed: PathBuf,
    /// Recorded logs: Envoy's logs with the filter's decision lines, or peerguard's JSON
    /// access logs. (Positional: `--log` is the global log filter.)
    #[arg(required = true, value_name = "LOG")]
    pub logs: Vec<PathBuf>,
    /// How to read log lines: `auto` detects each line's format.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Mesh settings for both configurations (`--config` is the same as `--current`).
    #[command(flatten)]
    pub mesh: MeshArgs,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Exit 2 when a log line cannot be parsed (default: count and list it).
    #[arg(long)]
    pub strict: bool,
    /// Most flipped requests listed per group (all are counted).
    #[arg(long, default_value_t = 5)]
    pub examples: usize,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    /// Only `peerguard-decision` lines (other lines are ignored).
    Decision,
    /// Every non-empty line is one access-log JSON object.
    Access,
}

/// Where a recorded request came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct At {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One recorded request read from a log.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: At,
    pub line: DecisionLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Direction {
    #[serde(rename = "ALLOW->DENY")]
    AllowToDeny,
    #[serde(rename = "DENY->ALLOW")]
    DenyToAllow,
}

impl Direction {
    fn word(self) -> &'static str {
        match self {
            Direction::AllowToDeny => "ALLOW → DENY",
            Direction::DenyToAllow => "DENY → ALLOW",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Flip {
    pub at: At,
    /// `GET host/path`, or `tcp`.
    pub request: String,
    pub current: Decision,
    pub proposed: Decision,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub direction: Direction,
    pub workload: String,
    /// The reason of the deciding decision (the proposed one for ALLOW→DENY, the current
    /// one for DENY→ALLOW), rendered as everywhere else.
    pub decided_by: String,
    /// The policy (and rule) of that reason, when one matched.
    pub policy: Option<String>,
    /// The peer principal, or `plaintext <address>`.
    pub source: String,
    pub count: usize,
    /// The first `--examples` of them.
    pub requests: Vec<Flip>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub at: At,
    pub why: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Recorded requests read (decision and access-log lines).
    pub recorded: usize,
    pub replayed: usize,
    pub flipped: usize,
    pub allow_to_deny: usize,
    pub deny_to_allow: usize,
    pub unchanged: usize,
    pub unreplayable: usize,
    /// Lines of neither format (the rest of Envoy's log).
    pub ignored: usize,
    /// Decision lines whose recorded decision differs from the replay against the current
    /// configuration (the log was written under another configuration).
    pub recorded_mismatch: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub current: String,
    pub proposed: String,
    pub totals: Totals,
    pub groups: Vec<Group>,
    pub unreplayable: Vec<Problem>,
    pub recorded_mismatch: Vec<Problem>,
    /// Errors of either configuration (`current: file: kind ns/name: field: message`).
    pub config_errors: Vec<String>,
}

/// Reads every log: the recorded requests, the lines that could not be parsed, and how many
/// lines were of neither format.
pub fn read_logs(
    files: &[PathBuf],
    format: LogFormat,
) -> anyhow::Result<(Vec<Recorded>, Vec<Problem>, usize)> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let mut ignored = 0;
    for path in files {
        let file =
            std::fs::File::open(path).with_context(|| format!("--log {}", path.display()))?;
        let name = path.display().to_string();
        for (i, raw) in std::io::BufReader::new(file).split(b'\n').enumerate() {
            let raw = raw.with_context(|| format!("reading --log {name}"))?;
            let text = String::from_utf8_lossy(&raw);
            let at = At {
                file: name.clone(),
                line: i + 1,
            };
            match parse_line(&text, format) {
                None => ignored += 1,
                Some(Ok(line)) => out.push(Recorded { at, line }),
                Some(Err(why)) => bad.push(Problem { at, why }),
            }
        }
    }
    Ok((out, bad, ignored))
}

/// One log line: `None` when it is of neither format (and the format allows that).
pub fn parse_line(text: &str, format: LogFormat) -> Option<Result<DecisionLine, String>> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if format != LogFormat::Access {
        if let Some(r) = DecisionLine::find(t) {
            return Some(r);
        }
        if format == LogFormat::Decision {
            return None;
        }
    }
    let json: serde_json::Value = match serde_json::from_str(t) {
        Ok(v) => v,
        Err(e) if format == LogFormat::Access => {
            return Some(Err(format!("not an access-log JSON line: {e}")))
        }
        Err(_) => return None,
    };
    if !access_log::is_access_log(&json) {
        return (format == LogFormat::Access).then(|| {
            Err(format!(
                "a JSON object without {:?}: not peerguard's access-log format",
                access_log::MARKER
            ))
        });
    }
    Some(access_log::parse(&json))
}

/// One configuration, compiled per workload on demand.
struct Side {
    mesh: Mesh,
    unreadable: Option<String>,
    engines: HashMap<WorkloadKey, Result<(WorkloadPolicy, Engine), String>>,
}

impl Side {
    fn new(mesh: Mesh) -> Self {
        Side {
            unreadable: mesh.unreadable(),
            mesh,
            engines: HashMap::new(),
        }
    }

    fn engine(&mut self, key: &WorkloadKey) -> Result<&(WorkloadPolicy, Engine), String> {
        let mesh = &self.mesh;
        self.engines
            .entry(key.clone())
            .or_insert_with(|| {
                let entry = mesh.inputs.registry.get(key).ok_or_else(|| {
                    format!("workload {key} is not in the registry of {}", mesh.origin)
                })?;
                let policy = mesh.compile(&entry.to_compile());
                // An engine that refuses the policy is what the filter does too: deny all.
                let engine = Engine::new(policy.clone()).map_err(|e| e.to_string());
                match engine {
                    Ok(e) => Ok((policy, e)),
                    Err(why) => Err(format!("the filter refuses {key}'s configuration: {why}")),
                }
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The decision for a recorded request, or why it cannot be replayed.
    fn decide(&mut self, key: &WorkloadKey, line: &DecisionLine) -> Result<Decision, String> {
        let unreadable = self.unreadable.clone();
        let (policy, engine) = self.engine(key)?;
        let missing = line.missing_for(policy);
        if !missing.is_empty() {
            return Err(format!(
                "the line does not record header(s) {} that the policies read",
                missing.join(", ")
            ));
        }
        // As `explain`: a file that could not be read may hold the only DENY that applies.
        Ok(match unreadable {
            Some(why) => Decision::deny(Reason::NoConfig { why }),
            None => peerguard_filter::hcm::decide(engine, &line.client_request()),
        })
    }
}

/// Each recorded request's decision under one configuration (or why it cannot be
/// replayed), in order: what `replay` compares, for checks against what Envoy answered.
pub fn decisions(mesh: Mesh, recorded: &[Recorded]) -> Vec<Result<Decision, String>> {
    let mut side = Side::new(mesh);
    recorded
        .iter()
        .map(|r| {
            let (ns, name) = r.line.workload_key().ok_or_else(|| {
                format!("workload {:?}: expected namespace/name", r.line.workload)
            })?;
            let key = WorkloadKey {
                namespace: ns.into(),
                name: name.into(),
            };
            side.decide(&key, &r.line)
        })
        .collect()
}

fn matched(reason: &Reason) -> Option<&RuleRef> {
    match reason {
        Reason::Denied { matched }
        | Reason::Allowed { matched }
        | Reason::CustomDenied { matched, .. } => Some(matched),
        _ => None,
    }
}

fn source(line: &DecisionLine) -> String {
    let addr = line
        .src
        .map(|a| a.to_string())
        .unwrap_or_else(|| "?".into());
    match &line.peer {
        None => format!("plaintext {addr}"),
        Some(sans) if sans.is_empty() => format!("mTLS without URI SAN {addr}"),
        Some(sans) => sans
            .iter()
            .map(|s| s.strip_prefix("spiffe://").unwrap_or(s))
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn describe(line: &DecisionLine) -> String {
    match &line.http {
        None => format!("tcp port {}", line.port),
        Some(h) => format!("{} {}{} port {}", h.method, h.host, h.path, line.port),
    }
}

/// Replays `recorded` against both configurations.
pub fn replay(
    current: Mesh,
    proposed: Mesh,
    recorded: &[Recorded],
    unparsable: Vec<Problem>,
    ignored: usize,
    examples: usize,
) -> Report {
    let mut config_errors: Vec<String> = Vec::new();
    for (side, mesh) in [("current", &current), ("proposed", &proposed)] {
        config_errors.extend(
            mesh.config_errors()
                .into_iter()
                .map(|e| format!("{side}: {e}")),
        );
    }
    let (cur_origin, prop_origin) = (current.origin.clone(), proposed.origin.clone());
    let mut cur = Side::new(current);
    let mut prop = Side::new(proposed);
    let mut totals = Totals {
        recorded: recorded.len(),
        ignored,
        ..Totals::default()
    };
    let mut unreplayable = unparsable;
    let mut mismatch = Vec::new();
    type Key = (Direction, String, String, String);
    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    for r in recorded {
        let Some((ns, name)) = r.line.workload_key() else {
            unreplayable.push(Problem {
                at: r.at.clone(),
                why: format!("workload {:?}: expected namespace/name", r.line.workload),
            });
            continue;
        };
        let key = WorkloadKey {
            namespace: ns.into(),
            name: name.into(),
        };
        let decided = cur
            .decide(&key, &r.line)
            .map_err(|e| format!("current: {e}"))
            .and_then(|c| {
                prop.decide(&key, &r.line)
                    .map(|p| (c, p))
                    .map_err(|e| format!("proposed: {e}"))
            });
        let (c, p) = match decided {
            Ok(v) => v,
            Err(why) => {
                unreplayable.push(Problem {
                    at: r.at.clone(),
                    why,
                });
                continue;
            }
        };
        totals.replayed += 1;
        if let Some(recorded) = r.line.allowed {
            if recorded != c.allowed {
                mismatch.push(Problem {
                    at: r.at.clone(),
                    why: format!(
                        "recorded {} ({}), the current configuration gives {} ({})",
                        word(recorded),
                        r.line
                            .reason
                            .as_ref()
                            .map(|x| x.to_string())
                            .unwrap_or_default(),
                        word(c.allowed),
                        c.reason
                    ),
                });
            }
        }
        if c.allowed == p.allowed {
            totals.unchanged += 1;
            continue;
        }
        totals.flipped += 1;
        let (direction, deciding) = if c.allowed {
            totals.allow_to_deny += 1;
            (Direction::AllowToDeny, &p)
        } else {
            totals.deny_to_allow += 1;
            (Direction::DenyToAllow, &c)
        };
        let decided_by = deciding.reason.to_string();
        let src = source(&r.line);
        let g = groups
            .entry((
                direction,
                r.line.workload.clone(),
                decided_by.clone(),
                src.clone(),
            ))
            .or_insert_with(|| Group {
                direction,
                workload: r.line.workload.clone(),
                decided_by,
                policy: matched(&deciding.reason).map(|m| m.to_string()),
                source: src,
                count: 0,
                requests: Vec::new(),
            });
        g.count += 1;
        if g.requests.len() < examples {
            g.requests.push(Flip {
                at: r.at.clone(),
                request: describe(&r.line),
                current: c.clone(),
                proposed: p.clone(),
            });
        }
    }
    totals.unreplayable = unreplayable.len();
    totals.recorded_mismatch = mismatch.len();
    unreplayable.sort_by(|a, b| a.at.cmp(&b.at));
    Report {
        current: cur_origin,
        proposed: prop_origin,
        totals,
        groups: groups.into_values().collect(),
        unreplayable,
        recorded_mismatch: mismatch,
        config_errors,
    }
}

fn word(allowed: bool) -> &'static str {
    if allowed {
        "ALLOW"
    } else {
        "DENY"
    }
}

fn load(args: &Args) -> anyhow::Result<(Mesh, Mesh)> {
    let mut current = args.mesh.clone();
    match (&args.current, &args.mesh.config, args.mesh.source) {
        (Some(_), Some(_), _) => bail!("--current and --config name the same thing: give one"),
        (Some(_), None, SourceKind::Kubernetes) => {
            bail!("--current and --source kubernetes exclude each other")
        }
        (Some(dir), None, SourceKind::Directory) => current.config = Some(dir.clone()),
        (None, None, SourceKind::Directory) => {
            bail!("--current DIR is required (or --source kubernetes for the cluster's objects)")
        }
        (None, _, _) => {}
    }
    let mut proposed = args.mesh.clone();
    proposed.source = SourceKind::Directory;
    proposed.config = Some(args.proposed.clone());
    let cur = current.load().context("current configuration")?;
    let prop = proposed.load().context("proposed configuration")?;
    Ok((cur, prop))
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let prepared = load(&args)
        .and_then(|meshes| read_logs(&args.logs, args.log_format).map(|logs| (meshes, logs)));
    let ((current, proposed), (recorded, unparsable, ignored)) = match prepared {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    let unparsable_count = unparsable.len();
    let report = replay(
        current,
        proposed,
        &recorded,
        unparsable,
        ignored,
        args.examples,
    );
    let text = match args.output {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Text => render(&report),
    };
    super::output::write_stdout(&text)?;
    Ok(
        if !report.config_errors.is_empty() || (args.strict && unparsable_count > 0) {
            2
        } else if report.totals.flipped > 0 {
            1
        } else {
            0
        },
    )
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let t = &r.totals;
    line(format!("current:  {}", r.current));
    line(format!("proposed: {}", r.proposed));
    line(format!(
        "{} recorded requests, {} replayed: {} flip ({} ALLOW → DENY, {} DENY → ALLOW), {} unchanged; {} unreplayable; {} other log lines ignored",
        t.recorded, t.replayed, t.flipped, t.allow_to_deny, t.deny_to_allow, t.unchanged, t.unreplayable, t.ignored
    ));
    let mut last: Option<(Direction, &str)> = None;
    for g in &r.groups {
        if last.map(|(d, _)| d) != Some(g.direction) {
            let n: usize = r
                .groups
                .iter()
                .filter(|x| x.direction == g.direction)
                .map(|x| x.count)
                .sum();
            line(String::new());
            line(format!("{} ({n})", g.direction.word()));
            last = None;
        }
        if last.map(|(_, w)| w) != Some(g.workload.as_str()) {
            line(format!("  workload {}", g.workload));
        }
        last = Some((g.direction, g.workload.as_str()));
        line(format!(
            "    {:>5}  {}: {}",
            g.count, g.source, g.decided_by
        ));
        for f in &g.requests {
            // A flip to ALLOW is grouped by the denial it lifts; say what allows it now.
            let now = match g.direction {
                Direction::DenyToAllow => format!(" (now: {})", f.proposed.reason),
                Direction::AllowToDeny => String::new(),
            };
            line(format!("           {}  {}{now}", f.at, f.request));
        }
        if g.count > g.requests.len() {
            line(format!("           … {} more", g.count - g.requests.len()));
        }
    }
    if !r.unreplayable.is_empty() {
        line(String::new());
        line(format!("unreplayable ({}):", r.unreplayable.len()));
        for p in &r.unreplayable {
            line(format!("  {}: {}", p.at, p.why));
        }
    }
    if !r.recorded_mismatch.is_empty() {
        line(String::new());
        line(format!(
            "recorded decision differs from the current configuration's ({}): the log was written under another configuration",
            r.recorded_mismatch.len()
        ));
        for p in &r.recorded_mismatch {
            line(format!("  {}: {}", p.at, p.why));
        }
    }
    if !r.config_errors.is_empty() {
        line(String::new());
        line("configuration errors:".into());
        for e in &r.config_errors {
            line(format!("  - {e}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
