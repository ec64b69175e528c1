//! Two `peerguard serve --source kubernetes` replicas against the real API server, sharing one
//! CA, with an Envoy whose xDS cluster lists both: killing the replica Envoy is connected to,
//! under continuous traffic, lets no denied request through; Envoy reconnects to the other
//! replica, and a policy written while the first one is down is enforced.
//!
//! Prerequisites as for `kube_e2e` (`PEERGUARD_REQUIRE_KUBE`, `PEERGUARD_REQUIRE_ENVOY`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
#[path = "kube_support/datapath.rs"]
mod kube_datapath;
#[path = "kube_support/harness.rs"]
mod kube_harness;

use harness::{http_get, wait_for};
use kube::api::{Api, DeleteParams};
use kube_datapath::*;
use kube_harness::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn deny(ns: &str, name: &str, principal: &str) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"action": "DENY", "rules": [{"from": [{"source": {"principals": [principal]}}]}]}
    })
}

/// A CA both replicas sign with (`--ca-cert`/`--ca-key`, PKCS#8).
fn write_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "peerguard test root");
    let cert = p.self_signed(&key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let (c, k) = (dir.join("ca-cert.pem"), dir.join("ca-key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[test]
fn killing_the_connected_replica_under_traffic_lets_nothing_through() {
    let test = "killing_the_connected_replica_under_traffic_lets_nothing_through";
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
    let pid = std::process::id();
    let ns = format!("replicas-{pid}");
    let pod = "httpbin-7f9c-abcde";
    let app = http_app();
    let sleep_principal = "cluster.local/ns/bar/sa/sleep";
    let other_principal = "cluster.local/ns/bar/sa/other";
    rt.block_on(async {
        apply(&client, &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await;
        apply(&client, &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "httpbin", "namespace": ns}})).await;
        apply(&client, &json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": ns, "labels": {"app": "httpbin"}},
            "spec": {"serviceAccountName": "httpbin", "containers": [{"name": "app", "image": "example.invalid/httpbin"}]}
        }))
        .await;
        apply(&client, &deny(&ns, "deny-sleep", sleep_principal)).await;
    });

    let dir = std::env::temp_dir().join(format!("pg-kube-replicas-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    let (ca_cert, ca_key) = write_ca(&dir.join("ca"));
    let ca_args = [
        "--ca-cert",
        ca_cert.to_str().unwrap(),
        "--ca-key",
        ca_key.to_str().unwrap(),
    ];
    let (mut a, grpc_a, http_a) =
        start_server_with(&apiserver.kubeconfig, &dir.join("a"), &wasm, &ca_args);
    let (mut b, grpc_b, http_b) =
        start_server_with(&apiserver.kubeconfig, &dir.join("b"), &wasm, &ca_args);
    for http in [http_a, http_b] {
        wait_for("a replica to be ready", Duration::from_secs(60), || {
            matches!(http_get(http, "/readyz"), Some((200, _)))
        });
    }
    let token = dir.join("sa-token");
    std::fs::write(
        &token,
        rt.block_on(sa_token(&client, &ns, "httpbin", &["peerguard"], Some(pod))),
    )
    .unwrap();
    let (envoy, inbound) = start_envoy(
        &envoy_bin,
        &wasm,
        &dir,
        &ns,
        pod,
        &token,
        app,
        &[grpc_a, grpc_b],
    );
    let sleep = client_config(&ca_cert, &ca_key, &format!("spiffe://{sleep_principal}"));
    let other = client_config(&ca_cert, &ca_key, &format!("spiffe://{other_principal}"));
    let long = Duration::from_secs(60);
    until(
        "the allowed peer passes",
        Instant::now(),
        long,
        &[&a, &b, &envoy],
        || request(inbound, Some(&other)),
        "200 app-ok",
    );
    assert!(
        request(inbound, Some(&sleep)).starts_with("403"),
        "the DENY is in force before the kill"
    );

    // Continuous traffic from both peers until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let other_denied = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 5]> = Arc::new(Default::default()); // sleep total, sleep allowed, other total, other 200, other allowed after its DENY
    let traffic = {
        let (stop, other_denied, counts) = (stop.clone(), other_denied.clone(), counts.clone());
        let (sleep, other) = (sleep.clone(), other.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                counts[0].fetch_add(1, Ordering::SeqCst);
                if request(inbound, Some(&sleep)).starts_with("200") {
                    counts[1].fetch_add(1, Ordering::SeqCst);
                }
                let denied_before = other_denied.load(Ordering::SeqCst);
                counts[2].fetch_add(1, Ordering::SeqCst);
                if request(inbound, Some(&other)).starts_with("200") {
                    counts[3].fetch_add(1, Ordering::SeqCst);
                    if denied_before {
                        counts[4].fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // Kill a replica Envoy has streams to (Envoy balances its xDS streams over both, so it
    // may have streams to each); its streams must come back on the other one.
    let streams = |http: u16| -> f64 {
        http_get(http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("peerguard_xds_streams{"))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    };
    wait_for("Envoy's streams to be open", long, || {
        streams(http_a) + streams(http_b) >= 1.0
    });
    let total = streams(http_a) + streams(http_b);
    let (victim, survivor_http, name) = if streams(http_a) >= 1.0 {
        (&mut a, http_b, "a")
    } else {
        (&mut b, http_a, "b")
    };
    let _ = victim.child.kill();
    let _ = victim.child.wait();
    let killed = Instant::now();
    wait_for(
        "Envoy to reopen every stream on the other replica",
        long,
        || streams(survivor_http) >= total,
    );
    let reconnect = killed.elapsed();
    std::thread::sleep(Duration::from_secs(1));

    // Written while the killed replica is down: enforced through the survivor.
    let t0 = Instant::now();
    rt.block_on(apply(&client, &deny(&ns, "deny-other", other_principal)));
    let survivor = if name == "a" { &b } else { &a };
    let enforced = until(
        "the DENY written during the outage",
        t0,
        long,
        &[survivor, &envoy],
        || request(inbound, Some(&other)),
        "403",
    );
    other_denied.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    traffic.join().unwrap();
    let c: Vec<u64> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    println!(
        "KUBE-REPLICAS: killed replica {name} (Envoy had {total} streams); all reopened on the other in {:.2} s; a DENY written during the outage enforced in {:.0} ms; traffic: {} denied-peer requests, {} wrongly allowed; {} allowed-peer requests, {} answered 200, {} allowed after its DENY was seen enforced",
        reconnect.as_secs_f64(),
        enforced.as_secs_f64() * 1e3,
        c[0],
        c[1],
        c[2],
        c[3],
        c[4]
    );
    assert_eq!(c[1], 0, "a request of the denied peer got through");
    assert_eq!(
        c[4], 0,
        "the allowed peer passed after its DENY was enforced"
    );
    assert!(c[0] > 10, "traffic ran during the kill");
    assert_eq!(
        metric(survivor_http, "peerguard_xds_rejects_total{type=\"ecds\"}"),
        0.0,
        "{}",
        envoy.tail(30)
    );

    rt.block_on(async {
        let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let _ = nss.delete(&ns, &DeleteParams::default()).await;
    });
    drop(envoy);
    drop(a);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
