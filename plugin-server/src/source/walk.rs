//! Listing and reading the config directory without trusting what is in it.
//!
//! - Directories are entered at most once, by device and inode: a symlink loop (`a -> .`) or
//!   two links to one directory cannot repeat files or recurse without end, and depth is
//!   bounded ([`MAX_DEPTH`]).
//! - Files are read at most once, by device and inode: a file reached through two names is
//!   one file (under the first name in sorted order), not two definitions of every object.
//! - Only regular files are opened. Type is checked before opening (a FIFO would block
//!   `open` until a writer appears; a device could be read forever), again on the opened file
//!   (the name may have been swapped in between), and the open is non-blocking anyway.
//! - Reads are bounded ([`MAX_FILE_BYTES`]) and checked for a concurrent write (size, mtime
//!   and ctime before and after).
//!
//! Symlinks to files and directories are followed (ConfigMap volumes are made of them).

use peerguard_filter::istio::parse::MAX_FILE_BYTES;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Deepest directory level read below the config directory.
pub const MAX_DEPTH: usize = 16;

/// Identity of a file or directory: what a symlink resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// What changes when a file is written: identity, size, modification and change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub id: FileId,
    pub len: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Stat {
    pub fn of(md: &std::fs::Metadata) -> Stat {
        Stat {
            id: FileId {
                dev: md.dev(),
                ino: md.ino(),
            },
            len: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }

    /// The later of mtime and ctime (ctime also moves on rename and chmod).
    pub fn changed_at(&self) -> std::time::SystemTime {
        let (s, ns) = self.mtime.max(self.ctime);
        let secs = u64::try_from(s).unwrap_or(0);
        let nanos = u32::try_from(ns).unwrap_or(0).min(999_999_999);
        std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos)
    }
}

/// A config file found by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    /// Relative to the config directory, `/`-separated: how messages name it.
    pub name: String,
    pub stat: Stat,
}

/// Everything one walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// The config directory itself: a new one (removed and created again) needs a new watch.
    pub root: Option<FileId>,
    /// Regular files with a config extension, by name, each file once.
    pub files: Vec<Entry>,
    /// Config-named entries that cannot be read as files, with why: a dangling symlink, a
    /// FIFO, a socket, a device, a `stat` error.
    pub bad_files: BTreeMap<String, String>,
    /// Directories whose content is unknown (cannot be listed, too deep), with why.
    pub bad_dirs: BTreeMap<String, String>,
    /// Names not read because they are a file or directory already read under another name.
    pub aliases: Vec<String>,
}

/// Why the config directory itself cannot be walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config directory {dir}: {reason}")]
pub struct RootError {
    pub dir: String,
    pub reason: String,
}

