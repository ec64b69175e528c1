//! What the benchmark reads from `/proc`: a process's CPU time (`utime + stime` of
//! `/proc/<pid>/stat`, every thread included), its resident memory (`VmRSS` / `VmHWM` of
//! `/proc/<pid>/status`), and the machine's busy time (`/proc/stat`), which tells how much
//! CPU other processes took during a window (the cores are shared).

use anyhow::Context as _;

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// `utime + stime` of a process, in clock ticks.
pub fn process_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_cpu(&text).with_context(|| format!("parsing {path}"))
}

/// `comm` may contain spaces and parentheses: fields are counted after the last `)`.
/// There, field 0 is `state` (field 3 of proc(5)), so utime (14) and stime (15) are 11, 12.
fn parse_stat_cpu(text: &str) -> anyhow::Result<u64> {
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("no `)` after comm")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("too few fields")?
            .parse::<u64>()
            .context("not a number")
    };
    Ok(get(11)? + get(12)?)
}

/// `(VmRSS, VmHWM)` in bytes.
pub fn process_memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb = |key: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("{path}: no {key}"))?;
        let n: u64 = line
            .trim_start_matches(key)
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("{path}: {key}"))?;
        Ok(n * 1024)
    };
    Ok((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// Machine-wide CPU since boot, in ticks: (busy, total) from the `cpu` line of `/proc/stat`.
pub fn machine_cpu_ticks() -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat: no cpu line")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total.saturating_sub(idle), total))
}

/// One reading of everything a window needs.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: std::time::Instant,
    pub envoy_ticks: u64,
    pub self_ticks: u64,
    pub machine_busy: u64,
}

impl Sample {
    pub fn take(envoy_pid: u32) -> anyhow::Result<Self> {
        let at = std::time::Instant::now();
        let envoy_ticks = process_cpu_ticks(envoy_pid)?;
        let self_ticks = process_cpu_ticks(std::process::id())?;
        let (machine_busy, _) = machine_cpu_ticks()?;
        Ok(Sample {
            at,
            envoy_ticks,
            self_ticks,
            machine_busy,
        })
    }
}

/// CPU use over a window, in seconds of CPU.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct WindowCpu {
    pub wall_s: f64,
    pub envoy_cpu_s: f64,
    /// The load client and the in-process upstream apps.
    pub client_cpu_s: f64,
    /// Everything else on the machine (other users of the shared cores).
    pub other_cpu_s: f64,
}

pub fn window_cpu(a: &Sample, b: &Sample, ticks_per_s: u64) -> WindowCpu {
    let t = |x: u64, y: u64| y.saturating_sub(x) as f64 / ticks_per_s as f64;
    let envoy = t(a.envoy_ticks, b.envoy_ticks);
    let client = t(a.self_ticks, b.self_ticks);
    let machine = t(a.machine_busy, b.machine_busy);
    WindowCpu {
        wall_s: b.at.duration_since(a.at).as_secs_f64(),
        envoy_cpu_s: envoy,
        client_cpu_s: client,
        other_cpu_s: (machine - envoy - client).max(0.0),
    }
}

/// Sleep until `deadline` on the calling (dedicated) thread.
pub fn sleep_until(deadline: std::time::Instant) {
    let now = std::time::Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_is_utime_plus_stime_even_with_odd_comm() -> anyhow::Result<()> {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let line = "1234 (envoy (main) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 9";
        assert_eq!(parse_stat_cpu(line)?, 287);
        assert!(parse_stat_cpu("1234 (x) S 1").is_err());
        Ok(())
    }

    #[test]
    fn this_process_has_memory_and_the_machine_has_cpu() -> anyhow::Result<()> {
        let (rss, hwm) = process_memory(std::process::id())?;
        assert!(rss > 0 && hwm >= rss);
        let (busy, total) = machine_cpu_ticks()?;
        assert!(total >= busy && total > 0);
        Ok(())
    }
}
