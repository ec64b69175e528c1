//! `peerguard serve --source kubernetes --istio-wasmplugins`: keeps the WasmPlugins of
//! [`super::wasmplugin::render`] in the cluster.
//!
//! On every new set of inputs: render, compare with the WasmPlugins peerguard owns (label
//! `app.kubernetes.io/managed-by=peerguard`, `peerguard.dev/form=wasmplugin`), server-side
//! apply (field manager `peerguard`) only those that differ, delete those no longer wanted.
//! Replicas compute the same objects from the same cluster state: the second one finds them
//! already as wanted and writes nothing (no flapping; tested with two servers). Every object
//! carries an owner reference to the cluster-scoped ClusterRole of the installation
//! (`--istio-owner-clusterrole`), so deleting peerguard garbage-collects them. Inputs that hold
//! policy updates (a kind that cannot be read) change nothing in the cluster either.

use super::wasmplugin::{self, ModuleArgs, FORM};
use super::{FORM_LABEL, MANAGED_BY};
use crate::ops::Metrics;
use crate::source::Inputs;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::Client;
use peerguard_filter::compile::MeshConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const FIELD_MANAGER: &str = "peerguard";

/// `serve`'s flags for the Istio forms.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// With `--source kubernetes`: write and keep one Istio WasmPlugin per workload selector
    /// group (pluginConfig = the compiled policy), delete those no longer needed.
    #[arg(long)]
    pub istio_wasmplugins: bool,
    #[command(flatten)]
    pub module: ModuleArgs,
    /// The cluster-scoped owner of the written WasmPlugins (garbage-collected with it).
    #[arg(long, default_value = "peerguard")]
    pub istio_owner_clusterrole: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> WriteError {
    let what = what.into();
    move |source| WriteError::Api { what, source }
}

pub fn api_resource() -> ApiResource {
    let (group, version) = wasmplugin::API_VERSION
        .split_once('/')
        .unwrap_or(("", wasmplugin::API_VERSION));
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, wasmplugin::KIND),
        wasmplugin::PLURAL,
    )
}

pub struct Writer {
    pub client: Client,
    pub args: ServeArgs,
    pub mesh: MeshConfig,
    pub metrics: Arc<Metrics>,
}

/// What one reconcile did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

