//! CPU pinning: the load client (this process: load tasks, upstream apps, the external load
//! generator it spawns) on one CPU, every Envoy on another, so the client's bursts do not
//! preempt Envoy's worker mid-request (a source of tail latency that is not the filter's).
//!
//! Done with `taskset -a -c -p` (util-linux), which sets the affinity of every existing
//! thread of a process (`sched_setaffinity` per thread); threads created later inherit
//! their creator's. Only with two or more allowed CPUs; otherwise the run says it is not
//! pinned.

use anyhow::{bail, Context as _};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Pinning {
    pub enabled: bool,
    /// The CPU of the load client, the upstream apps and the external load generator.
    pub client_cpu: Option<usize>,
    /// The CPU of every Envoy (all its threads: main, worker, stats flush...).
    pub envoy_cpu: Option<usize>,
    pub how: String,
}

/// The CPUs this process may use (`Cpus_allowed_list` of `/proc/self/status`, e.g. `0-1,4`).
fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .context("/proc/self/status: no Cpus_allowed_list")?;
    parse_cpu_list(list.trim())
}

fn parse_cpu_list(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a
            .trim()
            .parse()
            .with_context(|| format!("CPU list {list:?}"))?;
        let b: usize = b
            .trim()
            .parse()
            .with_context(|| format!("CPU list {list:?}"))?;
        out.extend(a..=b);
    }
    Ok(out)
}

/// Decides the pinning (the first two allowed CPUs: client on the first, Envoy on the
/// second) and pins this process. `disabled`: `--no-pin`.
pub fn plan_and_pin_self(disabled: bool) -> Pinning {
    let unpinned = |how: String| Pinning {
        enabled: false,
        client_cpu: None,
        envoy_cpu: None,
        how,
    };
    if disabled {
        return unpinned("not pinned (--no-pin)".into());
    }
    let cpus = match allowed_cpus() {
        Ok(c) => c,
        Err(e) => return unpinned(format!("not pinned: {e:#}")),
    };
    let (Some(&client), Some(&envoy)) = (cpus.first(), cpus.get(1)) else {
        return unpinned(format!("not pinned: only CPU(s) {cpus:?} allowed"));
    };
    if let Err(e) = pin(std::process::id(), client) {
        return unpinned(format!("not pinned: {e:#}"));
    }
    Pinning {
        enabled: true,
        client_cpu: Some(client),
        envoy_cpu: Some(envoy),
        how: format!(
            "taskset -a -c -p (sched_setaffinity on every thread): load client, upstream apps and \
             external load generator on CPU {client}, each Envoy on CPU {envoy}"
        ),
    }
}

/// Pins every thread of `pid` to `cpu`.
pub fn pin(pid: u32, cpu: usize) -> anyhow::Result<()> {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-c", "-p", &cpu.to_string(), &pid.to_string()])
        .output()
        .context("running taskset (util-linux)")?;
    if !out.status.success() {
        bail!(
            "taskset -a -c -p {cpu} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The CPUs `pid`'s main thread may use, as `taskset` would list them (for the check).
pub fn affinity_of(pid: u32) -> anyhow::Result<Vec<usize>> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .with_context(|| format!("{path}: no Cpus_allowed_list"))?;
    parse_cpu_list(list.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_expand_ranges() -> anyhow::Result<()> {
        assert_eq!(parse_cpu_list("0-1")?, vec![0, 1]);
        assert_eq!(parse_cpu_list("0,2-4,7")?, vec![0, 2, 3, 4, 7]);
        assert!(parse_cpu_list("x").is_err());
        Ok(())
    }
}
