//! File text → JSON values, one per non-empty document.
//!
//! YAML streams are cut at `---` lines before parsing so that a syntax error in one document
//! does not lose the others (serde-saphyr stops at the first syntax error of a stream). A
//! document marker at column 0 always starts a new document in YAML, even inside a block
//! or quoted scalar, so the cut is exact.
//!
//! Budget: YAML aliases let a few kilobytes expand into gigabytes (an anchored list of
//! aliases of an anchored list...). serde-saphyr bounds one parse, but every document is a
//! parse of its own here, so a file of many small "alias bombs" multiplied its limits (a
//! 29 KB file needed 2.5 GB). One budget therefore covers the whole file: every document
//! gets what the ones before it left ([`MAX_FILE_NODES`], [`MAX_FILE_SCALAR_BYTES`]), counted
//! after alias expansion, and the text itself is capped at [`MAX_FILE_BYTES`]. An
//! over-budget file is an error and nothing after the breach is parsed.

use super::{file_error, ParseError};
use serde_json::Value;

/// Largest file read, in bytes. Kubernetes caps one object at 1.5 MiB; a file of several
/// thousand policies stays well below this.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// Most YAML/JSON nodes (mapping keys, values, sequence items) one file may expand to,
/// aliases included. A 10,000-policy mesh in one file is about 250,000.
pub const MAX_FILE_NODES: usize = 1_000_000;
/// Most bytes of scalar text (keys and values) one file may expand to, aliases included.
pub const MAX_FILE_SCALAR_BYTES: usize = 32 * 1024 * 1024;

/// What a file's documents hold once aliases are expanded: what the budget counts, and what
/// a reader of many files can add up against a budget of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct YamlCost {
    pub nodes: usize,
    pub scalar_bytes: usize,
}

impl YamlCost {
    /// The per-file budget.
    pub const FILE_BUDGET: YamlCost = YamlCost {
        nodes: MAX_FILE_NODES,
        scalar_bytes: MAX_FILE_SCALAR_BYTES,
    };

    pub fn plus(self, other: YamlCost) -> YamlCost {
        YamlCost {
            nodes: self.nodes.saturating_add(other.nodes),
            scalar_bytes: self.scalar_bytes.saturating_add(other.scalar_bytes),
        }
    }

    pub fn fits(self, budget: YamlCost) -> bool {
        self.nodes <= budget.nodes && self.scalar_bytes <= budget.scalar_bytes
    }

    fn saturating_sub(self, other: YamlCost) -> YamlCost {
        YamlCost {
            nodes: self.nodes.saturating_sub(other.nodes),
            scalar_bytes: self.scalar_bytes.saturating_sub(other.scalar_bytes),
        }
    }
}

impl std::fmt::Display for YamlCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} nodes and {} bytes of text",
            self.nodes, self.scalar_bytes
        )
    }
}

/// Parse `text` into documents (empty ones are dropped), and what they cost (see
/// [`YamlCost`]). A file over its budget gets an error and no further documents.
pub fn split_measured(text: &str, file: &str) -> (Vec<Result<Value, ParseError>>, YamlCost) {
    split_within(text, file, YamlCost::FILE_BUDGET)
}

