//! The directory source (`--config-dir DIR`): every `.yaml`/`.yml`/`.json` file under the
//! directory, recursively. Istio kinds go through the filter's parser; peerguard's own
//! `Workload` kind goes to the registry.
//!
//! Watching compares a fingerprint (path, size, mtime) of the tree, checked when inotify
//! reports an event and in any case every `poll` interval: polling works on every filesystem
//! (including bind mounts and ConfigMap symlink swaps, where inotify misses changes) and costs
//! one `stat` per file per interval; the events make an ordinary edit visible at once. A change
//! is debounced: the tree must stay unchanged for `debounce` before it is re-read, so an
//! editor's write-rename sequence or a `cp -r` gives one recompile.
//!
//! Fail closed on unreadable files: a file with errors that leave no object behind (a YAML
//! syntax error, a document whose kind cannot be read, an I/O error) is replaced by its last
//! fully read content, and if it never was read, policy updates are held (see
//! [`Inputs::hold_policy`]).

use super::{Inputs, Source, Unreadable};
use crate::registry::{self, Registry, WorkloadEntry};
use peerguard_filter::istio::parse::parse_str;
use peerguard_filter::istio::{InvalidObject, ObjectKey, Resource};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

pub struct DirSource {
    pub dir: PathBuf,
    pub poll: Duration,
    pub debounce: Duration,
}

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

impl Source for DirSource {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    fn run(self: Box<Self>, out: mpsc::Sender<Arc<Inputs>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let wake = Arc::new(tokio::sync::Notify::new());
            // Kept alive for the life of the task; dropping it stops the inotify thread.
            let _watcher = watch_events(&self.dir, wake.clone());
            let mut loader = Loader::default();
            let mut last = fingerprint(&self.dir);
            if out.send(Arc::new(loader.load(&self.dir))).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.poll) => {}
                    _ = wake.notified() => {}
                }
                let now = fingerprint(&self.dir);
                if now == last {
                    continue;
                }
                // Debounce: wait until the tree is quiet.
                let mut settled = now;
                loop {
                    tokio::time::sleep(self.debounce).await;
                    let again = fingerprint(&self.dir);
                    if again == settled {
                        break;
                    }
                    settled = again;
                }
                last = settled;
                tracing::info!(dir = %self.dir.display(), "configuration changed, reloading");
                if out.send(Arc::new(loader.load(&self.dir))).await.is_err() {
                    return;
                }
            }
        })
    }
}

/// inotify (through `notify`) wakes the poll loop at once on a change; the fingerprint check
/// still decides whether anything changed, and polling remains the fallback where events do
/// not arrive (bind mounts, network file systems) or the watch cannot be set up.
fn watch_events(dir: &Path, wake: Arc<tokio::sync::Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, EventKind::Access(_)) {
                wake.notify_one();
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("file events unavailable ({e}); polling only");
            return None;
        }
    };
    if let Err(e) = watcher.watch(dir, RecursiveMode::Recursive) {
        tracing::warn!(dir = %dir.display(), "cannot watch for file events ({e}); polling only");
        return None;
    }
    Some(watcher)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let p = entry.path();
            let name = entry.file_name();
            // Skip hidden files and editors' temporaries (`.x.swp`, ConfigMap `..data`).
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn fingerprint(dir: &Path) -> Fingerprint {
    files(dir)
        .into_iter()
        .map(|p| {
            let md = std::fs::metadata(&p).ok();
            let len = md.as_ref().map(|m| m.len()).unwrap_or(0);
            let mtime = md.and_then(|m| m.modified().ok());
            (p, len, mtime)
        })
        .collect()
}

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
}

/// Reads the directory, remembering each file's last fully read content.
#[derive(Debug, Default)]
pub struct Loader {
    last_good: BTreeMap<String, FileContent>,
    /// The last result per file with a hash of the text it came from: an edit re-parses only
    /// the files that changed (parsing dominates a reload of a large mesh).
    cache: BTreeMap<String, ([u8; 32], FileResult)>,
}

/// A file's content, or the errors that make it unreadable.
type FileResult = Result<FileContent, Vec<String>>;

