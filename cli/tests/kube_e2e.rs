//! `peerguard serve --source kubernetes` against a real kube-apiserver + etcd, with a real
//! Envoy running the filter: policies written through the Kubernetes API are enforced, and the
//! time from the API write to enforcement is measured.
//!
//! The API server comes from `integration/kube/apiserver.sh` (built once and cached, see
//! there): `PEERGUARD_KUBECONFIG` names one already running, else the test starts its own from
//! the cached binaries. Missing binaries print `SKIPPED: ...` and pass unless
//! `PEERGUARD_REQUIRE_KUBE=1`. Envoy and the module as for `server_e2e`
//! (`PEERGUARD_REQUIRE_ENVOY=1` makes their absence fail).
//!
//! Figures: `PEERGUARD_KUBE_FLIPS` (default 20) DENY apply/delete rounds; p50/p99 of
//! apply→enforced are printed (`cargo test --test kube_e2e -- --nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
#[path = "kube_support/datapath.rs"]
mod kube_datapath;
#[path = "kube_support/harness.rs"]
mod kube_harness;

use harness::{http_get, wait_for};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::Client;
use kube_datapath::*;
use kube_harness::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deny_sleep(ns: &str, principal_field: &str) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-sleep", "namespace": ns},
        "spec": {"action": "DENY", "rules": [{"from": [{"source": {principal_field: ["cluster.local/ns/bar/sa/sleep"]}}]}]}
    })
}

