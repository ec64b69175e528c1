//! One read of the config directory: every listed file parsed (or taken from the cache),
//! fail-closed replacements for what cannot be read, budgets, duplicate objects.
//!
//! Fail closed on unreadable files: a file with errors that leave no object behind (a YAML
//! syntax error, a document whose kind cannot be read, an I/O error, a budget exceeded) is
//! replaced by its last fully read content, and if it never was read, policy updates are held
//! (see [`Inputs::hold_policy`]). A file being written is replaced by its last fully read
//! content, or left out if it is new (see `watch`). A directory that cannot be listed keeps
//! the last content of every file under it; the config directory itself missing keeps
//! everything.

use super::dedupe::Objects;
use super::walk::{self, Entry, FileRead, RootError, Walk};
use super::{Fallback, Inputs, Unreadable};
use crate::registry::{self, Registry, WorkloadEntry};
use peerguard_filter::istio::parse::{documents, parse_str_measured, YamlCost};
use peerguard_filter::istio::{InvalidObject, ObjectKey, Resource};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// What one file contributed, kept per file so that an unreadable file can be replaced by its
/// last fully read version.
#[derive(Debug, Clone, Default)]
struct FileContent {
    resources: Vec<Resource>,
    workloads: Vec<WorkloadEntry>,
    /// Errors that belong to an object that is still there (`Resource::Invalid`, an invalid
    /// `Workload` left out): reported, and fail-closed by the compiler or the registry.
    errors: Vec<String>,
    skipped: Vec<String>,
    /// What its documents expanded to, for the directory's total budget.
    cost: YamlCost,
}

/// A file's content, or the errors that make it unreadable. Shared between the cache, the
/// last good contents and one read's result: a large mesh is not deep-copied three times.
type FileResult = Result<Arc<FileContent>, Vec<String>>;

/// Reads the directory, remembering each file's last fully read content.
#[derive(Debug)]
pub struct Loader {
    last_good: BTreeMap<String, Arc<FileContent>>,
    /// The last result per file with a hash of the text it came from: an edit re-parses only
    /// the files that changed (parsing dominates a reload of a large mesh).
    cache: BTreeMap<String, ([u8; 32], FileResult)>,
    /// Most the files read in one pass may expand to together (each file also has its own
    /// budget, in the parser).
    total_budget: YamlCost,
    objects: Objects,
    /// Directories listed successfully at least once, by name.
    dirs_listed: BTreeSet<String>,
    /// Whether the directory was read once: before that, what a file being written will hold
    /// is as unknown as an unreadable file's content.
    listed_once: bool,
}

impl Default for Loader {
    fn default() -> Self {
        Loader::new(DEFAULT_TOTAL_BUDGET)
    }
}

/// Default of `--max-config-nodes` / `--max-config-text-bytes`: four files at their
/// per-file limit.
pub const DEFAULT_TOTAL_BUDGET: YamlCost = YamlCost {
    nodes: 4 * peerguard_filter::istio::parse::MAX_FILE_NODES,
    scalar_bytes: 4 * peerguard_filter::istio::parse::MAX_FILE_SCALAR_BYTES,
};

/// Files not to be read this time, by name, with why (being written, just changed).
pub type Pending = BTreeMap<String, String>;

/// How the parser's budget errors start.
const OVER_BUDGET: &str = "over the per-file budget";

/// Why a file listed as complete was not used after all: read it again soon.
pub const CHANGED_WHILE_READ: &str = "changed while being read";

impl Loader {
    pub fn new(total_budget: YamlCost) -> Loader {
        Loader {
            last_good: BTreeMap::new(),
            cache: BTreeMap::new(),
            total_budget,
            objects: Objects::default(),
            dirs_listed: BTreeSet::new(),
            listed_once: false,
        }
    }

    /// Walks and reads the whole directory now, nothing pending.
    pub fn load(&mut self, dir: &Path) -> Inputs {
        let walked = walk::walk(dir);
        self.load_listed(&walked, &Pending::new())
    }

    /// Reads a directory, or one file.
    pub fn load_path(&mut self, path: &Path) -> Inputs {
        let walked = walk::walk_path(path);
        self.load_listed(&walked, &Pending::new())
    }

