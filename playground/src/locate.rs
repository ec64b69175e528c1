//! Where in the editor's text a parser error points, so the page can mark the line.
//!
//! The parser names the line for YAML syntax errors (`invalid YAML at line N, column C`);
//! for an invalid object it names `Kind ns/name` and the field path, so the object is found
//! by its document's `kind:` and `name:` lines and the field by its last key inside that
//! document. When nothing matches, no location is claimed.

use peerguard_filter::istio::parse::ParseError;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Location {
    /// 1-based.
    pub line: usize,
    /// 1-based, when known.
    pub column: Option<usize>,
}

pub fn locate(text: &str, e: &ParseError) -> Option<Location> {
    if let Some(loc) = stated_line(&e.message) {
        return Some(loc);
    }
    let object = e.object.as_deref()?;
    let (start, end) = object_lines(text, object)?;
    let field_line = e
        .field
        .as_deref()
        .and_then(last_key)
        .and_then(|key| key_line(text, start, end, &key));
    Some(Location {
        line: field_line.unwrap_or(start) + 1,
        column: None,
    })
}

/// `... at line N, column C: ...` or `... at line N ...`.
fn stated_line(message: &str) -> Option<Location> {
    let rest = &message[message.find("at line ")? + "at line ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let line = digits.parse().ok()?;
    let column = rest[digits.len()..]
        .strip_prefix(", column ")
        .and_then(|c| {
            c.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        });
    Some(Location { line, column })
}

/// The document (0-based line range, end exclusive) whose `kind:` and `metadata.name` match
/// `Kind ns/name`.
fn object_lines(text: &str, object: &str) -> Option<(usize, usize)> {
    let (kind, rest) = object.split_once(' ')?;
    let name = rest.rsplit('/').next().unwrap_or(rest);
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    for i in 0..=lines.len() {
        let boundary = i == lines.len() || lines.get(i).is_some_and(|l| l.starts_with("---"));
        if !boundary {
            continue;
        }
        let doc = lines.get(start..i).unwrap_or_default();
        let has = |key: &str, want: &str| {
            doc.iter().any(|l| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|v| unquote(v.trim()) == want)
            })
        };
        if has("kind:", kind) && has("name:", name) {
            let first = (start..i).find(|&j| lines.get(j).is_some_and(|l| !l.trim().is_empty()));
            return Some((first.unwrap_or(start), i));
        }
        start = i + 1;
    }
    None
}

fn unquote(v: &str) -> &str {
    v.trim_matches(|c| c == '"' || c == '\'')
}

/// `spec.rules[0].from[0].source.principals[1]` → `principals`.
fn last_key(field: &str) -> Option<String> {
    let last = field.rsplit('.').next()?;
    let key = last.split('[').next()?.trim_matches('"');
    (!key.is_empty()).then(|| key.to_string())
}

fn key_line(text: &str, start: usize, end: usize, key: &str) -> Option<usize> {
    let prefix = format!("{key}:");
    text.lines()
        .enumerate()
        .skip(start)
        .take(end - start)
        .find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&prefix) || t.starts_with(&format!("\"{key}\":"))
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use peerguard_filter::istio::parse::parse_str;

    const TWO: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: foo\nspec:\n  mtls:\n    mode: STRICT\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: viewer\n  namespace: foo\nspec:\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"\"]\n";

    #[test]
    fn an_invalid_field_points_at_its_line_in_its_document() {
        let parsed = parse_str(TWO, "resources.yaml");
        let e = parsed
            .errors
            .first()
            .expect("an empty principal is invalid");
        assert_eq!(
            e.object.as_deref(),
            Some("AuthorizationPolicy foo/viewer"),
            "{e}"
        );
        let loc = locate(TWO, e).unwrap();
        assert_eq!(
            TWO.lines().nth(loc.line - 1).unwrap().trim(),
            "principals: [\"\"]"
        );
    }

    #[test]
    fn a_syntax_error_points_at_the_stated_line() {
        let text = "apiVersion: v1\nkind: PeerAuthentication\nmetadata:\n  name: a\n   bad: [\n";
        let parsed = parse_str(text, "resources.yaml");
        let e = parsed.errors.first().unwrap();
        let loc = locate(text, e).unwrap();
        assert!(e.message.contains(&format!("at line {}", loc.line)), "{e}");
    }
}
