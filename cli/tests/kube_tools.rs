//! The one-shot commands (`explain`, `compile`, `describe`) with `--source kubernetes` against a
//! real kube-apiserver + etcd: they read the cluster as `serve` does (pods are the registry,
//! their Services map legacy Policy ports), and they write nothing to it.
//!
//! The API server as in `kube_e2e` (`PEERGUARD_KUBECONFIG`, or the cached binaries of
//! `integration/kube/apiserver.sh`; missing binaries print `SKIPPED: ...` and pass unless
//! `PEERGUARD_REQUIRE_KUBE=1`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
#[path = "kube_support/harness.rs"]
mod kube_harness;

use kube::api::{Patch, PatchParams};
use kube_harness::*;
use serde_json::json;
use std::process::{Command, Output};

fn peerguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn one_shot_commands_read_the_cluster_like_serve() {
    let test = "one_shot_commands_read_the_cluster_like_serve";
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
    let ns = format!("tools-{}", std::process::id());
    let pod = "httpbin-7f9c-abcde";
    rt.block_on(async {
        apply(&client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await;
        apply(&client, &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": ns, "labels": {"app": "httpbin"}},
            "spec": {"serviceAccountName": "httpbin",
                     "containers": [{"name": "app", "image": "example.invalid/httpbin", "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}]}
        }))
        .await;
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), &ns);
        pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "127.0.0.1"}})))
            .await
            .unwrap();
        apply(&client, &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "httpbin", "namespace": ns},
            "spec": {"selector": {"app": "httpbin"}, "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]}
        }))
        .await;
        apply(&client, &json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "allow-sleep", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "httpbin"}},
                     "rules": [{"from": [{"source": {"principals": [format!("cluster.local/ns/{ns}/sa/sleep")]}}]}]}
        }))
        .await;
        apply(&client, &json!({
            "apiVersion": "authentication.istio.io/v1alpha1", "kind": "Policy",
            "metadata": {"name": "httpbin", "namespace": ns},
            "spec": {"targets": [{"name": "httpbin", "ports": [{"number": 8000}]}], "peers": [{"mtls": {}}]}
        }))
        .await;
    });
    let kc = apiserver.kubeconfig.to_string_lossy().into_owned();
    let workload = format!("{ns}/{pod}");
    let explain = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            "--source",
            "kubernetes",
            "--kubeconfig",
            &kc,
            "--workload",
            &workload,
        ];
        args.extend_from_slice(extra);
        peerguard(&args)
    };
    let sleep = format!("cluster.local/ns/{ns}/sa/sleep");
    // The pod's labels come from the cluster: the ALLOW selects it.
    let o = explain(&["--port", "80", "--peer", &sleep]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).starts_with("ALLOW\n"),
        "{}",
        text(&o.stdout)
    );
    let o = explain(&["--port", "80", "--peer", "cluster.local/ns/x/sa/other"]);
    assert!(text(&o.stdout).starts_with("DENY\n"), "{}", text(&o.stdout));
    // The legacy Policy names Service port 8000, whose targetPort `http` is the pod's port 80.
    let o = explain(&["--port", "80", "--plaintext"]);
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!(
            "mTLS: port 80 is STRICT (set by Policy {ns}/httpbin)"
        )),
        "{out}"
    );

    let o = peerguard(&[
        "describe",
        "--source",
        "kubernetes",
        "--kubeconfig",
        &kc,
        "--workload",
        &workload,
        "--output",
        "json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["service_account"], "httpbin", "{d}");
    assert_eq!(d["services"][0]["target_port"], 80, "{d}");
    assert_eq!(
        d["policies"][0]["policy"],
        format!("{ns}/allow-sleep"),
        "{d}"
    );

    // An invalid object: exit 2 naming it, and the one-shot commands write no status to it
    // (only `serve` reports on the objects).
    rt.block_on(apply(&client, &json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "broken", "namespace": ns},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"], "pathz": ["/x"]}}]}]}
    })));
    let o = peerguard(&[
        "compile",
        "--source",
        "kubernetes",
        "--kubeconfig",
        &kc,
        "--workload",
        &workload,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!("AuthorizationPolicy {ns}/broken")),
        "{}",
        text(&o.stderr)
    );
    let broken = rt.block_on(async {
        api_for(
            &client,
            "security.istio.io/v1",
            "AuthorizationPolicy",
            "authorizationpolicies",
            Some(&ns),
        )
        .get("broken")
        .await
        .unwrap()
    });
    assert!(
        broken
            .data
            .get("status")
            .is_none_or(|s| s.get("peerguard").is_none()),
        "{:?}",
        broken.data
    );

    // No cluster: a clear error, exit 2, at once (the source's retries are for `serve`).
    let missing = std::env::temp_dir().join("pg-no-such-kubeconfig");
    let o = peerguard(&[
        "explain",
        "--source",
        "kubernetes",
        "--kubeconfig",
        &missing.to_string_lossy(),
        "--workload",
        &workload,
        "--plaintext",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("error: kubernetes client"),
        "{}",
        text(&o.stderr)
    );
}
