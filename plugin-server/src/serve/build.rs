//! Inputs (+ CA) → per-node snapshots. Re-run on every configuration change and whenever a
//! certificate is due for rotation.

use crate::ca::{Ca, IssuedCert};
use crate::enforcement::{choose, Slot};
use crate::node::TokenAuth;
use crate::ops::{Metrics, Readiness};
use crate::registry::{Registry, WorkloadKey};
use crate::snapshot::{self, NodeSnapshot, Store};
use crate::source::Inputs;
use peerguard_filter::compile::{compile, MeshConfig};
use peerguard_filter::istio::Resource;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

pub struct Builder {
    pub ca: Ca,
    pub mesh: MeshConfig,
    /// `--decision-log-sample`, set on every workload's policy.
    pub decision_log: super::decision_log::DecisionLogArgs,
    /// `--enforcement`: which filter fills each slot.
    pub enforcement: crate::enforcement::Options,
    pub wasm: String,
    pub state_dir: PathBuf,
    pub auth: TokenAuth,
    pub store: Arc<Store>,
    pub registry_tx: watch::Sender<Arc<Registry>>,
    pub metrics: Arc<Metrics>,
    pub certs: BTreeMap<WorkloadKey, IssuedCert>,
    /// The public half of `certs` and the trust bundle, for the ops server.
    pub issued: Arc<crate::ops::certs::IssuedCerts>,
    /// What readiness depends on beyond the current inputs.
    pub history: History,
}

/// What earlier rebuilds leave behind for readiness.
#[derive(Debug, Default)]
pub struct History {
    /// Every node's policy was computed from fully read files at least once.
    pub published: bool,
    /// Most workloads registered at once so far.
    pub most_workloads: usize,
}

