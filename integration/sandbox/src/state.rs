//! The sandbox state directory: settings, started processes, the resource store and the
//! config version.
//!
//! ```text
//! STATE/sandbox.json          settings of this sandbox (net, topology, wasm, envoy)
//! STATE/pids                  "<pid> <name>" per started process
//! STATE/resources/*.json      one file per object (kind-namespace-name), kubectl-apply style
//! STATE/version               the config version last written
//! STATE/certs/, STATE/envoy/<pod>/{bootstrap.json,lds/lds.json,cds/cds.json,envoy.log}
//! STATE/apps/<pod>.log
//! ```

use anyhow::{bail, Context as _};
use peerguard_filter::istio::parse::{parse_path, parse_str, Parsed};
use peerguard_filter::istio::Resource;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub net: u8,
    pub topology: Option<PathBuf>,
    pub wasm: Option<PathBuf>,
    pub envoy: PathBuf,
    #[serde(default = "default_chains")]
    pub chains: super::config::InboundChains,
    #[serde(default)]
    pub xds: XdsMode,
    /// The pods run in containers (`sandbox compose`) at `a.b.x.y`: the sandbox starts no
    /// app or sidecar itself, it configures and probes them over the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<[u8; 2]>,
    /// Istio's `meshConfig.pathNormalization` for every sidecar.
    #[serde(default)]
    pub path_normalization: peerguard_server::envoy_config::PathNormalization,
    /// `--decision-log-sample`: passed to `peerguard serve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_log: Option<peerguard_filter::schema::DecisionLog>,
}

impl Settings {
    /// The first two octets of every sandbox address (pods, `peerguard serve`).
    pub fn prefix(&self) -> [u8; 2] {
        self.containers.unwrap_or([127, self.net])
    }
}

/// Where the filter configuration and the certificates come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdsMode {
    /// Inline in the generated listener/cluster files (the sandbox's own CA).
    #[default]
    Files,
    /// ECDS and SDS from a `peerguard serve` the sandbox starts (its built-in CA).
    Serve,
}

fn default_chains() -> super::config::InboundChains {
    super::config::InboundChains::Filter
}

pub struct State {
    pub dir: PathBuf,
}

impl State {
    pub fn new(dir: PathBuf) -> Self {
        State { dir }
    }

    pub fn settings(&self) -> anyhow::Result<Settings> {
        let p = self.dir.join("sandbox.json");
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "{}: no sandbox here (run `peerguard sandbox up` first)",
                p.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{}: unreadable", p.display()))
    }

    pub fn save_settings(&self, s: &Settings) -> anyhow::Result<()> {
        write_atomic(
            &self.dir.join("sandbox.json"),
            &serde_json::to_string_pretty(s)?,
        )
    }

    pub fn resources_dir(&self) -> PathBuf {
        self.dir.join("resources")
    }

    pub fn pids_file(&self) -> PathBuf {
        self.dir.join("pids")
    }

    pub fn next_version(&self) -> anyhow::Result<u64> {
        let p = self.dir.join("version");
        let v = std::fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        write_atomic(&p, &v.to_string())?;
        Ok(v)
    }

