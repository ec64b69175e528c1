//! [b] A changed policy pushed to many xDS clients: one registered workload and one ECDS
//! stream each, over real gRPC (tonic clients, a few HTTP/2 connections). Timed from the file
//! write until every stream has received the new version; the server's RSS is sampled from
//! `/proc/<pid>/status` meanwhile.

use super::{write_atomic, ServerArgs, ServerProc};
use anyhow::Context;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_client::ExtensionConfigDiscoveryServiceClient;
use peerguard_server::snapshot::{ECDS_TYPE, HTTP_FILTER};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;

pub struct Result {
    pub startup: Duration,
    pub connect: Duration,
    pub streams: usize,
    /// Per stream: file write → new version received.
    pub received: Vec<Duration>,
    pub missing: usize,
    pub rss_before: u64,
    pub rss_peak: u64,
    pub hwm: u64,
}

/// Streams per HTTP/2 connection (well under the usual concurrent-stream limits).
const PER_CONNECTION: usize = 50;

fn key(i: usize) -> (String, String) {
    (format!("ns-{}", i / 10), format!("w-{i}"))
}

const ROOT_DENY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-rogue, namespace: istio-system}
spec:
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/rogue/sa/rogue]}}]}]
";

pub fn run(exe: &Path, dir: &Path, args: &ServerArgs) -> anyhow::Result<Result> {
    std::fs::create_dir_all(dir.join("cfg"))?;
    std::fs::create_dir_all(dir.join("state"))?;
    let mut yaml = String::new();
    for i in 0..args.clients {
        let (ns, name) = key(i);
        yaml.push_str(&format!(
            "---\napiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\nspec: {{serviceAccount: {name}}}\n"
        ));
    }
    write_atomic(&dir.join("cfg/workloads.yaml"), &yaml)?;
    let t = Instant::now();
    let mut server = ServerProc::start(exe, dir, "/opt/peerguard/peerguard.wasm", args)?;
    server.wait_ready(Duration::from_secs(120))?;
    let startup = t.elapsed();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let port = server.grpc_port;
    let clients = args.clients;
    let mut r = rt.block_on(async move { measure(port, clients, dir, &server).await })?;
    drop(rt);
    r.startup = startup;
    Ok(r)
}

async fn measure(
    port: u16,
    clients: usize,
    dir: &Path,
    server: &ServerProc,
) -> anyhow::Result<Result> {
    let url = format!("http://127.0.0.1:{port}");
    let mut channels = Vec::new();
    for _ in 0..clients.div_ceil(PER_CONNECTION) {
        channels.push(
            tonic::transport::Endpoint::from_shared(url.clone())?
                .connect()
                .await
                .context("connecting to the server")?,
        );
    }
    let t_connect = Instant::now();
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let mut ready = Vec::new();
    let mut done = Vec::new();
    for i in 0..clients {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let channel = channels[i / PER_CONNECTION].clone();
        let go = go_rx.clone();
        tokio::spawn(async move {
            let r = client(channel, i, ready_tx, go).await;
            let _ = done_tx.send(r);
        });
        ready.push(ready_rx);
        done.push(done_rx);
    }
    let mut streams = 0;
    for r in ready {
        if let Ok(Ok(Ok(()))) = tokio::time::timeout(Duration::from_secs(60), r).await {
            streams += 1;
        }
    }
    let connect = t_connect.elapsed();
    anyhow::ensure!(
        streams == clients,
        "only {streams} of {clients} streams got their first configuration"
    );

    let (rss_before, _) = server.rss();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pid = server.child.id();
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1024;
                peak.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let t0 = Instant::now();
    write_atomic(&dir.join("cfg/root-deny.yaml"), ROOT_DENY)?;
    let _ = go_tx.send(Some(t0));
    let mut received = Vec::new();
    let mut missing = 0;
    for d in done {
        match tokio::time::timeout(Duration::from_secs(30), d).await {
            Ok(Ok(Ok(at))) => received.push(at.duration_since(t0)),
            _ => missing += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (_, hwm) = server.rss();
    Ok(Result {
        startup: Duration::ZERO,
        connect,
        streams,
        received,
        missing,
        rss_before,
        rss_peak: peak.load(Ordering::Relaxed),
        hwm,
    })
}

/// One simulated Envoy: subscribe, ACK the first version, then report when the next one
/// arrives (and ACK it, as Envoy would).
async fn client(
    channel: tonic::transport::Channel,
    i: usize,
    ready: oneshot::Sender<anyhow::Result<()>>,
    mut go: watch::Receiver<Option<Instant>>,
) -> anyhow::Result<Instant> {
    let (ns, name) = key(i);
    let request = |version: &str, nonce: &str| DiscoveryRequest {
        node: Some(Node {
            id: format!("{ns}/{name}"),
            ..Default::default()
        }),
        type_url: ECDS_TYPE.into(),
        resource_names: vec![HTTP_FILTER.into()],
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel(4);
    tx.send(request("", "")).await?;
    let mut stream = ExtensionConfigDiscoveryServiceClient::new(channel)
        .stream_extension_configs(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = match stream.message().await? {
        Some(r) => r,
        None => {
            let _ = ready.send(Err(anyhow::anyhow!("stream closed")));
            anyhow::bail!("stream {i} closed before the first response");
        }
    };
    tx.send(request(&first.version_info, &first.nonce)).await?;
    let _ = ready.send(Ok(()));
    // Wait for the go signal so that a response is only counted after the write.
    while go.borrow_and_update().is_none() {
        go.changed().await?;
    }
    loop {
        let Some(r) = stream.message().await? else {
            anyhow::bail!("stream {i} closed")
        };
        let at = Instant::now();
        tx.send(request(&r.version_info, &r.nonce)).await?;
        if r.version_info != first.version_info {
            return Ok(at);
        }
    }
}