    /// Reads what `walked` lists, except the `pending` files.
    pub fn load_listed(&mut self, walked: &Result<Walk, RootError>, pending: &Pending) -> Inputs {
        let mut inputs = Inputs::default();
        let mut contents: Vec<Arc<FileContent>> = Vec::new();
        let walk = match walked {
            Ok(w) => w,
            Err(e) => {
                // Unmounted, renamed, not yet created: nothing says the files are gone.
                inputs.source_missing = Some(e.to_string());
                inputs
                    .errors
                    .push(format!("{e}: serving the last content read from it"));
                contents.extend(self.last_good.values().cloned());
                return self.finish(inputs, contents);
            }
        };
        let mut seen = BTreeSet::new();
        let mut used = YamlCost::default();
        let files: BTreeMap<&str, &Entry> =
            walk.files.iter().map(|e| (e.name.as_str(), e)).collect();
        let names: BTreeSet<&str> = files
            .keys()
            .copied()
            .chain(walk.bad_files.keys().map(String::as_str))
            .collect();
        // Read every file first, then parse the changed ones on every core at once: parsing
        // dominates the first read of a large mesh (cold start).
        let mut texts: BTreeMap<&str, FileRead> = files
            .iter()
            .filter(|(name, _)| !pending.contains_key(**name))
            .map(|(name, entry)| (*name, walk::read(entry)))
            .collect();
        let hashes = self.parse_changed(&texts);
        for name in names {
            seen.insert(name.to_string());
            let result = if let Some(reason) = pending.get(name) {
                self.pending(name, reason, &mut inputs, &mut contents);
                continue;
            } else if let Some(why) = walk.bad_files.get(name) {
                Err(vec![format!("{name}: {why}")])
            } else if let Some(read) = texts.remove(name) {
                match read {
                    FileRead::Text(text) => self.parse(name, &text, hashes.get(name).copied()),
                    FileRead::Unreadable(why) => Err(vec![format!("{name}: {why}")]),
                    FileRead::Changed => {
                        self.pending(name, CHANGED_WHILE_READ, &mut inputs, &mut contents);
                        continue;
                    }
                }
            } else {
                continue;
            };
            let result = match result {
                Ok(c) if !used.plus(c.cost).fits(self.total_budget) => Err(vec![format!(
                    "{name}: over the directory's total budget: it expands to {}, and the files before it in name order to {used}; together they may expand to at most {} (--max-config-nodes, --max-config-text-bytes)",
                    c.cost, self.total_budget
                )]),
                other => other,
            };
            match result {
                Ok(c) => {
                    used = used.plus(c.cost);
                    self.last_good.insert(name.to_string(), c.clone());
                    contents.push(c);
                }
                Err(file_errors) => {
                    inputs.errors.extend(file_errors.iter().cloned());
                    let last = self.last_good.get(name).cloned();
                    // A FIFO, socket or device never held configuration: nothing is unknown.
                    let fallback = match (&last, walk.bad_files.get(name)) {
                        (Some(_), _) => Fallback::LastGood,
                        (None, Some(why)) if why.starts_with("not a regular file") => {
                            Fallback::Nothing
                        }
                        (None, _) => Fallback::Hold,
                    };
                    let prefix = format!("{name}: ");
                    let summary = file_errors
                        .iter()
                        .map(|e| e.strip_prefix(&prefix).unwrap_or(e).to_string())
                        .collect();
                    inputs.unreadable.push(Unreadable {
                        file: name.to_string(),
                        errors: summary,
                        fallback,
                    });
                    contents.extend(last);
                }
            }
        }
        // Directories whose content is unknown keep what was last read under them.
        for (dir, why) in &walk.bad_dirs {
            let under = format!("{dir}/");
            let kept: Vec<String> = self
                .last_good
                .keys()
                .filter(|k| k.starts_with(&under) && !seen.contains(*k))
                .cloned()
                .collect();
            inputs.errors.push(format!("{dir}/: {why}"));
            let fallback = if kept.is_empty() && !self.dirs_listed.contains(dir) {
                Fallback::Hold
            } else {
                Fallback::LastGood
            };
            inputs.unreadable.push(Unreadable {
                file: under,
                errors: vec![why.clone()],
                fallback,
            });
            for k in kept {
                contents.extend(self.last_good.get(&k).cloned());
                seen.insert(k);
            }
        }
        for f in &walk.files {
            if let Some((dir, _)) = f.name.rsplit_once('/') {
                self.dirs_listed.insert(dir.to_string());
            }
        }
        inputs.skipped.extend(
            walk.aliases
                .iter()
                .map(|a| format!("{a}: reached twice through symlinks; read once")),
        );
        inputs.cost = used;
        self.listed_once = true;
        // A deleted file is a deliberate removal: forget it.
        self.last_good.retain(|k, _| seen.contains(k));
        self.cache.retain(|k, _| seen.contains(k));
        self.finish(inputs, contents)
    }

