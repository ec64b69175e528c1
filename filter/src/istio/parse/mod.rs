//! YAML/JSON → [`Resource`]s, with errors naming file, object and field.
//!
//! Pipeline: text → documents ([`documents`]) → JSON values (a `List` or a top-level array
//! is expanded into its items) → one object per value ([`parse_value`]): dispatch on
//! apiVersion + kind, typed decoding with exact field paths (`serde_path_to_error`; the
//! legacy API has its own decoder in [`legacy`]), then validation as Istio's webhook does it
//! ([`validate`]). An object of a handled kind that fails any step is kept as
//! [`Resource::Invalid`] so that `compile` fails closed for it.

mod documents;
mod json;
mod legacy;
mod metadata;
mod plain_yaml;
mod validate;

#[cfg(test)]
mod fail_closed_tests;
#[cfg(test)]
mod tests;

use super::{
    kinds, AuthorizationPolicySpec, DestinationRuleSpec, InvalidObject, Object, ObjectMeta, Origin,
    PeerAuthenticationSpec, RequestAuthenticationSpec, Resource,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;

pub use documents::{
    split_measured as documents, YamlCost, MAX_FILE_BYTES, MAX_FILE_NODES, MAX_FILE_SCALAR_BYTES,
};

/// A problem with one document or object. `Display` reads
/// `file: kind ns/name: field.path: message` (parts absent when unknown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{}{message}", object.as_ref().map(|o| format!("{o}: ")).unwrap_or_default(), field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ParseError {
    pub file: String,
    /// `kind namespace/name`, when known.
    pub object: Option<String>,
    /// e.g. `spec.rules[0].from[0].source.principals[1]`.
    pub field: Option<String>,
    pub message: String,
}

/// What one file (or a set of files) held.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// Handled kinds, valid or [`Resource::Invalid`].
    pub resources: Vec<Resource>,
    /// Errors: malformed YAML, invalid objects (also kept as `Resource::Invalid`).
    pub errors: Vec<ParseError>,
    /// Objects of kinds peerguard does not handle, as `file: kind ns/name` messages.
    pub skipped: Vec<String>,
}

impl Parsed {
    /// Appends another file's results (used when reading a directory).
    pub fn extend(&mut self, other: Parsed) {
        self.resources.extend(other.resources);
        self.errors.extend(other.errors);
        self.skipped.extend(other.skipped);
    }

    /// Why no decision can be trusted with this input (`config invalid: ...`), when some
    /// error is attached to no invalid object ([`Parsed::unattached_errors`]): every
    /// in-process decision is then DENY (`explain`, the playground).
    pub fn unreadable(&self) -> Option<String> {
        let errors = self.unattached_errors();
        (!errors.is_empty()).then(|| {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("config invalid: {}", list.join("; "))
        })
    }

    /// Errors that no [`Resource::Invalid`] carries: a syntax error, an unreadable file, a
    /// document without a kind. What they hid is unknown (a DENY, a STRICT), so no decision
    /// may be taken as if they were not there.
    pub fn unattached_errors(&self) -> Vec<&ParseError> {
        let invalid: std::collections::BTreeSet<String> = self
            .resources
            .iter()
            .filter_map(|r| match r {
                Resource::Invalid(o) => Some(metadata::object_label(&o.kind, &o.metadata)),
                _ => None,
            })
            .collect();
        self.errors
            .iter()
            .filter(|e| e.object.as_ref().is_none_or(|o| !invalid.contains(o)))
            .collect()
    }

    fn add(&mut self, outcome: ValueOutcome) {
        match outcome {
            ValueOutcome::Resource { resource, errors } => {
                self.resources.push(resource);
                self.errors.extend(errors);
            }
            ValueOutcome::Skipped(message) => self.skipped.push(message),
            ValueOutcome::Error(error) => self.errors.push(error),
        }
    }
}

/// The result of reading one object (see [`parse_value`]).
// Returned once per object and consumed at once: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ValueOutcome {
    /// A handled kind. When `errors` is not empty, `resource` is [`Resource::Invalid`].
    Resource {
        resource: Resource,
        errors: Vec<ParseError>,
    },
    /// A kind peerguard does not handle: `file: kind ns/name: not handled by peerguard, skipped`.
    Skipped(String),
    /// Not an object at all (no kind/apiVersion, not a mapping, a `List`): nothing to keep.
    Error(ParseError),
}

