//! STRICT on a TCP port never opens an upstream connection for a plaintext client (issue:
//! a server-first app leaked its greeting to plaintext clients). Istio has no plaintext
//! filter chain under STRICT at all; peerguard refuses the connection in the network
//! filter's `on_new_connection`, before `tcp_proxy` connects. A PERMISSIVE listener in the
//! same Envoy, in front of the same app, shows the greeting does flow when allowed (so the
//! check can fail).

#![cfg(test)]

use anyhow::{bail, Context as _};
use peerguard_harness::e2e::config::{Bootstrap, FilterModule, ListenerSpec};
use peerguard_harness::envoy::{EnvoyProcess, TempDir};
use peerguard_harness::pki::TestPki;
use peerguard_harness::require::{require, Needs};
use peerguard_server::envoy_config::{AppProtocol, PathNormalization};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const GREETING: &[u8] = b"220 smtp.example ESMTP ready\r\n";

/// A server-first app: greets every connection at once; counts the connections it accepted.
fn greeter() -> anyhow::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let mut conn = conn;
            let _ = std::io::Write::write_all(&mut conn, GREETING);
        }
    });
    Ok((addr, accepted))
}

fn policy_json(mode: &str) -> String {
    serde_json::json!({
        "schema": 1,
        "workload": {"namespace": "foo", "name": "mail"},
        "trust_domain": "cluster.local",
        "mtls": {"default": {"mode": mode}},
    })
    .to_string()
}

/// What a plaintext client reads within `wait`. It speaks first (a line), as the TLS
/// inspector in front of the filter chains waits for the client's first bytes to tell TLS
/// from plaintext (Istio's sidecar has the same listener filter).
fn read_greeting(port: u16, wait: Duration) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    let _ = std::io::Write::write_all(&mut s, b"EHLO client.example\r\n");
    let _ = s.set_read_timeout(Some(wait));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() >= GREETING.len() {
            break;
        }
    }
    buf
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[test]
fn strict_never_connects_upstream_for_plaintext_clients() -> anyhow::Result<()> {
    let Some(tools) = require("server_first_tcp", Needs::EnvoyAndWasm)? else {
        return Ok(());
    };
    let wasm = tools.wasm()?;
    let (app, accepted) = greeter()?;
    let (strict_port, open_port) = (free_port()?, free_port()?);
    let listener = |name: &str, port: u16, mode: &str| ListenerSpec {
        name: name.into(),
        address: Ipv4Addr::LOCALHOST,
        port,
        protocol: AppProtocol::Tcp,
        trust_domains: vec!["cluster.local".into()],
        policy_json: policy_json(mode),
        path_normalization: None,
    };
    let listeners = [
        listener("strict", strict_port, "STRICT"),
        listener("open", open_port, "PERMISSIVE"),
    ];
    let pki = TestPki::new()?;
    let bootstrap = Bootstrap {
        listeners: &listeners,
        filter: Some(FilterModule { wasm: &wasm }),
        mesh_root_pem: pki.mesh_root_pem(),
        server_cert_pem: &pki.server().cert_pem,
        server_key_pem: &pki.server().key_pem,
        // Both kinds of traffic go to the greeter.
        http_upstream: app,
        tcp_upstream: app,
        path_normalization: PathNormalization::Base,
    };
    let dir = TempDir::new("peerguard-server-first")?;
    let config = dir.path().join("envoy.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&bootstrap.to_json())?)?;
    let envoy = EnvoyProcess::start(
        &tools.envoy,
        &config,
        dir.path(),
        &[],
        Duration::from_secs(30),
    )
    .context("starting Envoy")?;

    // Control: PERMISSIVE lets a plaintext client through, and the app greets it (retried:
    // on a loaded machine the first connections after start can be slow).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = read_greeting(open_port, Duration::from_secs(3));
    while seen != GREETING && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        seen = read_greeting(open_port, Duration::from_secs(3));
    }
    if seen != GREETING {
        bail!(
            "PERMISSIVE: expected the greeting, read {:?}\n{}",
            String::from_utf8_lossy(&seen),
            envoy.log_tail(40)
        );
    }
    let before = accepted.load(Ordering::SeqCst);

    let mut leaked = 0;
    for _ in 0..30 {
        if !read_greeting(strict_port, Duration::from_secs(1)).is_empty() {
            leaked += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let contacted = accepted.load(Ordering::SeqCst) - before;
    println!("server-first under STRICT: 30 plaintext clients, {leaked} read bytes, upstream contacted {contacted} times");
    if leaked != 0 || contacted != 0 {
        bail!(
            "STRICT leaked the greeting to {leaked} of 30 plaintext clients; the app was contacted {contacted} times\n{}",
            envoy.log_tail(40)
        );
    }
    Ok(())
}
