//! `peerguard readiness`: is it safe to turn STRICT on? Reads the filter's per-connection
//! counters (`peerguard_filter::readiness`: destination port × plaintext/mTLS × source)
//! from Envoy admin endpoints or Prometheus text, twice, `--window` apart, and prints per
//! workload and port the mode now, the plaintext and mTLS connections of the window and who
//! sent them, and the verdict: READY (no plaintext in the window) or NOT READY (and from
//! whom).
//!
//! Each Envoy admin endpoint is mapped to its workload by the filter configuration it runs
//! (the `WorkloadPolicy` in `/config_dump`, ECDS or inline), so the mode is the one the
//! filter enforces; without one, by `/server_info`'s node id (mode unknown).
//!
//! Exit code: 0 when every workload is ready, 1 when some is not, 2 on errors (an endpoint
//! unreachable or answering something else than Envoy's admin, unusable arguments).

use super::test::Format;
use crate::ca::duration;
use anyhow::{bail, Context as _};
use peerguard_filter::readiness::{Series, Tls, CONNECTIONS, DRY_RUN_REFUSED, ENVOY_PREFIX};
use peerguard_filter::schema::{ModeFrom, MtlsMode};
use peerguard_filter::WorkloadPolicy;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  peerguard readiness --envoy-admin http://127.0.1.20:15000 --window 30s
  peerguard readiness --envoy-admin http://10.0.0.5:15000 --envoy-admin http://10.0.0.6:15000 --since-start --output json
  peerguard readiness --prometheus envoy-stats.txt --since-start")]