    /// A file not read this time: its last good content stands in, or nothing if it is new
    /// (the configuration as it was before the file appeared). On the first read there is no
    /// "before": policy updates are held until it can be read.
    fn pending(
        &self,
        name: &str,
        reason: &str,
        inputs: &mut Inputs,
        contents: &mut Vec<Arc<FileContent>>,
    ) {
        let last = self.last_good.get(name).cloned();
        let what = match (&last, self.listed_once) {
            (Some(_), _) => "its last content read stands in",
            (None, true) => "new, not read yet",
            (None, false) => {
                inputs.unreadable.push(Unreadable {
                    file: name.to_string(),
                    errors: vec![reason.to_string()],
                    fallback: Fallback::Hold,
                });
                "not read yet"
            }
        };
        inputs.pending.push(format!("{name}: {reason}; {what}"));
        contents.extend(last);
    }

    /// Parses, in parallel, the files whose text is not the one cached, and caches them.
    /// Returns every text's hash, so that it is computed once.
    fn parse_changed(&mut self, texts: &BTreeMap<&str, FileRead>) -> BTreeMap<String, [u8; 32]> {
        let hashes: BTreeMap<String, [u8; 32]> = texts
            .iter()
            .filter_map(|(name, read)| match read {
                FileRead::Text(text) => {
                    Some((name.to_string(), Sha256::digest(text.as_bytes()).into()))
                }
                _ => None,
            })
            .collect();
        let todo: Vec<(&str, &str, [u8; 32])> = texts
            .iter()
            .filter_map(|(name, read)| match (read, hashes.get(*name)) {
                (FileRead::Text(text), Some(hash)) => {
                    let cached = self.cache.get(*name).is_some_and(|(h, _)| h == hash);
                    (!cached).then_some((*name, text.as_str(), *hash))
                }
                _ => None,
            })
            .collect();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(todo.len());
        if threads <= 1 {
            for (name, text, hash) in todo {
                let r = read_file(text, name).map(Arc::new);
                self.cache.insert(name.to_string(), (hash, r));
            }
            return hashes;
        }
        let per_thread = todo.len().div_ceil(threads);
        let parsed: Vec<Vec<(String, [u8; 32], FileResult)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = todo
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|(name, text, hash)| {
                                let r = read_file(text, name).map(Arc::new);
                                (name.to_string(), *hash, r)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            // A panicking parser thread loses only the cache fill: `parse` re-parses those
            // files one by one below.
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (name, hash, r) in parsed.into_iter().flatten() {
            self.cache.insert(name, (hash, r));
        }
        hashes
    }

    fn parse(&mut self, name: &str, text: &str, hash: Option<[u8; 32]>) -> FileResult {
        let hash = hash.unwrap_or_else(|| Sha256::digest(text.as_bytes()).into());
        match self.cache.get(name) {
            Some((h, r)) if *h == hash => r.clone(),
            _ => {
                let r = read_file(text, name).map(Arc::new);
                self.cache.insert(name.to_string(), (hash, r.clone()));
                r
            }
        }
    }

    fn finish(&mut self, mut inputs: Inputs, contents: Vec<Arc<FileContent>>) -> Inputs {
        let mut resources = Vec::new();
        let mut entries = Vec::new();
        for c in contents {
            resources.extend(c.resources.iter().cloned());
            entries.extend(c.workloads.iter().cloned());
            inputs.errors.extend(c.errors.iter().cloned());
            inputs.skipped.extend(c.skipped.iter().cloned());
        }
        let (resources, entries, dup_errors) = self.objects.resolve(resources, entries);
        inputs.errors.extend(dup_errors);
        let (registry, reg_errors) = Registry::build(entries);
        inputs
            .errors
            .extend(reg_errors.iter().map(|e| e.to_string()));
        inputs
            .skipped
            .retain(|s| !s.contains(&format!(": {} ", registry::KIND)));
        inputs.resources = resources;
        inputs.registry = registry;
        inputs
    }
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;

/// One file's content, or the errors that make it unreadable: errors with no object left to
/// fail closed on (a YAML syntax error, a document whose kind cannot be read, a budget).
fn read_file(text: &str, name: &str) -> Result<FileContent, Vec<String>> {
    let (parsed, cost) = parse_str_measured(text, name);
    // Objects the parser kept as `Invalid` carry their errors; any other error means part of
    // the file is unknown.
    let invalid: BTreeSet<String> = parsed
        .resources
        .iter()
        .filter_map(|r| match r {
            Resource::Invalid(o) => Some(invalid_label(o)),
            _ => None,
        })
        .collect();
    let (covered, orphan): (Vec<_>, Vec<_>) = parsed
        .errors
        .iter()
        .partition(|e| e.object.as_ref().is_some_and(|o| invalid.contains(o)));
    if !orphan.is_empty() {
        // Over budget, the rest of the file was not parsed: the other errors are noise.
        let budget: Vec<String> = orphan
            .iter()
            .filter(|e| e.message.starts_with(OVER_BUDGET))
            .map(|e| e.to_string())
            .collect();
        return Err(if budget.is_empty() {
            orphan.iter().map(|e| e.to_string()).collect()
        } else {
            budget
        });
    }
    let mut content = FileContent {
        resources: parsed.resources,
        errors: covered.iter().map(|e| e.to_string()).collect(),
        skipped: parsed.skipped,
        cost,
        ..Default::default()
    };
    for doc in workload_documents(text, name)? {
        if registry::is_workload(&doc) {
            match registry::parse_workload(&doc, name) {
                Ok(e) => content.workloads.push(e),
                Err(e) => content.errors.push(e.to_string()),
            }
        }
    }
    Ok(content)
}

/// The parser's `kind ns/name` label of an invalid object.
fn invalid_label(o: &InvalidObject) -> String {
    let name = if o.metadata.name.is_empty() {
        "<unnamed>".to_string()
    } else {
        o.metadata.name.clone()
    };
    ObjectKey {
        kind: o.kind.clone(),
        namespace: o.metadata.namespace.clone(),
        name,
    }
    .to_string()
}

/// JSON values of the documents that can be a `Workload`. Syntax errors are reported by the
/// Istio parser (which read the same text); here a broken document is just not a Workload.
/// Only documents that mention the kind are parsed a second time (YAML parsing dominates
/// loading a large mesh), through the same budgeted parser: the file's budget covers them
/// together.
fn workload_documents(text: &str, name: &str) -> Result<Vec<serde_json::Value>, Vec<String>> {
    let trimmed = text.trim_start();
    let json_like = trimmed.starts_with('{') || trimmed.starts_with('[') || name.ends_with(".json");
    let subset = if json_like {
        text.to_string()
    } else {
        let mut chunks = vec![String::new()];
        for line in text.split_inclusive('\n') {
            if is_document_start(line) {
                chunks.push(String::new());
            }
            if let Some(last) = chunks.last_mut() {
                last.push_str(line);
            }
        }
        chunks
            .into_iter()
            .filter(|c| c.contains(registry::KIND))
            .map(|c| {
                if is_document_start(&c) {
                    c
                } else {
                    format!("---\n{c}")
                }
            })
            .collect()
    };
    let (docs, _) = documents(&subset, name);
    let mut out = Vec::new();
    for doc in docs {
        match doc {
            Ok(v) => out.push(v),
            // The first pass stayed within budget; a second one that does not must not
            // silently lose the Workloads.
            Err(e) if e.message.starts_with(OVER_BUDGET) => return Err(vec![e.to_string()]),
            Err(_) => {}
        }
    }
    Ok(out
        .into_iter()
        .flat_map(|v| match v {
            // `kind: List` as kubectl writes it.
            serde_json::Value::Object(ref m)
                if m.get("kind").and_then(|k| k.as_str()) == Some("List") =>
            {
                m.get("items")
                    .and_then(|i| i.as_array())
                    .cloned()
                    .unwrap_or_default()
            }
            serde_json::Value::Array(items) => items,
            other => vec![other],
        })
        .collect())
}

/// A `---` line, as the parser cuts documents.
fn is_document_start(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}
