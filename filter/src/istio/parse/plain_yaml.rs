//! A fast path for the common YAML documents: straight from parser events to JSON values,
//! skipping serde-saphyr's deserializer, which dominated reading a large mesh (cold start).
//!
//! It handles only a subset whose meaning is beyond doubt: mappings, sequences, quoted and
//! block scalars, and plain scalars that are clearly strings, `true`/`false`, null or small
//! decimal integers. Anything else (anchors, aliases, tags, merge keys, duplicate keys,
//! floats, YAML 1.1 booleans, a syntax error, a document near the file's budget) returns
//! `None` and the caller parses the chunk with serde-saphyr as before, so values, errors and
//! budget breaches are exactly serde-saphyr's.

use super::documents::YamlCost;
use granit_parser::{Event, Options, Parser, ScalarStyle};
use serde_json::{Map, Value};

/// Deeper documents go to serde-saphyr (its own limit is 64).
const MAX_DEPTH: usize = 32;
/// More documents in one `---` chunk than this go to serde-saphyr (its own limit is 1,024).
const MAX_DOCUMENTS: usize = 16;
/// Comments per chunk the fast path accepts: far below serde-saphyr's limit on comments held
/// while it looks ahead, so whatever it would refuse goes to it.
const MAX_COMMENTS: usize = 32;

/// The values of every document of `chunk`, or `None` when the chunk is outside the subset
/// or anywhere near what the file has `left` of its budget.
pub(super) fn documents(chunk: &str, left: YamlCost) -> Option<Vec<Value>> {
    let mut options = Options::default();
    // As serde-saphyr configures the parser.
    options.emit_comments = true;
    options.max_buffered_comment_events = MAX_COMMENTS;
    let mut reader = Reader {
        events: Parser::new_from_str_with_options(chunk, options),
        nodes: 0,
        scalar_bytes: 0,
        count: 0,
        comments: 0,
    };
    let mut out = Vec::new();
    match reader.next()? {
        Event::StreamStart => {}
        _ => return None,
    }
    loop {
        match reader.next()? {
            Event::StreamEnd => break,
            // A `%YAML` directive: let serde-saphyr decide what it means.
            Event::DocumentStart(_, None) => {
                let value = match reader.next()? {
                    Event::DocumentEnd => Value::Null,
                    event => {
                        let value = reader.value(event, 0)?;
                        match reader.next()? {
                            Event::DocumentEnd => value,
                            _ => return None,
                        }
                    }
                };
                out.push(value);
                if out.len() > MAX_DOCUMENTS {
                    return None;
                }
            }
            _ => return None,
        }
    }
    // serde-saphyr counts nodes, events and scalar bytes a little differently (numbers as
    // text, document events): a wide margin keeps every chunk it would refuse with it.
    let fits = reader.nodes.saturating_mul(2).saturating_add(64) <= left.nodes
        && reader.count <= left.nodes
        && reader.scalar_bytes.saturating_mul(2).saturating_add(64) <= left.scalar_bytes;
    fits.then_some(out)
}

struct Reader<I> {
    events: I,
    nodes: usize,
    scalar_bytes: usize,
    /// Events read, comments included.
    count: usize,
    comments: usize,
}

impl<'a, I> Reader<I>
where
    I: Iterator<Item = Result<(Event<'a>, granit_parser::Span), granit_parser::ScanError>>,
{
    /// The next event that is not a comment; `None` at a syntax error or too many comments.
    fn next(&mut self) -> Option<Event<'a>> {
        loop {
            let (event, _) = self.events.next()?.ok()?;
            self.count += 1;
            if let Event::Comment(..) = event {
                self.comments += 1;
                if self.comments > MAX_COMMENTS {
                    return None;
                }
                continue;
            }
            return Some(event);
        }
    }

    fn value(&mut self, event: Event<'a>, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.nodes += 1;
        match event {
            Event::Scalar(text, style, 0, None) => {
                self.scalar_bytes += text.len();
                scalar(text.into_owned(), style)
            }
            Event::SequenceStart(_, 0, None) => {
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        Event::SequenceEnd => break,
                        event => items.push(self.value(event, depth + 1)?),
                    }
                }
                Some(Value::Array(items))
            }
            Event::MappingStart(_, 0, None) => {
                let mut map = Map::new();
                loop {
                    let key = match self.next()? {
                        Event::MappingEnd => break,
                        Event::Scalar(text, style, 0, None) => key(text.into_owned(), style)?,
                        _ => return None,
                    };
                    self.nodes += 1;
                    self.scalar_bytes += key.len();
                    let event = self.next()?;
                    let value = self.value(event, depth + 1)?;
                    // serde-saphyr refuses duplicates with an error of its own.
                    if map.insert(key, value).is_some() {
                        return None;
                    }
                }
                Some(Value::Object(map))
            }
            _ => None,
        }
    }
}

