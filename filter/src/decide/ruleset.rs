//! The rules of one stage (e.g. enforced DENY on HTTP), indexed so a decision does not scan
//! every rule: a rule that can only match peers with one of a few exact principals is
//! filed under those principals; every other rule goes to the scan list. A lookup
//! confirms candidates with the full matcher and reports the first match in policy order
//! (policy order, then rule index), whatever bucket it came from.
//!
//! Compact on purpose (one engine per wasm VM, one VM per Envoy worker): an entry names its
//! rule by position in the configuration instead of copying it, and the principal index
//! keeps a 64-bit hash per key instead of the string. A hash collision can only add a
//! candidate, which the full matcher then rejects, so it never changes a decision.

use super::matcher::{rule_matches, Ctx};
use crate::identity::strip_spiffe;
use crate::schema::{AuthzPolicy, Rule, StrMatch};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// One rule of a stage, by position: `policy` in the configuration's policy list, `rule` in
/// that policy's rules (`None`: an invalid DENY/CUSTOM policy failing closed, which matches
/// every request), and `narrowed` when the rule is used in its TCP form (spec 4.10), kept
/// in [`Rules::narrowed`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub policy: u32,
    pub rule: Option<u32>,
    pub narrowed: Option<u32>,
}

/// Where the entries' rules live: the configuration itself, and the TCP forms that differ
/// from their HTTP rule.
#[derive(Clone, Copy)]
pub(crate) struct Rules<'e> {
    pub policies: &'e [AuthzPolicy],
    pub narrowed: &'e [Rule],
}

impl Rules<'_> {
    fn matches(&self, e: &Entry, ctx: &Ctx) -> bool {
        let rule = match (e.narrowed, e.rule) {
            (Some(n), _) => self.narrowed.get(n as usize),
            (None, Some(r)) => self
                .policies
                .get(e.policy as usize)
                .and_then(|p| p.rules.get(r as usize)),
            (None, None) => return true,
        };
        // A position that names nothing cannot happen (built together); never a match.
        rule.is_some_and(|r| rule_matches(ctx, r))
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RuleSet {
    /// In policy order; positions are the ordering key.
    entries: Vec<Entry>,
    /// Hash of an exact principal (peer form, no `spiffe://`) → its run in `filed`.
    by_principal: HashMap<u64, (u32, u32), BuildHasherDefault<FnvHasher>>,
    /// Positions, grouped by principal hash, ascending within a group.
    filed: Vec<u32>,
    /// (principal hash, position) as pushed; grouped into the two above by
    /// [`RuleSet::finish`].
    pending: Vec<(u64, u32)>,
    /// Positions of rules that cannot be indexed, ascending.
    scan: Vec<u32>,
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

fn principal_key(principal: &str) -> u64 {
    let mut h = FnvHasher::default();
    h.write(principal.as_bytes());
    h.finish()
}

impl RuleSet {
    /// Adds an entry whose rule is `rule` (`None`: matches everything); call in policy
    /// order, then [`RuleSet::finish`].
    pub fn push(&mut self, entry: Entry, rule: Option<&Rule>) {
        // Positions are u32 (entries are 12 bytes instead of 24); 4 billion rules in one
        // configuration would not fit in a VM anyway.
        let pos = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        match rule.and_then(required_principals) {
            Some(keys) => {
                for k in keys {
                    self.pending.push((principal_key(k), pos));
                }
            }
            None => self.scan.push(pos),
        }
        self.entries.push(entry);
    }

    /// Groups the principal index by key (positions ascending within a group) and drops
    /// spare capacity: the set is read-only from here on.
    pub fn finish(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_unstable();
        pending.dedup();
        // Called once, after the last push (`Engine::new`): every group is built here, so
        // each one is a contiguous run of `filed`.
        for (key, pos) in pending {
            let at = u32::try_from(self.filed.len()).unwrap_or(u32::MAX);
            self.by_principal.entry(key).or_insert((at, 0)).1 += 1;
            self.filed.push(pos);
        }
        self.by_principal.shrink_to_fit();
        self.filed.shrink_to_fit();
        self.entries.shrink_to_fit();
        self.scan.shrink_to_fit();
    }

    #[cfg(test)]
    pub fn indexed_and_scanned(&self) -> (usize, usize) {
        (self.filed.len() + self.pending.len(), self.scan.len())
    }

    /// The positions filed under `principal`, ascending.
    fn filed_under(&self, principal: &str) -> impl Iterator<Item = u32> + '_ {
        let run = match self.by_principal.get(&principal_key(principal)) {
            Some(&(start, len)) => self
                .filed
                .get(start as usize..(start + len) as usize)
                .unwrap_or_default(),
            None => &[],
        };
        run.iter().copied()
    }

    /// The first matching rule in policy order.
    pub fn first_match(&self, ctx: &Ctx, rules: Rules) -> Option<&Entry> {
        let mut best: Option<u32> = None;
        let mut consider = |candidates: &mut dyn Iterator<Item = u32>| {
            for pos in candidates {
                if best.is_some_and(|b| pos >= b) {
                    return;
                }
                if self
                    .entries
                    .get(pos as usize)
                    .is_some_and(|e| rules.matches(e, ctx))
                {
                    best = Some(pos);
                    return;
                }
            }
        };
        consider(&mut self.scan.iter().copied());
        if !self.by_principal.is_empty() {
            for principal in ctx.uri_sans.iter().filter_map(|san| strip_spiffe(san)) {
                consider(&mut self.filed_under(principal));
            }
        }
        best.and_then(|pos| self.entries.get(pos as usize))
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
