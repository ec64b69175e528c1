//! The Kubernetes source (`peerguard serve --source kubernetes`): watches (reflector-style,
//! never polling) the mesh kinds peerguard reads and the core objects the registry comes from,
//! and emits the same [`Inputs`] the directory source reads from files.
//!
//! - Istio kinds are found by API discovery; a kind whose CRD is not installed is not watched
//!   (no Istio, no legacy `authentication.istio.io`: not an error). Of the versions a CRD
//!   serves, the newest one peerguard reads is watched (they are views of the same objects). A
//!   kind served only at versions peerguard cannot read holds policy updates (fail closed: its
//!   DENYs would otherwise vanish). Discovery is repeated, so CRDs installed later are picked up.
//! - Objects are read as `DynamicObject`s and parsed by the filter's parser, so an invalid
//!   object stays `Resource::Invalid` and compiles fail-closed, as in the directory.
//! - Nothing is emitted before every watch has completed its first list, and afterwards only
//!   when the content changed (a relist, a status update or a restart of a watch cause no push).
//!   Changes are batched for `debounce` after the first one.

mod feeds;
mod objects;
mod status;
pub mod tokenreview;

use super::{Inputs, Source, Unreadable};
use feeds::{same_content, Entry, FeedEvent, Feeds, ObjKey};
use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Config};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub struct KubeSource {
    /// A kubeconfig file; `None`: in-cluster configuration, else `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// How long changes are collected after the first one before the inputs are emitted.
    pub debounce: Duration,
    /// How often API discovery is repeated to notice CRDs installed or removed later.
    pub rediscover: Duration,
    /// Whether to write peerguard's status condition onto the mesh objects (`serve`: yes;
    /// the one-shot commands that only read the cluster: no).
    pub write_status: bool,
}

/// `(group, kind, versions peerguard reads, preferred first)`.
const WATCHED: [(&str, &str, &[&str]); 6] = [
    (
        "security.istio.io",
        "AuthorizationPolicy",
        &["v1", "v1beta1"],
    ),
    (
        "security.istio.io",
        "PeerAuthentication",
        &["v1", "v1beta1"],
    ),
    (
        "security.istio.io",
        "RequestAuthentication",
        &["v1", "v1beta1"],
    ),
    (
        "networking.istio.io",
        "DestinationRule",
        &["v1", "v1beta1", "v1alpha3"],
    ),
    ("authentication.istio.io", "Policy", &["v1alpha1"]),
    ("authentication.istio.io", "MeshPolicy", &["v1alpha1"]),
];

#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
    #[error("API discovery: {0}")]
    Discovery(#[from] kube::Error),
    #[error("the mesh CRDs changed ({0}); restarting the watches")]
    CrdsChanged(String),
}

/// What discovery found: the APIs to watch, and kinds that cannot be read.
#[derive(Debug, Clone, PartialEq)]
struct Discovered {
    apis: Vec<ApiResource>,
    unreadable: Vec<Unreadable>,
}

impl Source for KubeSource {
    fn describe(&self) -> String {
        match &self.kubeconfig {
            Some(p) => format!("kubernetes (kubeconfig {})", p.display()),
            None => "kubernetes (in-cluster or default kubeconfig)".into(),
        }
    }

    fn run(self: Box<Self>, out: mpsc::Sender<Arc<Inputs>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let started = Instant::now();
                let result = self.watch_cluster(&out).await;
                if out.is_closed() {
                    return;
                }
                match result {
                    Ok(()) => return,
                    Err(e @ KubeSourceError::CrdsChanged(_)) => {
                        tracing::info!("{e}");
                        continue;
                    }
                    Err(e) => tracing::error!("kubernetes source: {e}; retrying in {backoff:?} (nothing new is published meanwhile)"),
                }
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(500);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = out.closed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        })
    }
}

/// A client from `kubeconfig`, or in-cluster / `$KUBECONFIG` / `~/.kube/config`.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, KubeSourceError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |e: &dyn std::fmt::Display| KubeSourceError::Kubeconfig {
                path: path.display().to_string(),
                message: e.to_string(),
            };
            let kc = Kubeconfig::read_from(path).map_err(|e| err(&e))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| err(&e))?
        }
        None => Config::infer()
            .await
            .map_err(|e| KubeSourceError::Config(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| KubeSourceError::Config(e.to_string()))
}

