//! When a changed file may be read: never in the middle of a write.
//!
//! A writer that truncates a file and writes it again (`cat new > deny.yaml`, most editors
//! without "atomic save", `kubectl cp`), or that pauses mid-file, leaves a shorter file on
//! disk for a while: read then, a DENY would be empty or narrower, a window of wider access.
//! So a changed file is read only once it is complete:
//!
//! - With file events (inotify): a file written to (`IN_MODIFY`) is *being written* until its
//!   writer closes it (`IN_CLOSE_WRITE`), however long the writer pauses. Its content at the
//!   close is *committed*: read at once. A file renamed into place (`IN_MOVED_TO`, the atomic
//!   save editors and ConfigMap volumes use) was closed under its temporary name, and is
//!   committed by that close (files are tracked by device and inode, not by name).
//! - Without events for a change (polling fallback: bind mounts, network file systems, a
//!   watch that could not be set up, an event queue overflow): a changed file is read once
//!   it has not changed for the settle period (`--settle`), judged by our own observations
//!   and the file's mtime/ctime.
//!
//! Until then the file's last fully read content stands in for it (a new file is left out).
//! Limits: a writer that closes the file half-written and reopens it later (two separate
//! writes), or a file system without events whose writer pauses longer than the settle
//! period, still shows the intermediate content; a deletion is a deliberate change and
//! applies at once. See plugin-server/README.md.

use super::walk::{FileId, Stat, Walk};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How long a tracked file that is no longer listed is remembered (a temporary file
/// renamed into place after its close).
const FORGET_UNLISTED: Duration = Duration::from_secs(60);

/// Writes seen through file events, shared with the event thread.
#[derive(Debug, Default)]
pub struct Writes {
    state: Mutex<WriteState>,
}

#[derive(Debug, Default)]
struct WriteState {
    /// Written to and not closed since, with the path it was written through and when.
    open: HashMap<FileId, (PathBuf, Instant)>,
    /// The file as its writer closed it.
    closed: HashMap<FileId, (Stat, Instant)>,
}

fn stat(path: &Path) -> Option<Stat> {
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| Stat::of(&m))
}

impl Writes {
    /// Takes one file event; returns whether it may change what is read (the poll loop is
    /// woken for those).
    pub fn handle(&self, ev: &notify::Event) -> bool {
        use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
        use notify::EventKind;
        let Ok(mut st) = self.state.lock() else {
            return true;
        };
        if ev.need_rescan() {
            // Events were lost: nothing is known about who writes what; every change now
            // needs the settle period.
            tracing::warn!("file events lost (queue overflow): falling back to the settle period for changed files");
            st.open.clear();
            st.closed.clear();
            return true;
        }
        let now = Instant::now();
        match ev.kind {
            EventKind::Modify(ModifyKind::Data(_)) => {
                for p in &ev.paths {
                    if let Some(s) = stat(p) {
                        st.closed.remove(&s.id);
                        st.open.insert(s.id, (p.clone(), now));
                    }
                }
                // Nothing to read until the close.
                false
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for p in &ev.paths {
                    if let Some(s) = stat(p) {
                        st.open.remove(&s.id);
                        st.closed.insert(s.id, (s, now));
                    }
                }
                true
            }
            EventKind::Access(_) => false,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                st.open.retain(|_, (path, _)| !ev.paths.contains(path));
                true
            }
            _ => true,
        }
    }

    /// Since when `id` is being written, if it is.
    pub fn writing_since(&self, id: &FileId) -> Option<Instant> {
        self.state.lock().ok()?.open.get(id).map(|(_, t)| *t)
    }

    /// Whether the file is what its writer left at its last close. (Not ctime: a rename
    /// into place moves it, the content stays.)
    pub fn committed(&self, stat: &Stat) -> bool {
        let same = |s: &Stat| s.len == stat.len && s.mtime == stat.mtime;
        self.state
            .lock()
            .ok()
            .and_then(|st| st.closed.get(&stat.id).map(|(s, _)| same(s)))
            .unwrap_or(false)
    }

    /// Forgets files that are not listed and have not been written to for a while.
    pub fn prune(&self, walk: &Walk, now: Instant) {
        let listed: std::collections::HashSet<FileId> =
            walk.files.iter().map(|e| e.stat.id).collect();
        if let Ok(mut st) = self.state.lock() {
            let keep = |id: &FileId, t: &Instant| {
                listed.contains(id) || now.duration_since(*t) < FORGET_UNLISTED
            };
            st.open.retain(|id, (_, t)| keep(id, t));
            st.closed.retain(|id, (_, t)| keep(id, t));
        }
    }
}

/// Per file: the stat last observed and since when (by our clock) it is unchanged.
#[derive(Debug)]
pub struct Settle {
    period: Duration,
    seen: HashMap<String, (Stat, Instant)>,
}

impl Settle {
    pub fn new(period: Duration) -> Settle {
        Settle {
            period,
            seen: HashMap::new(),
        }
    }

