//! The Istio forms against a real kube-apiserver + etcd (integration/kube/apiserver.sh):
//!
//! - every shipped manifest, the kind test's workloads and the rendered Istio resources
//!   (`peerguard manifests istio wasmplugin|envoyfilter`) pass a server-side dry run with the
//!   WasmPlugin/EnvoyFilter CRDs (integration/istio/crds.yaml), and the dry run does refuse a
//!   broken WasmPlugin;
//! - `peerguard serve --source kubernetes --istio-wasmplugins`, two replicas with the shipped
//!   least-privilege identity: the WasmPlugin of a Deployment's pods appears (owner: the
//!   ClusterRole), follows AuthorizationPolicy changes (latency measured), is not rewritten
//!   while nothing changes (no flapping between replicas), keeps its name, and is deleted when
//!   its pods are gone; an unmanaged WasmPlugin is left alone; what `peerguard manifests istio
//!   wasmplugin --source kubernetes` prints is what the server wrote;
//! - deleting the owner ClusterRole garbage-collects the WasmPlugins.
//!
//! SKIPPED without the cached API server unless PEERGUARD_REQUIRE_KUBE=1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
#[path = "kube_support/harness.rs"]
mod kube_harness;

use harness::{http_get, wait_for};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::Client;
use kube_harness::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PG: &str = env!("CARGO_BIN_EXE_peerguard");

/// The tests that run `--istio-wasmplugins` servers take turns: every such server manages all
/// of the cluster's peerguard WasmPlugins (one installation per cluster), so two at once with
/// different owners would take each other's objects over.
static WRITERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

