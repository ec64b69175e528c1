//! Finding Envoy and the wasm module, and running one Envoy process for the lifetime of a
//! guard (killed on drop, so also on error and panic).

use anyhow::{bail, Context as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Envoy binary: `$PEERGUARD_ENVOY`, else `PEERGUARD_ENVOY=` in `.peerguard/env` (written
/// by `scripts/setup.sh`) of the current directory or one of its parents (or of this source
/// tree), else `envoy` on `PATH`.
pub fn find_envoy() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PEERGUARD_ENVOY").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("PEERGUARD_ENVOY={} does not exist", p.display());
    }
    for env_file in peerguard_env_files() {
        if let Ok(text) = std::fs::read_to_string(&env_file) {
            for line in text.lines() {
                if let Some(v) = line.trim().strip_prefix("PEERGUARD_ENVOY=") {
                    let p = PathBuf::from(v.trim().trim_matches('"').trim_matches('\''));
                    if p.is_file() {
                        return Ok(p);
                    }
                }
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("envoy");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "no Envoy binary: set PEERGUARD_ENVOY, run `bash scripts/setup.sh` (writes .peerguard/env), \
         or put `envoy` on PATH"
    )
}

/// The wasm module: `$PEERGUARD_WASM`, else `$CARGO_TARGET_DIR/peerguard.wasm` (what
/// `scripts/build-wasm.sh` writes), else `peerguard.wasm` in the target directory this
/// binary runs from, else `target/peerguard.wasm` of this source tree.
pub fn find_wasm() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PEERGUARD_WASM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("PEERGUARD_WASM={} does not exist", p.display());
    }
    let mut candidates = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(t).join("peerguard.wasm"));
    }
    // Next to the target dir this binary runs from (`<target>/debug/peerguard`).
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(3) {
            candidates.push(dir.join("peerguard.wasm"));
        }
    }
    candidates.push(source_root().join("target").join("peerguard.wasm"));
    candidates.dedup();
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "no wasm module (looked at {}): build it with `bash scripts/build-wasm.sh` or set PEERGUARD_WASM",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// The repository this binary was built from (the workspace root).
fn source_root() -> PathBuf {
    // This crate is `integration/harness/`.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn peerguard_env_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            out.push(dir.join(".peerguard").join("env"));
        }
    }
    out.push(source_root().join(".peerguard").join("env"));
    out
}

/// A temporary directory, removed on drop unless [`TempDir::keep`] was called (so that
/// Envoy's log survives a failed run).
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A running Envoy, killed when dropped.
pub struct EnvoyProcess {
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
}

impl EnvoyProcess {
    /// Starts `envoy -c <config>` with its log in `dir/envoy.log` and waits until the admin
    /// endpoint reports `/ready` (every listener bound), or fails with the log's tail.
    pub fn start(
        envoy: &Path,
        config: &Path,
        dir: &Path,
        extra_args: &[String],
        ready_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let log = dir.join("envoy.log");
        let admin_file = dir.join("admin-address");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .context("duplicating the log file handle")?;
        let level = std::env::var("PEERGUARD_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "warning".into());
        let child = Command::new(envoy)
            .arg("-c")
            .arg(config)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["--disable-hot-restart", "-l", &level])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("starting {}", envoy.display()))?;
        // From here on the guard owns the child: any early return kills it.
        let mut proc = EnvoyProcess {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let deadline = Instant::now() + ready_timeout;
        loop {
            if let Some(status) = proc.child.try_wait().context("waiting for Envoy")? {
                bail!(
                    "Envoy exited during startup ({status}); log {}:\n{}",
                    proc.log.display(),
                    proc.log_tail(40)
                );
            }
            if proc.admin.port() == 0 {
                if let Ok(text) = std::fs::read_to_string(&admin_file) {
                    if let Ok(addr) = text.trim().parse::<SocketAddr>() {
                        proc.admin = addr;
                    }
                }
            }
            if proc.admin.port() != 0
                && admin_get(proc.admin, "/ready").is_ok_and(|(s, _)| s == 200)
            {
                return Ok(proc);
            }
            if Instant::now() > deadline {
                bail!(
                    "Envoy not ready after {:?}; log {}:\n{}",
                    ready_timeout,
                    proc.log.display(),
                    proc.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The Envoy process id (for `/proc/<pid>/...`: CPU time and memory in the benchmark).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn admin_address(&self) -> SocketAddr {
        self.admin
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `GET` on the admin interface: (status, body).
    pub fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        admin_get(self.admin, path)
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `lines` lines of Envoy's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let r = crate::http1::get(addr, path)?;
    Ok((r.status, r.text()))
}
