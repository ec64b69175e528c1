//! `peerguard analyze --source kubernetes` against a real kube-apiserver: Pod probes read from
//! the cluster (Istio's rewrite annotation honoured), a DestinationRule sending plaintext to a
//! STRICT namespace. Skips (prints `SKIPPED`) without the cached API server, unless
//! `PEERGUARD_REQUIRE_KUBE=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
#[path = "kube_support/harness.rs"]
mod kube_harness;

use kube::api::{Api, Patch, PatchParams};
use kube_harness::*;
use serde_json::{json, Value};
use std::process::Command;

#[test]
fn analyze_reads_the_cluster_pods_probes_and_destination_rules() {
    let test = "analyze_reads_the_cluster_pods_probes_and_destination_rules";
    let Some(apiserver) = ApiServer::get(test) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(client(&apiserver.kubeconfig));
    rt.block_on(install_crds(&client));
    let ns = format!("analyze-{}", std::process::id());
    let pod = |name: &str, rewrite: Option<&str>| {
        let mut annotations = serde_json::Map::new();
        if let Some(v) = rewrite {
            annotations.insert("sidecar.istio.io/rewriteAppHTTPProbers".into(), json!(v));
        }
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}, "annotations": annotations},
            "spec": {"containers": [{
                "name": "app", "image": "example.invalid/app",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                "readinessProbe": {"tcpSocket": {"port": 8080}}
            }]}
        })
    };
    rt.block_on(async {
        apply(&client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await;
        apply(&client, &pod("norewrite", Some("false"))).await;
        apply(&client, &pod("rewritten", None)).await;
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
        for name in ["norewrite", "rewritten"] {
            pods.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "127.0.0.9"}})))
                .await
                .unwrap();
        }
        apply(&client, &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
            "spec": {"selector": {"app": "norewrite"}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}})).await;
        apply(&client, &json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": ns}, "spec": {"mtls": {"mode": "STRICT"}}})).await;
        apply(&client, &json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "web-plaintext", "namespace": ns},
            "spec": {"host": format!("web.{ns}.svc.cluster.local"), "trafficPolicy": {"tls": {"mode": "DISABLE"}}}})).await;
    });
    let out = Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .args(["analyze", "--source", "kubernetes", "--kubeconfig"])
        .arg(&apiserver.kubeconfig)
        .args(["--output", "json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut ours: Vec<(String, String, String)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["object"].as_str().unwrap().contains(&ns))
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["object"].as_str().unwrap().to_string(),
                f["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ours.sort();
    assert_eq!(
        ours,
        vec![
            (
                "PG101".into(),
                format!("DestinationRule {ns}/web-plaintext"),
                "spec.trafficPolicy.tls.mode".into()
            ),
            (
                "PG501".into(),
                format!("Pod {ns}/norewrite"),
                "spec.containers[app].livenessProbe".into()
            ),
            (
                "PG502".into(),
                format!("Pod {ns}/norewrite"),
                "spec.containers[app].readinessProbe".into()
            ),
        ],
        "{text}"
    );
}
