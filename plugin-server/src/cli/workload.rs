//! The mesh the one-shot commands (`explain`, `compile`, `describe`, `analyze`, …) read, and
//! the workload they look at — read exactly as `serve` reads them, so the answers are the ones
//! `serve` enforces:
//!
//! - `--config PATH` (a directory, read with the same loader as `serve --config-dir`, or one
//!   file) or `--source kubernetes` (one complete list of the same kinds `serve` watches);
//! - the workload registry from the same place: `--workload ns/name` alone is enough for a
//!   registered workload (its labels, service account and service ports come from there);
//!   an unregistered one is described by `--labels`, `--service-account`, `--services`;
//! - the policy is compiled from the resources scoped to the workload's namespace, as `serve`
//!   compiles it ([`crate::serve::build::scoped`]).

use crate::registry::WorkloadKey;
use crate::serve::build::scoped;
use crate::serve::SourceKind;
use crate::source::kube::KubeSource;
use crate::source::loader::Loader;
use crate::source::{Fallback, Inputs, Source};
use anyhow::{bail, Context};
use peerguard_filter::compile::{compile, MeshConfig, Workload};
use peerguard_filter::WorkloadPolicy;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the mesh's resources come from, and the mesh-wide settings (`meshConfig`).
#[derive(clap::Args, Debug, Clone)]
pub struct MeshArgs {
    /// File or directory of Istio resources and peerguard `Workload`s (YAML/JSON), read as
    /// `serve --config-dir` reads it. Required with `--source directory`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where resources come from: `directory` (`--config`) or `kubernetes` (the cluster the
    /// kubeconfig names: the mesh CRDs, Pods, Services and Namespaces, listed once).
    #[arg(long, value_enum, default_value = "directory")]
    pub source: SourceKind,
    /// `--source kubernetes`: the kubeconfig (default: in-cluster, then `$KUBECONFIG`, then
    /// `~/.kube/config`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// `meshConfig.trustDomainAliases` (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub trust_domain_alias: Vec<String>,
    #[arg(long, default_value = "istio-system")]
    pub root_namespace: String,
    /// `meshConfig.pathNormalization`: NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES
    /// (must match the connection manager in front of the filter).
    #[arg(long, default_value = "BASE")]
    pub path_normalization: peerguard_filter::schema::PathNormalization,
    /// Proxies in front of the workload that append to X-Forwarded-For
    /// (`numTrustedProxies`): `remoteIpBlocks`/`remote.ip` use the address that many hops
    /// from the right; 0 means the direct peer.
    #[arg(long, default_value_t = 0)]
    pub num_trusted_proxies: u32,
}

/// The arguments that name a workload and the mesh it lives in.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkloadArgs {
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// The server workload, `namespace/name`.
    #[arg(long)]
    pub workload: String,
    /// Labels of a workload the registry does not know, `k=v,k2=v2`.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Service account of a workload the registry does not know (default `default`).
    #[arg(long)]
    pub service_account: Option<String>,
    /// Services (in the workload namespace) that select a workload the registry does not
    /// know, for legacy Policy targets.
    #[arg(long, value_delimiter = ',')]
    pub services: Vec<String>,
}

/// A mesh as read once from its source.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub inputs: Inputs,
    pub config: MeshConfig,
    /// `directory PATH` or `kubernetes`, for messages.
    pub origin: String,
}

/// The workload a command looks at, and where its description came from.
#[derive(Debug, Clone)]
pub struct Target {
    pub workload: Workload,
    /// `Some(file or apiserver object)` when the registry knows it.
    pub registered: Option<String>,
    /// Whether it runs a sidecar (from the registry; `true` for an unregistered one).
    pub sidecar: bool,
}

pub(crate) fn pair(v: &str, what: &str) -> anyhow::Result<(String, String)> {
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
        _ => bail!("--{what} {v:?}: expected key=value"),
    }
}

fn non_empty(v: &[String]) -> Vec<String> {
    v.iter().filter(|s| !s.is_empty()).cloned().collect()
}

/// How long `--source kubernetes` waits for the first complete list.
const KUBE_LIST_TIMEOUT: Duration = Duration::from_secs(30);

impl MeshArgs {
    pub fn mesh_config(&self) -> MeshConfig {
        MeshConfig {
            trust_domain: self.trust_domain.clone(),
            trust_domain_aliases: non_empty(&self.trust_domain_alias),
            root_namespace: self.root_namespace.clone(),
            path_normalization: self.path_normalization,
            num_trusted_proxies: self.num_trusted_proxies,
        }
    }

    /// Reads the mesh. An unreadable source (no such directory, no cluster) is an error;
    /// invalid objects and unreadable files are in [`Mesh::inputs`] for the caller to report.
    pub fn load(&self) -> anyhow::Result<Mesh> {
        let (inputs, origin) = match (self.source, &self.config) {
            (SourceKind::Directory, Some(path)) => {
                std::fs::metadata(path).with_context(|| format!("--config {}", path.display()))?;
                let inputs = Loader::default().load_path(path);
                if let Some(why) = &inputs.source_missing {
                    bail!("--config {}: {why}", path.display());
                }
                (inputs, format!("directory {}", path.display()))
            }
            (SourceKind::Directory, None) => {
                bail!("--config is required (or --source kubernetes)")
            }
            (SourceKind::Kubernetes, Some(_)) => {
                bail!("--config and --source kubernetes exclude each other")
            }
            (SourceKind::Kubernetes, None) => {
                (list_cluster(self.kubeconfig.clone())?, "kubernetes".into())
            }
        };
        Ok(Mesh {
            inputs,
            config: self.mesh_config(),
            origin,
        })
    }
}

