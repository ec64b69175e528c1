//! Output helpers shared by the subcommands.

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// One authorization policy that selects a workload, as `explain` and `describe` list it.
#[derive(Debug, serde::Serialize)]
pub struct PolicySummary {
    pub policy: String,
    pub action: String,
    pub dry_run: bool,
    pub rules: usize,
    pub invalid: Option<String>,
}

impl PolicySummary {
    pub fn of(policy: &peerguard_filter::WorkloadPolicy) -> Vec<PolicySummary> {
        policy
            .policies
            .iter()
            .map(|p| PolicySummary {
                policy: p.policy.to_string(),
                action: format!("{:?}", p.action).to_uppercase(),
                dry_run: p.dry_run,
                rules: p.rules.len(),
                invalid: p.invalid.clone(),
            })
            .collect()
    }

    /// `ALLOW foo/p [dry-run] (2 rules) INVALID, fails closed: …`
    pub fn line(&self) -> String {
        format!(
            "{} {}{} ({} rule{}){}",
            self.action,
            self.policy,
            if self.dry_run { " [dry-run]" } else { "" },
            self.rules,
            if self.rules == 1 { "" } else { "s" },
            self.invalid
                .as_deref()
                .map(|i| format!(" INVALID, fails closed: {i}"))
                .unwrap_or_default()
        )
    }
}

/// Where an mTLS mode came from, for people.
pub fn mode_source(from: Option<&str>) -> String {
    from.map(|f| format!("set by {f}"))
        .unwrap_or_else(|| "nothing configured: Istio's default".into())
}
