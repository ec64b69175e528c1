//! The network filter under a dry-run STRICT (`peerguard.dev/dry-run`), through real Envoy:
//! plaintext TCP connections are accepted (echoed by the app), each is counted once as a
//! would-be refusal and in the readiness counters under its source address; mTLS connections
//! are counted under their principal; `peerguard readiness` (the library behind the
//! command) reads it all back from the admin endpoint and names the plaintext source.

#![cfg(test)]

use anyhow::{bail, Context as _};
use peerguard_harness::e2e::config::{Bootstrap, FilterModule, ListenerSpec};
use peerguard_harness::envoy::{EnvoyProcess, TempDir};
use peerguard_harness::pki::{CaChoice, ClientCertSpec, TestPki};
use peerguard_harness::require::{require, Needs};
use peerguard_server::cli::readiness::{report, Args, Verdict};
use peerguard_server::cli::test::Format;
use peerguard_server::envoy_config::{AppProtocol, PathNormalization};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const SLEEP: &str = "cluster.local/ns/foo/sa/sleep";

/// Echoes each connection's bytes back until it closes.
fn echo() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 256];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Sends a line on `s` and reads it back: the connection went through to the app.
fn round_trip(s: &mut impl ReadWrite) -> bool {
    let line = b"ping\n";
    if s.write_all(line).and_then(|()| s.flush()).is_err() {
        return false;
    }
    let mut got = [0u8; 5];
    s.read_exact(&mut got).is_ok() && &got == line
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn dry_run_strict_counts_tcp_connections_and_readiness_names_the_source() -> anyhow::Result<()> {
    let Some(tools) = require("readiness_tcp", Needs::EnvoyAndWasm)? else {
        return Ok(());
    };
    let wasm = tools.wasm()?;
    let app = echo()?;
    let port = free_port()?;
    let policy = serde_json::json!({
        "schema": 1,
        "workload": {"namespace": "foo", "name": "db"},
        "trust_domain": "cluster.local",
        "mtls": {"default": {"mode": "STRICT", "from": "PeerAuthentication foo/strict", "dry_run": true}},
    });
    let listeners = [ListenerSpec {
        name: "db".into(),
        address: Ipv4Addr::LOCALHOST,
        port,
        protocol: AppProtocol::Tcp,
        trust_domains: vec!["cluster.local".into()],
        policy_json: policy.to_string(),
        path_normalization: None,
    }];
    let pki = TestPki::new()?;
    let bootstrap = Bootstrap {
        listeners: &listeners,
        filter: Some(FilterModule { wasm: &wasm }),
        mesh_root_pem: pki.mesh_root_pem(),
        server_cert_pem: &pki.server().cert_pem,
        server_key_pem: &pki.server().key_pem,
        http_upstream: app,
        tcp_upstream: app,
        path_normalization: PathNormalization::Base,
    };
    let dir = TempDir::new("peerguard-readiness-tcp")?;
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
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    // The first plaintext connection may meet a listener still starting on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut plaintext = 0;
    while plaintext == 0 {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            if round_trip(&mut s) {
                plaintext += 1;
                continue;
            }
        }
        if Instant::now() > deadline {
            bail!("dry-run STRICT refused plaintext\n{}", envoy.log_tail(40));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        if !round_trip(&mut s) {
            bail!("dry-run STRICT refused plaintext\n{}", envoy.log_tail(40));
        }
        plaintext += 1;
    }
    let cert = pki.client(&ClientCertSpec {
        uri_sans: vec![format!("spiffe://{SLEEP}")],
        ca: CaChoice::Mesh,
        expired: false,
    })?;
    let tls = peerguard_harness::tls::any_server_client_config(Some(&cert))?;
    for _ in 0..3 {
        let mut s =
            peerguard_harness::tls::connect_blocking(addr, &tls, "db.foo", Duration::from_secs(3))?;
        if !round_trip(&mut s) {
            bail!("mTLS connection failed\n{}", envoy.log_tail(40));
        }
    }
    // Connection counters reach Envoy on the filter's 1 s tick.
    std::thread::sleep(Duration::from_millis(1500));

    let (_, stats) = envoy.admin_get("/stats?filter=peerguard_plaintext")?;
    assert!(
        stats.contains(&format!(
            "wasmcustom.peerguard_plaintext_dry_run_refused: {plaintext}\n"
        )),
        "exactly the {plaintext} plaintext connections:\n{stats}"
    );
    assert!(
        stats.contains("wasmcustom.peerguard_plaintext_refused: 0"),
        "{stats}"
    );
    let r = report(&Args {
        envoy_admin: vec![format!("http://{}", envoy.admin_address())],
        prometheus: Vec::new(),
        window: Duration::ZERO,
        since_start: true,
        timeout: Duration::from_secs(5),
        output: Format::Json,
    })?;
    assert!(!r.ready);
    let w = &r.workloads[0];
    assert_eq!(w.workload, "foo/db");
    assert_eq!(w.dry_run_refused, plaintext);
    let p = &w.ports[0];
    assert_eq!(p.port, Some(port));
    assert!(p.dry_run);
    assert_eq!(p.verdict, Verdict::NotReady);
    let sources = |v: &[peerguard_server::cli::readiness::SourceCount]| {
        v.iter()
            .map(|s| (s.source.clone(), s.connections))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sources(&p.plaintext_sources),
        vec![("127.0.0.1".to_string(), plaintext)]
    );
    assert_eq!(sources(&p.mtls_sources), vec![(SLEEP.to_string(), 3)]);
    Ok(())
}
