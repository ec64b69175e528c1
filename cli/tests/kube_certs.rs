//! `peerguard certs --secret ns/name` against the real API server (`integration/kube/apiserver.sh`):
//! a `kubernetes.io/tls` Secret and an Istio-style one are read, verified against the roots they
//! carry, and a missing Secret is a clear exit 2.
//!
//! Prerequisites as for `kube_e2e` (`PEERGUARD_REQUIRE_KUBE=1` makes a missing API server a
//! failure).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
#[path = "kube_support/harness.rs"]
mod kube_harness;

use kube_harness::*;
use peerguard_harness::pki::{CaChoice, ClientCertSpec, TestPki};
use serde_json::{json, Value};
use std::process::Command;

fn certs(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .arg("certs")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_from_the_cluster() {
    let Some(api) = ApiServer::get("kube_certs") else {
        return;
    };
    let client = client(&api.kubeconfig).await;
    apply(
        &client,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}}),
    )
    .await;
    let pki = TestPki::new().unwrap();
    let leaf = pki
        .client(&ClientCertSpec {
            uri_sans: vec!["spiffe://cluster.local/ns/foo/sa/web".into()],
            ca: CaChoice::Mesh,
            expired: false,
        })
        .unwrap();
    apply(
        &client,
        &json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "web", "namespace": "foo"},
            "stringData": {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": pki.mesh_root_pem()}}),
    )
    .await;
    apply(
        &client,
        &json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "istio.web", "namespace": "foo"},
            "stringData": {"cert-chain.pem": leaf.cert_pem, "key.pem": leaf.key_pem, "root-cert.pem": pki.untrusted_root_pem()}}),
    )
    .await;
    let kc = api.kubeconfig.to_str().unwrap();

    let (code, out, err) = certs(&[
        "--secret",
        "foo/web",
        "--kubeconfig",
        kc,
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("PRIVATE KEY"));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["source"], "Secret foo/web key tls.crt");
    assert_eq!(v["certificates"][0]["spiffe"]["service_account"], "web");
    assert_eq!(v["verification"]["status"], "verified", "{v:#}");
    assert_eq!(
        v["verification"]["trust_bundle"],
        "Secret foo/web key ca.crt"
    );

    // Istio's keys; its root-cert.pem is another root: not verified, exit 1.
    let (code, out, _) = certs(&["--secret", "foo/istio.web", "--kubeconfig", kc]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("Secret foo/istio.web key cert-chain.pem (1 certificate)"),
        "{out}"
    );
    assert!(out.contains("chain-not-verified"), "{out}");

    let (code, _, err) = certs(&["--secret", "foo/missing", "--kubeconfig", kc]);
    assert_eq!(code, 2);
    assert!(err.contains("Secret foo/missing"), "{err}");
}