fn split_within(
    text: &str,
    file: &str,
    budget: YamlCost,
) -> (Vec<Result<Value, ParseError>>, YamlCost) {
    if text.len() > MAX_FILE_BYTES {
        let message = format!(
            "over the per-file budget: {} bytes, more than the limit of {MAX_FILE_BYTES} bytes",
            text.len()
        );
        return (vec![Err(file_error(file, message))], YamlCost::default());
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    let json_like = trimmed.starts_with('{') || trimmed.starts_with('[');
    if file.ends_with(".json") || json_like {
        match json_stream(text) {
            // JSON has no aliases: its size follows the text's, which is capped; the node
            // count is still checked so that both formats have the same limits.
            Ok(values) => {
                let cost = values
                    .iter()
                    .fold(YamlCost::default(), |c, v| c.plus(measure(v)));
                if !cost.fits(budget) {
                    return (
                        vec![Err(file_error(
                            file,
                            over_budget(&cost.to_string(), budget),
                        ))],
                        cost,
                    );
                }
                return (values.into_iter().map(Ok).collect(), cost);
            }
            // A `.json` file must be JSON; otherwise this may be YAML flow style.
            Err(message) if file.ends_with(".json") => {
                return (vec![Err(file_error(file, message))], YamlCost::default())
            }
            Err(_) => {}
        }
    }
    let mut out = Vec::new();
    let mut used = YamlCost::default();
    for (first_line, chunk) in yaml_documents(text) {
        let left = budget.saturating_sub(used);
        // The common documents skip serde-saphyr's deserializer; the rest, and anything
        // doubtful, are read by it (see `plain_yaml`).
        let parsed = match super::plain_yaml::documents(chunk, left) {
            Some(values) => Ok(values),
            None => serde_saphyr::from_multiple_with_options::<Value>(chunk, options(left)),
        };
        match parsed {
            Ok(values) => {
                for v in values.into_iter().filter(|v| !v.is_null()) {
                    used = used.plus(measure(&v));
                    out.push(Ok(v));
                }
                // serde-saphyr's node count and this one differ in details (document
                // events, number text): the file's total is what decides.
                if !used.fits(budget) {
                    out.push(Err(file_error(
                        file,
                        over_budget(&format!("at least {used}"), budget),
                    )));
                    return (out, used);
                }
            }
            Err(e) if is_budget_error(&e) => {
                let what = format!(
                    "the document at line {} expands past what the file has left, {used} used before it",
                    first_line + 1
                );
                out.push(Err(file_error(file, over_budget(&what, budget))));
                return (out, used);
            }
            Err(e) => out.push(Err(file_error(file, yaml_message(&e, first_line)))),
        }
    }
    (out, used)
}

fn over_budget(what: &str, budget: YamlCost) -> String {
    format!(
        "over the per-file budget ({what}): a file may expand, aliases included, to at most \
         {budget}"
    )
}

/// serde-saphyr's defaults, with the budget limited to what the file has left.
fn options(left: YamlCost) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = left.nodes;
    budget.max_total_scalar_bytes = left.scalar_bytes;
    // Every node is at most two events (start and end), plus a few per document.
    budget.max_events = left.nodes.saturating_mul(2).saturating_add(64);
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = left.nodes.saturating_mul(2);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits = alias_limits;
    options
}

fn is_budget_error(mut e: &serde_saphyr::Error) -> bool {
    // Alias and snippet wrappers carry the original error.
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = e
    {
        e = error;
    }
    matches!(
        e,
        serde_saphyr::Error::Budget { .. }
            | serde_saphyr::Error::AliasReplayLimitExceeded { .. }
            | serde_saphyr::Error::AliasExpansionLimitExceeded { .. }
            | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. }
            | serde_saphyr::Error::AliasReplayCounterOverflow { .. }
    )
}

/// Nodes (every value and every mapping key) and scalar bytes of one value.
fn measure(value: &Value) -> YamlCost {
    let mut cost = YamlCost::default();
    // Iterative: a deep value must not overflow the stack here either.
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        cost.nodes += 1;
        match v {
            Value::String(s) => cost.scalar_bytes += s.len(),
            Value::Number(_) | Value::Bool(_) | Value::Null => cost.scalar_bytes += 1,
            Value::Array(items) => stack.extend(items.iter()),
            Value::Object(map) => {
                for (k, item) in map {
                    cost.nodes += 1;
                    cost.scalar_bytes += k.len();
                    stack.push(item);
                }
            }
        }
    }
    cost
}

/// Concatenated JSON values (what `kubectl get -o json` and many tools emit is one value).
fn json_stream(text: &str) -> Result<Vec<Value>, String> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<super::json::Strict>()
        .map(|v| v.map(|v| v.0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "invalid JSON at line {}, column {}: {}",
                e.line(),
                e.column(),
                json_reason(&e)
            )
        })
}

/// serde_json's Display repeats the position; keep only the reason.
fn json_reason(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(at) => full[..at].to_string(),
        None => full,
    }
}

/// `(0-based line of the chunk's first line, chunk)` for each `---`-separated part.
fn yaml_documents(text: &str) -> Vec<(usize, &str)> {
    let mut chunks = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0usize;
    let mut offset = 0usize;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        if line_no > 0 && is_document_start(line) {
            chunks.push((start_line, &text[start..offset]));
            start = offset;
            start_line = line_no;
        }
        offset += line.len();
    }
    chunks.push((start_line, &text[start..]));
    chunks
}