/// A mapping key: any quoted or block scalar, or a plain one that is clearly a string. Not a
/// merge key (`<<`).
fn key(text: String, style: ScalarStyle) -> Option<String> {
    let plain_ok = style != ScalarStyle::Plain || plain_string(&text);
    (plain_ok && text != "<<").then_some(text)
}

/// What serde-saphyr makes of an untagged scalar read as a JSON value, when that is beyond
/// doubt.
fn scalar(text: String, style: ScalarStyle) -> Option<Value> {
    if style != ScalarStyle::Plain {
        return Some(Value::String(text));
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    if plain_string(&text) {
        return Some(Value::String(text));
    }
    // `0` or digits without a leading zero, within u64; anything else numeric-looking
    // (signs, floats, radix prefixes, underscores, leading zeros) goes to serde-saphyr.
    let digits = text.bytes().all(|b| b.is_ascii_digit());
    if digits && (text == "0" || !text.starts_with('0')) {
        return text.parse::<u64>().ok().map(|n| Value::Number(n.into()));
    }
    None
}

/// A plain scalar no YAML schema reads as anything but a string: it starts with no digit,
/// sign, dot or `~`, and is not a boolean, null, infinity or NaN spelling in any case.
fn plain_string(text: &str) -> bool {
    let Some(first) = text.bytes().next() else {
        return false;
    };
    if first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.' | b'~') {
        return false;
    }
    let special = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "inf", "infinity", "nan",
    ];
    !(text.len() <= 8 && special.iter().any(|s| s.eq_ignore_ascii_case(text)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const ROOMY: YamlCost = YamlCost::FILE_BUDGET;

    /// The fast path, when it takes the chunk, reads it exactly as serde-saphyr does.
    fn same_as_saphyr(chunk: &str) -> bool {
        let Some(fast) = documents(chunk, ROOMY) else {
            return false;
        };
        let slow: Vec<Value> = serde_saphyr::from_multiple(chunk).expect("valid YAML");
        let fast: Vec<Value> = fast.into_iter().filter(|v| !v.is_null()).collect();
        let slow: Vec<Value> = slow.into_iter().filter(|v| !v.is_null()).collect();
        assert_eq!(fast, slow, "{chunk}");
        true
    }

    #[test]
    fn the_common_shapes_take_the_fast_path_and_read_as_serde_saphyr_reads_them() {
        for chunk in [
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p-1, namespace: ns-1}\nspec:\n  selector: {matchLabels: {app: app-1}}\n  action: DENY\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/a/sa/*]}}]\n    to: [{operation: {methods: [GET], paths: [/api/*], ports: [\"8080\"]}}]\n",
            "# a comment\nkind: Workload\nspec:\n  ports: [{port: 8000, targetPort: 0}]\n  empty:\n  tilde: ~\n  on_off: {a: true, b: false}\n  text: |\n    two\n    lines\n  'quoted key': 'x'\n",
            "a: 1\n---\nb: [p, q]\n...\n",
            "",
            "# only a comment\n",
        ] {
            assert!(same_as_saphyr(chunk), "not taken: {chunk}");
        }
    }

    #[test]
    fn doubtful_scalars_and_yaml_features_go_to_serde_saphyr() {
        for chunk in [
            "a: yes\n",
            "a: On\n",
            "a: 1.5\n",
            "a: -1\n",
            "a: 0x10\n",
            "a: 010\n",
            "a: 1_000\n",
            "a: .inf\n",
            "a: NaN\n",
            "a: 99999999999999999999\n",
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "<<: {a: 1}\n",
            "a: 1\na: 2\n",
            "? [a]\n: 1\n",
            "8080: x\n",
            "%YAML 1.2\n---\na: 1\n",
            "a: [\n",
            "a: b: c\n",
        ] {
            assert!(documents(chunk, ROOMY).is_none(), "taken: {chunk}");
        }
    }

    #[test]
    fn a_chunk_near_the_budget_goes_to_serde_saphyr() {
        let chunk = "a: [p, q, r]\n";
        assert!(documents(chunk, ROOMY).is_some());
        let tight = YamlCost {
            nodes: 70,
            scalar_bytes: ROOMY.scalar_bytes,
        };
        assert!(documents(chunk, tight).is_none());
    }
}
