//! Istio's default (BASE) path normalization, applied before path matching, and URI
//! templates (`{*}`, `{**}`).
//!
//! BASE is Envoy's `normalize_path: true` with escaped slashes kept unchanged
//! (https://istio.io/latest/docs/reference/config/security/normalization/): `\` becomes `/`,
//! percent-encoded *unreserved* characters are decoded, `.`/`..` segments are resolved
//! (RFC 3986 5.2.4). `//` is not merged (that is `MERGE_SLASHES`) and `%2F` stays as is.
//! Authorization matches the path without query or fragment.

use crate::schema::TemplateSegment;
use std::borrow::Cow;

/// The path that `paths`/`notPaths` are matched against. Borrows when nothing changes
/// (the usual case), so the hot path does not allocate.
pub fn normalize(raw: &str) -> Cow<'_, str> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let path = &raw[..end];
    if !path.contains(['\\', '%']) && !has_dot_segment(path) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    if !has_dot_segment(&decoded) {
        return Cow::Owned(decoded);
    }
    Cow::Owned(remove_dot_segments(&decoded))
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// `\` → `/`, `%XX` of an unreserved character → the character; other escapes (e.g. `%2F`)
/// and malformed ones are kept verbatim.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' {
            out.push(b'/');
            i += 1;
            continue;
        }
        if b == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = h * 16 + l;
                if is_unreserved(c) {
                    out.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    // Only ASCII bytes were replaced by ASCII bytes, so the text is still UTF-8.
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3986 section 5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut input = path;
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") {
            input = &input[3..];
            pop_segment(&mut out);
        } else if input == "/.." {
            input = "/";
            pop_segment(&mut out);
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            out.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    out
}

