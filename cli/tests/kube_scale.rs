//! Scale of `peerguard serve --source kubernetes` against the real API server: 1,000 pods,
//! 2,000 Services and 10,000 AuthorizationPolicies created through the API, then the server's
//! initial sync time, first full build (every workload compiled, certificate issued, snapshot
//! published), memory, and the rebuild time after one policy change.
//!
//! Ignored by default (it creates 13,000 objects; minutes on a busy 2-core machine):
//! `cargo test -p peerguard-server --test kube_scale -- --ignored --nocapture`. Sizes:
//! `PEERGUARD_SCALE_PODS` (1000), `PEERGUARD_SCALE_SERVICES` (2000),
//! `PEERGUARD_SCALE_POLICIES` (10000); `PEERGUARD_SCALE_BIN` measures another `peerguard`
//! binary (e.g. a release build) than the test's debug one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
#[path = "kube_support/harness.rs"]
mod kube_harness;

use futures::StreamExt;
use harness::{free_port, http_get, wait_for};
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::Client;
use kube_harness::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates `objects` with `concurrency` requests in flight; returns objects per second.
async fn create_all(client: &Client, objects: Vec<Value>, concurrency: usize) -> f64 {
    let n = objects.len();
    let t0 = Instant::now();
    futures::stream::iter(objects)
        .map(|o| {
            let client = client.clone();
            async move {
                let kind = o["kind"].as_str().unwrap().to_string();
                let api = api_for(
                    &client,
                    o["apiVersion"].as_str().unwrap(),
                    &kind,
                    &plural(&kind),
                    o["metadata"]["namespace"].as_str(),
                );
                let obj: DynamicObject = serde_json::from_value(o).unwrap();
                api.create(&PostParams::default(), &obj)
                    .await
                    .unwrap_or_else(|e| panic!("create {kind}: {e}"));
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    n as f64 / t0.elapsed().as_secs_f64()
}

/// `VmRSS` and `VmHWM` of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// The log without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

#[test]
#[ignore = "creates 13,000 objects; run with --ignored for the figures"]
fn scale_initial_sync_full_build_and_memory() {
    let test = "scale_initial_sync_full_build_and_memory";
    let Some(apiserver) = ApiServer::get(test) else {
        return;
    };
    let (pods, services, policies) = (
        size("PEERGUARD_SCALE_PODS", 1000),
        size("PEERGUARD_SCALE_SERVICES", 2000),
        size("PEERGUARD_SCALE_POLICIES", 10000),
    );
    let namespaces = 20usize;
    let apps_per_ns = 10usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(client(&apiserver.kubeconfig));
    rt.block_on(install_crds(&client));
    let pid = std::process::id();
    let ns = |i: usize| format!("scale-{pid}-{}", i % namespaces);

    let mut objects = Vec::new();
    for i in 0..namespaces {
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns(i)}}));
    }
    let rate = rt.block_on(create_all(&client, objects, 8));
    let mut core = Vec::new();
    for i in 0..pods {
        core.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("w{}-{i}", i % apps_per_ns), "namespace": ns(i), "labels": {"app": format!("w{}", i % apps_per_ns)}},
            "spec": {"serviceAccountName": format!("sa{}", i % apps_per_ns),
                     "containers": [{"name": "app", "image": "example.invalid/app", "ports": [{"name": "http", "containerPort": 8080}]}]}
        }));
    }
    for i in 0..services {
        core.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("s{i}"), "namespace": ns(i)},
            "spec": {"selector": {"app": format!("w{}", i % apps_per_ns)},
                     "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]}
        }));
    }
    let mut aps = Vec::new();
    for i in 0..policies {
        let action = if i % 10 == 0 { "DENY" } else { "ALLOW" };
        aps.push(json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": format!("ap{i}"), "namespace": ns(i)},
            "spec": {"action": action, "selector": {"matchLabels": {"app": format!("w{}", i % apps_per_ns)}},
                     "rules": [{"from": [{"source": {"principals": [format!("cluster.local/ns/{}/sa/sa{}", ns(i + 1), i % 7)]}}],
                                "to": [{"operation": {"methods": ["GET"], "paths": [format!("/p{i}/*")]}}]}]}
        }));
    }
    let t0 = Instant::now();
    let core_rate = rt.block_on(create_all(&client, core, 32));
    let ap_rate = rt.block_on(create_all(&client, aps, 32));
    println!(
        "SCALE: created {namespaces} namespaces ({rate:.0}/s), {pods} pods + {services} services ({core_rate:.0}/s), {policies} AuthorizationPolicies ({ap_rate:.0}/s) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let bin = std::env::var("PEERGUARD_SCALE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_peerguard").to_string());
    let dir = std::env::temp_dir().join(format!("pg-kube-scale-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let (grpc, http) = (free_port(), free_port());
    let log = dir.join("server.log");
    let started = Instant::now();
    let server = Proc {
        child: Command::new(&bin)
            .args(["serve", "--source", "kubernetes", "--kubeconfig"])
            .arg(&apiserver.kubeconfig)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args([
                "--wasm",
                "/opt/peerguard.wasm",
                "--listen",
                &format!("127.0.0.1:{grpc}"),
                "--http-listen",
                &format!("127.0.0.1:{http}"),
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
    };
    let spid = server.child.id();
    let mut peak_during = 0.0f64;
    wait_for("the first full build", Duration::from_secs(900), || {
        peak_during = peak_during.max(memory(spid).0);
        matches!(http_get(http, "/readyz"), Some((200, _)))
    });
    let ready = started.elapsed();
    let cpu_to_ready = cpu_seconds(spid);
    let log_text = strip_ansi(&std::fs::read_to_string(&server.log).unwrap());
    let sync_ms: f64 = log_text
        .lines()
        .find(|l| l.contains("initial sync of every watched kind complete"))
        .and_then(|l| l.split("elapsed_ms=").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no initial-sync line:\n{}", server.tail(20)));
    let workloads = metric(http, "peerguard_workloads");
    assert!(
        workloads >= pods as f64,
        "{workloads} workloads for {pods} pods"
    );
    let (rss, hwm) = memory(spid);

    // One more policy: time until every workload's policy is rebuilt.
    let reloads = metric(http, "peerguard_config_reloads_total");
    let t0 = Instant::now();
    rt.block_on(async {
        let api = api_for(&client, "security.istio.io/v1", "AuthorizationPolicy", "authorizationpolicies", Some(&ns(0)));
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "one-more", "namespace": ns(0)}, "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}
        }))
        .unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap();
    });
    wait_for(
        "the rebuild after one change",
        Duration::from_secs(300),
        || metric(http, "peerguard_config_reloads_total") > reloads,
    );
    let rebuild = t0.elapsed();
    eprintln!(
        "change applied at {:?} (unix), rebuild seen {rebuild:?} later",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            - rebuild
    );
    let (rss_after, hwm_after) = memory(spid);
    println!(
        "SCALE: peerguard serve ({}): initial sync {:.2} s; ready (every workload compiled, cert issued, snapshot published) {:.2} s after start, {:.1} CPU-s; {workloads} workloads; RSS {rss:.0} MiB (peak {:.0} MiB); one policy added → all rebuilt in {:.2} s; RSS after {rss_after:.0} MiB (peak {:.0} MiB)",
        if bin.contains("/release/") { "release" } else { "debug build" },
        sync_ms / 1e3,
        ready.as_secs_f64(),
        cpu_to_ready,
        hwm.max(peak_during),
        rebuild.as_secs_f64(),
        hwm_after,
    );
    drop(server);
    rt.block_on(async {
        let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        for i in 0..namespaces {
            let _ = nss.delete(&ns(i), &DeleteParams::default()).await;
        }
    });
    if std::env::var_os("PEERGUARD_KEEP_TEST_DIR").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