pub struct Args {
    /// An Envoy admin endpoint (`http://host:port`) of a sidecar running the peerguard filter.
    /// Repeatable.
    #[arg(long = "envoy-admin", value_name = "URL")]
    pub envoy_admin: Vec<String>,
    /// Prometheus text (Envoy's `/stats/prometheus`, or a Prometheus server's `/federate`):
    /// an `http://` URL or a file (a file is one sample: needs `--since-start`). Series are
    /// grouped per workload by their labels other than port/tls/source. Repeatable.
    #[arg(long, value_name = "FILE|URL")]
    pub prometheus: Vec<String>,
    /// Time between the two samples: what is reported is what happened in between.
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    pub window: Duration,
    /// One sample: everything counted since each Envoy started (or its counters last reset).
    #[arg(long)]
    pub since_start: bool,
    /// Timeout of each HTTP request.
    #[arg(long, default_value = "5s", value_parser = duration::parse)]
    pub timeout: Duration,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// No plaintext connection in the window.
    Ready,
    /// Plaintext connections in the window (or a mode nothing is counted under).
    NotReady,
    /// STRICT is already enforced on the port.
    Strict,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceCount {
    pub source: String,
    pub connections: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    /// `None`: every port without its own row (the workload's default mode).
    pub port: Option<u16>,
    /// The mode now, as compiled (`STRICT` with `dry_run`: enforced as PERMISSIVE); `None`
    /// when the endpoint's filter configuration is unknown (Prometheus input).
    pub mode: Option<MtlsMode>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    pub mode_from: Option<String>,
    pub plaintext: u64,
    pub plaintext_sources: Vec<SourceCount>,
    pub mtls: u64,
    pub mtls_sources: Vec<SourceCount>,
    pub verdict: Verdict,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// `namespace/name` from the filter configuration, else the node id or the input's name.
    pub workload: String,
    pub endpoint: String,
    pub ready: bool,
    /// Plaintext connections a dry-run STRICT would have refused (the whole Envoy).
    pub dry_run_refused: u64,
    pub ports: Vec<PortReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Seconds between the samples; `None` with `--since-start`.
    pub window_seconds: Option<f64>,
    pub ready: bool,
    pub workloads: Vec<WorkloadReport>,
}

/// One reading of one input: the counters, and what the endpoint says it enforces.
#[derive(Debug, Clone, Default)]
struct Sample {
    workload: String,
    policy: Option<WorkloadPolicy>,
    /// With no filter configuration in the dump (every slot native RBAC): the mode the
    /// transport slot enforces (`crate::enforcement`), for every port.
    transport_mode: Option<ModeFrom>,
    series: BTreeMap<Series, u64>,
    dry_run_refused: u64,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    match report(&args) {
        Ok(r) => {
            let text = match args.output {
                Format::Json => serde_json::to_string_pretty(&r)? + "\n",
                Format::Text => render(&r),
            };
            super::output::write_stdout(&text)?;
            Ok(if r.ready { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(2)
        }
    }
}

/// Samples every input (twice, `--window` apart, unless `--since-start`) and judges.
pub fn report(args: &Args) -> anyhow::Result<Report> {
    if args.envoy_admin.is_empty() && args.prometheus.is_empty() {
        bail!("nothing to read: give --envoy-admin URL or --prometheus FILE|URL");
    }
    if !args.since_start {
        if let Some(f) = args.prometheus.iter().find(|p| !p.starts_with("http://")) {
            bail!("--prometheus {f}: a file is one sample; add --since-start (or give an http:// URL)");
        }
    }
    let first = sample_all(args)?;
    let (before, after, window) = if args.since_start {
        (None, first, None)
    } else {
        let started = Instant::now();
        std::thread::sleep(args.window);
        let second = sample_all(args)?;
        (Some(first), second, Some(started.elapsed().as_secs_f64()))
    };
    let mut workloads = Vec::new();
    for (i, (endpoint, samples)) in after.into_iter().enumerate() {
        for (j, now) in samples.into_iter().enumerate() {
            let earlier = before
                .as_ref()
                .and_then(|b| b.get(i))
                .and_then(|(_, s)| s.iter().find(|e| e.workload == now.workload).or(s.get(j)));
            workloads.push(judge(&endpoint, &now, earlier));
        }
    }
    Ok(Report {
        window_seconds: window,
        ready: workloads.iter().all(|w| w.ready),
        workloads,
    })
}

type Samples = Vec<(String, Vec<Sample>)>;

fn sample_all(args: &Args) -> anyhow::Result<Samples> {
    let mut out = Vec::new();
    for url in &args.envoy_admin {
        let s = sample_envoy(url, args.timeout).with_context(|| format!("--envoy-admin {url}"))?;
        out.push((url.clone(), vec![s]));
    }
    for src in &args.prometheus {
        let text = match src.starts_with("http://") {
            true => http_get(src, "", args.timeout)?,
            false => std::fs::read_to_string(src).with_context(|| format!("reading {src}"))?,
        };
        let s =
            samples_from_prometheus(&text, src).with_context(|| format!("--prometheus {src}"))?;
        out.push((src.clone(), s));
    }
    Ok(out)
}

fn sample_envoy(url: &str, timeout: Duration) -> anyhow::Result<Sample> {
    let stats = http_get(url, "/stats?format=json&filter=peerguard_", timeout)?;
    let stats: Value = serde_json::from_str(&stats).context("/stats?format=json is not JSON")?;
    let mut sample = Sample::default();
    for s in stats
        .get("stats")
        .and_then(Value::as_array)
        .context("/stats?format=json has no `stats` array: not Envoy's admin?")?
    {
        let (Some(name), Some(value)) = (
            s.get("name").and_then(Value::as_str),
            s.get("value").and_then(Value::as_u64),
        ) else {
            continue;
        };
        if let Some(series) = Series::parse(name) {
            *sample.series.entry(series).or_insert(0) += value;
        } else if name == format!("{ENVOY_PREFIX}{DRY_RUN_REFUSED}") {
            sample.dry_run_refused = value;
        }
    }
    // ECDS first (`peerguard serve`; Envoy answers 404 when it has no ECDS filter), then
    // the whole dump (a configuration inline in a listener).
    let ecds = http_get(url, "/config_dump?resource=ecds_filters", timeout)
        .ok()
        .and_then(|body| serde_json::from_str::<Value>(&body).ok());
    let mut policy = ecds.as_ref().and_then(find_policy);
    if policy.is_none() {
        let dump: Value = serde_json::from_str(&http_get(url, "/config_dump", timeout)?)
            .context("/config_dump is not JSON")?;
        policy = find_policy(&dump);
        if policy.is_none() {
            // Envoy lists network filters from ECDS apart from HTTP ones: the whole dump.
            sample.transport_mode = transport_mode(&dump);
        }
    }
    sample.workload = match &policy {
        Some(p) => format!("{}/{}", p.workload.namespace, p.workload.name),
        None => {
            let info: Value = serde_json::from_str(&http_get(url, "/server_info", timeout)?)
                .context("/server_info is not JSON")?;
            let node = info
                .pointer("/command_line_options/service_node")
                .and_then(Value::as_str);
            format!("node {}", node.filter(|n| !n.is_empty()).unwrap_or("?"))
        }
    };
    sample.policy = policy;
    Ok(sample)
}

/// The mode `peerguard serve`'s transport slot enforces, from an ECDS config dump: its
/// network RBAC's mode policy refuses connections without a certificate (STRICT) or with
/// one (DISABLE); no rules: nothing refused there.
fn transport_mode(dump: &Value) -> Option<ModeFrom> {
    use crate::enforcement::MTLS_MODE_POLICY;
    let slot = find_named(dump, crate::envoy_config::listener::TRANSPORT_FILTER)?;
    let principal = &slot["typed_config"]["rules"]["policies"][MTLS_MODE_POLICY]["principals"][0];
    let mode = if principal.get("not_id").is_some() {
        MtlsMode::Strict
    } else if principal.get("authenticated").is_some() {
        MtlsMode::Disable
    } else {
        return None;
    };
    Some(ModeFrom::new(
        mode,
        Some("peerguard-transport (native RBAC from peerguard serve)".into()),
    ))
}

/// The first object named `name` that has a `typed_config`.
fn find_named<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => {
            if m.get("name").and_then(Value::as_str) == Some(name) && m.contains_key("typed_config")
            {
                return Some(v);
            }
            m.values().find_map(|v| find_named(v, name))
        }
        Value::Array(a) => a.iter().find_map(|v| find_named(v, name)),
        _ => None,
    }
}

/// The peerguard filter configuration in a config dump: the wasm plugin's `configuration`
/// string that reads as a `WorkloadPolicy` (ECDS or inline in a listener).
fn find_policy(v: &Value) -> Option<WorkloadPolicy> {
    match v {
        Value::Object(m) => {
            if let Some(s) = m
                .get("configuration")
                .and_then(|c| c.get("value"))
                .and_then(Value::as_str)
            {
                if let Ok(p) = serde_json::from_str::<WorkloadPolicy>(s) {
                    return Some(p);
                }
            }
            m.values().find_map(find_policy)
        }
        Value::Array(a) => a.iter().find_map(find_policy),
        _ => None,
    }
}

/// Prometheus text: `peerguard_connections{port="80",tls="plaintext",source="…",…} N`, one
/// sample per distinct set of other labels (an Envoy scraped by a Prometheus server carries
/// e.g. `pod`/`namespace`); Envoy's own `/stats/prometheus` has none: one sample named `src`.
fn samples_from_prometheus(text: &str, src: &str) -> anyhow::Result<Vec<Sample>> {
    let mut by: BTreeMap<String, Sample> = BTreeMap::new();
    let mut untagged = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((metric, labels, value)) = prometheus_line(line) else {
            continue;
        };
        if metric.starts_with(&format!("{CONNECTIONS}_port_")) {
            untagged = true;
        }
        let (ours, rest): (Vec<_>, Vec<_>) = labels
            .into_iter()
            .partition(|(k, _)| matches!(k.as_str(), "port" | "tls" | "source"));
        let key = rest
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let value = value.max(0.0) as u64;
        if let Some(series) = Series::from_labels(&metric, &ours) {
            let s = by.entry(key).or_default();
            *s.series.entry(series).or_insert(0) += value;
        } else if metric == DRY_RUN_REFUSED {
            by.entry(key).or_default().dry_run_refused += value;
        }
    }
    if by.is_empty() && untagged {
        bail!("the peerguard_connections counters have no port/tls/source labels: the Envoy bootstrap lacks peerguard's stats_tags (peerguard_server::envoy_config::stats_config); read --envoy-admin instead");
    }
    Ok(by
        .into_iter()
        .map(|(key, mut s)| {
            s.workload = if key.is_empty() { src.to_string() } else { key };
            s
        })
        .collect())
}

