//! Path normalization as Envoy's connection manager applies it for each of Istio's
//! `pathNormalization` settings, and URI templates (`{*}`, `{**}`).
//!
//! Envoy normalizes *before* any filter runs and forwards the normalized path, so the
//! filter matches the path exactly as it is given (the one the app receives): see
//! [`url_path`]. [`normalize`] is for in-process runs (`crate::hcm`), to give them the
//! path Envoy would give the filter. Observed on Envoy 1.40 (`normalize_path: true`, the
//! Chromium URL canonicalizer): `\` becomes `/`, percent-encoded *unreserved* characters
//! are decoded, `"<>^`{|}` are percent-encoded, `.`/`..` segments are resolved (RFC 3986
//! 5.2.4); `//` stays, and other escapes (`%2F`, `%2f`, `%20`) stay as
//! they are. MERGE_SLASHES then merges `//`; DECODE_AND_MERGE_SLASHES first decodes
//! `%2F`/`%5C` (`UNESCAPE_AND_FORWARD`). The query is never touched.

use crate::schema::{PathNormalization, TemplateSegment};

/// The part of a (normalized) `:path` that `paths`/`notPaths` match: without query or
/// fragment, as Envoy's `url_path` matcher.
pub fn url_path(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// The `:path` Envoy passes on under `mode`. The request target has already been checked
/// (origin-form, visible ASCII, no `#`): see `crate::hcm`.
pub fn normalize(target: &str, mode: PathNormalization) -> String {
    let (path, query) = match target.find('?') {
        Some(i) => target.split_at(i),
        None => (target, ""),
    };
    let mut out = match mode {
        PathNormalization::None => return target.to_string(),
        PathNormalization::Base | PathNormalization::MergeSlashes => canonical(path),
        PathNormalization::DecodeAndMergeSlashes => canonical(&unescape_slashes(path)),
    };
    if matches!(
        mode,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    ) {
        out = merge_slashes(&out);
    }
    out.push_str(query);
    out
}

/// Envoy's `normalize_path` on the path part.
fn canonical(path: &str) -> String {
    let decoded = decode_unreserved(path);
    if has_dot_segment(&decoded) {
        remove_dot_segments(&decoded)
    } else {
        decoded
    }
}

/// `%2F`/`%2f` → `/`, `%5C`/`%5c` → `\\`.
fn unescape_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3).unwrap_or(&rest[i..]);
        match esc.to_ascii_uppercase().as_str() {
            "%2F" => out.push('/'),
            "%5C" => out.push('\\'),
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
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

/// Characters the canonicalizer percent-encodes in a path (observed on Envoy 1.40).
const ESCAPED: &[u8] = b"\"<>^`{|}";

/// `\` → `/`, `%XX` of an unreserved character → the character, [`ESCAPED`] characters
/// → `%XX`; other escapes (e.g. `%2F`) and malformed ones are kept verbatim.
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
        if ESCAPED.contains(&b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
            i += 1;
            continue;
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
            s if s.contains('{') || s.contains('}') => {
                return Err(TemplateError::UnknownOperator(err()))
            }
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

/// The characters Envoy's URI-template matcher lets `{*}`/`{**}` match (`pchar` of RFC
/// 3986 plus `*`, and `/` for `{**}`); notably not `[` or `]`.
fn template_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;:@=".contains(c)
}

/// Full match of a path against template tokens: `Literal` verbatim, `One` one or more
/// [`template_char`]s, `Any` zero or more [`template_char`]s or `/`.
pub fn template_matches(tokens: &[TemplateSegment], path: &str) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return path.is_empty();
    };
    match first {
        TemplateSegment::Literal(l) => path
            .strip_prefix(l.as_str())
            .is_some_and(|p| template_matches(rest, p)),
        TemplateSegment::One => {
            let seg_end = path.find(|c: char| !template_char(c)).unwrap_or(path.len());
            (1..=seg_end)
                .filter(|&k| path.is_char_boundary(k))
                .any(|k| template_matches(rest, &path[k..]))
        }
        TemplateSegment::Any => {
            let end = path
                .find(|c: char| c != '/' && !template_char(c))
                .unwrap_or(path.len());
            if rest.is_empty() {
                return end == path.len();
            }
            (0..=end)
                .filter(|&k| path.is_char_boundary(k))
                .any(|k| template_matches(rest, &path[k..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row was observed on Envoy 1.40 (`normalize_path: true`, raw HTTP/1.1 bytes,
    /// the path the upstream received; leading `//` checked with an RBAC `:path` matcher, as Python's
    /// http.server collapses it on its own).
    #[test]
    fn base_matches_envoy() {
        let cases: &[(&str, &str)] = &[
            ("/a/../b", "/b"),
            ("/a/./b", "/a/b"),
            ("\\a", "/a"),
            ("/a\\\\b", "/a//b"),
            ("/a\\..\\b", "/b"),
            ("/%41", "/A"),
            ("/A%2D", "/A-"),
            ("/%7E%7e", "/~~"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E./b", "/b"),
            ("/a/.%2e/b", "/b"),
            ("/a%2e%2e", "/a.."),
            ("/a%2fb/%2E%2e/c%5cd%41%7e", "/c%5cdA~"),
            ("/a/..%2fb", "/a/..%2fb"),
            ("/a/%2e%2e%2f", "/a/..%2f"),
            ("/%2F/../x", "/x"),
            ("/a%20b", "/a%20b"),
            ("/a%zz%4", "/a%zz%4"),
            ("/a%252e", "/a%252e"),
            ("/%e2%82%ac", "/%e2%82%ac"),
            ("/a?x=1/../y", "/a?x=1/../y"),
            ("/a%3Fb/../c", "/c"),
            ("/a;b/../c", "/c"),
            ("/a/.../b", "/a/.../b"),
            ("/a/b/..", "/a/"),
            ("/a/./", "/a/"),
            ("/./a", "/a"),
            ("/..", "/"),
            ("/.a", "/.a"),
            ("//a//b", "//a//b"),
            ("///a", "///a"),
            ("//a/../b", "//b"),
            ("//a//b/./c", "//a//b/c"),
            ("/a\"b", "/a%22b"),
            ("/a<b", "/a%3Cb"),
            ("/a{b}", "/a%7Bb%7D"),
            ("/a|b", "/a%7Cb"),
            ("/a^b", "/a%5Eb"),
            ("/a`b", "/a%60b"),
            ("/a'b", "/a'b"),
            ("/a[b]", "/a[b]"),
            ("/ab%23c", "/ab%23c"),
            ("/a?q=\"x\"", "/a?q=\"x\""),
        ];
        for (raw, want) in cases {
            assert_eq!(
                normalize(raw, PathNormalization::Base),
                *want,
                "normalize({raw})"
            );
        }
    }

    #[test]
    fn other_modes() {
        let cases: &[(PathNormalization, &str, &str)] = &[
            (PathNormalization::None, "/a/../b//c%2F", "/a/../b//c%2F"),
            (
                PathNormalization::MergeSlashes,
                "/a//b///c/../d?x=//",
                "/a/b/d?x=//",
            ),
            (PathNormalization::MergeSlashes, "//a", "/a"),
            (PathNormalization::None, "/a%00", "/a%00"),
            (PathNormalization::MergeSlashes, "/a%2F%2Fb", "/a%2F%2Fb"),
            (
                PathNormalization::DecodeAndMergeSlashes,
                "/a%2F%2fb",
                "/a/b",
            ),
            (
                PathNormalization::DecodeAndMergeSlashes,
                "/admin%2F..%2Fpublic",
                "/public",
            ),
            (PathNormalization::DecodeAndMergeSlashes, "/a%5Cb", "/a/b"),
        ];
        for (mode, raw, want) in cases {
            assert_eq!(normalize(raw, *mode), *want, "{mode:?} {raw}");
        }
    }

    #[test]
    fn url_path_drops_the_query() {
        assert_eq!(url_path("/allow?param=value"), "/allow");
        assert_eq!(url_path("/a/..?x=/../"), "/a/..");
        assert_eq!(url_path("/"), "/");
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
            // Observed on Envoy 1.40's uri_template matcher: `[`/`]` are not matched,
            // `*` and the other sub-delims are.
            ("/t/{*}/end", "/t/x[y/end", false),
            ("/t/{*}/end", "/t/x]y/end", false),
            ("/u/{**}", "/u/x[y", false),
            ("/t/{*}/end", "/t/x*y/end", true),
            ("/t/{*}/end", "/t/x!$&'()+,;:@=~%41y/end", true),
            ("/u/{**}", "/u/a/b/c", true),
            ("/u/{**}", "/u/", true),
            ("/u/{**}", "/u", false),
            ("/t/{*}/end", "/t//end", false),
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
            Ok(Some(vec![
                TemplateSegment::Literal("/allow/admin/".into()),
                TemplateSegment::Any
            ]))
        );
        assert!(matches!(
            parse_template("/a/x{*}"),
            Err(TemplateError::PartialSegment(_))
        ));
        assert!(matches!(
            parse_template("/a/{x}"),
            Err(TemplateError::UnknownOperator(_))
        ));
        assert!(matches!(
            parse_template("/{**}/{*}"),
            Err(TemplateError::AfterAny(_))
        ));
    }
}