/// Whether Istio would accept these `matchLabels` (`validateWorkloadSelector` and the CRD).
/// `compile` reads the selector of an invalid object only when this holds.
pub fn selector_is_valid(labels: &std::collections::BTreeMap<String, String>) -> bool {
    let mut errors = Errors::new();
    validate::match_labels(labels, "", &mut errors);
    errors.is_empty()
}

/// Parse one file's text (multi-document YAML, a JSON object, or a `kind: List`).
pub fn parse_str(text: &str, file: &str) -> Parsed {
    parse_str_measured(text, file).0
}

/// [`parse_str`], and what the file's documents cost once YAML aliases are expanded, for a
/// budget across files (each file has its own, see [`YamlCost`]).
pub fn parse_str_measured(text: &str, file: &str) -> (Parsed, YamlCost) {
    let mut parsed = Parsed::default();
    let mut index = 0usize;
    let (docs, cost) = documents::split_measured(text, file);
    for doc in docs {
        match doc {
            Ok(value) => expand(value, file, &mut index, &mut parsed, 0),
            Err(error) => parsed.errors.push(error),
        }
    }
    (parsed, cost)
}

/// Parse a file, or every `.yaml`/`.yml`/`.json` file under a directory (recursively, in
/// sorted path order; hidden entries and directory symlinks are skipped, file symlinks are
/// read). Unreadable files and directories are reported as errors; the other files are
/// still read.
pub fn parse_path(path: &Path) -> Parsed {
    let mut parsed = Parsed::default();
    if path.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files, &mut parsed.errors);
        files.sort();
        for file in files {
            parsed.extend(parse_file(&file));
        }
    } else {
        parsed.extend(parse_file(path));
    }
    parsed
}

fn parse_file(path: &Path) -> Parsed {
    let name = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse_str(&text, &name),
            Err(e) => Parsed {
                errors: vec![file_error(&name, format!("not UTF-8 text: {e}"))],
                ..Parsed::default()
            },
        },
        Err(e) => Parsed {
            errors: vec![file_error(&name, format!("cannot read: {e}"))],
            ..Parsed::default()
        },
    }
}

fn collect_files(dir: &Path, files: &mut Vec<std::path::PathBuf>, errors: &mut Vec<ParseError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(file_error(
                &dir.display().to_string(),
                format!("cannot read directory: {e}"),
            ));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                errors.push(file_error(
                    &dir.display().to_string(),
                    format!("cannot read directory: {e}"),
                ));
                continue;
            }
        };
        let path = entry.path();
        // Hidden entries are skipped: a mounted ConfigMap holds each file twice, once under
        // `..<timestamp>/` and once as a top-level symlink to it.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        match entry.file_type() {
            // Directory symlinks are not followed, so a link loop cannot recurse forever.
            Ok(t) if t.is_dir() => collect_files(&path, files, errors),
            Ok(t)
                if (t.is_file() || (t.is_symlink() && path.is_file()))
                    && has_config_extension(&path) =>
            {
                files.push(path);
            }
            Ok(t) if t.is_symlink() && has_config_extension(&path) && !path.exists() => {
                errors.push(file_error(
                    &path.display().to_string(),
                    "cannot read: dangling symlink".to_string(),
                ));
            }
            Ok(_) => {}
            Err(e) => errors.push(file_error(
                &path.display().to_string(),
                format!("cannot read: {e}"),
            )),
        }
    }
}

fn has_config_extension(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn file_error(file: &str, message: String) -> ParseError {
    ParseError {
        file: file.to_string(),
        object: None,
        field: None,
        message,
    }
}

/// `List` objects (`kind: List` or `kind: <X>List` with `items`) and top-level arrays are
/// expanded into their items; every other value is one object.
fn expand(value: Value, file: &str, index: &mut usize, parsed: &mut Parsed, depth: usize) {
    // Nesting beyond this is not something Kubernetes produces; refuse rather than recurse.
    const MAX_DEPTH: usize = 4;
    match value {
        Value::Array(items) if depth < MAX_DEPTH => {
            for item in items {
                expand(item, file, index, parsed, depth + 1);
            }
        }
        Value::Object(map) if depth < MAX_DEPTH && is_list(&map) => {
            if let Some(Value::Array(items)) = map.get("items") {
                for item in items.iter().cloned() {
                    expand(item, file, index, parsed, depth + 1);
                }
            }
        }
        value => {
            let origin = Origin {
                file: file.to_string(),
                index: *index,
            };
            *index += 1;
            parsed.add(parse_value(value, origin));
        }
    }
}

fn is_list(map: &serde_json::Map<String, Value>) -> bool {
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    (kind == "List" || kind.ends_with("List")) && matches!(map.get("items"), Some(Value::Array(_)))
}

/// The kinds peerguard handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    DestinationRule,
    LegacyPolicy,
    MeshPolicy,
}