    /// The listed files not to be read now, with why, and the latest time to look again
    /// (when the next of them settles).
    pub fn pending(
        &mut self,
        walk: &Walk,
        writes: &Writes,
        now: Instant,
    ) -> (BTreeMap<String, String>, Option<Instant>) {
        let mut pending = BTreeMap::new();
        let mut next: Option<Instant> = None;
        let wall = SystemTime::now();
        for e in &walk.files {
            let since = match self.seen.get(&e.name) {
                Some((s, t)) if *s == e.stat => *t,
                _ => {
                    // First seen in this state: it has been so at least since we look, and
                    // for as long as its own times say (a file untouched for an hour is not
                    // "just changed" because the server just started).
                    let age = wall.duration_since(e.stat.changed_at()).unwrap_or_default();
                    let t = now.checked_sub(age.min(self.period)).unwrap_or(now);
                    self.seen.insert(e.name.clone(), (e.stat, t));
                    t
                }
            };
            if let Some(t) = writes.writing_since(&e.stat.id) {
                pending.insert(
                    e.name.clone(),
                    format!(
                        "being written (open for writing for {:.1}s)",
                        now.duration_since(t).as_secs_f64()
                    ),
                );
            } else if writes.committed(&e.stat) {
                // Closed by its writer as it is now: complete.
            } else if now.duration_since(since) < self.period {
                let at = since + self.period;
                next = Some(next.map_or(at, |n| n.min(at)));
                pending.insert(
                    e.name.clone(),
                    format!(
                        "changed {}ms ago; read once unchanged for {}ms",
                        now.duration_since(since).as_millis(),
                        self.period.as_millis()
                    ),
                );
            }
        }
        self.seen
            .retain(|name, _| walk.files.iter().any(|e| &e.name == name));
        (pending, next)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, DataChange, ModifyKind};
    use notify::{Event, EventKind};
    use std::io::Write;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pg-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn modify(p: &Path) -> Event {
        Event::new(EventKind::Modify(ModifyKind::Data(DataChange::Any))).add_path(p.to_path_buf())
    }

    fn close(p: &Path) -> Event {
        Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)))
            .add_path(p.to_path_buf())
    }

    #[test]
    fn a_file_open_for_writing_is_pending_until_closed_however_long() {
        let dir = tmp("open");
        let p = dir.join("deny.yaml");
        std::fs::write(&p, "old\n").unwrap();
        let writes = Writes::default();
        let mut settle = Settle::new(Duration::from_millis(100));
        let t0 = Instant::now();
        // Written just now without an event seen: read once unchanged for the period.
        let walk = super::super::walk::walk(&dir).unwrap();
        assert!(settle
            .pending(&walk, &writes, t0)
            .0
            .contains_key("deny.yaml"));
        assert!(settle
            .pending(&walk, &writes, t0 + Duration::from_millis(100))
            .0
            .is_empty());

        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.write_all(b"half").unwrap();
        assert!(!writes.handle(&modify(&p)), "a write alone wakes nobody");
        let walk = super::super::walk::walk(&dir).unwrap();
        let later = t0 + Duration::from_secs(3600);
        let (pending, _) = settle.pending(&walk, &writes, later);
        assert!(
            pending
                .get("deny.yaml")
                .is_some_and(|r| r.starts_with("being written")),
            "{pending:?}"
        );

        f.write_all(b" and the rest\n").unwrap();
        drop(f);
        assert!(writes.handle(&close(&p)));
        let walk = super::super::walk::walk(&dir).unwrap();
        assert!(
            settle.pending(&walk, &writes, later).0.is_empty(),
            "committed by the close: read at once"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_events_a_change_waits_for_the_settle_period() {
        let dir = tmp("settle");
        let p = dir.join("deny.yaml");
        std::fs::write(&p, "v1\n").unwrap();
        let writes = Writes::default();
        let period = Duration::from_secs(2);
        let mut settle = Settle::new(period);
        let t0 = Instant::now();
        let walk = super::super::walk::walk(&dir).unwrap();
        // Written just now, no close seen: wait.
        let (pending, next) = settle.pending(&walk, &writes, t0);
        assert!(
            pending
                .get("deny.yaml")
                .is_some_and(|r| r.starts_with("changed ")),
            "{pending:?}"
        );
        assert!(next.is_some_and(|n| n <= t0 + period));
        assert!(settle
            .pending(&walk, &writes, t0 + period / 2)
            .0
            .contains_key("deny.yaml"));
        assert!(
            settle.pending(&walk, &writes, t0 + period).0.is_empty(),
            "unchanged for the period"
        );
        // Another change restarts the period.
        std::fs::write(&p, "v2, longer\n").unwrap();
        let walk = super::super::walk::walk(&dir).unwrap();
        assert!(settle
            .pending(&walk, &writes, t0 + period * 2)
            .0
            .contains_key("deny.yaml"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_rename_into_place_is_committed_by_the_close_of_the_temporary() {
        let dir = tmp("rename");
        let tmp_file = dir.join(".deny.yaml.tmp");
        std::fs::write(&tmp_file, "new\n").unwrap();
        let writes = Writes::default();
        writes.handle(&modify(&tmp_file));
        writes.handle(&close(&tmp_file));
        std::fs::rename(&tmp_file, dir.join("deny.yaml")).unwrap();
        let walk = super::super::walk::walk(&dir).unwrap();
        let mut settle = Settle::new(Duration::from_secs(3600));
        assert!(settle.pending(&walk, &writes, Instant::now()).0.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
