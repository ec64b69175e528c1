//! The directory source (`--config-dir DIR`): every `.yaml`/`.yml`/`.json` file under the
//! directory, recursively. Istio kinds go through the filter's parser; peerguard's own
//! `Workload` kind goes to the registry.
//!
//! Watching is by polling a fingerprint (path, size, mtime) of the tree: it works on every
//! filesystem (including bind mounts and ConfigMap symlink swaps, where inotify misses
//! changes) and costs one `stat` per file per interval. A change is debounced: the tree must
//! stay unchanged for `debounce` before it is re-read, so an editor's write-rename sequence
//! or a `cp -r` gives one recompile.

use super::{Inputs, Source};
use crate::registry::{self, Registry};
use peerguard_filter::istio::parse::{parse_str, Parsed};
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
            let mut last = fingerprint(&self.dir);
            if out.send(Arc::new(load(&self.dir))).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(self.poll).await;
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
                if out.send(Arc::new(load(&self.dir))).await.is_err() {
                    return;
                }
            }
        })
    }
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

/// Reads the whole directory now.
pub fn load(dir: &Path) -> Inputs {
    let mut parsed = Parsed::default();
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    if !dir.is_dir() {
        errors.push(format!("{}: not a readable directory", dir.display()));
    }
    for path in files(dir) {
        let name = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{name}: cannot read: {e}"));
                continue;
            }
        };
        parsed.extend(parse_str(&text, &name));
        for doc in documents(&text) {
            if registry::is_workload(&doc) {
                match registry::parse_workload(&doc, &name) {
                    Ok(e) => entries.push(e),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
    }
    let (registry, reg_errors) = Registry::build(entries);
    errors.extend(parsed.errors.iter().map(|e| e.to_string()));
    errors.extend(reg_errors.iter().map(|e| e.to_string()));
    let skipped = parsed
        .skipped
        .into_iter()
        .filter(|s| !s.contains(&format!(": {} ", registry::KIND)))
        .collect();
    Inputs { resources: parsed.resources, registry, errors, skipped }
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
}
