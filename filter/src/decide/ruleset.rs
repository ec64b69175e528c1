//! The rules of one stage (e.g. enforced DENY on HTTP), indexed so a decision does not scan
//! every rule: a rule that can only match peers with one of a few exact principals is
//! filed under those principals; every other rule goes to the scan list. A lookup
//! confirms candidates with the full matcher and reports the first match in policy order
//! (policy order, then rule index), whatever bucket it came from.

use super::matcher::{rule_matches, Ctx};
use crate::identity::strip_spiffe;
use crate::schema::{Rule, RuleRef, StrMatch};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// One rule of a stage.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub matched: RuleRef,
    /// CUSTOM only: the provider name, for the denial reason.
    pub provider: Option<String>,
    /// `None`: matches every request (an invalid DENY/CUSTOM policy failing closed).
    pub rule: Option<Rule>,
}

impl Entry {
    fn matches(&self, ctx: &Ctx) -> bool {
        self.rule.as_ref().is_none_or(|r| rule_matches(ctx, r))
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RuleSet {
    /// In policy order; positions are the ordering key.
    entries: Vec<Entry>,
    /// Exact principal (peer form, no `spiffe://`) → positions, ascending.
    by_principal: HashMap<String, Vec<usize>, BuildHasherDefault<FnvHasher>>,
    /// Positions of rules that cannot be indexed, ascending.
    scan: Vec<usize>,
}

/// The exact principals a rule requires, when every `from` entry requires one of a list of
/// exact principals; `None` when the rule may match other peers (or plaintext).
fn required_principals(rule: &Rule) -> Option<Vec<&str>> {
    let from = rule.from.as_deref().filter(|f| !f.is_empty())?;
    let mut keys = Vec::new();
    for s in from {
        if s.principals.values.is_empty() {
            return None;
        }
        for m in &s.principals.values {
            match m {
                StrMatch::Exact(v) => keys.push(v.as_str()),
                _ => return None,
            }
        }
    }
    keys.sort_unstable();
    keys.dedup();
    Some(keys)
}

impl RuleSet {
    /// Adds a rule; call in policy order.
    pub fn push(&mut self, entry: Entry) {
        let pos = self.entries.len();
        match entry.rule.as_ref().and_then(required_principals) {
            Some(keys) => {
                for k in keys {
                    self.by_principal
                        .entry(k.to_string())
                        .or_default()
                        .push(pos);
                }
            }
            None => self.scan.push(pos),
        }
        self.entries.push(entry);
    }

    #[cfg(test)]
    pub fn indexed_and_scanned(&self) -> (usize, usize) {
        (
            self.by_principal.values().map(Vec::len).sum(),
            self.scan.len(),
        )
    }

    /// The first matching rule in policy order.
    pub fn first_match(&self, ctx: &Ctx) -> Option<&Entry> {
        let mut best: Option<usize> = None;
        let mut consider = |candidates: &[usize]| {
            for &pos in candidates {
                if best.is_some_and(|b| pos >= b) {
                    return;
                }
                if self.entries.get(pos).is_some_and(|e| e.matches(ctx)) {
                    best = Some(pos);
                    return;
                }
            }
        };
        consider(&self.scan);
        if !self.by_principal.is_empty() {
            for principal in ctx.uri_sans.iter().filter_map(|san| strip_spiffe(san)) {
                if let Some(candidates) = self.by_principal.get(principal) {
                    consider(candidates);
                }
            }
        }
        best.and_then(|pos| self.entries.get(pos))
    }
}

/// FNV-1a: the keys are short principals from the configuration, looked up with the
/// verified certificate's SAN, so SipHash's flooding resistance buys nothing here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
