//! The EnvoyFilter + ECDS form on real Envoy: `peerguard manifests istio envoyfilter` is
//! applied (EnvoyFilter patch semantics, `peerguard_server::istio_forms::patch`) to the
//! project's representative Istio sidecar inbound configuration
//! (`integration/istio/sidecar-inbound.yaml`), the result runs in real Envoy, and:
//!
//! - the patched configuration loads (Envoy ready: the filters came over ECDS from a real
//!   `peerguard serve`, through the `peerguard-xds` cluster over mTLS with the sidecar's own
//!   certificate from the Istio-style SDS cluster `sds-grpc`, to a stand-in for the server
//!   pod's Istio sidecar that checks it);
//! - the filter decides, after Istio's own RBAC (which still denies what Istio's policy
//!   denies): plaintext and mTLS HTTP allowed / denied per AuthorizationPolicy,
//!   plaintext TCP refused on a STRICT port, mTLS TCP allowed;
//! - a policy change reaches the sidecar over ECDS without touching the listener (measured).
//!
//! SKIPPED without Envoy or the wasm module unless PEERGUARD_REQUIRE_ENVOY=1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::istio::{
    ecds_filters, ecds_from_serve, recorded, rendered_patches, sds_cluster, serve_agent_sds,
    standin_listener, AgentSds, SERVER_ID,
};
use harness::{free_port, temp_dir, wait_for, write, Server};
use peerguard_harness::envoy::EnvoyProcess;
use peerguard_harness::http1::{exchange_blocking, Request, Response};
use peerguard_harness::pki::{CaChoice, ClientCertSpec, Issued, TestPki};
use peerguard_harness::require::{require, Needs};
use peerguard_server::envoy_config as ec;
use peerguard_server::istio_forms::patch;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const POD: &str = "httpbin-5d7c9f-x2x9q";
const NODE_ID: &str = "sidecar~127.0.0.1~httpbin-5d7c9f-x2x9q.foo~foo.svc.cluster.local";

// ------------------------------------------------------------------ the mesh

