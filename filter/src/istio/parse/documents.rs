//! File text → JSON values, one per non-empty document.
//!
//! YAML streams are cut at `---` lines before parsing so that a syntax error in one document
//! does not lose the others (serde-saphyr stops at the first syntax error of a stream). A
//! document marker at column 0 always starts a new document in YAML, even inside a block
//! or quoted scalar, so the cut is exact.

use super::{file_error, ParseError};
use serde_json::Value;

/// Parse `text` into documents. Empty documents are dropped.
pub(super) fn split(text: &str, file: &str) -> Vec<Result<Value, ParseError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    let json_like = trimmed.starts_with('{') || trimmed.starts_with('[');
    if file.ends_with(".json") || json_like {
        match json_stream(text) {
            Ok(values) => return values.into_iter().map(Ok).collect(),
            // A `.json` file must be JSON; otherwise this may be YAML flow style.
            Err(message) if file.ends_with(".json") => return vec![Err(file_error(file, message))],
            Err(_) => {}
        }
    }
    yaml_documents(text)
        .into_iter()
        .flat_map(
            |(first_line, chunk)| match serde_saphyr::from_multiple::<Value>(chunk) {
                Ok(values) => values
                    .into_iter()
                    .filter(|v| !v.is_null())
                    .map(Ok)
                    .collect::<Vec<_>>(),
                Err(e) => vec![Err(file_error(file, yaml_message(&e, first_line)))],
            },
        )
        .collect()
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