async fn discover(client: &Client) -> Result<Discovered, KubeSourceError> {
    let groups = client.list_api_groups().await?;
    let mut found = Discovered {
        apis: Vec::new(),
        unreadable: Vec::new(),
    };
    let mut wanted: Vec<&str> = WATCHED.iter().map(|w| w.0).collect();
    wanted.dedup();
    for group in wanted {
        if !groups.groups.iter().any(|g| g.name == group) {
            tracing::debug!(
                group,
                "API group not served (CRDs not installed): not watched"
            );
            continue;
        }
        let g = kube::discovery::group(client, group).await?;
        let served: Vec<ApiResource> = g
            .versions()
            .flat_map(|v| g.versioned_resources(v))
            .map(|(ar, _)| ar)
            .collect();
        for (_, kind, versions) in WATCHED.iter().filter(|w| w.0 == group) {
            let of_kind: Vec<&ApiResource> = served.iter().filter(|ar| ar.kind == *kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            match versions
                .iter()
                .find_map(|v| of_kind.iter().find(|ar| ar.version == *v))
            {
                Some(ar) => found.apis.push((*ar).clone()),
                None => {
                    let at: Vec<&str> = of_kind.iter().map(|ar| ar.version.as_str()).collect();
                    found.unreadable.push(Unreadable {
                        file: format!("apiserver {group} {kind}"),
                        errors: vec![format!(
                            "served only at {at:?}, which peerguard does not read (it reads {versions:?}); its policies cannot be known"
                        )],
                        fallback: crate::source::Fallback::Hold,
                    });
                }
            }
        }
    }
    Ok(found)
}

type Item = (usize, Result<Option<FeedEvent>, String>);

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjKey {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A watch converted to [`FeedEvent`]s; `entry` returns `None` for an object it cannot key.
fn feed<K>(
    api: Api<K>,
    index: usize,
    entry: impl Fn(&K) -> Option<Entry> + Send + 'static,
) -> BoxStream<'static, Item>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |r| {
            let ev = r.map_err(|e| e.to_string()).map(|ev| match ev {
                watcher::Event::Init => Some(FeedEvent::Begin),
                watcher::Event::InitDone => Some(FeedEvent::Done),
                watcher::Event::InitApply(o) => {
                    entry(&o).map(|e| FeedEvent::Listed(key_of(o.meta()), e))
                }
                watcher::Event::Apply(o) => {
                    entry(&o).map(|e| FeedEvent::Applied(key_of(o.meta()), e))
                }
                watcher::Event::Delete(o) => Some(FeedEvent::Deleted(key_of(o.meta()))),
            });
            (index, ev)
        })
        .boxed()
}

fn istio_feed(
    client: &Client,
    ar: &ApiResource,
    index: usize,
    origin: String,
) -> BoxStream<'static, Item> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let (api_version, kind) = (ar.api_version.clone(), ar.kind.clone());
    feed(api, index, move |o: &DynamicObject| {
        let value = serde_json::to_value(o).unwrap_or_else(|e| {
            // Not expected (it was just deserialized); keep the object, invalid, so its scope
            // fails closed instead of the object disappearing.
            serde_json::json!({"metadata": {"name": o.metadata.name, "namespace": o.metadata.namespace}, "spec": format!("unreadable: {e}")})
        });
        Some(Entry::Istio(Box::new(objects::istio_entry(
            value,
            &api_version,
            &kind,
            &origin,
        ))))
    })
}