/// One complete list of everything `serve --source kubernetes` watches (nothing is written
/// to the cluster).
fn list_cluster(kubeconfig: Option<PathBuf>) -> anyhow::Result<Inputs> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        // Fail fast on a missing kubeconfig or an unreachable server: the source itself
        // retries forever, as `serve` must.
        let client = crate::source::kube::client(kubeconfig.as_deref())
            .await
            .context("kubernetes client")?;
        tokio::time::timeout(KUBE_LIST_TIMEOUT, client.apiserver_version())
            .await
            .context("the Kubernetes API server does not answer")?
            .context("the Kubernetes API server")?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Inputs>>(1);
        let source = Box::new(KubeSource {
            kubeconfig,
            debounce: Duration::from_millis(20),
            rediscover: Duration::from_secs(3600),
            write_status: false,
        });
        let task = source.run(tx);
        let first = tokio::time::timeout(KUBE_LIST_TIMEOUT, rx.recv()).await;
        task.abort();
        match first {
            Ok(Some(inputs)) => Ok(Inputs::clone(&inputs)),
            Ok(None) => bail!("the kubernetes source stopped before listing (see the log above)"),
            Err(_) => bail!(
                "no complete list from the Kubernetes API server within {}s (see the log above)",
                KUBE_LIST_TIMEOUT.as_secs()
            ),
        }
    })
}

impl Mesh {
    /// Every problem with the input: invalid objects (compiled fail-closed), registry errors,
    /// unreadable files.
    pub fn config_errors(&self) -> Vec<String> {
        let mut out = self.inputs.errors.clone();
        for u in &self.inputs.unreadable {
            if u.fallback != Fallback::Nothing {
                out.push(format!("{}: unreadable: {}", u.file, u.errors.join("; ")));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Set when some file (or cluster object) could not be read at all: what it holds is
    /// unknown, so no decision may be taken as if it were not there (`serve` holds policy
    /// updates in that case).
    pub fn unreadable(&self) -> Option<String> {
        let files: Vec<String> = self
            .inputs
            .unreadable
            .iter()
            .filter(|u| u.fallback != Fallback::Nothing)
            .map(|u| format!("{}: {}", u.file, u.errors.join("; ")))
            .collect();
        (!files.is_empty()).then(|| format!("config invalid: {}", files.join("; ")))
    }

    /// The policy `serve` sends to this workload.
    pub fn compile(&self, workload: &Workload) -> WorkloadPolicy {
        let view = scoped(
            &self.inputs.resources,
            &workload.namespace,
            &self.config.root_namespace,
        );
        compile(&view, workload, &self.config)
    }

    /// Which filter `serve` puts in this workload's slots for `policy` (its
    /// [`Mesh::compile`]).
    pub fn enforcement(
        &self,
        workload: &Workload,
        policy: &WorkloadPolicy,
        opts: &crate::enforcement::Options,
    ) -> crate::enforcement::Enforcement {
        let view = scoped(
            &self.inputs.resources,
            &workload.namespace,
            &self.config.root_namespace,
        );
        crate::enforcement::choose(&view, workload, &self.config, policy, opts)
    }
}

impl WorkloadArgs {
    /// `(namespace, name)` of `--workload`.
    pub fn key(&self) -> anyhow::Result<WorkloadKey> {
        match self
            .workload
            .split_once('/')
            .filter(|(n, w)| !n.is_empty() && !w.is_empty() && !w.contains('/'))
        {
            Some((namespace, name)) => Ok(WorkloadKey {
                namespace: namespace.into(),
                name: name.into(),
            }),
            None => bail!("--workload {:?}: expected namespace/name", self.workload),
        }
    }

    /// Checks `--workload`, reads the mesh, and resolves the workload in it: what `explain`,
    /// `compile` and `describe` start from.
    pub fn load(&self) -> anyhow::Result<(Mesh, Target)> {
        // Arguments first: a typo must not wait for a cluster list.
        self.key()?;
        let mesh = self.mesh.load()?;
        let target = self.resolve(&mesh)?;
        Ok((mesh, target))
    }

    /// The workload: from the registry when it knows `--workload` (then describing it on the
    /// command line too is an error: the answer must be the one `serve` enforces), else from
    /// the command line.
    pub fn resolve(&self, mesh: &Mesh) -> anyhow::Result<Target> {
        let key = self.key()?;
        let labels = self
            .labels
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| pair(l, "labels"))
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let described = !labels.is_empty()
            || self.service_account.is_some()
            || !non_empty(&self.services).is_empty();
        if let Some(entry) = mesh.inputs.registry.get(&key) {
            if described {
                bail!(
                    "workload {key} is registered ({}): its labels, service account and services come from there; drop --labels/--service-account/--services",
                    entry.file
                );
            }
            return Ok(Target {
                workload: entry.to_compile(),
                registered: Some(entry.file.clone()),
                sidecar: entry.spec.sidecar,
            });
        }
        Ok(Target {
            workload: Workload {
                namespace: key.namespace,
                name: key.name,
                service_account: self
                    .service_account
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                labels,
                services: non_empty(&self.services),
                service_ports: Vec::new(),
            },
            registered: None,
            sidecar: true,
        })
    }
}