fn pop_segment(out: &mut String) {
    match out.rfind('/') {
        Some(i) => out.truncate(i),
        None => out.clear(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("path template {0:?}: `{{*}}` and `{{**}}` must each be a whole path segment")]
    PartialSegment(String),
    #[error("path template {0:?}: only `{{*}}` and `{{**}}` are supported")]
    UnknownOperator(String),
    #[error("path template {0:?}: no operator may follow `{{**}}`")]
    AfterAny(String),
}

/// Parses an Istio path value that uses template operators. `Ok(None)`: not a template
/// (no `{`), match it as a string. Literal tokens keep their `/`, so a template is the
/// concatenation of its tokens: `/allow/admin/{**}` → `[Literal("/allow/admin/"), Any]`.
pub fn parse_template(value: &str) -> Result<Option<Vec<TemplateSegment>>, TemplateError> {
    if !value.contains('{') {
        return Ok(None);
    }
    let err = || value.to_string();
    let mut tokens: Vec<TemplateSegment> = Vec::new();
    let mut literal = String::new();
    let mut seen_any = false;
    for (i, seg) in value.split('/').enumerate() {
        if i > 0 {
            literal.push('/');
        }
        let op = match seg {
            "{*}" => TemplateSegment::One,
            "{**}" => TemplateSegment::Any,
            s if s.contains("{*") => return Err(TemplateError::PartialSegment(err())),
            s if s.contains('{') || s.contains('}') => return Err(TemplateError::UnknownOperator(err())),
            s => {
                literal.push_str(s);
                continue;
            }
        };
        if seen_any {
            return Err(TemplateError::AfterAny(err()));
        }
        seen_any |= op == TemplateSegment::Any;
        if !literal.is_empty() {
            tokens.push(TemplateSegment::Literal(std::mem::take(&mut literal)));
        }
        tokens.push(op);
    }
    if !literal.is_empty() {
        tokens.push(TemplateSegment::Literal(literal));
    }
    Ok(Some(tokens))
}

/// Full match of a normalized path against template tokens: `Literal` verbatim, `One` one
/// or more characters other than `/`, `Any` zero or more characters including `/`.
pub fn template_matches(tokens: &[TemplateSegment], path: &str) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return path.is_empty();
    };
    match first {
        TemplateSegment::Literal(l) => path.strip_prefix(l.as_str()).is_some_and(|p| template_matches(rest, p)),
        TemplateSegment::One => {
            let seg_end = path.find('/').unwrap_or(path.len());
            path[..seg_end]
                .char_indices()
                .skip(1)
                .map(|(k, _)| k)
                .chain(std::iter::once(seg_end))
                .filter(|&k| k > 0)
                .any(|k| template_matches(rest, &path[k..]))
        }
        TemplateSegment::Any => {
            if rest.is_empty() {
                return true;
            }
            path.char_indices()
                .map(|(k, _)| k)
                .chain(std::iter::once(path.len()))
                .any(|k| template_matches(rest, &path[k..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        let cases: &[(&str, &str)] = &[
            ("/a/../b", "/b"),
            ("/a/./b", "/a/b"),
            ("\\a", "/a"),
            ("/a\\..\\b", "/b"),
            ("/%41", "/A"),
            ("/%7e%2D%5f%2e", "/~-_."),
            ("/a/%2e%2e/b", "/b"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%2fb", "/a%2fb"),
            ("/a%20b", "/a%20b"),
            ("/%zz/%4", "/%zz/%4"),
            ("/allow?param=value", "/allow"),
            ("/allow#frag", "/allow"),
            ("/a/..?x=/../", "/"),
            ("/../../x", "/x"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("//a//b", "//a//b"),
            ("//a/../b", "//b"),
            ("/a/..b/.c", "/a/..b/.c"),
            ("/", "/"),
            ("/héllo/./x", "/héllo/x"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw), *want, "normalize({raw})");
        }
    }

    #[test]
    fn unchanged_paths_are_borrowed() {
        assert!(matches!(normalize("/api/v1/items"), Cow::Borrowed("/api/v1/items")));
        assert!(matches!(normalize("/api?x=1"), Cow::Borrowed("/api")));
        assert!(matches!(normalize("/a/./b"), Cow::Owned(_)));
    }

    fn t(v: &str) -> Vec<TemplateSegment> {
        let parsed = parse_template(v);
        assert!(matches!(parsed, Ok(Some(_))), "{v}: {parsed:?}");
        parsed.ok().flatten().unwrap_or_default()
    }

    #[test]
    fn templates() {
        let cases: &[(&str, &str, bool)] = &[
            ("/allow/admin/{**}", "/allow/admin/", true),
            ("/allow/admin/{**}", "/allow/admin/x/y", true),
            ("/allow/admin/{**}", "/allow/admin", false),
            ("/allow/{*}/admin", "/allow/x/admin", true),
            ("/allow/{*}/admin", "/allow//admin", false),
            ("/allow/{*}/admin", "/allow/x/y/admin", false),
            ("/allow/{*}", "/allow/x", true),
            ("/allow/{*}", "/allow/x/", false),
            ("/allow/{*}", "/allow/", false),
            ("/{*}/{**}/end", "/a/b/c/end", true),
            ("/{*}/{**}/end", "/a/end", false),
            ("/{**}/end", "/a/b/end", true),
            ("/{**}/end", "/end", false),
        ];
        for (tpl, path, want) in cases {
            assert_eq!(template_matches(&t(tpl), path), *want, "{tpl} vs {path}");
        }
    }

    #[test]
    fn template_parsing() {
        assert_eq!(parse_template("/plain/*"), Ok(None));
        assert_eq!(
            parse_template("/allow/admin/{**}"),
            Ok(Some(vec![TemplateSegment::Literal("/allow/admin/".into()), TemplateSegment::Any]))
        );
        assert!(matches!(parse_template("/a/x{*}"), Err(TemplateError::PartialSegment(_))));
        assert!(matches!(parse_template("/a/{x}"), Err(TemplateError::UnknownOperator(_))));
        assert!(matches!(parse_template("/{**}/{*}"), Err(TemplateError::AfterAny(_))));
    }
}
