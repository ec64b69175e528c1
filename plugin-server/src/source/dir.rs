//! The directory source (`--config-dir DIR`): every `.yaml`/`.yml`/`.json` file under the
//! directory, recursively ([`walk`](super::walk) says which, safely). Istio kinds go through
//! the filter's parser; peerguard's own `Workload` kind goes to the registry
//! ([`loader`](super::loader)).
//!
//! Watching: the tree is listed (one `stat` per file) when inotify reports an event and in
//! any case every `poll` interval: polling works on every filesystem (including bind mounts
//! and ConfigMap symlink swaps, where inotify misses changes); the events make an ordinary
//! edit visible at once. A changed file is read only once complete (see `watch`: closed by
//! its writer, or unchanged for `settle`), and a change is debounced: the tree must stay
//! unchanged for `debounce` before it is re-read, so an editor's write-rename sequence or a
//! `cp -r` gives one recompile.
//!
//! Listing and reading run on the blocking thread pool: a slow file system must not stall the
//! async runtime, and shutdown does not wait for them.

pub use super::loader::Loader;
use super::loader::{Pending, CHANGED_WHILE_READ};
use super::walk::{self, FileId, RootError, Stat, Walk};
use super::watch::{Settle, Writes};
use super::{Inputs, Source};
use peerguard_filter::istio::parse::YamlCost;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub struct DirSource {
    pub dir: PathBuf,
    pub poll: Duration,
    pub debounce: Duration,
    /// How long a file changed without a file event must stay unchanged before it is read.
    pub settle: Duration,
    /// Most all files together may expand to.
    pub total_budget: YamlCost,
}

/// What a look at the tree saw, per name: what decides whether to read it again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mark {
    Ready(Stat),
    Pending,
    Bad(String),
}

type Fingerprint = Result<BTreeMap<String, Mark>, String>;

struct Look {
    walked: Result<Walk, RootError>,
    pending: Pending,
    /// When a pending file settles.
    next: Option<Instant>,
    fingerprint: Fingerprint,
}

/// The state the blocking work needs, moved to the blocking pool and back.
struct Scanner {
    dir: PathBuf,
    loader: Loader,
    settle: Settle,
    writes: Arc<Writes>,
}

impl Scanner {
    fn look(&mut self) -> Look {
        let now = Instant::now();
        let walked = walk::walk(&self.dir);
        let (pending, next) = match &walked {
            Ok(w) => {
                self.writes.prune(w, now);
                self.settle.pending(w, &self.writes, now)
            }
            Err(_) => (Pending::new(), None),
        };
        let fingerprint = match &walked {
            Ok(w) => {
                let mut marks = BTreeMap::new();
                for e in &w.files {
                    marks.insert(
                        e.name.clone(),
                        if pending.contains_key(&e.name) {
                            Mark::Pending
                        } else {
                            Mark::Ready(e.stat)
                        },
                    );
                }
                for (name, why) in w.bad_files.iter().chain(&w.bad_dirs) {
                    marks.insert(name.clone(), Mark::Bad(why.clone()));
                }
                Ok(marks)
            }
            Err(e) => Err(e.to_string()),
        };
        Look {
            walked,
            pending,
            next,
            fingerprint,
        }
    }
}

/// Runs `f` on the blocking pool with the scanner; `None` if it panicked.
async fn blocking<T: Send + 'static>(
    mut scanner: Scanner,
    f: impl FnOnce(&mut Scanner) -> T + Send + 'static,
) -> Option<(Scanner, T)> {
    tokio::task::spawn_blocking(move || {
        let r = f(&mut scanner);
        (scanner, r)
    })
    .await
    .ok()
}

impl Source for DirSource {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    fn run(self: Box<Self>, out: mpsc::Sender<Arc<Inputs>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let wake = Arc::new(tokio::sync::Notify::new());
            let writes = Arc::new(Writes::default());
            let mut watched: Option<FileId> = None;
            // Kept for the life of the task: dropping it stops the event thread.
            let mut _watcher = None;
            let mut scanner = Scanner {
                dir: self.dir.clone(),
                loader: Loader::new(self.total_budget),
                settle: Settle::new(self.settle),
                writes: writes.clone(),
            };
            let mut applied: Option<Fingerprint> = None;
            let mut first = true;
            loop {
                let Some((s, mut look)) = blocking(scanner, Scanner::look).await else {
                    return stopped();
                };
                scanner = s;
                // (Re)establish the watch when the directory appears or is replaced.
                let root = look.walked.as_ref().ok().and_then(|w| w.root);
                if root.is_some() && root != watched {
                    // Setting up a recursive watch walks the tree: not on the async threads.
                    let (dir, wake, writes) = (self.dir.clone(), wake.clone(), writes.clone());
                    _watcher =
                        tokio::task::spawn_blocking(move || watch_events(&dir, wake, writes))
                            .await
                            .ok()
                            .flatten();
                    watched = root;
                }
                let mut next = look.next;
                if applied.as_ref() != Some(&look.fingerprint) {
                    // Debounce: wait until the tree is quiet (not before the first read).
                    if !first {
                        loop {
                            tokio::time::sleep(self.debounce).await;
                            let Some((s, again)) = blocking(scanner, Scanner::look).await else {
                                return stopped();
                            };
                            scanner = s;
                            let quiet = again.fingerprint == look.fingerprint;
                            look = again;
                            if quiet {
                                break;
                            }
                        }
                        tracing::info!(dir = %self.dir.display(), "configuration changed, reloading");
                    }
                    first = false;
                    next = look.next;
                    let Look {
                        walked,
                        pending,
                        fingerprint,
                        ..
                    } = look;
                    let Some((s, inputs)) =
                        blocking(scanner, move |s| s.loader.load_listed(&walked, &pending)).await
                    else {
                        return stopped();
                    };
                    scanner = s;
                    // A file that changed while being read is read again at the next look.
                    let changed_while_read = inputs
                        .pending
                        .iter()
                        .any(|p| p.contains(CHANGED_WHILE_READ));
                    applied = (!changed_while_read).then_some(fingerprint);
                    if out.send(Arc::new(inputs)).await.is_err() {
                        return;
                    }
                }
                let wait = next
                    .map(|n| n.saturating_duration_since(Instant::now()))
                    .unwrap_or(self.poll)
                    .min(self.poll);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wake.notified() => {}
                }
            }
        })
    }
}

fn stopped() {
    tracing::error!("the configuration reader stopped unexpectedly; no further changes are read");
}

/// inotify (through `notify`) records writes (see `watch`) and wakes the poll loop at once on
/// a change; the listing still decides whether anything changed, and polling remains the
/// fallback where events do not arrive (bind mounts, network file systems) or the watch
/// cannot be set up.
fn watch_events(
    dir: &Path,
    wake: Arc<tokio::sync::Notify>,
    writes: Arc<Writes>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            if writes.handle(&ev) {
                wake.notify_one();
            }
        }
        Err(e) => tracing::warn!("file events: {e}"),
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

#[cfg(test)]
#[path = "dir_tests.rs"]
mod tests;
