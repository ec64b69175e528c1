//! Shared helpers for the Kubernetes tests (included with `#[path]`; no tests of its own): the
//! API server from `integration/kube/apiserver.sh`, applying objects, the server process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::harness::{free_port, http_get};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

// ------------------------------------------------------------------ prerequisites

/// Envoy and the module, found as every other Envoy test finds them (the shared harness).
pub fn find_envoy() -> Option<PathBuf> {
    peerguard_harness::envoy::find_envoy().ok()
}

pub fn find_wasm() -> Option<PathBuf> {
    peerguard_harness::envoy::find_wasm().ok()
}

pub fn skip(test: &str, why: &str, require: &str) -> bool {
    if std::env::var(require).as_deref() == Ok("1") {
        panic!("{test}: {why}, and {require}=1");
    }
    println!("SKIPPED: {test}: {why}");
    true
}

/// A running API server: reused (`PEERGUARD_KUBECONFIG`) or started here (stopped on drop).
pub struct ApiServer {
    pub kubeconfig: PathBuf,
    pub started: Option<PathBuf>,
}

impl ApiServer {
    pub fn get(test: &str) -> Option<ApiServer> {
        if let Ok(k) = std::env::var("PEERGUARD_KUBECONFIG") {
            return Some(ApiServer {
                kubeconfig: k.into(),
                started: None,
            });
        }
        let script = repo_root().join("integration/kube/apiserver.sh");
        let bin = Command::new("bash")
            .arg(&script)
            .arg("bin-dir")
            .output()
            .unwrap();
        let bin = PathBuf::from(String::from_utf8_lossy(&bin.stdout).trim());
        if !bin.join("kube-apiserver").is_file() {
            let why = format!(
                "no kube-apiserver in {} (run integration/kube/apiserver.sh build)",
                bin.display()
            );
            skip(test, &why, "PEERGUARD_REQUIRE_KUBE");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("pg-kube-{test}-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "apiserver.sh start failed");
        let kubeconfig = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .lines()
                .last()
                .unwrap_or_default(),
        );
        Some(ApiServer {
            kubeconfig,
            started: Some(dir),
        })
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(dir) = &self.started {
            let _ = Command::new("bash")
                .arg(repo_root().join("integration/kube/apiserver.sh"))
                .arg("stop")
                .arg(dir)
                .status();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

// ------------------------------------------------------------------ Kubernetes helpers

pub async fn client(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

pub fn api_for(
    client: &Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

pub fn plural(kind: &str) -> String {
    match kind {
        "AuthorizationPolicy" => "authorizationpolicies".into(),
        "Policy" => "policies".into(),
        "MeshPolicy" => "meshpolicies".into(),
        other => format!("{}s", other.to_ascii_lowercase()),
    }
}

/// Server-side apply, as `kubectl apply --server-side` does.
pub async fn apply(client: &Client, obj: &Value) {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let kind = obj["kind"].as_str().unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap();
    let api = api_for(
        client,
        api_version,
        kind,
        &plural(kind),
        obj["metadata"]["namespace"].as_str(),
    );
    api.patch(
        name,
        &PatchParams::apply("kube-e2e").force(),
        &Patch::Apply(obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
}

pub async fn delete(client: &Client, api_version: &str, kind: &str, ns: &str, name: &str) {
    let api = api_for(client, api_version, kind, &plural(kind), Some(ns));
    api.delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete {kind} {ns}/{name}: {e}"));
}

/// The shipped CRDs, applied and established.
pub async fn install_crds(client: &Client) {
    let text =
        std::fs::read_to_string(repo_root().join("manifests/kubernetes/crds/istio-kinds.yaml"))
            .unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let crds = api_for(
        client,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        None,
    );
    for d in docs.iter().filter(|d| !d.is_null()) {
        apply(client, d).await;
    }
    for d in docs.iter().filter(|d| !d.is_null()) {
        let name = d["metadata"]["name"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let crd = crds.get(name).await.unwrap();
            let conditions = crd.data["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
            {
                break;
            }
            assert!(Instant::now() < deadline, "CRD {name} not established");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn tail(&self, n: usize) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn metric(http_port: u16, series: &str) -> f64 {
    http_get(http_port, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// `peerguard serve --source kubernetes` with its state in `dir`: (process, gRPC port, ops port).
pub fn start_server(kubeconfig: &Path, dir: &Path, wasm: &Path) -> (Proc, u16, u16) {
    start_server_with(kubeconfig, dir, wasm, &[])
}

/// [`start_server`] with more arguments (e.g. `--ca-cert`/`--ca-key` shared by replicas).
pub fn start_server_with(
    kubeconfig: &Path,
    dir: &Path,
    wasm: &Path,
    extra: &[&str],
) -> (Proc, u16, u16) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let (grpc, http) = (free_port(), free_port());
    let log = dir.join("server.log");
    let child = Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .args(["serve", "--source", "kubernetes", "--kubeconfig"])
        .arg(kubeconfig)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--wasm")
        .arg(wasm)
        .args(extra)
        .args([
            "--listen",
            &format!("127.0.0.1:{grpc}"),
            "--http-listen",
            &format!("127.0.0.1:{http}"),
        ])
        .env(
            "RUST_LOG",
            std::env::var("PEERGUARD_TEST_SERVER_LOG")
                .unwrap_or_else(|_| "info,peerguard=debug".into()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (Proc { child, log }, grpc, http)
}

/// A ServiceAccount token from the TokenRequest API, bound to `pod` when given (what the
/// kubelet projects into a pod).
pub async fn sa_token(
    client: &Client,
    ns: &str,
    sa: &str,
    audiences: &[&str],
    pod: Option<&str>,
) -> String {
    let mut spec = json!({"audiences": audiences, "expirationSeconds": 600});
    if let Some(pod) = pod {
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
        let uid = pods.get(pod).await.unwrap().metadata.uid.unwrap();
        spec["boundObjectRef"] =
            json!({"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid});
    }
    let body =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    let tr: Value = sas
        .create_subresource("token", sa, &kube::api::PostParams::default(), &body)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest {ns}/{sa}: {e}"));
    tr["status"]["token"].as_str().unwrap().to_string()
}

/// A kubeconfig for the server's own identity from `manifests/kubernetes/peerguard.yaml` (its
/// Namespace, ServiceAccount, ClusterRole and binding are applied): the tests then prove the
/// least-privilege role is enough for everything the server does.
pub async fn manifest_identity_kubeconfig(
    client: &Client,
    admin_kubeconfig: &Path,
    dir: &Path,
) -> PathBuf {
    let text =
        std::fs::read_to_string(repo_root().join("manifests/kubernetes/peerguard.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    for d in docs.iter().filter(|d| {
        matches!(
            d["kind"].as_str(),
            Some("Namespace" | "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding")
        )
    }) {
        apply(client, d).await;
    }
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "peerguard-system");
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}});
    let tr: Value = sas
        .create_subresource(
            "token",
            "peerguard",
            &kube::api::PostParams::default(),
            &body,
        )
        .await
        .unwrap();
    let token = tr["status"]["token"].as_str().unwrap();
    let mut kc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(admin_kubeconfig).unwrap()).unwrap();
    kc["users"][0]["user"] = json!({"token": token});
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("peerguard.kubeconfig");
    std::fs::write(&path, serde_json::to_vec(&kc).unwrap()).unwrap();
    path
}