#[test]
fn policies_written_through_the_kubernetes_api_are_enforced_by_envoy() {
    let test = "policies_written_through_the_kubernetes_api_are_enforced_by_envoy";
    let (Some(envoy_bin), Some(wasm)) = (find_envoy(), find_wasm()) else {
        skip(
            test,
            "no Envoy or no peerguard.wasm (scripts/setup.sh, scripts/build-wasm.sh)",
            "PEERGUARD_REQUIRE_ENVOY",
        );
        return;
    };
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

    // A namespace of our own (the API server may be shared), a pod and the Service selecting it.
    let ns = format!("e2e-{}", std::process::id());
    let pod = "httpbin-5d7c9f-x2x9q";
    let app = http_app();
    rt.block_on(async {
        apply(&client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await;
        apply(&client, &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "httpbin", "namespace": ns}})).await;
        apply(&client, &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": ns, "labels": {"app": "httpbin"}},
            "spec": {"serviceAccountName": "httpbin",
                     "containers": [{"name": "app", "image": "example.invalid/httpbin", "ports": [{"name": "http", "containerPort": app, "protocol": "TCP"}]}]}
        }))
        .await;
        // No kubelet here: set what it would report.
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
        pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "127.0.0.1"}})))
            .await
            .unwrap();
        apply(&client, &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "httpbin", "namespace": ns},
            "spec": {"selector": {"app": "httpbin"}, "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]}
        }))
        .await;
    });

    // The server, reading the cluster.
    let dir = std::env::temp_dir().join(format!("pg-kube-e2e-{}", std::process::id()));
    // It runs as the manifests' ServiceAccount with their least-privilege ClusterRole.
    let id_dir = std::env::temp_dir().join(format!("pg-kube-e2e-id-{}", std::process::id()));
    let server_kubeconfig = rt.block_on(manifest_identity_kubeconfig(
        &client,
        &apiserver.kubeconfig,
        &id_dir,
    ));
    let (server, grpc, http) = start_server(&server_kubeconfig, &dir, &wasm);
    wait_for(
        "the server to be ready (initial sync done)",
        Duration::from_secs(60),
        || matches!(http_get(http, "/readyz"), Some((200, _))),
    );
    assert!(
        server
            .tail(200)
            .contains("initial sync of every watched kind complete"),
        "{}",
        server.tail(40)
    );
    // The pod's projected ServiceAccount token (audience `peerguard`), as the kubelet mounts it.
    let token = dir.join("sa-token");
    std::fs::write(
        &token,
        rt.block_on(sa_token(&client, &ns, "httpbin", &["peerguard"], Some(pod))),
    )
    .unwrap();

    // Envoy, named as Istio's sidecar names itself: the pod comes from the node id and NAME.
    let (envoy, inbound) = start_envoy(&envoy_bin, &wasm, &dir, &ns, pod, &token, app, &[grpc]);
    let logs = [&server, &envoy];
    let sleep = client_config(
        &dir.join("state/ca/root-cert.pem"),
        &dir.join("state/ca/root-key.pem"),
        "spiffe://cluster.local/ns/bar/sa/sleep",
    );
    let long = Duration::from_secs(60);

    until(
        "mTLS request once ECDS+SDS arrived",
        Instant::now(),
        long,
        &logs,
        || request(inbound, Some(&sleep)),
        "200 app-ok",
    );
    until(
        "plaintext under PERMISSIVE",
        Instant::now(),
        long,
        &logs,
        || request(inbound, None),
        "200 app-ok",
    );

    // STRICT through the API: plaintext refused; removed: accepted again.
    let strict = json!({
        "apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": ns}, "spec": {"mtls": {"mode": "STRICT"}}
    });
    rt.block_on(apply(&client, &strict));
    until(
        "STRICT refuses plaintext",
        Instant::now(),
        long,
        &logs,
        || request(inbound, None),
        "closed",
    );
    assert!(
        request(inbound, Some(&sleep)).starts_with("200"),
        "mTLS still allowed under STRICT"
    );
    rt.block_on(delete(
        &client,
        "security.istio.io/v1beta1",
        "PeerAuthentication",
        &ns,
        "default",
    ));
    until(
        "STRICT removed",
        Instant::now(),
        long,
        &logs,
        || request(inbound, None),
        "200 app-ok",
    );

    // An invalid DENY (a misspelt field the CRD lets through) stays fail-closed.
    rt.block_on(apply(&client, &deny_sleep(&ns, "principalz")));
    until(
        "an invalid DENY denies (fail closed)",
        Instant::now(),
        long,
        &logs,
        || request(inbound, Some(&sleep)),
        "403",
    );
    assert!(
        server.tail(400).contains(&format!(
            "AuthorizationPolicy {ns}/deny-sleep: spec.rules[0].from[0].source"
        )),
        "the error names the object and field:\n{}",
        server.tail(40)
    );
    // ...and the user sees why on the object (status.peerguard) and in its Events.
    let aps = api_for(
        &client,
        "security.istio.io/v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
        Some(&ns),
    );
    let peerguard_status =
        || rt.block_on(aps.get("deny-sleep")).unwrap().data["status"]["peerguard"].clone();
    wait_for(
        "status.peerguard on the invalid object",
        Duration::from_secs(30),
        || peerguard_status()["valid"] == false,
    );
    let st = peerguard_status();
    assert!(
        st["messages"][0]
            .as_str()
            .unwrap_or_default()
            .contains("principalz"),
        "{st}"
    );
    assert_eq!(st["observedGeneration"], 1, "{st}");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
    let warned = rt
        .block_on(events.list(&Default::default()))
        .unwrap()
        .items
        .into_iter()
        .any(|e| {
            e.involved_object.name.as_deref() == Some("deny-sleep")
                && e.reason.as_deref() == Some("InvalidConfig")
                && e.message
                    .as_deref()
                    .unwrap_or_default()
                    .contains("principalz")
        });
    assert!(warned, "a Warning Event names the invalid object and field");
    // Fixed in place: the status says so (the valid DENY is then in force).
    rt.block_on(apply(&client, &deny_sleep(&ns, "principals")));
    wait_for(
        "status.peerguard valid again",
        Duration::from_secs(30),
        || peerguard_status()["valid"] == true,
    );
    assert_eq!(peerguard_status()["observedGeneration"], 2);
    rt.block_on(delete(
        &client,
        "security.istio.io/v1",
        "AuthorizationPolicy",
        &ns,
        "deny-sleep",
    ));
    until(
        "invalid DENY removed",
        Instant::now(),
        long,
        &logs,
        || request(inbound, Some(&sleep)),
        "200 app-ok",
    );

    // A change that compiles to nothing new (a label on the namespace) pushes nothing.
    let pushes = metric(http, "peerguard_xds_pushes_total{type=\"ecds\"}");
    rt.block_on(apply(&client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"touched": "yes"}}})));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        metric(http, "peerguard_xds_pushes_total{type=\"ecds\"}"),
        pushes,
        "no push without a content change"
    );

    // apply → enforced, both ways, over repeated flips.
    let flips: usize = std::env::var("PEERGUARD_KUBE_FLIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut times = Vec::new();
    for _ in 0..flips {
        let t0 = Instant::now();
        rt.block_on(apply(&client, &deny_sleep(&ns, "principals")));
        times.push(until(
            "DENY applied",
            t0,
            long,
            &logs,
            || request(inbound, Some(&sleep)),
            "403 RBAC: access denied",
        ));
        let t0 = Instant::now();
        rt.block_on(delete(
            &client,
            "security.istio.io/v1",
            "AuthorizationPolicy",
            &ns,
            "deny-sleep",
        ));
        times.push(until(
            "DENY deleted",
            t0,
            long,
            &logs,
            || request(inbound, Some(&sleep)),
            "200 app-ok",
        ));
    }
    let ms = |d: &Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
    println!(
        "KUBE-APPLY-TO-ENFORCED samples (ms, in order): {}",
        times.iter().map(ms).collect::<Vec<_>>().join(" ")
    );
    times.sort();
    let (p50, p99, max) = (
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times[times.len() - 1],
    );
    println!(
        "KUBE-APPLY-TO-ENFORCED: {} samples ({flips} DENY apply + {flips} delete): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert_eq!(
        metric(http, "peerguard_xds_rejects_total{type=\"ecds\"}"),
        0.0,
        "Envoy rejected a config:\n{}",
        envoy.tail(40)
    );
    // The goal is 200 ms; the bound leaves room for a loaded CI machine but catches a lost
    // watch event (a resync) or a wait on a timer.
    assert!(
        p99 < Duration::from_millis(1000),
        "apply→enforced p99 {p99:?} (goal 200 ms)"
    );

    rt.block_on(async {
        let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let _ = nss.delete(&ns, &DeleteParams::default()).await;
    });
    drop(envoy);
    drop(server);
    if std::env::var_os("PEERGUARD_KEEP_TEST_DIR").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

// ------------------------------------------------------------------ SDS authentication

const SDS: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Opens an SDS stream as Istio's sidecar of `ns/pod` with `token`: `Ok(SPIFFE URI of the
/// certificate)` or the refusal.
async fn sds_as(grpc: u16, ns: &str, pod: &str, token: &str) -> Result<String, tonic::Status> {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
    use prost::Message;
    use rustls::pki_types::pem::PemObject;
    let node = Node {
        id: format!("sidecar~127.0.0.1~{pod}.{ns}~{ns}.svc.cluster.local"),
        ..Default::default()
    };
    let first = DiscoveryRequest {
        node: Some(node),
        type_url: SDS.into(),
        resource_names: vec!["default".into()],
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("x-peerguard-token", token.parse().unwrap());
    let mut client = SecretDiscoveryServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let mut stream = client.stream_secrets(req).await?.into_inner();
    let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an answer")?
        .expect("a response");
    let sec = Secret::decode(resp.resources[0].value.as_slice()).unwrap();
    let Some(secret::Type::TlsCertificate(tls)) = sec.r#type else {
        panic!("not a certificate")
    };
    let Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(pem)) =
        tls.certificate_chain.and_then(|c| c.specifier)
    else {
        panic!("no inline chain")
    };
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    Ok(san
        .value
        .general_names
        .iter()
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .unwrap())
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A ServiceAccount token for `ns/sa` bound to `pod`, signed with the API server's own
/// service-account key, valid from `exp - 3600` to `exp` (unix seconds): the TokenRequest
/// API cannot issue an already expired token.
async fn minted_token(
    client: &Client,
    signing_key: &Path,
    issuer: &str,
    ns: &str,
    sa: &str,
    pod: &str,
    exp: u64,
) -> String {
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let sa_uid = sas.get(sa).await.unwrap().metadata.uid.unwrap();
    let pod_uid = pods.get(pod).await.unwrap().metadata.uid.unwrap();
    let claims = json!({
        "iss": issuer, "aud": ["peerguard"], "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "iat": exp - 3600, "nbf": exp - 3600, "exp": exp,
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": sa_uid}, "pod": {"name": pod, "uid": pod_uid}},
    });
    let signing_input = format!(
        "{}.{}",
        b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(signing_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sign failed");
    format!("{signing_input}.{}", b64url(&out.stdout))
}

#[test]
fn sds_serves_a_pod_only_with_its_own_service_account_token() {
    let test = "sds_serves_a_pod_only_with_its_own_service_account_token";
    let Some(apiserver) = ApiServer::get(test) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(client(&apiserver.kubeconfig));
    let ns = format!("sds-{}", std::process::id());
    rt.block_on(async {
        apply(&client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await;
        for (pod, sa) in [("httpbin-1", "httpbin"), ("httpbin-2", "httpbin"), ("sleep-1", "sleep")] {
            apply(&client, &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}})).await;
            apply(&client, &json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": ns},
                "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "example.invalid/app"}]}
            }))
            .await;
        }
    });
    let dir = std::env::temp_dir().join(format!("pg-kube-sds-{}", std::process::id()));
    let id_dir = std::env::temp_dir().join(format!("pg-kube-sds-id-{}", std::process::id()));
    let server_kubeconfig = rt.block_on(manifest_identity_kubeconfig(
        &client,
        &apiserver.kubeconfig,
        &id_dir,
    ));
    let (server, grpc, http) =
        start_server(&server_kubeconfig, &dir, Path::new("/opt/peerguard.wasm"));
    wait_for("the server to be ready", Duration::from_secs(60), || {
        matches!(http_get(http, "/readyz"), Some((200, _)))
    });

    rt.block_on(async {
        let own = sa_token(&client, &ns, "httpbin", &["peerguard"], Some("httpbin-1")).await;
        let spiffe = sds_as(grpc, &ns, "httpbin-1", &own)
            .await
            .unwrap_or_else(|e| panic!("own token refused: {e:?}\n{}", server.tail(20)));
        assert_eq!(
            spiffe,
            format!("spiffe://cluster.local/ns/{ns}/sa/httpbin"),
            "the identity comes from the verified token"
        );

        let same_sa_other_pod =
            sa_token(&client, &ns, "httpbin", &["peerguard"], Some("httpbin-2")).await;
        let other_sa = sa_token(&client, &ns, "sleep", &["peerguard"], Some("sleep-1")).await;
        let wrong_audience = sa_token(
            &client,
            &ns,
            "httpbin",
            &["not-peerguard"],
            Some("httpbin-1"),
        )
        .await;
        // Signed with the API server's key, so only the expiry is wrong; the same token still
        // valid is accepted (the minting is right).
        let kubeconfig_dir = apiserver.kubeconfig.parent().unwrap().to_path_buf();
        let key = kubeconfig_dir.join("pki/sa.key");
        let issuer = std::env::var("PEERGUARD_KUBE_SA_ISSUER")
            .unwrap_or_else(|_| "https://kubernetes.default.svc.cluster.local".into());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let still_valid = minted_token(
            &client,
            &key,
            &issuer,
            &ns,
            "httpbin",
            "httpbin-1",
            now + 600,
        )
        .await;
        assert!(
            sds_as(grpc, &ns, "httpbin-1", &still_valid).await.is_ok(),
            "a minted valid token is accepted\n{}",
            server.tail(20)
        );
        let expired = minted_token(
            &client,
            &key,
            &issuer,
            &ns,
            "httpbin",
            "httpbin-1",
            now - 60,
        )
        .await;
        let hmac_like = "00".repeat(32);
        for (what, token) in [
            (
                "another pod's token (same service account)",
                same_sa_other_pod.as_str(),
            ),
            ("another service account's token", other_sa.as_str()),
            ("a token for another audience", wrong_audience.as_str()),
            ("an expired token", expired.as_str()),
            ("a directory-mode HMAC token", hmac_like.as_str()),
        ] {
            match sds_as(grpc, &ns, "httpbin-1", token).await {
                Err(e) => assert_eq!(e.code(), tonic::Code::Unauthenticated, "{what}: {e:?}"),
                Ok(spiffe) => panic!("{what} got a certificate for {spiffe}"),
            }
        }
        assert!(
            server.tail(200).contains("token has expired") || server.tail(200).contains("expired"),
            "{}",
            server.tail(30)
        );
        let refused = metric(
            http,
            "peerguard_xds_refused_streams_total{reason=\"unauthenticated\"}",
        );
        assert_eq!(refused, 5.0, "every refusal is counted");
        let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let _ = nss.delete(&ns, &DeleteParams::default()).await;
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ manifests

#[test]
fn manifests_pass_a_server_side_dry_run() {
    let test = "manifests_pass_a_server_side_dry_run";
    let Some(apiserver) = ApiServer::get(test) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = client(&apiserver.kubeconfig).await;
        install_crds(&client).await;
        let text = std::fs::read_to_string(repo_root().join("manifests/kubernetes/peerguard.yaml"))
            .unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple::<Value>(&text)
            .unwrap()
            .into_iter()
            .filter(|d| !d.is_null())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Deployment",
                "Service",
                "PodDisruptionBudget"
            ]
        );
        // Namespaced objects can only be dry-run in an existing namespace: that one is created.
        apply(&client, &docs[0]).await;
        let served_groups = client.list_api_groups().await.unwrap();
        let serves = |gv: &str| {
            served_groups
                .groups
                .iter()
                .any(|g| g.versions.iter().any(|v| v.group_version == gv))
        };
        for doc in &docs[1..] {
            let mut doc = doc.clone();
            // Kubernetes 1.20 (the test server) predates policy/v1 (1.21); the spec is the same.
            if doc["apiVersion"] == "policy/v1" && !serves("policy/v1") {
                doc["apiVersion"] = json!("policy/v1beta1");
            }
            let (group, version) = doc["apiVersion"]
                .as_str()
                .unwrap()
                .rsplit_once('/')
                .unwrap_or(("", doc["apiVersion"].as_str().unwrap()));
            let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
            let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk)
                .await
                .unwrap_or_else(|e| panic!("{gvk:?}: {e}"));
            let api: Api<DynamicObject> = match (caps.scope, doc["metadata"]["namespace"].as_str())
            {
                (kube::discovery::Scope::Namespaced, Some(ns)) => {
                    Api::namespaced_with(client.clone(), ns, &ar)
                }
                _ => Api::all_with(client.clone(), &ar),
            };
            let name = doc["metadata"]["name"].as_str().unwrap();
            let params = PatchParams {
                dry_run: true,
                ..PatchParams::apply("peerguard-manifest-check").force()
            };
            api.patch(name, &params, &Patch::Apply(&doc))
                .await
                .unwrap_or_else(|e| panic!("dry run of {} {name}: {e}", gvk.kind));
        }
    });
}