    pub fn record_pid(&self, pid: u32, name: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.pids_file())
            .with_context(|| format!("opening {}", self.pids_file().display()))?;
        writeln!(f, "{pid} {name}").context("recording a pid")
    }

    pub fn pids(&self) -> Vec<(u32, String)> {
        std::fs::read_to_string(self.pids_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (pid, name) = l.split_once(' ')?;
                Some((pid.parse().ok()?, name.to_string()))
            })
            .collect()
    }

    /// The current resources (every object file, in name order).
    pub fn resources(&self) -> anyhow::Result<Vec<Resource>> {
        let dir = self.resources_dir();
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let parsed = parse_path(&dir);
        for e in &parsed.errors {
            // Files were validated by `apply`; an error here means someone edited the
            // store by hand. Report it; `compile` fails closed for invalid objects.
            eprintln!("warning: {e}");
        }
        Ok(parsed.resources)
    }

    /// The stored objects as they are now, for [`State::restore`].
    pub fn snapshot(&self) -> Vec<(PathBuf, String)> {
        std::fs::read_dir(self.resources_dir())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Puts the store back as it was at [`State::snapshot`].
    pub fn restore(&self, snapshot: &[(PathBuf, String)]) -> anyhow::Result<()> {
        for (path, _) in self.snapshot() {
            if !snapshot.iter().any(|(p, _)| p == &path) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
        for (path, text) in snapshot {
            write_atomic(path, text)?;
        }
        Ok(())
    }

    /// kubectl apply: every object of `file` replaces the stored object of the same kind,
    /// namespace and name. The whole file is refused if any object in it is invalid.
    pub fn apply(&self, file: &Path) -> anyhow::Result<Vec<String>> {
        let objects = read_objects(file, true)?;
        let dir = self.resources_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut done = Vec::new();
        for (key, mut value) in objects {
            let path = dir.join(format!("{}.json", key.file_stem()));
            // Keep the creation time of an object that already exists (Kubernetes does),
            // stamp new ones: "oldest wins" rules depend on it (spec 2.3).
            let existing_ts = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|v| v.pointer("/metadata/creationTimestamp").cloned());
            let ts = existing_ts.unwrap_or_else(|| Value::String(now_rfc3339()));
            if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.entry("creationTimestamp").or_insert(ts);
            }
            let verb = if path.exists() {
                "configured"
            } else {
                "created"
            };
            write_atomic(&path, &serde_json::to_string_pretty(&value)?)?;
            done.push(format!("{key} {verb}"));
        }
        Ok(done)
    }

    /// kubectl delete -f: removes the stored objects named in `file`.
    pub fn delete(&self, file: &Path) -> anyhow::Result<Vec<String>> {
        // Only names matter: an object that would not validate can still be deleted.
        let objects = read_objects(file, false)?;
        let mut done = Vec::new();
        for (key, _) in objects {
            let path = self
                .resources_dir()
                .join(format!("{}.json", key.file_stem()));
            match std::fs::remove_file(&path) {
                Ok(()) => done.push(format!("{key} deleted")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    done.push(format!("{key} not found"))
                }
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
        }
        Ok(done)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl Key {
    fn file_stem(&self) -> String {
        let clean = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        };
        format!(
            "{}-{}-{}",
            clean(&self.kind),
            clean(self.namespace.as_deref().unwrap_or("_cluster")),
            clean(&self.name)
        )
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

const CLUSTER_SCOPED: [&str; 1] = ["MeshPolicy"];

/// Validates `file` with peerguard's parser (refusing it on any error) and returns its
/// objects as written, keyed.
fn read_objects(file: &Path, validate: bool) -> anyhow::Result<Vec<(Key, Value)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.display().to_string();
    let parsed: Parsed = if validate {
        parse_str(&text, &name)
    } else {
        Parsed::default()
    };
    if !parsed.errors.is_empty() {
        let msgs: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
        bail!("refusing {name}, nothing applied:\n  {}", msgs.join("\n  "));
    }
    if !parsed.skipped.is_empty() {
        bail!(
            "refusing {name}, nothing applied: kinds the sandbox does not handle:\n  {}",
            parsed.skipped.join("\n  ")
        );
    }
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).with_context(|| format!("{name}: YAML"))?;
    let mut out = Vec::new();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let items = match doc.get("kind").and_then(Value::as_str) {
            Some("List") => doc
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            _ => vec![doc],
        };
        for mut item in items {
            let kind = item
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let name_ = item
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let namespace = if CLUSTER_SCOPED.contains(&kind.as_str()) {
                None
            } else {
                let ns = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string();
                if let Some(meta) = item.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("namespace".into(), Value::String(ns.clone()));
                }
                Some(ns)
            };
            out.push((
                Key {
                    kind,
                    namespace,
                    name: name_,
                },
                item,
            ));
        }
    }
    Ok(out)
}

pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_replaces_and_delete_removes() {
        let dir = std::env::temp_dir().join(format!("pg-sandbox-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = State::new(dir.clone());
        let f = dir.join("in.yaml");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&f, "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: httpbin, namespace: full}\nspec: {targets: [{name: httpbin}], peers: [{mtls: {}}]}\n").unwrap();
        assert_eq!(st.apply(&f).unwrap(), vec!["Policy full/httpbin created"]);
        std::fs::write(&f, "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: httpbin, namespace: full}\nspec: {targets: [{name: httpbin}]}\n").unwrap();
        assert_eq!(
            st.apply(&f).unwrap(),
            vec!["Policy full/httpbin configured"]
        );
        let r = st.resources().unwrap();
        assert_eq!(r.len(), 1);
        match &r[0] {
            Resource::LegacyPolicy(p) => assert!(p.spec.peers.is_empty()),
            other => panic!("{other:?}"),
        }
        std::fs::write(&f, "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x, namespace: full}\nspec: {mtls: {mode: NOPE}}\n").unwrap();
        assert!(st.apply(&f).is_err());
        assert_eq!(st.resources().unwrap().len(), 1);
        std::fs::write(&f, "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: httpbin, namespace: full}\nspec: {}\n").unwrap();
        assert_eq!(st.delete(&f).unwrap(), vec!["Policy full/httpbin deleted"]);
        assert!(st.resources().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