/// Label name → value, in order.
type Labels = Vec<(String, String)>;

/// `name{k="v",…} value [timestamp]` → (name, labels, value).
fn prometheus_line(line: &str) -> Option<(String, Labels, f64)> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let mut labels = Vec::new();
            let mut s = &line[open + 1..];
            loop {
                s = s.trim_start_matches([',', ' ']);
                if let Some(after) = s.strip_prefix('}') {
                    break (line[..open].to_string(), labels, after);
                }
                let (k, after) = s.split_once("=\"")?;
                let mut v = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next()? {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next()?.1 {
                            'n' => v.push('\n'),
                            c => v.push(c),
                        },
                        (_, c) => v.push(c),
                    }
                };
                labels.push((k.trim().to_string(), v));
                s = &after[end + 1..];
            }
        }
        None => {
            let (n, rest) = line.split_once(' ')?;
            (n.to_string(), Vec::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// Connections in the window: `now - before` (a counter that went down means the Envoy
/// restarted in between: then everything since the restart).
fn delta(now: &Sample, before: Option<&Sample>) -> BTreeMap<Series, u64> {
    let restarted = before.is_some_and(|b| {
        b.series
            .iter()
            .any(|(k, v)| now.series.get(k).is_some_and(|n| n < v))
    });
    now.series
        .iter()
        .map(|(k, v)| {
            let was = match restarted {
                true => 0,
                false => before.and_then(|b| b.series.get(k)).copied().unwrap_or(0),
            };
            (k.clone(), v.saturating_sub(was))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn judge(endpoint: &str, now: &Sample, before: Option<&Sample>) -> WorkloadReport {
    let counts = delta(now, before);
    let mut ports: BTreeSet<Option<u16>> = counts.keys().map(|s| Some(s.port)).collect();
    if let Some(p) = &now.policy {
        ports.extend(p.mtls.ports.keys().copied().map(Some));
    }
    // A row for the workload's default mode unless a counted port already shows it.
    let overridden = |port: &Option<u16>| match (port, &now.policy) {
        (Some(port), Some(p)) => p.mtls.ports.contains_key(port),
        _ => false,
    };
    if ports.iter().all(overridden) {
        ports.insert(None);
    }
    let reports: Vec<PortReport> = ports
        .into_iter()
        .map(|port| {
            let mode = match &now.policy {
                Some(p) => Some(match port {
                    Some(port) => p.mtls.for_port(port).clone(),
                    None => p.mtls.default.clone(),
                }),
                None => now.transport_mode.clone(),
            };
            let sources = |tls: Tls| {
                let mut v: Vec<SourceCount> = counts
                    .iter()
                    .filter(|(s, _)| Some(s.port) == port && s.tls == tls)
                    .map(|(s, n)| SourceCount {
                        source: s.source.clone(),
                        connections: *n,
                    })
                    .collect();
                v.sort_by(|a, b| {
                    b.connections
                        .cmp(&a.connections)
                        .then(a.source.cmp(&b.source))
                });
                v
            };
            let (plaintext_sources, mtls_sources) = (sources(Tls::Plaintext), sources(Tls::Mtls));
            let plaintext = plaintext_sources.iter().map(|s| s.connections).sum();
            let mtls = mtls_sources.iter().map(|s| s.connections).sum();
            let (verdict, why) = verdict(mode.as_ref(), plaintext, &plaintext_sources, mtls);
            PortReport {
                port,
                mode: mode.as_ref().map(|m| m.mode),
                dry_run: mode.as_ref().is_some_and(ModeFrom::is_dry_run_strict),
                mode_from: mode.and_then(|m| m.from),
                plaintext,
                plaintext_sources,
                mtls,
                mtls_sources,
                verdict,
                why,
            }
        })
        .collect();
    WorkloadReport {
        workload: now.workload.clone(),
        endpoint: endpoint.to_string(),
        ready: reports.iter().all(|p| p.verdict != Verdict::NotReady),
        dry_run_refused: now
            .dry_run_refused
            .saturating_sub(before.map(|b| b.dry_run_refused).unwrap_or(0)),
        ports: reports,
    }
}

fn verdict(
    mode: Option<&ModeFrom>,
    plaintext: u64,
    from: &[SourceCount],
    mtls: u64,
) -> (Verdict, String) {
    match mode.map(ModeFrom::enforced) {
        Some(MtlsMode::Strict) => (Verdict::Strict, "STRICT is enforced already".into()),
        // Nothing is counted under DISABLE, and its clients send plaintext by design
        // (auto mTLS): no evidence either way, so not ready (the safer answer).
        Some(MtlsMode::Disable) => (
            Verdict::NotReady,
            "mode DISABLE: plaintext only, connections are not counted; switch to PERMISSIVE and measure first".into(),
        ),
        Some(MtlsMode::Permissive) | None if plaintext > 0 => (
            Verdict::NotReady,
            format!(
                "plaintext from {}",
                from.iter()
                    .map(|s| format!("{} ({})", s.source, s.connections))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Some(MtlsMode::Permissive) | None if mtls == 0 => (
            Verdict::Ready,
            "no plaintext (no connection at all in the window)".into(),
        ),
        Some(MtlsMode::Permissive) | None => (Verdict::Ready, "no plaintext: every connection was mTLS".into()),
    }
}

fn render(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(&match r.window_seconds {
        Some(s) => format!("connections in the last {s:.0}s\n"),
        None => "connections since each Envoy started\n".to_string(),
    });
    for w in &r.workloads {
        out.push_str(&format!(
            "\n{}  ({})  {}\n",
            w.workload,
            w.endpoint,
            if w.ready { "READY" } else { "NOT READY" }
        ));
        for p in &w.ports {
            let port = p
                .port
                .map(|p| format!("port {p}"))
                .unwrap_or_else(|| "other ports".into());
            let mode = match (p.mode, p.dry_run) {
                (Some(MtlsMode::Strict), true) => "STRICT (dry-run)".to_string(),
                (Some(m), _) => format!("{m:?}").to_uppercase(),
                (None, _) => "mode unknown".to_string(),
            };
            let from = p
                .mode_from
                .as_deref()
                .map(|f| format!(", set by {f}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {port}: {mode}{from}; plaintext {}, mTLS {}\n",
                p.plaintext, p.mtls
            ));
            for s in &p.plaintext_sources {
                out.push_str(&format!(
                    "    plaintext from {} ({})\n",
                    s.source, s.connections
                ));
            }
            for s in &p.mtls_sources {
                out.push_str(&format!("    mTLS from {} ({})\n", s.source, s.connections));
            }
            let v = match p.verdict {
                Verdict::Ready => "READY",
                Verdict::NotReady => "NOT READY",
                Verdict::Strict => "STRICT",
            };
            out.push_str(&format!("    verdict: {v}: {}\n", p.why));
        }
        if w.dry_run_refused > 0 {
            out.push_str(&format!(
                "  dry-run STRICT would have refused {} plaintext connection(s)\n",
                w.dry_run_refused
            ));
        }
    }
    out.push_str(&format!(
        "\n{}\n",
        if r.ready {
            "every workload is ready for STRICT"
        } else {
            "some workloads are not ready for STRICT"
        }
    ));
    out
}

/// A blocking HTTP/1.1 GET of `base` + `path` (`http://host:port[/prefix]`) with
/// `connection: close` (Envoy's admin refuses HTTP/1.0), the body read to the end and
/// de-chunked. Anything but 200 is an error naming the URL.
fn http_get(base: &str, path: &str, timeout: Duration) -> anyhow::Result<String> {
    let rest = base
        .strip_prefix("http://")
        .with_context(|| format!("{base}: only http:// URLs are supported"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let target = match (prefix, path) {
        ("", "") => "/".to_string(),
        (p, q) => format!("{p}{q}"),
    };
    let url = format!("http://{authority}{target}");
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("{url}: bad address"))?
        .next()
        .with_context(|| format!("{url}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("{url}: cannot connect"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nhost: {authority}\r\naccept: */*\r\nconnection: close\r\n\r\n"
    )
    .with_context(|| format!("{url}: sending the request"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("{url}: reading the response"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("{url}: not an HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw[split + 4..].to_vec();
    if head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"))
    {
        body = dechunk(&body).with_context(|| format!("{url}: bad chunked body"))?;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("{url}: HTTP {status}: {}", body.trim());
    }
    Ok(body)
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size_line = std::str::from_utf8(&b[..eol])?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).context("truncated chunk")?);
        b = b.get(size + 2..).context("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests;