impl Kind {
    /// A kind Istio serves at this version (see [`kinds::classify`]) that peerguard reads.
    fn handled(kind: &str) -> Option<Kind> {
        match kind {
            "PeerAuthentication" => Some(Kind::PeerAuthentication),
            "AuthorizationPolicy" => Some(Kind::AuthorizationPolicy),
            "RequestAuthentication" => Some(Kind::RequestAuthentication),
            "DestinationRule" => Some(Kind::DestinationRule),
            "Policy" => Some(Kind::LegacyPolicy),
            "MeshPolicy" => Some(Kind::MeshPolicy),
            _ => None,
        }
    }

    fn cluster_scoped(self) -> bool {
        self == Kind::MeshPolicy
    }
}

/// Findings for one object: `(field path, message)`.
type Errors = Vec<(Option<String>, String)>;

/// Read one object (as found in a file, or as delivered by a Kubernetes watch).
///
/// Handled kinds, and objects of Istio's groups whose kind or version Istio does not serve,
/// always come back as a [`Resource`]: valid, or [`Resource::Invalid`] with the errors that
/// made it so. Other kinds are [`ValueOutcome::Skipped`].
pub fn parse_value(value: Value, origin: Origin) -> ValueOutcome {
    let file = origin.file.clone();
    let Value::Object(map) = &value else {
        return ValueOutcome::Error(file_error(
            &file,
            format!(
                "object {} is not a Kubernetes object (a mapping with apiVersion and kind): found {}",
                origin.index + 1,
                type_name(&value)
            ),
        ));
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind.is_empty() || api_version.is_empty() {
        let missing = if kind.is_empty() {
            "kind"
        } else {
            "apiVersion"
        };
        return ValueOutcome::Error(file_error(
            &file,
            format!(
                "object {} has no {missing} (or it is not a string): not a Kubernetes object",
                origin.index + 1
            ),
        ));
    }
    if is_list(map) {
        return ValueOutcome::Error(ParseError {
            file,
            object: Some(kind),
            field: None,
            message: "a List holds several objects; read it with parse_str".to_string(),
        });
    }

    let mut errors = Errors::new();
    let handled = match kinds::classify(&api_version, &kind) {
        kinds::Classification::Foreign => None,
        kinds::Classification::Known => match Kind::handled(&kind) {
            Some(handled) => Some(handled),
            None => {
                let label = metadata::loose_label(&kind, map.get("metadata"));
                return ValueOutcome::Skipped(format!(
                    "{file}: {label}: not handled by peerguard, skipped"
                ));
            }
        },
        kinds::Classification::UnknownVersion { versions } => {
            let group = kinds::istio_group(&api_version).unwrap_or_default();
            errors.push((
                Some("apiVersion".to_string()),
                format!(
                    "unknown version {api_version:?} for {kind}: Istio serves {}; the object is not skipped but fails closed",
                    versions
                        .iter()
                        .map(|v| format!("{group}/{v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            None
        }
        kinds::Classification::UnknownKind => {
            let group = kinds::istio_group(&api_version).unwrap_or_default();
            errors.push((
                Some("kind".to_string()),
                format!(
                    "unknown kind {kind:?} in {group}: the group's kinds are {}; the object is not skipped but fails closed",
                    kinds::kinds_of(group).join(", ")
                ),
            ));
            None
        }
    };
    if handled.is_none() && errors.is_empty() {
        let label = metadata::loose_label(&kind, map.get("metadata"));
        return ValueOutcome::Skipped(format!(
            "{file}: {label}: not handled by peerguard, skipped"
        ));
    }

    // A kind Istio does not serve is namespaced unless it is a MeshPolicy at another version.
    let cluster_scoped = handled.map_or(kind == "MeshPolicy", Kind::cluster_scoped);
    let metadata = metadata::decode(map.get("metadata"), cluster_scoped, &mut errors);
    let object = metadata::object_label(&kind, &metadata);
    if metadata.name.is_empty() {
        errors.push((Some("metadata.name".to_string()), "required".to_string()));
    }
    // Borrowed, not cloned: the whole value is kept as `raw` if the object is invalid.
    let no_spec = Value::Object(serde_json::Map::new());
    let spec = match map.get("spec") {
        None | Some(Value::Null) => &no_spec,
        Some(spec) => spec,
    };
    let wrap = Wrap {
        api_version: &api_version,
        metadata: &metadata,
        origin: &origin,
    };

    let resource = match handled {
        None => None,
        Some(Kind::PeerAuthentication) => port_keys(spec, &mut errors)
            .then(|| decode::<PeerAuthenticationSpec>(spec, &mut errors))
            .flatten()
            .map(|s| {
                validate::peer_authentication(&s, spec, &mut errors);
                Resource::PeerAuthentication(wrap.object(s))
            }),
        Some(Kind::AuthorizationPolicy) => decode::<AuthorizationPolicySpec>(spec, &mut errors)
            .map(|s| {
                validate::authorization_policy(&s, &mut errors);
                Resource::AuthorizationPolicy(wrap.object(s))
            }),
        Some(Kind::RequestAuthentication) => decode::<RequestAuthenticationSpec>(spec, &mut errors)
            .map(|s| {
                validate::request_authentication(&s, &mut errors);
                Resource::RequestAuthentication(wrap.object(s))
            }),
        Some(Kind::DestinationRule) => decode::<DestinationRuleSpec>(spec, &mut errors).map(|s| {
            validate::destination_rule(&s, &mut errors);
            Resource::DestinationRule(wrap.object(s))
        }),
        Some(handled @ (Kind::LegacyPolicy | Kind::MeshPolicy)) => {
            legacy::decode(spec, &mut errors).map(|s| {
                let mesh = handled == Kind::MeshPolicy;
                validate::legacy(&s, mesh, &metadata.name, &mut errors);
                if mesh {
                    Resource::MeshPolicy(wrap.object(s))
                } else {
                    Resource::LegacyPolicy(wrap.object(s))
                }
            })
        }
    };

    match resource {
        Some(resource) if errors.is_empty() => ValueOutcome::Resource {
            resource,
            errors: Vec::new(),
        },
        _ => {
            let errors: Vec<ParseError> = errors
                .into_iter()
                .map(|(field, message)| ParseError {
                    file: file.clone(),
                    object: Some(object.clone()),
                    field,
                    message,
                })
                .collect();
            let error = errors
                .iter()
                .map(|e| match &e.field {
                    Some(f) => format!("{f}: {}", e.message),
                    None => e.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; ");
            let resource = Resource::Invalid(InvalidObject {
                kind,
                api_version,
                metadata,
                origin,
                raw: value,
                error,
            });
            ValueOutcome::Resource { resource, errors }
        }
    }
}

/// What every [`Object`] of one document shares, whatever its spec type.
struct Wrap<'a> {
    api_version: &'a str,
    metadata: &'a ObjectMeta,
    origin: &'a Origin,
}

impl Wrap<'_> {
    fn object<S>(&self, spec: S) -> Object<S> {
        Object {
            api_version: self.api_version.to_string(),
            metadata: self.metadata.clone(),
            spec,
            origin: self.origin.clone(),
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "an empty value",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// Typed decoding of `spec`, recording the exact path of the first error.
fn decode<T: DeserializeOwned>(spec: &Value, errors: &mut Errors) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(spec) {
        Ok(value) => Some(value),
        Err(e) => {
            let field = prefixed("spec", &e.path().to_string());
            errors.push((Some(field), clarify(&e.into_inner().to_string())));
            None
        }
    }
}

/// `portLevelMtls` keys are port numbers; serde's own message for a bad key has no path.
fn port_keys(spec: &Value, errors: &mut Errors) -> bool {
    let Some(Value::Object(ports)) = spec.get("portLevelMtls") else {
        return true;
    };
    let before = errors.len();
    for key in ports.keys() {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) || key.parse::<u32>().is_err()
        {
            errors.push((
                Some(format!("spec.portLevelMtls.{key}")),
                format!("invalid port {key:?}: keys are workload port numbers 1..65535"),
            ));
        }
    }
    errors.len() == before
}

/// `spec` + `rules[0].from` → `spec.rules[0].from`; the root path `.` → `spec`.
fn prefixed(prefix: &str, path: &str) -> String {
    if path == "." || path.is_empty() {
        prefix.to_string()
    } else if path.starts_with('[') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}

/// serde's wording for enums talks about Rust variants; users write values.
fn clarify(message: &str) -> String {
    match message.strip_prefix("unknown variant ") {
        Some(rest) => format!(
            "unknown value {}",
            rest.replacen("expected one of", "allowed values are", 1)
        ),
        None => message.to_string(),
    }
}