impl Builder {
    pub async fn run(
        mut self,
        mut inputs_rx: mpsc::Receiver<Arc<Inputs>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut current: Option<Arc<Inputs>> = None;
        loop {
            // Wake at the next rotation time (at most a minute away, so a clock jump is
            // noticed): a short TTL must not wait for a coarse tick and expire first.
            let now = SystemTime::now();
            let next = self.certs.values().map(|c| c.rotate_at()).min();
            // A rotation time already past means issuing failed: retry after a second, not in
            // a busy loop.
            let wait = next
                .map(|t| t.duration_since(now).unwrap_or(Duration::from_secs(1)))
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            tokio::select! {
                got = inputs_rx.recv() => match got {
                    Some(inputs) => {
                        report(&inputs);
                        self.rebuild(&inputs, SystemTime::now());
                        current = Some(inputs);
                    }
                    None => return,
                },
                _ = tokio::time::sleep(wait) => {
                    let now = SystemTime::now();
                    if let Some(inputs) = &current {
                        if self.certs.values().any(|c| c.rotate_at() <= now) {
                            tracing::info!("rotating workload certificates at 80% of their life");
                            self.rebuild(inputs, now);
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    fn cert_for(&mut self, key: &WorkloadKey, sa: &str, now: SystemTime) -> Option<IssuedCert> {
        if !self.ca.can_issue() {
            return None;
        }
        let want = self.ca.spiffe_id(&key.namespace, sa);
        if let Some(c) = self.certs.get(key) {
            if c.spiffe == want && c.rotate_at() > now {
                return Some(c.clone());
            }
        }
        match self.ca.issue(&key.namespace, sa, now) {
            Ok(c) => {
                tracing::info!(node = %key, spiffe = %c.spiffe, not_after = ?c.not_after, "issued workload certificate");
                self.metrics.inc("peerguard_certs_issued_total", &[]);
                self.certs.insert(key.clone(), c.clone());
                Some(c)
            }
            Err(e) => {
                // Keep serving the current certificate while it is valid.
                tracing::error!(node = %key, "cannot issue a workload certificate: {e}");
                self.metrics.inc("peerguard_cert_errors_total", &[]);
                self.certs.get(key).filter(|c| c.not_after > now).cloned()
            }
        }
    }

    pub fn rebuild(&mut self, inputs: &Inputs, now: SystemTime) {
        let mut keep = BTreeSet::new();
        let mut diagnostics = 0usize;
        let mut native_slots = 0usize;
        let hold = inputs.hold_policy();
        self.metrics
            .clear("peerguard_workload_cert_expiry_timestamp_seconds");
        // Each namespace's view is computed once: compiling every workload against the whole
        // mesh made a reload of 10,000 policies cost seconds.
        let mut views: BTreeMap<&str, Vec<Resource>> = BTreeMap::new();
        for (key, entry) in &inputs.registry.workloads {
            let view = views.entry(key.namespace.as_str()).or_insert_with(|| {
                scoped(&inputs.resources, &key.namespace, &self.mesh.root_namespace)
            });
            let workload = entry.to_compile();
            let mut policy = compile(view, &workload, &self.mesh);
            self.decision_log.apply(&mut policy);
            diagnostics += policy.diagnostics.len();
            for d in &policy.diagnostics {
                tracing::debug!(node = %key, "compile: {d}");
            }
            let json = match serde_json::to_string(&policy) {
                Ok(j) => j,
                Err(e) => {
                    // Cannot happen for plain data; if it did, the node keeps its last config.
                    tracing::error!(node = %key, "cannot serialize the policy: {e}");
                    continue;
                }
            };
            let mut snap = NodeSnapshot::default();
            if hold {
                // The policy this node already has stays; a node that has none gets none (its
                // listener keeps warming, or applies the deny-all default).
                let previous = self.store.current(key);
                if let Some(ecds) = previous
                    .as_ref()
                    .and_then(|p| p.by_type.get(snapshot::ECDS_TYPE))
                {
                    snap.by_type
                        .insert(snapshot::ECDS_TYPE.to_string(), ecds.clone());
                }
            } else {
                let chosen = choose(view, &workload, &self.mesh, &policy, &self.enforcement);
                tracing::debug!(node = %key, http = %chosen.http, tcp = %chosen.tcp, "enforcement");
                native_slots +=
                    usize::from(chosen.http.is_native()) + usize::from(chosen.tcp.is_native());
                let http = match &chosen.http {
                    Slot::Native { typed_config, .. } => {
                        snapshot::native_filter(snapshot::HTTP_FILTER, typed_config)
                    }
                    Slot::Wasm { .. } => snapshot::http_filter(&self.wasm, &json),
                };
                let tcp = match &chosen.tcp {
                    Slot::Native { typed_config, .. } => {
                        snapshot::native_filter(snapshot::TCP_FILTER, typed_config)
                    }
                    Slot::Wasm { .. } => snapshot::tcp_filter(&self.wasm, &json),
                };
                snap.insert(snapshot::HTTP_FILTER, http);
                snap.insert(snapshot::TCP_FILTER, tcp);
            }
            snap.insert(
                snapshot::SECRET_ROOT,
                snapshot::root_secret(self.ca.bundle_pem()),
            );
            if let Some(cert) = self.cert_for(key, &entry.spec.service_account, now) {
                let (ns, name) = (key.namespace.as_str(), key.name.as_str());
                self.metrics.set(
                    "peerguard_workload_cert_expiry_timestamp_seconds",
                    &[("namespace", ns), ("name", name)],
                    super::unix(cert.not_after),
                );
                snap.insert(snapshot::SECRET_CERT, snapshot::cert_secret(&cert));
            }
            if self.store.publish(key, snap) {
                tracing::info!(node = %key, "new snapshot");
            }
            self.write_token(key);
            keep.insert(key.clone());
        }
        self.certs.retain(|k, _| keep.contains(k));
        self.issued.publish(
            self.certs.iter().map(|(k, c)| (k, c.chain_pem.as_str())),
            self.ca.bundle_pem(),
        );
        self.store.retain(&keep);
        // After the store, so a stream that sees a node in the registry finds its snapshot.
        self.registry_tx
            .send_replace(Arc::new(inputs.registry.clone()));
        self.metrics.inc("peerguard_config_reloads_total", &[]);
        self.metrics
            .set("peerguard_config_errors", &[], inputs.errors.len() as f64);
        self.metrics
            .set("peerguard_compile_diagnostics", &[], diagnostics as f64);
        self.metrics
            .set("peerguard_native_rbac_slots", &[], native_slots as f64);
        self.metrics.set(
            "peerguard_workloads",
            &[],
            inputs.registry.workloads.len() as f64,
        );
        self.metrics.set(
            "peerguard_config_unreadable_files",
            &[],
            inputs.unreadable.len() as f64,
        );
        self.metrics.set(
            "peerguard_policy_updates_held",
            &[],
            if hold { 1.0 } else { 0.0 },
        );
        self.metrics.set(
            "peerguard_config_dir_missing",
            &[],
            if inputs.source_missing.is_some() {
                1.0
            } else {
                0.0
            },
        );
        self.metrics.set(
            "peerguard_config_files_pending",
            &[],
            inputs.pending.len() as f64,
        );
        self.metrics.set(
            "peerguard_config_budget_nodes",
            &[],
            inputs.cost.nodes as f64,
        );
        self.metrics.set(
            "peerguard_config_budget_text_bytes",
            &[],
            inputs.cost.scalar_bytes as f64,
        );
        let over_budget = |e: &String| {
            e.starts_with("over the per-file budget")
                || e.starts_with("over the directory's total budget")
        };
        let over = inputs
            .unreadable
            .iter()
            .filter(|u| u.errors.iter().any(over_budget))
            .count();
        self.metrics
            .set("peerguard_config_over_budget_files", &[], over as f64);
        self.history.published |= !hold;
        self.metrics
            .set_readiness(readiness(inputs, &mut self.history));
    }

    /// `<state-dir>/tokens/<ns>/<name>.token` (mode 0600), for `peerguard bootstrap --token-file`.
    fn write_token(&self, key: &WorkloadKey) {
        let path = self
            .state_dir
            .join("tokens")
            .join(&key.namespace)
            .join(format!("{}.token", key.name));
        if path.exists() {
            return;
        }
        let token = self.auth.token(key);
        if let Err(e) = crate::ca::load_or_create_private(&path, || Ok(token)) {
            tracing::warn!(node = %key, "cannot write the bootstrap token: {e}");
        }
    }
}

/// Ready means: a policy computed from fully read files was published at least once, and
/// now none of these holds: the config directory is missing (its last content is served,
/// but nothing it says now is known), policy updates are held, every workload is gone after
/// there were some (what a truncated or unmounted registry file looks like). Unreadable,
/// pending and invalid input makes it "ready, degraded" with one line each.
fn readiness(inputs: &Inputs, history: &mut History) -> Readiness {
    let mut not_ready = Vec::new();
    if let Some(why) = &inputs.source_missing {
        not_ready.push((
            "config_dir_missing",
            format!("{why}: serving the last configuration read from it"),
        ));
    }
    if inputs.hold_policy() {
        not_ready.push((
            "policy_updates_held",
            "policy updates are held: a file was never read successfully (below)".to_string(),
        ));
    }
    let n = inputs.registry.workloads.len();
    if n == 0 && history.most_workloads > 0 {
        not_ready.push((
            "no_workloads",
            format!(
                "no workloads registered (there were {})",
                history.most_workloads
            ),
        ));
    }
    history.most_workloads = if n == 0 {
        history.most_workloads
    } else {
        n.max(history.most_workloads)
    };
    let mut degraded = inputs.unreadable_summary();
    degraded.extend(inputs.pending.iter().cloned());
    // Invalid objects are served fail-closed, so the server stays ready, but says so.
    degraded.extend(
        inputs
            .errors
            .iter()
            .map(|e| format!("invalid, compiled fail-closed: {e}")),
    );
    Readiness {
        published: history.published,
        not_ready,
        degraded,
    }
}

/// The resources that can apply to a workload in `namespace`: AuthorizationPolicies,
/// PeerAuthentications and legacy Policies (valid or not) of that namespace and of the root
/// namespace, and everything else (DestinationRules, MeshPolicies, objects without a
/// namespace). A superset of what `compile` considers, so decisions are the same; only
/// diagnostics about other namespaces' objects are left out of this workload's policy.
pub fn scoped(resources: &[Resource], namespace: &str, root: &str) -> Vec<Resource> {
    resources
        .iter()
        .filter(|r| {
            let ns = match r {
                Resource::AuthorizationPolicy(o) => &o.metadata.namespace,
                Resource::PeerAuthentication(o) => &o.metadata.namespace,
                Resource::LegacyPolicy(o) => &o.metadata.namespace,
                Resource::Invalid(o)
                    if matches!(
                        o.kind.as_str(),
                        "AuthorizationPolicy" | "PeerAuthentication" | "Policy"
                    ) =>
                {
                    &o.metadata.namespace
                }
                _ => return true,
            };
            ns.as_deref().is_none_or(|ns| ns == namespace || ns == root)
        })
        .cloned()
        .collect()
}

fn report(inputs: &Inputs) {
    for e in &inputs.errors {
        tracing::warn!("config error: {e}");
    }
    for line in inputs.unreadable_summary() {
        tracing::error!("FAIL-CLOSED: {line}");
    }
    for s in &inputs.skipped {
        tracing::debug!("skipped: {s}");
    }
    tracing::info!(
        workloads = inputs.registry.workloads.len(),
        resources = inputs.resources.len(),
        errors = inputs.errors.len(),
        "configuration loaded"
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use peerguard_filter::compile::Workload;
    use peerguard_filter::istio::parse::parse_str;

    #[test]
    fn a_namespace_view_compiles_to_the_same_decisions_as_the_whole_mesh() {
        let mut yaml = String::new();
        for ns in ["foo", "bar", "istio-system"] {
            for (i, action) in ["ALLOW", "DENY", "AUDIT"].iter().enumerate() {
                yaml.push_str(&format!("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: {ns}}}\nspec:\n  action: {action}\n  rules: [{{from: [{{source: {{principals: [cluster.local/ns/{ns}/sa/x{i}]}}}}]}}]\n"));
            }
            yaml.push_str(&format!("---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: {ns}}}\nspec: {{mtls: {{mode: STRICT}}, portLevelMtls: {{\"8080\": {{mode: DISABLE}}}}}}\n"));
            // Invalid: kept and compiled fail-closed, in its namespace only.
            yaml.push_str(&format!("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: bad, namespace: {ns}}}\nspec: {{action: DENY, bogus: 1}}\n"));
            yaml.push_str(&format!("---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {{name: default, namespace: {ns}}}\nspec: {{peers: [{{mtls: {{}}}}]}}\n"));
        }
        yaml.push_str("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: nons}\nspec: {action: DENY, rules: [{}]}\n");
        let parsed = parse_str(&yaml, "mesh.yaml");
        assert!(parsed.resources.len() > 12);
        let mesh = MeshConfig {
            trust_domain: "cluster.local".into(),
            trust_domain_aliases: vec![],
            root_namespace: "istio-system".into(),
            ..MeshConfig::default()
        };
        for ns in ["foo", "bar", "default", "other"] {
            let w = Workload {
                namespace: ns.into(),
                name: "w".into(),
                service_account: "w".into(),
                ..Default::default()
            };
            let all = compile(&parsed.resources, &w, &mesh);
            let view = scoped(&parsed.resources, ns, "istio-system");
            assert!(view.len() < parsed.resources.len());
            let some = compile(&view, &w, &mesh);
            assert_eq!(
                serde_json::to_value(&all.mtls).unwrap(),
                serde_json::to_value(&some.mtls).unwrap(),
                "{ns}"
            );
            assert_eq!(
                serde_json::to_value(&all.policies).unwrap(),
                serde_json::to_value(&some.policies).unwrap(),
                "{ns}"
            );
            assert!(!some.policies.is_empty());
        }
    }
}
