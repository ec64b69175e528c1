//! [a] File write → decision enforced by a real Envoy: DENY on, DENY off, repeatedly, each
//! time polling with new mTLS connections until Envoy answers the new way.

use super::{free_port, write_atomic, ServerArgs, ServerProc};
use anyhow::Context;
use peerguard_harness::{http1, pki, tls};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Result {
    pub latencies: Vec<Duration>,
    pub timeouts: usize,
    pub probes: usize,
}

const DENY_SLEEP: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-sleep, namespace: foo}
spec:
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/sleep]}}]}]
";

/// A client presenting `spiffe://cluster.local/ns/bar/sa/sleep`, signed by the server's CA.
fn client_config(state: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let cert = pki::issue_with_ca_files(
        &state.join("ca/root-cert.pem"),
        &state.join("ca/root-key.pem"),
        "spiffe://cluster.local/ns/bar/sa/sleep",
    )?;
    tls::any_server_client_config(Some(&cert))
}

/// The status code of one request on a new mTLS connection, or 0 when it failed.
fn probe(port: u16, cfg: &Arc<rustls::ClientConfig>) -> u16 {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = tls::connect_blocking(addr, cfg, "httpbin.foo", Duration::from_secs(2)) else {
        return 0;
    };
    http1::exchange_blocking(&mut s, &http1::Request::get("/get", "httpbin.foo"))
        .map(|r| r.status)
        .unwrap_or(0)
}

struct EnvoyProc(Child);

impl Drop for EnvoyProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(
    exe: &Path,
    dir: &Path,
    envoy: &Path,
    wasm: &Path,
    args: &ServerArgs,
) -> anyhow::Result<Result> {
    std::fs::create_dir_all(dir.join("cfg"))?;
    std::fs::create_dir_all(dir.join("state"))?;
    let app = peerguard_harness::upstream::ok_app()?.port();
    let workloads = format!(
        "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {{name: httpbin, namespace: foo, labels: {{app: httpbin}}}}\nspec:\n  serviceAccount: httpbin\n  services: [{{name: httpbin, ports: [{{name: http, port: 8000, targetPort: {app}}}]}}]\n"
    );
    write_atomic(&dir.join("cfg/workloads.yaml"), &workloads)?;
    let mut server = ServerProc::start(exe, dir, &wasm.display().to_string(), args)?;
    server.wait_ready(Duration::from_secs(30))?;

    let (inbound, admin) = (free_port()?, free_port()?);
    let out = Command::new(exe)
        .args([
            "bootstrap",
            "--node",
            "foo/httpbin",
            "--server",
            &format!("127.0.0.1:{}", server.grpc_port),
        ])
        .arg("--token-file")
        .arg(dir.join("state/tokens/foo/httpbin.token"))
        .arg("--wasm")
        .arg(wasm)
        .args([
            "--inbound-address",
            "127.0.0.1",
            "--inbound-port",
            &inbound.to_string(),
            "--admin-port",
            &admin.to_string(),
        ])
        .args(["--app-port", &app.to_string()])
        .output()
        .context("peerguard bootstrap")?;
    anyhow::ensure!(
        out.status.success(),
        "peerguard bootstrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("envoy.yaml"), &out.stdout)?;
    let _envoy = EnvoyProc(
        Command::new(envoy)
            .arg("-c")
            .arg(dir.join("envoy.yaml"))
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("envoy.log"))?)
            .spawn()
            .context("starting Envoy")?,
    );
    let cfg = client_config(&dir.join("state"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while probe(inbound, &cfg) != 200 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "Envoy never allowed the first request; see {}",
            dir.join("envoy.log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut result = Result {
        latencies: Vec::new(),
        timeouts: 0,
        probes: 0,
    };
    let deny = dir.join("cfg/deny.yaml");
    for i in 0..args.flips {
        let on = i % 2 == 0;
        let want = if on { 403 } else { 200 };
        let t0 = Instant::now();
        if on {
            write_atomic(&deny, DENY_SLEEP)?;
        } else {
            std::fs::remove_file(&deny)?;
        }
        loop {
            result.probes += 1;
            if probe(inbound, &cfg) == want {
                result.latencies.push(t0.elapsed());
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                result.timeouts += 1;
                break;
            }
            std::thread::sleep(args.probe_interval);
        }
        // Let the edit settle, and do not line the next write up with the poll timer.
        std::thread::sleep(Duration::from_millis(150 + (i as u64 * 37) % 100));
    }
    drop(server);
    Ok(result)
}