impl KubeSource {
    /// Connects, discovers and watches until `out` closes (`Ok`) or something needs a restart.
    async fn watch_cluster(&self, out: &mpsc::Sender<Arc<Inputs>>) -> Result<(), KubeSourceError> {
        let client = client(self.kubeconfig.as_deref()).await?;
        let discovered = discover(&client).await?;
        let mut feeds = Feeds::default();
        let mut streams: SelectAll<BoxStream<'static, Item>> = SelectAll::new();
        let mut apis = std::collections::BTreeMap::new();
        let mut status = status::StatusWriter::new(client.clone());
        for ar in &discovered.apis {
            let origin = format!("apiserver {}/{} {}", ar.group, ar.version, ar.plural);
            let index = feeds.add(origin.clone());
            apis.insert(index, ar.clone());
            streams.push(istio_feed(&client, ar, index, origin));
        }
        let i = feeds.add("apiserver v1/pods".into());
        streams.push(feed(Api::<Pod>::all(client.clone()), i, |p| {
            objects::pod_info(p).map(Entry::Pod)
        }));
        let i = feeds.add("apiserver v1/services".into());
        streams.push(feed(Api::<Service>::all(client.clone()), i, |s| {
            objects::service_info(s).map(Entry::Service)
        }));
        let i = feeds.add("apiserver v1/namespaces".into());
        streams.push(feed(Api::<Namespace>::all(client.clone()), i, |n| {
            objects::namespace_info(n).map(Entry::Namespace)
        }));
        let watched: Vec<String> = discovered
            .apis
            .iter()
            .map(|a| format!("{}/{}", a.api_version, a.kind))
            .collect();
        tracing::info!(
            ?watched,
            "watching the mesh kinds, pods, services and namespaces"
        );
        for u in &discovered.unreadable {
            tracing::error!("FAIL-CLOSED: {}: {}", u.file, u.errors.join("; "));
        }

        let started = Instant::now();
        let mut flush_at: Option<tokio::time::Instant> = None;
        let mut last: Option<Arc<Inputs>> = None;
        let mut synced_logged = false;
        let mut tick = tokio::time::interval(self.rediscover);
        tick.tick().await;
        let mut waiting = tokio::time::interval(Duration::from_secs(10));
        waiting.tick().await;
        loop {
            tokio::select! {
                item = streams.next() => match item {
                    Some((i, Ok(Some(ev)))) => {
                        let changed = feeds.apply(i, ev);
                        tracing::trace!(feed = feeds.name(i), changed, "watch event");
                        if changed && flush_at.is_none() {
                            flush_at = Some(tokio::time::Instant::now() + self.debounce);
                        }
                    }
                    Some((_, Ok(None))) => {}
                    Some((i, Err(e))) => tracing::warn!(feed = feeds.name(i), "watch failed (retrying with backoff; the last listed objects stay in force): {e}"),
                    None => return Err(KubeSourceError::CrdsChanged("every watch ended".into())),
                },
                _ = async { if let Some(t) = flush_at { tokio::time::sleep_until(t).await } }, if flush_at.is_some() => {
                    flush_at = None;
                    if !feeds.all_synced() {
                        continue;
                    }
                    if !synced_logged {
                        synced_logged = true;
                        tracing::info!(objects = feeds.object_count(), elapsed_ms = started.elapsed().as_millis() as u64, "initial sync of every watched kind complete");
                    }
                    if self.write_status {
                        status.reconcile(&feeds, &apis);
                    }
                    let mut inputs = feeds.inputs();
                    inputs.unreadable = discovered.unreadable.clone();
                    if last.as_ref().is_some_and(|l| same_content(l, &inputs)) {
                        tracing::debug!("watch events changed nothing that compiles; no push");
                        continue;
                    }
                    let inputs = Arc::new(inputs);
                    last = Some(inputs.clone());
                    if out.send(inputs).await.is_err() {
                        return Ok(());
                    }
                }
                _ = waiting.tick(), if !feeds.all_synced() => {
                    tracing::warn!(pending = ?feeds.unsynced(), "still waiting for the initial list; nothing is published until every watched kind is listed");
                }
                _ = tick.tick() => {
                    // Writes that failed are retried at the next flush.
                    status.forget_inflight();
                    match discover(&client).await {
                        Ok(now) if now != discovered => {
                            let now_watched: Vec<String> = now.apis.iter().map(|a| format!("{}/{}", a.api_version, a.kind)).collect();
                            return Err(KubeSourceError::CrdsChanged(format!("now {now_watched:?}, was {watched:?}")));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("API discovery failed (keeping the current watches): {e}"),
                    }
                }
                _ = out.closed() => return Ok(()),
            }
        }
    }
}