async fn install_crd_file(client: &Client, path: &Path) {
    let crds = api_for(
        client,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        None,
    );
    let all = docs(path);
    for d in &all {
        apply(client, d).await;
    }
    for d in &all {
        let name = d["metadata"]["name"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let crd = crds.get(name).await.unwrap();
            let ok = crd.data["status"]["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "CRD {name} not established");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Discovery of a new group takes a moment after Established.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn plural_of(kind: &str) -> String {
    match kind {
        "PodDisruptionBudget" => "poddisruptionbudgets".into(),
        "CustomResourceDefinition" => "customresourcedefinitions".into(),
        k => plural(k),
    }
}

/// Server-side apply with `dryRun=All`: the API server validates (schema, enums, RBAC
/// references) and persists nothing.
async fn dry_run(client: &Client, obj: &Value) -> Result<(), String> {
    let kind = obj["kind"].as_str().unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap();
    let api = api_for(
        client,
        obj["apiVersion"].as_str().unwrap(),
        kind,
        &plural_of(kind),
        obj["metadata"]["namespace"].as_str(),
    );
    api.patch(
        name,
        &PatchParams::apply("peerguard-dry-run").dry_run().force(),
        &Patch::Apply(obj),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("{kind} {name}: {e}"))
}

fn pg(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(PG).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn list_items(json_text: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(json_text).unwrap();
    assert_eq!(v["kind"], "List");
    v["items"].as_array().unwrap().clone()
}

const MESH: &str = "apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: httpbin-5d7c-a, namespace: foo, labels: {app: httpbin, pod-template-hash: 5d7c}}
spec:
  serviceAccount: httpbin
  services: [{name: httpbin, ports: [{name: http, port: 8000, targetPort: 80}, {name: tcp, port: 9000, protocol: tcp}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules: [{to: [{operation: {methods: [GET]}}]}]
";

#[test]
fn manifests_and_rendered_istio_resources_pass_server_side_dry_runs() {
    let test = "manifests_and_rendered_istio_resources_pass_server_side_dry_runs";
    let Some(apiserver) = ApiServer::get(test) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(client(&apiserver.kubeconfig));
    let root = repo_root();
    rt.block_on(async {
        install_crds(&client).await;
        install_crd_file(&client, &root.join("integration/istio/crds.yaml")).await;
    });

    // The rendered resources, from the commands users run.
    let dir = std::env::temp_dir().join(format!("pg-istio-dry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
    let (code, out, err) = pg(&[
        "manifests",
        "istio",
        "wasmplugin",
        "--config",
        dir.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut objects = list_items(&out);
    assert_eq!(
        objects.len(),
        3,
        "an HTTP and a network WasmPlugin, the direct-peer EnvoyFilter: {out}"
    );
    let (code, out, err) = pg(&["manifests", "istio", "envoyfilter", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    objects.extend(list_items(&out));
    let (code, out, err) = pg(&[
        "manifests",
        "istio",
        "envoyfilter",
        "--plaintext",
        "--namespace",
        "foo",
        "--selector",
        "app=httpbin",
        "--port",
        "80",
        "--port",
        "9000",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    objects.extend(list_items(&out));
    // The text output is the same objects in YAML.
    let (code, yaml, _) = pg(&[
        "manifests",
        "istio",
        "wasmplugin",
        "--config",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let from_yaml: Vec<Value> = serde_saphyr::from_multiple::<Value>(&yaml)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    assert_eq!(from_yaml[..], objects[..3]);

    // Every shipped manifest, and the kind test's workloads.
    let mut files = vec![
        "manifests/kubernetes/peerguard.yaml",
        "manifests/kubernetes/crds/istio-kinds.yaml",
        "manifests/istio/wasmplugin.yaml",
        "manifests/istio/envoyfilter-ecds.yaml",
        "manifests/istio/envoyfilter-direct-peer.yaml",
        "manifests/istio/rbac-wasmplugins.yaml",
        "integration/istio/crds.yaml",
    ];
    let kind_workloads = root.join("integration/kind/workloads.yaml");
    if kind_workloads.exists() {
        files.push("integration/kind/workloads.yaml");
    }
    for f in &files {
        objects.extend(docs(&root.join(f)));
    }
    // Namespaced objects need their namespace (a dry run creates nothing).
    let namespaces: BTreeSet<String> = objects
        .iter()
        .filter_map(|o| o["metadata"]["namespace"].as_str().map(String::from))
        .collect();
    let failures: Vec<String> = rt.block_on(async {
        for ns in &namespaces {
            apply(
                &client,
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .await;
        }
        let mut failures = Vec::new();
        for o in &objects {
            if let Err(e) = dry_run(&client, o).await {
                failures.push(e);
            }
        }
        failures
    });
    // kube-apiserver 1.20 serves PodDisruptionBudget only as policy/v1beta1; the shipped
    // manifest's policy/v1 (Kubernetes 1.21+) cannot be checked here, and is the only
    // object allowed to fail for that reason.
    let (unserved, failures): (Vec<String>, Vec<String>) = failures
        .into_iter()
        .partition(|f| f.starts_with("PodDisruptionBudget peerguard:") && f.contains("NotFound"));
    assert!(
        failures.is_empty(),
        "server-side dry runs failed:\n{}",
        failures.join("\n")
    );
    for u in &unserved {
        println!(
            "not checked (API not served by kube-apiserver 1.20.2): {}",
            u.split(':').next().unwrap_or_default()
        );
    }
    println!(
        "{} objects from {} files and 3 renderings passed a server-side dry run",
        objects.len() - unserved.len(),
        files.len()
    );

    // The dry run checks: a broken WasmPlugin is refused.
    let mut broken = objects[0].clone();
    broken["spec"]["failStrategy"] = json!("FAIL_SOMETIMES");
    let e = rt.block_on(dry_run(&client, &broken)).unwrap_err();
    assert!(e.contains("failStrategy"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn wasmplugins(client: &Client, ns: &str) -> Api<DynamicObject> {
    api_for(
        client,
        "extensions.istio.io/v1alpha1",
        "WasmPlugin",
        "wasmplugins",
        Some(ns),
    )
}

fn policy_names(wp: &DynamicObject) -> Vec<String> {
    wp.data["spec"]["pluginConfig"]["policies"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| p["policy"]["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn allow(ns: &str, name: &str, path: &str) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "rules": [{"to": [{"operation": {"paths": [path]}}]}]}
    })
}

fn pod(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "httpbin", "pod-template-hash": "7f9c"}},
        "spec": {"serviceAccountName": "httpbin", "containers": [{"name": "app", "image": "example.invalid/httpbin"}]}
    })
}

#[test]
fn served_wasmplugins_follow_policies_with_two_replicas() {
    let _turn = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    let test = "served_wasmplugins_follow_policies_with_two_replicas";
    let Some(apiserver) = ApiServer::get(test) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(client(&apiserver.kubeconfig));
    let root = repo_root();
    let pid = std::process::id();
    let ns = format!("wp-{pid}");
    let dir = std::env::temp_dir().join(format!("pg-istio-kube-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    // The server's own identity from the shipped manifests (+ the WasmPlugin role).
    let identity = rt.block_on(async {
        install_crds(&client).await;
        install_crd_file(&client, &root.join("integration/istio/crds.yaml")).await;
        let kc = manifest_identity_kubeconfig(&client, &apiserver.kubeconfig, &dir).await;
        for d in docs(&root.join("manifests/istio/rbac-wasmplugins.yaml")) {
            apply(&client, &d).await;
        }
        apply(&client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})).await;
        apply(&client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await;
        apply(&client, &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "httpbin", "namespace": ns}})).await;
        apply(&client, &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "httpbin", "namespace": ns},
            "spec": {"selector": {"app": "httpbin"}, "ports": [{"name": "http", "port": 8000, "targetPort": 80, "protocol": "TCP"}]}})).await;
        for p in ["httpbin-7f9c-a", "httpbin-7f9c-b"] {
            apply(&client, &pod(&ns, p)).await;
        }
        // Not peerguard's: must be left alone.
        apply(&client, &json!({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": {"name": "someone-elses", "namespace": ns},
            "spec": {"url": "oci://example.invalid/other:1", "selector": {"matchLabels": {"app": "httpbin"}}}})).await;
        apply(&client, &allow(&ns, "allow-a", "/a")).await;
        kc
    });
    let args = [
        "--istio-wasmplugins",
        "--wasm-url",
        "oci://registry.example/peerguard:1",
    ];
    let wasm = Path::new("/var/local/peerguard/peerguard.wasm");
    let (a, _, http_a) = start_server_with(&identity, &dir.join("a"), wasm, &args);
    let (b, _, http_b) = start_server_with(&identity, &dir.join("b"), wasm, &args);
    let name = peerguard_server::istio_forms::wasmplugin::group_name(
        &[("app".to_string(), "httpbin".to_string())].into(),
    );
    let api = wasmplugins(&client, &ns);
    let get = || rt.block_on(api.get_opt(&name)).unwrap();
    let logs = || format!("--- a:\n{}\n--- b:\n{}", a.tail(30), b.tail(30));

    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    let first = loop {
        if let Some(wp) = get().filter(|wp| policy_names(wp) == ["allow-a"]) {
            break wp;
        }
        assert!(
            Instant::now() < deadline,
            "no WasmPlugin {ns}/{name}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "WasmPlugin written {} ms after the servers started",
        start.elapsed().as_millis()
    );
    let spec = &first.data["spec"];
    assert_eq!(spec["selector"], json!({"matchLabels": {"app": "httpbin"}}));
    assert_eq!(spec["url"], "oci://registry.example/peerguard:1");
    assert_eq!(
        (
            spec["phase"].as_str(),
            spec["failStrategy"].as_str(),
            spec["pluginName"].as_str()
        ),
        (Some("AUTHZ"), Some("FAIL_CLOSE"), Some("peerguard_http"))
    );
    // The mesh-wide EnvoyFilter the form needs (direct peer as the remote address), written
    // with the WasmPlugins, same owner.
    let direct_peer = rt
        .block_on(
            api_for(
                &client,
                "networking.istio.io/v1alpha3",
                "EnvoyFilter",
                "envoyfilters",
                Some("istio-system"),
            )
            .get("peerguard-direct-peer"),
        )
        .unwrap_or_else(|e| {
            panic!(
                "no EnvoyFilter istio-system/peerguard-direct-peer: {e}\n{}",
                logs()
            )
        });
    assert_eq!(
        direct_peer.data["spec"],
        peerguard_server::istio_forms::envoyfilter::render_direct_peer("istio-system")["spec"]
    );
    assert_eq!(
        direct_peer.metadata.owner_references.as_ref().unwrap()[0].name,
        "peerguard"
    );
    let owner = &first.metadata.owner_references.as_ref().unwrap()[0];
    let role_uid = rt
        .block_on(
            api_for(
                &client,
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                "clusterroles",
                None,
            )
            .get("peerguard"),
        )
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("ClusterRole", "peerguard", role_uid.as_str())
    );

    // What the command prints for the cluster is what the server wrote.
    let (code, out, err) = pg(&[
        "manifests",
        "istio",
        "wasmplugin",
        "--source",
        "kubernetes",
        "--kubeconfig",
        apiserver.kubeconfig.to_str().unwrap(),
        "--wasm-url",
        "oci://registry.example/peerguard:1",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let printed = list_items(&out)
        .into_iter()
        .find(|o| o["metadata"]["namespace"] == json!(ns) && o["metadata"]["name"] == json!(name))
        .unwrap_or_else(|| panic!("{ns}/{name} not printed:\n{out}"));
    assert_eq!(printed["spec"], first.data["spec"]);

    // Policy changes: each one reaches the WasmPlugin (measured), in place.
    let mut latencies = Vec::new();
    for round in 0..5 {
        let path = format!("/r{round}");
        let t0 = Instant::now();
        rt.block_on(apply(&client, &allow(&ns, "allow-a", &path)));
        loop {
            let wp = get().unwrap();
            let rules = &wp.data["spec"]["pluginConfig"]["policies"][0]["rules"];
            if rules.to_string().contains(&format!("\"{path}\"")) {
                assert_eq!(wp.metadata.uid, first.metadata.uid, "updated in place");
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "round {round}: not updated\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    println!(
        "AuthorizationPolicy apply -> WasmPlugin pluginConfig updated (two replicas): median {} ms, max {} ms over {} rounds",
        latencies[latencies.len() / 2].as_millis(),
        latencies[latencies.len() - 1].as_millis(),
        latencies.len()
    );

    // Nothing changes: nothing is written (the replicas agree, no flapping).
    std::thread::sleep(Duration::from_millis(500));
    let rv = get().unwrap().metadata.resource_version;
    let writes = |port| {
        metric(
            port,
            "peerguard_istio_wasmplugin_writes_total{op=\"apply\"}",
        )
    };
    let before = writes(http_a) + writes(http_b);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        get().unwrap().metadata.resource_version,
        rv,
        "rewritten while nothing changed\n{}",
        logs()
    );
    assert_eq!(writes(http_a) + writes(http_b), before);
    // For information: every group of the (shared) API server counts, and on a change both
    // replicas may write the same content before either sees the other's write.
    println!("apply writes by both replicas, all groups in the cluster: {before} (this group: 6 changes)");

    // Deleting the policy empties the pluginConfig's policies.
    rt.block_on(delete(
        &client,
        "security.istio.io/v1",
        "AuthorizationPolicy",
        &ns,
        "allow-a",
    ));
    wait_for(
        "policy removed from the WasmPlugin",
        Duration::from_secs(20),
        || {
            get().is_some_and(|wp| {
                policy_names(&wp).is_empty() && wp.data["spec"]["pluginConfig"]["schema"] == 1
            })
        },
    );

    // Pods gone: the WasmPlugin is deleted; someone else's stays.
    rt.block_on(async {
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
        for p in ["httpbin-7f9c-a", "httpbin-7f9c-b"] {
            pods.delete(p, &DeleteParams::default().grace_period(0))
                .await
                .unwrap();
        }
    });
    wait_for(
        "WasmPlugin deleted with its pods",
        Duration::from_secs(20),
        || get().is_none(),
    );
    assert!(
        rt.block_on(api.get_opt("someone-elses")).unwrap().is_some(),
        "an unmanaged WasmPlugin was touched"
    );
    for port in [http_a, http_b] {
        assert!(matches!(http_get(port, "/healthz"), Some((200, _))));
    }
    drop(a);
    drop(b);
    rt.block_on(async {
        let nss = api_for(&client, "v1", "Namespace", "namespaces", None);
        let _ = nss.delete(&ns, &DeleteParams::default()).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The owner reference works: deleting the owner ClusterRole garbage-collects the WasmPlugins
/// (kube-controller-manager's garbage collector, started by apiserver.sh). Its own owner role,
/// so that the shared `peerguard` role of the other tests is never deleted.
#[test]
fn wasmplugins_are_garbage_collected_with_their_owner() {
    let _turn = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    let test = "wasmplugins_are_garbage_collected_with_their_owner";
    let Some(apiserver) = ApiServer::get(test) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(client(&apiserver.kubeconfig));
    let pid = std::process::id();
    let ns = format!("wp-gc-{pid}");
    let owner = format!("peerguard-gc-owner-{pid}");
    let dir = std::env::temp_dir().join(format!("pg-istio-gc-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    rt.block_on(async {
        install_crds(&client).await;
        install_crd_file(&client, &repo_root().join("integration/istio/crds.yaml")).await;
        apply(&client, &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": owner}, "rules": []})).await;
        apply(&client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await;
        apply(&client, &pod(&ns, "httpbin-7f9c-a")).await;
    });
    let (server, _, _) = start_server_with(
        &apiserver.kubeconfig,
        &dir,
        Path::new("/var/local/peerguard/peerguard.wasm"),
        &["--istio-wasmplugins", "--istio-owner-clusterrole", &owner],
    );
    let name = peerguard_server::istio_forms::wasmplugin::group_name(
        &[("app".to_string(), "httpbin".to_string())].into(),
    );
    let api = wasmplugins(&client, &ns);
    wait_for(
        "the WasmPlugin, owned by the role",
        Duration::from_secs(60),
        || {
            rt.block_on(api.get_opt(&name)).unwrap().is_some_and(|wp| {
                wp.metadata
                    .owner_references
                    .unwrap_or_default()
                    .iter()
                    .any(|o| o.name == owner)
            })
        },
    );
    // The server stops first (it would write the object again, without an owner).
    drop(server);
    rt.block_on(async {
        api_for(
            &client,
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "clusterroles",
            None,
        )
        .delete(&owner, &DeleteParams::default())
        .await
        .unwrap();
    });
    let t0 = Instant::now();
    wait_for(
        "garbage collection of the WasmPlugin",
        Duration::from_secs(90),
        || rt.block_on(api.get_opt(&name)).unwrap().is_none(),
    );
    println!(
        "WasmPlugin garbage-collected {} ms after its owner was deleted",
        t0.elapsed().as_millis()
    );
    rt.block_on(async {
        let _ = api_for(&client, "v1", "Namespace", "namespaces", None)
            .delete(&ns, &DeleteParams::default())
            .await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