impl Loader {
    /// Reads the whole directory now.
    pub fn load(&mut self, dir: &Path) -> Inputs {
        let mut resources = Vec::new();
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        let mut skipped = Vec::new();
        let mut unreadable = Vec::new();
        if !dir.is_dir() {
            errors.push(format!("{}: not a readable directory", dir.display()));
        }
        let mut seen = BTreeSet::new();
        for path in files(dir) {
            let name = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
            seen.insert(name.clone());
            let content = match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
                    match self.cache.get(&name) {
                        Some((h, r)) if *h == hash => r.clone(),
                        _ => {
                            let r = read_file(&text, &name);
                            self.cache.insert(name.clone(), (hash, r.clone()));
                            r
                        }
                    }
                }
                Err(e) => Err(vec![format!("{name}: cannot read: {e}")]),
            };
            let content = match content {
                Ok(c) => {
                    self.last_good.insert(name.clone(), c.clone());
                    c
                }
                Err(file_errors) => {
                    errors.extend(file_errors.iter().cloned());
                    let last = self.last_good.get(&name).cloned();
                    let summary: Vec<String> =
                        file_errors.iter().map(|e| e.strip_prefix(&format!("{name}: ")).unwrap_or(e).to_string()).collect();
                    unreadable.push(Unreadable { file: name.clone(), errors: summary, last_good: last.is_some() });
                    last.unwrap_or_default()
                }
            };
            resources.extend(content.resources);
            entries.extend(content.workloads);
            errors.extend(content.errors);
            skipped.extend(content.skipped);
        }
        // A deleted file is a deliberate removal: forget it.
        self.last_good.retain(|k, _| seen.contains(k));
        self.cache.retain(|k, _| seen.contains(k));
        let (registry, reg_errors) = Registry::build(entries);
        errors.extend(reg_errors.iter().map(|e| e.to_string()));
        let skipped = skipped.into_iter().filter(|s| !s.contains(&format!(": {} ", registry::KIND))).collect();
        Inputs { resources, registry, errors, skipped, unreadable }
    }
}

/// Reads the directory once, with no memory of earlier reads.
#[cfg(test)]
pub fn load(dir: &Path) -> Inputs {
    Loader::default().load(dir)
}

