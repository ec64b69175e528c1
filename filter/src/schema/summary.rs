//! One line per authorization policy of a compiled workload, as the tools list them
//! (`explain`, `describe`, the playground).

use super::WorkloadPolicy;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicySummary {
    pub policy: String,
    pub action: String,
    pub dry_run: bool,
    pub rules: usize,
    pub invalid: Option<String>,
}

impl PolicySummary {
    pub fn of(policy: &WorkloadPolicy) -> Vec<PolicySummary> {
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