fn ns_name(o: &Value) -> (String, String) {
    let s = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// Whether `existing` already says everything `want` says (spec, our labels, owners).
fn up_to_date(existing: &DynamicObject, want: &Value) -> bool {
    let labels_ok = want
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .is_some_and(|l| {
            l.iter().all(|(k, v)| {
                existing
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|el| el.get(k))
                    .map(String::as_str)
                    == v.as_str()
            })
        });
    let owners_want = want
        .pointer("/metadata/ownerReferences")
        .cloned()
        .unwrap_or(json!([]));
    let owners_have = serde_json::to_value(
        existing
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    labels_ok && existing.data.get("spec") == want.get("spec") && owners_have == owners_want
}

impl Writer {
    /// Runs until `inputs` closes: reconciles on every change, retries failures after 2 s,
    /// doubling up to a minute (a missing CRD must not flood the log).
    pub async fn run(self, mut inputs: watch::Receiver<Option<Arc<Inputs>>>) {
        let mut pending = false;
        let mut backoff = Duration::from_secs(2);
        let mut last_warnings: Vec<String> = Vec::new();
        loop {
            let wait = if pending {
                backoff
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                changed = inputs.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
            let Some(current) = inputs.borrow_and_update().clone() else {
                continue;
            };
            if current.hold_policy() {
                tracing::warn!("istio wasmplugins: policy updates are held (a mesh kind cannot be read); the WasmPlugins stay as they are");
                pending = false;
                continue;
            }
            let rendered = wasmplugin::render(&current, &self.mesh, &self.args.module);
            if rendered.warnings != last_warnings {
                for w in &rendered.warnings {
                    tracing::warn!("istio wasmplugins: {w}");
                }
                last_warnings = rendered.warnings.clone();
            }
            match self.reconcile(rendered.objects).await {
                Ok(o) => {
                    pending = false;
                    backoff = Duration::from_secs(2);
                    if o.applied + o.deleted > 0 {
                        tracing::info!(
                            applied = o.applied,
                            deleted = o.deleted,
                            unchanged = o.unchanged,
                            "istio wasmplugins reconciled"
                        );
                    }
                    self.metrics.set(
                        "peerguard_istio_wasmplugins",
                        &[],
                        (o.applied + o.unchanged) as f64,
                    );
                }
                Err(e) => {
                    if pending {
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                    pending = true;
                    self.metrics
                        .inc("peerguard_istio_wasmplugin_errors_total", &[]);
                    tracing::error!("istio wasmplugins: {e}; retrying in {backoff:?}");
                }
            }
        }
    }

    async fn owner(&self) -> Result<Option<Value>, WriteError> {
        let name = &self.args.istio_owner_clusterrole;
        let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(self.client.clone());
        let role = roles.get_opt(name).await.map_err(api_err(format!(
            "reading ClusterRole {name} (--istio-owner-clusterrole)"
        )))?;
        Ok(match role.and_then(|r| r.metadata.uid) {
            Some(uid) => Some(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "name": name, "uid": uid,
            })),
            None => {
                tracing::warn!("istio wasmplugins: ClusterRole {name} (--istio-owner-clusterrole) not found: WasmPlugins are written without an owner and are not garbage-collected with peerguard");
                None
            }
        })
    }

    /// The mesh-wide EnvoyFilter the WasmPlugin form needs
    /// ([`super::envoyfilter::render_direct_peer`]: peerguard's `ipBlocks` must read the
    /// direct peer, which a WasmPlugin cannot arrange). Written before the WasmPlugins, only
    /// when it differs. Its failure does not stop the WasmPlugins (without them nothing is
    /// enforced at all): it is logged as an error and retried with the next reconcile.
    async fn direct_peer(&self, owner: Option<&Value>) -> Result<bool, WriteError> {
        let mut want = super::envoyfilter::render_direct_peer(&self.mesh.root_namespace);
        if let Some(o) = owner {
            want["metadata"]["ownerReferences"] = json!([o]);
        }
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.istio.io", "v1alpha3", "EnvoyFilter"),
            "envoyfilters",
        );
        let (ns, name) = ns_name(&want);
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &ar);
        let what = format!("EnvoyFilter {ns}/{name}");
        let have = api
            .get_opt(&name)
            .await
            .map_err(api_err(format!("reading {what}")))?;
        if have.is_some_and(|h| up_to_date(&h, &want)) {
            return Ok(false);
        }
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&want),
        )
        .await
        .map_err(api_err(format!("applying {what}")))?;
        Ok(true)
    }

    pub async fn reconcile(&self, mut desired: Vec<Value>) -> Result<Outcome, WriteError> {
        let ar = api_resource();
        let owner = self.owner().await?;
        match self.direct_peer(owner.as_ref()).await {
            Ok(true) => tracing::info!(
                "istio wasmplugins: applied EnvoyFilter {}/{} (inbound connection managers take the direct peer as the remote address)",
                self.mesh.root_namespace,
                super::envoyfilter::DIRECT_PEER_NAME
            ),
            Ok(false) => {}
            Err(e) => {
                self.metrics
                    .inc("peerguard_istio_wasmplugin_errors_total", &[]);
                tracing::error!("istio wasmplugins: {e}: peerguard's ipBlocks/source.ip may follow a client-sent X-Forwarded-For in Istio's sidecars until it is applied (manifests/istio/envoyfilter-direct-peer.yaml)");
            }
        }
        for d in &mut desired {
            if let Some(o) = &owner {
                d["metadata"]["ownerReferences"] = json!([o]);
            }
        }
        let all: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        let selector = format!("{}={},{FORM_LABEL}={FORM}", MANAGED_BY.0, MANAGED_BY.1);
        let existing = all
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_err(
                "listing WasmPlugins (is the extensions.istio.io CRD installed?)",
            ))?;
        let mut have: BTreeMap<(String, String), DynamicObject> = existing
            .items
            .into_iter()
            .map(|o| {
                let k = (
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.metadata.name.clone().unwrap_or_default(),
                );
                (k, o)
            })
            .collect();
        let mut out = Outcome::default();
        for want in &desired {
            let key = ns_name(want);
            if have.remove(&key).is_some_and(|e| up_to_date(&e, want)) {
                out.unchanged += 1;
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &key.0, &ar);
            api.patch(
                &key.1,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(want),
            )
            .await
            .map_err(api_err(format!("applying WasmPlugin {}/{}", key.0, key.1)))?;
            self.metrics.inc(
                "peerguard_istio_wasmplugin_writes_total",
                &[("op", "apply")],
            );
            out.applied += 1;
        }
        for ((ns, name), _) in have {
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &ar);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(api_err(format!("deleting WasmPlugin {ns}/{name}"))(e)),
            }
            self.metrics.inc(
                "peerguard_istio_wasmplugin_writes_total",
                &[("op", "delete")],
            );
            out.deleted += 1;
        }
        Ok(out)
    }
}

/// Puts the writer between the source and the builder when `--istio-wasmplugins` is set:
/// returns the channel the builder reads (the source's own when the flag is off).
pub async fn tee(
    args: &ServeArgs,
    kubeconfig: Option<&std::path::Path>,
    kubernetes: bool,
    mesh: MeshConfig,
    metrics: Arc<Metrics>,
    mut from_source: tokio::sync::mpsc::Receiver<Arc<Inputs>>,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<Arc<Inputs>>> {
    use anyhow::Context;
    if !args.istio_wasmplugins {
        return Ok(from_source);
    }
    if !kubernetes {
        anyhow::bail!("--istio-wasmplugins needs --source kubernetes");
    }
    args.module.check()?;
    let client = crate::source::kube::client(kubeconfig)
        .await
        .context("Kubernetes client for --istio-wasmplugins")?;
    let (to_builder, builder_rx) = tokio::sync::mpsc::channel(4);
    let (latest_tx, latest_rx) = watch::channel(None);
    tokio::spawn(async move {
        while let Some(inputs) = from_source.recv().await {
            latest_tx.send_replace(Some(inputs.clone()));
            if to_builder.send(inputs).await.is_err() {
                return;
            }
        }
    });
    let writer = Writer {
        client,
        args: args.clone(),
        mesh,
        metrics,
    };
    tracing::info!(url = %args.module.url, "writing Istio WasmPlugins (--istio-wasmplugins)");
    tokio::spawn(writer.run(latest_rx));
    Ok(builder_rx)
}