/// One file's content, or the errors that make it unreadable: errors with no object left to
/// fail closed on (a YAML syntax error, a document whose kind cannot be read).
fn read_file(text: &str, name: &str) -> FileResult {
    let parsed = parse_str(text, name);
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
    let (covered, orphan): (Vec<_>, Vec<_>) =
        parsed.errors.iter().partition(|e| e.object.as_ref().is_some_and(|o| invalid.contains(o)));
    if !orphan.is_empty() {
        return Err(orphan.iter().map(|e| e.to_string()).collect());
    }
    let mut content = FileContent {
        resources: parsed.resources,
        errors: covered.iter().map(|e| e.to_string()).collect(),
        skipped: parsed.skipped,
        ..Default::default()
    };
    for doc in documents(text) {
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
    let name = if o.metadata.name.is_empty() { "<unnamed>".to_string() } else { o.metadata.name.clone() };
    ObjectKey { kind: o.kind.clone(), namespace: o.metadata.namespace.clone(), name }.to_string()
}

/// JSON values of the documents of one file. Syntax errors are reported by the Istio parser
/// (which reads the same text); here a broken document is just not a Workload.
fn documents(text: &str) -> Vec<serde_json::Value> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(v) = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>().collect::<Result<Vec<_>, _>>() {
            return v;
        }
    }
    let mut chunks = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.starts_with("---") {
            chunks.push(String::new());
        }
        if let Some(last) = chunks.last_mut() {
            last.push_str(line);
        }
    }
    chunks
        .iter()
        // Only documents that can be a Workload are parsed a second time: the Istio parser has
        // read them all already, and YAML parsing dominates loading a large mesh.
        .filter(|c| c.contains(registry::KIND))
        .flat_map(|c| serde_saphyr::from_multiple::<serde_json::Value>(c).unwrap_or_default())
        .flat_map(|v| match v {
            // `kind: List` as kubectl writes it.
            serde_json::Value::Object(ref m) if m.get("kind").and_then(|k| k.as_str()) == Some("List") => {
                m.get("items").and_then(|i| i.as_array()).cloned().unwrap_or_default()
            }
            other => vec![other],
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn reads_workloads_and_reports_errors_without_dropping_the_rest() {
        let dir = std::env::temp_dir().join(format!("pg-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join("w.yaml"),
            "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: a, namespace: foo}\nspec: {serviceAccount: a}\n---\napiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: b, namespace: foo}\nspec: {serviceAccount: b, sidecar: maybe}\n",
        )
        .unwrap();
        std::fs::write(dir.join("sub/c.yml"), "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: c, namespace: bar}\nspec: {serviceAccount: c}\n").unwrap();
        std::fs::write(dir.join(".hidden.yaml"), "kind: [broken").unwrap();
        let inputs = load(&dir);
        let keys: Vec<String> = inputs.registry.workloads.keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, vec!["bar/c", "foo/a"]);
        assert!(inputs.errors.iter().any(|e| e.starts_with("w.yaml: Workload foo/b: spec.sidecar: ")), "{:?}", inputs.errors);
        assert!(inputs.skipped.iter().all(|s| !s.contains("Workload")), "{:?}", inputs.skipped);
        let _ = std::fs::remove_dir_all(&dir);
    }

    const DENY: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-sleep, namespace: foo}\nspec:\n  action: DENY\n  rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/sleep]}}]}]\n";
    const WORKLOAD: &str = "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: a, namespace: foo}\nspec: {serviceAccount: a}\n";

    fn deny_names(inputs: &Inputs) -> Vec<String> {
        inputs
            .resources
            .iter()
            .filter_map(|r| match r {
                Resource::AuthorizationPolicy(o) => Some(o.metadata.name.clone()),
                _ => None,
            })
            .collect()
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pg-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_broken_into_invalid_yaml_keeps_its_last_good_content() {
        let dir = tmp("lastgood");
        std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
        std::fs::write(dir.join("deny.yaml"), DENY).unwrap();
        let mut loader = Loader::default();
        let first = loader.load(&dir);
        assert_eq!(deny_names(&first), vec!["deny-sleep"]);
        assert!(first.unreadable.is_empty() && !first.hold_policy());

        // A syntax error: the parser cannot even tell the kind, so nothing is left of it.
        std::fs::write(dir.join("deny.yaml"), DENY.replace("action: DENY", "action: [DENY")).unwrap();
        assert!(deny_names(&load(&dir)).is_empty(), "without memory the DENY is gone: what this guards against");
        let broken = loader.load(&dir);
        assert_eq!(deny_names(&broken), vec!["deny-sleep"], "the last good DENY stays");
        assert_eq!(broken.unreadable.len(), 1);
        assert_eq!(broken.unreadable[0].file, "deny.yaml");
        assert!(broken.unreadable[0].last_good);
        assert!(!broken.hold_policy());
        assert!(broken.errors.iter().any(|e| e.starts_with("deny.yaml: invalid YAML")), "{:?}", broken.errors);
        assert!(broken.unreadable_summary()[0].contains("last successfully read content"));
        // Other files still update: a workload file breaking keeps its workloads too.
        std::fs::write(dir.join("w.yaml"), "kind: [").unwrap();
        let both = loader.load(&dir);
        assert!(both.registry.workloads.keys().any(|k| k.to_string() == "foo/a"));
        assert_eq!(both.unreadable.len(), 2);

        // Fixed: the new content is used; an edit that removes the DENY is honoured.
        std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
        std::fs::write(dir.join("deny.yaml"), DENY.replace("deny-sleep", "deny-other")).unwrap();
        let fixed = loader.load(&dir);
        assert_eq!(deny_names(&fixed), vec!["deny-other"]);
        assert!(fixed.unreadable.is_empty());
        // Deleting a file is deliberate: it is forgotten, and recreating it broken holds.
        std::fs::remove_file(dir.join("deny.yaml")).unwrap();
        assert!(deny_names(&loader.load(&dir)).is_empty());
        std::fs::write(dir.join("deny.yaml"), "kind: [").unwrap();
        let held = loader.load(&dir);
        assert!(held.hold_policy(), "a file never read successfully holds policy updates");
        assert!(!held.unreadable[0].last_good);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreadable_kind_on_first_start_holds_policy_but_invalid_objects_do_not() {
        let dir = tmp("first");
        std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
        // A document without a readable kind is unknown content, even if the YAML is fine.
        std::fs::write(dir.join("deny.yaml"), DENY.replace("kind: AuthorizationPolicy", "kidn: AuthorizationPolicy")).unwrap();
        let inputs = Loader::default().load(&dir);
        assert!(inputs.hold_policy());
        assert!(inputs.unreadable_summary()[0].starts_with("deny.yaml: unreadable (object 1 has no kind"), "{:?}", inputs.unreadable_summary());
        // A readable kind with an invalid field is kept as Invalid (compiled fail-closed).
        std::fs::write(dir.join("deny.yaml"), DENY.replace("action: DENY", "action: DENY\n  bogus: 1")).unwrap();
        let inputs = Loader::default().load(&dir);
        assert!(!inputs.hold_policy() && inputs.unreadable.is_empty());
        assert!(inputs.resources.iter().any(|r| matches!(r, Resource::Invalid(_))));
        assert!(!inputs.errors.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