fn mesh_files(http: u16, tcp: u16, deny: &str) -> String {
    format!(
        "apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {{name: {POD}, namespace: foo, labels: {{app: httpbin}}}}
spec:
  serviceAccount: httpbin
  services: [{{name: httpbin, ports: [{{name: http, port: 8000, targetPort: {http}}}, {{name: tcp, port: 9000, targetPort: {tcp}, protocol: tcp}}]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: httpbin, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  mtls: {{mode: PERMISSIVE}}
  portLevelMtls: {{{tcp}: {{mode: STRICT}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-paths, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: DENY
  rules: [{{to: [{{operation: {{ports: [\"{http}\"], paths: [{deny}]}}}}]}}]
"
    )
}

fn cert(pki: &TestPki, uri: &str) -> Issued {
    pki.client(&ClientCertSpec {
        uri_sans: vec![uri.into()],
        ca: CaChoice::Mesh,
        expired: false,
    })
    .unwrap()
}

/// The HTTP filter names of the connection managers on `port`'s chains in the written
/// bootstrap (all the same).
fn config_http_filters(bootstrap: &Path, port: u16) -> Vec<String> {
    let b: Value = serde_json::from_slice(&std::fs::read(bootstrap).unwrap()).unwrap();
    let mut seen: Vec<Vec<String>> = Vec::new();
    for chain in b["static_resources"]["listeners"][0]["filter_chains"]
        .as_array()
        .unwrap()
    {
        if chain["filter_chain_match"]["destination_port"] != json!(port) {
            continue;
        }
        let names = chain["filters"][0]["typed_config"]["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect();
        seen.push(names);
    }
    assert_eq!(seen.len(), 2, "the port's mTLS and plaintext chains");
    assert_eq!(seen[0], seen[1]);
    seen.remove(0)
}

// ------------------------------------------------------------------ clients

fn plain_http(port: u16, path: &str) -> Result<Response, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    exchange_blocking(&mut s, &Request::get(path, "httpbin.foo.svc.cluster.local"))
        .map_err(|e| format!("{e:?}"))
}

fn tls_config(client: &Issued, alpn: &str) -> Arc<rustls::ClientConfig> {
    let base = peerguard_harness::tls::any_server_client_config(Some(client)).unwrap();
    let mut c = (*base).clone();
    c.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    Arc::new(c)
}

fn mtls_http(port: u16, client: &Issued, path: &str) -> Result<Response, String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = peerguard_harness::tls::connect_blocking(
        addr,
        &tls_config(client, "istio-http/1.1"),
        "httpbin.foo.svc.cluster.local",
        Duration::from_secs(5),
    )
    .map_err(|e| e.to_string())?;
    exchange_blocking(&mut s, &Request::get(path, "httpbin.foo.svc.cluster.local"))
        .map_err(|e| format!("{e:?}"))
}

const PING: &[u8] = b"ping from a client\n";

/// Sends [`PING`] (more than a TLS record header: the TLS inspector decides on 5 bytes); what came back, and whether the connection was closed (not a timeout).
fn echo<S: Read + Write>(mut s: S) -> (Vec<u8>, bool) {
    if s.write_all(PING).is_err() {
        return (Vec::new(), true);
    }
    let _ = s.flush();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < PING.len() && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break
            }
            Err(_) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (got, false)
}

// ------------------------------------------------------------------ the test

#[test]
fn envoyfilter_form_loads_into_an_istio_inbound_listener_and_the_filter_decides() {
    let Some(tools) = require("istio_envoyfilter", Needs::EnvoyAndWasm).unwrap() else {
        return;
    };
    let wasm = tools.wasm().unwrap();
    let dir = temp_dir("istio-envoyfilter");
    let pki = TestPki::new().unwrap();
    let sidecar = cert(&pki, "spiffe://cluster.local/ns/foo/sa/httpbin");
    let server_cert = cert(&pki, SERVER_ID);
    let sleep = cert(&pki, "spiffe://cluster.local/ns/bar/sa/sleep");
    let app_http = peerguard_harness::upstream::ok_app().unwrap().port();
    let app_tcp = peerguard_harness::upstream::echo_app().unwrap().port();
    let (http, tcp, standin) = (free_port(), free_port(), free_port());

    // peerguard serve, reading the mesh from a directory.
    write(
        &dir.join("cfg/mesh.yaml"),
        &mesh_files(http, tcp, "\"/deny\""),
    );
    let server = Server::start(&dir, wasm.to_str().unwrap(), &[]);

    // The Istio agent's SDS on a Unix socket.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sock = dir.join("agent-sds.sock");
    let _sds = serve_agent_sds(
        rt.handle(),
        &sock,
        AgentSds {
            cert: sidecar.clone(),
            root_pem: pki.mesh_root_pem().to_string(),
        },
    );

    // The EnvoyFilter, rendered by the command, applied to the recorded inbound config.
    let patches = rendered_patches(&format!("127.0.0.1:{standin}"));
    let mut config = recorded(http, tcp, app_http, app_tcp);
    let counts = patch::apply(&mut config, &patches).unwrap();
    // One cluster; the HTTP filter in the 3 connection managers (catch-all HTTP, the port's
    // mTLS and plaintext chains); the network filter before the 4 tcp_proxy filters
    // (blackhole, passthrough, the TCP port's two chains); the direct-peer settings merged
    // into the same 3 connection managers.
    assert_eq!(counts, vec![1, 3, 4, 3], "patched places");
    for chain in config.listeners[0]["filter_chains"].as_array().unwrap() {
        for f in chain["filters"].as_array().unwrap() {
            if f["name"] == ec::istio::HCM {
                assert_eq!(f["typed_config"]["use_remote_address"], true, "{f}");
            }
        }
    }

    // As the iptables redirect would deliver them: the inbound ports are the listener's.
    let mut inbound = config.listeners.remove(0);
    inbound["address"] = ec::socket("127.0.0.1", http);
    inbound["additional_addresses"] = json!([{"address": ec::socket("127.0.0.1", tcp)}]);
    // Stand-in for the server pod's own Istio sidecar: terminates mTLS (mesh roots, client
    // certificate required) in front of `peerguard serve`, and presents the server's identity.
    let standin_listener = standin_listener(
        "peerguard-pod-sidecar",
        standin,
        "peerguard-serve",
        &server_cert,
        pki.mesh_root_pem(),
        Some(&json!({"exact": "spiffe://cluster.local/ns/foo/sa/httpbin"})),
    );
    let mut clusters = config.clusters.clone();
    clusters.push(sds_cluster(&sock));
    // Its own process (another pod): an Envoy serves nothing before all its listeners warmed.
    let standin_dir = dir.join("server-pod-sidecar");
    std::fs::create_dir_all(&standin_dir).unwrap();
    let standin_bootstrap = ec::bootstrap(
        None,
        ec::admin("127.0.0.1", 0),
        vec![standin_listener],
        vec![ec::static_cluster(
            "peerguard-serve",
            &[("127.0.0.1".into(), server.grpc_port)],
        )],
    );
    std::fs::write(
        standin_dir.join("envoy.json"),
        serde_json::to_vec_pretty(&standin_bootstrap).unwrap(),
    )
    .unwrap();
    let _standin = EnvoyProcess::start(
        &tools.envoy,
        &standin_dir.join("envoy.json"),
        &standin_dir,
        &[
            "--concurrency".into(),
            "1".into(),
            "--base-id".into(),
            "7".into(),
        ],
        Duration::from_secs(30),
    )
    .unwrap();
    let node = json!({"id": NODE_ID, "cluster": "httpbin.foo", "metadata": {"NAMESPACE": "foo", "NAME": POD}});
    let bootstrap = ec::bootstrap(
        Some(node),
        ec::admin("127.0.0.1", 0),
        vec![inbound],
        clusters,
    );
    let cfg_path = dir.join("envoy.json");
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&bootstrap).unwrap()).unwrap();
    let envoy = EnvoyProcess::start(
        &tools.envoy,
        &cfg_path,
        &dir,
        &["--concurrency".into(), "1".into()],
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| {
        panic!(
            "the patched Istio config does not load: {e:#}\nserver log:\n{}",
            server.log_text()
        )
    });

    // The filters came from peerguard serve over ECDS (not the deny-all default).
    let (_, dump) = envoy.admin_get("/config_dump").unwrap();
    let ecds = ecds_filters(&dump);
    assert!(
        ecds_from_serve(&ecds),
        "ECDS filters from peerguard serve: {ecds:?}"
    );

    // peerguard runs after Istio's own RBAC in the port's connection managers.
    let names = config_http_filters(&cfg_path, http);
    assert_eq!(
        names,
        [
            "envoy.filters.http.grpc_stats",
            "envoy.filters.http.rbac",
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "peerguard-http",
            "envoy.filters.http.router"
        ]
    );

    // HTTP, plaintext (PERMISSIVE) and mTLS: the policy decides.
    let r = plain_http(http, "/ip").unwrap();
    assert_eq!(r.status, 200, "plaintext /ip: {}", r.text());
    assert_eq!(r.text(), peerguard_harness::upstream::OK_BODY);
    let r = plain_http(http, "/deny").unwrap();
    assert_eq!((r.status, r.text().as_str()), (403, "RBAC: access denied"));
    let r = mtls_http(http, &sleep, "/ip").unwrap();
    assert_eq!(r.status, 200, "mTLS /ip: {}", r.text());
    let r = mtls_http(http, &sleep, "/deny").unwrap();
    assert_eq!(r.status, 403);

    // Istio's own AuthorizationPolicy stays in force: its RBAC denies /istio-deny, which
    // peerguard's policy allows (peerguard's filter never sees the request).
    let (_, before) = envoy.admin_get("/stats?filter=peerguard_allowed").unwrap();
    let r = plain_http(http, "/istio-deny").unwrap();
    assert_eq!((r.status, r.text().as_str()), (403, "RBAC: access denied"));
    let (_, stats) = envoy
        .admin_get(&format!("/stats?filter=inbound_0.0.0.0_{http}.rbac.denied"))
        .unwrap();
    assert!(
        stats.contains(&format!("http.inbound_0.0.0.0_{http}.rbac.denied: 1")),
        "{stats}"
    );
    let (_, after) = envoy.admin_get("/stats?filter=peerguard_allowed").unwrap();
    assert_eq!(before, after, "Istio's RBAC decided first");

    // TCP: the port is STRICT. Plaintext is refused by the filter; mTLS passes.
    let plain = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(
        echo(plain),
        (Vec::new(), true),
        "plaintext TCP on a STRICT port must be closed unanswered"
    );
    let addr: SocketAddr = ([127, 0, 0, 1], tcp).into();
    let tls = peerguard_harness::tls::connect_blocking(
        addr,
        &tls_config(&sleep, "istio"),
        "httpbin",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(echo(tls).0, PING, "mTLS TCP must pass");
    let (_, stats) = envoy.admin_get("/stats?filter=peerguard").unwrap();
    // The refusal was the filter's: its counter, from the network root.
    assert!(
        stats.contains("wasmcustom.peerguard_plaintext_refused: 1"),
        "{stats}"
    );

    // A policy change is pushed over ECDS; the listener stays as it is.
    let t0 = Instant::now();
    write(
        &dir.join("cfg/mesh.yaml"),
        &mesh_files(http, tcp, "\"/deny\", \"/ip\""),
    );
    wait_for(
        "/ip denied after the policy change",
        Duration::from_secs(20),
        || plain_http(http, "/ip").is_ok_and(|r| r.status == 403),
    );
    let push = t0.elapsed();
    assert_eq!(plain_http(http, "/headers").unwrap().status, 200);
    println!("policy file written -> enforced by the Istio-shaped sidecar: {} ms (the directory source's change detection included)", push.as_millis());
    drop(envoy);
    drop(server);
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}