fn is_document_start(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// The error text without serde-saphyr's source snippet, with a file-relative position.
fn yaml_message(e: &serde_saphyr::Error, first_line: usize) -> String {
    let reason = first_line_of(&e.without_snippet().to_string());
    match e.location() {
        Some(loc) if loc.line() > 0 => {
            let line = loc.line() as usize + first_line;
            format!(
                "invalid YAML at line {line}, column {}: {reason}",
                loc.column()
            )
        }
        _ => format!("invalid YAML: {reason}"),
    }
}

/// Drop any position suffix or snippet lines the library appends.
fn first_line_of(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default().trim();
    match first.rfind(" at line ") {
        Some(at) => first[..at].to_string(),
        None => first.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// One document whose `levels` nested anchors expand to 10^levels copies of `scalar`.
    fn alias_bomb(levels: usize, scalar: &str) -> String {
        let mut doc = format!("---\na0: &a0 \"{scalar}\"\n");
        for i in 1..=levels {
            let refs = vec![format!("*a{}", i - 1); 10].join(",");
            doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        doc
    }

    fn errors(out: &[Result<Value, ParseError>]) -> Vec<String> {
        out.iter()
            .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn small_alias_bombs_in_many_documents_share_one_file_budget() {
        // Each document is ~270 bytes and expands to ~111,000 nodes: within what serde-saphyr
        // allows one parse, but not three times over. (A smaller budget than the real one
        // keeps this quick; `MAX_FILE_NODES` is ~9 such documents.)
        let budget = YamlCost {
            nodes: 250_000,
            scalar_bytes: MAX_FILE_SCALAR_BYTES,
        };
        let text = alias_bomb(5, "x").repeat(12);
        assert!(text.len() < 4_000);
        let (out, cost) = split_within(&text, "bomb.yaml", budget);
        let errs = errors(&out);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("bomb.yaml: over the per-file budget"),
            "{errs:?}"
        );
        assert!(
            errs[0].ends_with("at most 250000 nodes and 33554432 bytes of text"),
            "{errs:?}"
        );
        assert!(
            out.last().is_some_and(|r| r.is_err()),
            "nothing is parsed after the breach"
        );
        assert_eq!(
            out.len(),
            3,
            "two documents fit, the third breaks the budget"
        );
        assert!(
            cost.nodes <= budget.nodes,
            "the breach stops parsing: {cost}"
        );
        // The real budget applies to every caller.
        let (out, _) = split_measured(&alias_bomb(5, "x").repeat(2), "two.yaml");
        assert!(errors(&out).is_empty());
    }

    #[test]
    fn long_scalars_repeated_by_aliases_count_their_bytes() {
        // 111 copies of a 100 KB scalar per document (11 MB), four documents.
        let text = alias_bomb(2, &"y".repeat(100_000)).repeat(4);
        let (out, cost) = split_measured(&text, "long.yaml");
        let errs = errors(&out);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("over the per-file budget"), "{errs:?}");
        assert!(
            cost.scalar_bytes <= MAX_FILE_SCALAR_BYTES + 11_200_000,
            "{cost}"
        );
    }

    #[test]
    fn a_file_over_the_size_cap_is_refused_unread() {
        let text = format!("# {}\nkind: x\n", "c".repeat(MAX_FILE_BYTES));
        let (out, cost) = split_measured(&text, "big.yaml");
        let errs = errors(&out);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("big.yaml: over the per-file budget: "),
            "{errs:?}"
        );
        assert_eq!(cost, YamlCost::default());
        let (out, _) = split_measured(
            &format!("[{}1]", "1,".repeat(MAX_FILE_BYTES / 2)),
            "big.json",
        );
        assert!(errors(&out)[0].contains("over the per-file budget"));
    }

    #[test]
    fn ordinary_anchors_are_fine_and_measured() {
        let text = "a: &labels {app: x, tier: web}\nb: *labels\n---\n{c: [1, \"two\"]}\n";
        let (out, cost) = split_measured(text, "ok.yaml");
        assert!(errors(&out).is_empty());
        assert_eq!(out.len(), 2);
        // a, {app, x, tier, web}, b, {app, x, tier, web}: 2 keys + 2 maps + 8 in the maps;
        // c, [1, "two"]: 1 map + 1 key + 1 list + 2 items.
        assert_eq!(cost.nodes, 1 + 2 + 2 + 8 + 5);
        assert_eq!(cost.scalar_bytes, 2 + 2 * (3 + 1 + 4 + 3) + 1 + 1 + 3);
    }
}