pub fn is_config_name(name: &str) -> bool {
    matches!(
        Path::new(name).extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// [`walk`], or for a regular file a walk that lists just that file (the one-shot commands
/// accept `--config FILE` as well as a directory).
pub fn walk_path(path: &Path) -> Result<Walk, RootError> {
    match std::fs::metadata(path) {
        Ok(md) if md.is_file() => Ok(Walk {
            root: None,
            files: vec![Entry {
                path: path.to_path_buf(),
                name: path.display().to_string(),
                stat: Stat::of(&md),
            }],
            ..Walk::default()
        }),
        _ => walk(path),
    }
}

/// Lists the config files under `dir` (see the module comment for the rules).
pub fn walk(dir: &Path) -> Result<Walk, RootError> {
    let root_error = |reason: String| RootError {
        dir: dir.display().to_string(),
        reason,
    };
    let root = std::fs::metadata(dir).map_err(|e| root_error(describe_io(&e)))?;
    if !root.is_dir() {
        return Err(root_error("not a directory".into()));
    }
    let mut out = Walk {
        root: Some(Stat::of(&root).id),
        ..Walk::default()
    };
    let mut dirs_seen = BTreeSet::from([Stat::of(&root).id]);
    let mut found: Vec<Entry> = Vec::new();
    // (path, name relative to `dir`, depth); names sort the result, so order here is free.
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
    while let Some((path, prefix, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) => {
                // The root failing here (removed between the stat and now) is a root error.
                if prefix.is_empty() {
                    return Err(root_error(describe_io(&e)));
                }
                out.bad_dirs
                    .insert(prefix, format!("cannot list: {}", describe_io(&e)));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let name = if prefix.is_empty() {
                        ".".to_string()
                    } else {
                        prefix.clone()
                    };
                    out.bad_dirs
                        .insert(name, format!("cannot list: {}", describe_io(&e)));
                    continue;
                }
            };
            let file_name = entry.file_name().to_string_lossy().to_string();
            // Hidden entries are skipped: editors' temporaries (`.x.swp`) and a ConfigMap
            // volume's `..data` (its files are also linked at the top level).
            if file_name.starts_with('.') {
                continue;
            }
            let name = join(&prefix, &file_name);
            let p = entry.path();
            // Follows symlinks; never opens anything.
            let md = match std::fs::metadata(&p) {
                Ok(md) => md,
                Err(e) => {
                    if is_config_name(&file_name) {
                        let why = if p
                            .symlink_metadata()
                            .is_ok_and(|m| m.file_type().is_symlink())
                        {
                            format!("dangling symlink ({})", describe_io(&e))
                        } else {
                            describe_io(&e)
                        };
                        out.bad_files.insert(name, format!("cannot read: {why}"));
                    }
                    continue;
                }
            };
            let stat = Stat::of(&md);
            if md.is_dir() {
                if !dirs_seen.insert(stat.id) {
                    out.aliases.push(format!("{name}/"));
                } else if depth + 1 > MAX_DEPTH {
                    out.bad_dirs.insert(
                        name,
                        format!(
                            "deeper than {MAX_DEPTH} levels below the config directory: not read"
                        ),
                    );
                } else {
                    stack.push((p, name, depth + 1));
                }
            } else if is_config_name(&file_name) {
                if md.is_file() {
                    found.push(Entry {
                        path: p,
                        name,
                        stat,
                    });
                } else {
                    out.bad_files.insert(
                        name,
                        format!("not a regular file ({}): not read", kind_of(&md)),
                    );
                }
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    let mut files_seen = BTreeMap::new();
    for e in found {
        match files_seen.get(&e.stat.id) {
            Some(first) => out
                .aliases
                .push(format!("{} (same file as {first})", e.name)),
            None => {
                files_seen.insert(e.stat.id, e.name.clone());
                out.files.push(e);
            }
        }
    }
    Ok(out)
}

fn kind_of(md: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// What reading a listed file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRead {
    Text(String),
    /// Cannot be read (or is over the size cap): the message says why.
    Unreadable(String),
    /// It changed between the listing and the end of the read: being written.
    Changed,
}

/// Reads `entry`, if it is still the regular file the walk listed and nobody writes it
/// meanwhile.
pub fn read(entry: &Entry) -> FileRead {
    // O_NONBLOCK: if the name became a FIFO since the walk, `open` returns at once instead of
    // waiting for a writer. O_NOCTTY: a terminal device never becomes our controlling tty.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&entry.path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return FileRead::Changed,
        Err(e) => return FileRead::Unreadable(format!("cannot read: {}", describe_io(&e))),
    };
    let before = match file.metadata() {
        Ok(md) if md.is_file() => Stat::of(&md),
        Ok(_) => return FileRead::Changed,
        Err(e) => return FileRead::Unreadable(format!("cannot read: {}", describe_io(&e))),
    };
    if before != entry.stat {
        return FileRead::Changed;
    }
    if before.len > MAX_FILE_BYTES as u64 {
        return FileRead::Unreadable(format!(
            "over the per-file budget: {} bytes, more than the limit of {MAX_FILE_BYTES} bytes",
            before.len
        ));
    }
    let mut bytes = Vec::new();
    // One byte more than the cap tells a file that grew past it.
    if let Err(e) = (&file)
        .take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
    {
        return FileRead::Unreadable(format!("cannot read: {}", describe_io(&e)));
    }
    match file.metadata() {
        Ok(md) if Stat::of(&md) == before && bytes.len() as u64 == before.len => {}
        _ => return FileRead::Changed,
    }
    match String::from_utf8(bytes) {
        Ok(text) => FileRead::Text(text),
        Err(e) => FileRead::Unreadable(format!("not UTF-8 text: {e}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pg-walk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(w: &Walk) -> Vec<&str> {
        w.files.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn symlink_loops_and_aliases_are_read_once() {
        let dir = tmp("loops");
        std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        std::fs::write(dir.join("w.yaml"), "a: 1\n").unwrap();
        std::fs::write(dir.join("sub/deeper/p.yaml"), "b: 1\n").unwrap();
        // Two loops (one to the root, one to a parent) and a second name for a file.
        symlink(".", dir.join("loop")).unwrap();
        symlink("..", dir.join("sub/deeper/up")).unwrap();
        symlink("w.yaml", dir.join("z-link.yaml")).unwrap();
        let w = walk(&dir).unwrap();
        assert_eq!(names(&w), vec!["sub/deeper/p.yaml", "w.yaml"]);
        assert!(
            w.aliases
                .iter()
                .any(|a| a == "z-link.yaml (same file as w.yaml)"),
            "{:?}",
            w.aliases
        );
        assert!(w.aliases.iter().any(|a| a == "loop/"), "{:?}", w.aliases);
        assert!(w.bad_files.is_empty() && w.bad_dirs.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn depth_is_bounded() {
        let dir = tmp("depth");
        let mut d = dir.clone();
        for i in 0..(MAX_DEPTH + 2) {
            d = d.join(format!("d{i}"));
        }
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("deep.yaml"), "a: 1\n").unwrap();
        let w = walk(&dir).unwrap();
        assert!(w.files.is_empty());
        assert_eq!(w.bad_dirs.len(), 1, "{:?}", w.bad_dirs);
        assert!(w
            .bad_dirs
            .values()
            .all(|v| v.contains("deeper than 16 levels")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fifos_and_dangling_links_are_reported_never_opened() {
        let dir = tmp("special");
        let fifo = dir.join("pipe.yaml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo does not retain it.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        symlink("missing.yaml", dir.join("dangling.yaml")).unwrap();
        std::fs::write(dir.join("ok.yaml"), "a: 1\n").unwrap();
        // Would block forever if the walk or the read opened the FIFO.
        let w = walk(&dir).unwrap();
        assert_eq!(names(&w), vec!["ok.yaml"]);
        assert_eq!(
            w.bad_files.get("pipe.yaml").map(String::as_str),
            Some("not a regular file (a FIFO): not read")
        );
        assert!(
            w.bad_files
                .get("dangling.yaml")
                .is_some_and(|m| m.starts_with("cannot read: dangling symlink")),
            "{:?}",
            w.bad_files
        );
        // A name swapped for a FIFO after the walk: the read does not block either.
        let mut entry = w.files[0].clone();
        entry.path = fifo;
        assert_eq!(read(&entry), FileRead::Changed);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_are_bounded_and_notice_writes() {
        let dir = tmp("read");
        std::fs::write(dir.join("a.yaml"), "a: 1\n").unwrap();
        let w = walk(&dir).unwrap();
        assert_eq!(read(&w.files[0]), FileRead::Text("a: 1\n".into()));
        std::fs::write(dir.join("a.yaml"), "a: 12\n").unwrap();
        assert_eq!(
            read(&w.files[0]),
            FileRead::Changed,
            "written since the walk"
        );
        let big = std::fs::File::create(dir.join("big.yaml")).unwrap();
        big.set_len(MAX_FILE_BYTES as u64 + 1).unwrap();
        let w = walk(&dir).unwrap();
        let e = w.files.iter().find(|e| e.name == "big.yaml").unwrap();
        assert!(
            matches!(read(e), FileRead::Unreadable(m) if m.starts_with("over the per-file budget"))
        );
        assert!(
            matches!(walk(&dir.join("nope")), Err(RootError { reason, .. }) if reason == "does not exist")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
