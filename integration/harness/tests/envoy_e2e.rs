//! End to end through a real Envoy 1.40 with real certificates and connections.
//!
//! Needs Envoy (PEERGUARD_ENVOY, .peerguard/env from scripts/setup.sh, or PATH) and, for the
//! tests with the filter, the wasm module (PEERGUARD_WASM or $CARGO_TARGET_DIR/peerguard.wasm
//! from scripts/build-wasm.sh). Without them a test prints `SKIPPED: <why>` and passes,
//! unless PEERGUARD_REQUIRE_ENVOY=1, then it fails.
//!
//! The runner is the harness's `e2e` module, the same code as `peerguard test --envoy`.

#![cfg(test)]

use peerguard_harness::client::Probe;
use peerguard_harness::e2e;
use peerguard_harness::pki::{CaChoice, ClientCertSpec};
use peerguard_harness::require::{require, Needs};

use anyhow::{anyhow, bail, Context as _};
use e2e::{http_probe, mesh_peer, E2eRequest, E2eScenario, Observed, Options, Peer};
use peerguard_filter::WorkloadPolicy;
use std::net::IpAddr;

const SPOOFED_XFCC: &str =
    "By=spiffe://cluster.local/ns/foo/sa/httpbin;URI=spiffe://cluster.local/ns/foo/sa/admin";

/// `Ok(Some(opts))` to run, `Ok(None)` after printing SKIPPED, `Err` when required.
fn prerequisites(with_filter: bool) -> anyhow::Result<Option<Options>> {
    let needs = if with_filter {
        Needs::EnvoyAndWasm
    } else {
        Needs::Envoy
    };
    let Some(tools) = require("envoy_e2e", needs)? else {
        return Ok(None);
    };
    Ok(Some(Options {
        envoy: Some(tools.envoy),
        wasm: tools.wasm,
        with_filter,
        ..Options::default()
    }))
}

fn policy(mode: &str, policies: serde_json::Value) -> anyhow::Result<WorkloadPolicy> {
    serde_json::from_value(serde_json::json!({
        "schema": 1,
        "workload": {"namespace": "foo", "name": "httpbin"},
        "trust_domain": "cluster.local",
        "trust_domain_aliases": [],
        "mtls": {"default": {"mode": mode, "from": "test"}},
        "policies": policies,
    }))
    .context("building a WorkloadPolicy (did the schema change?)")
}

fn get(path: &str) -> Probe {
    http_probe("GET", path, "httpbin.foo:8000", &[], false)
}

fn req(peer: Peer, port: u16, probe: Probe) -> E2eRequest {
    E2eRequest {
        peer,
        source_ip: None,
        port,
        probe,
    }
}

fn peer(uri_sans: &[&str], ca: CaChoice, expired: bool) -> Peer {
    Peer::Mtls(ClientCertSpec {
        uri_sans: uri_sans.iter().map(|s| s.to_string()).collect(),
        ca,
        expired,
    })
}

fn scenario(name: &str, policy: WorkloadPolicy, requests: Vec<E2eRequest>) -> E2eScenario {
    E2eScenario {
        name: name.into(),
        trust_domains: vec!["cluster.local".into()],
        policy,
        requests,
    }
}

/// Checks `expect` (allowed?) and an optional substring of the detail, per request.
fn check(name: &str, got: &[Observed], expect: &[(bool, Option<&str>)]) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    if got.len() != expect.len() {
        bail!(
            "{name}: {} results for {} requests",
            got.len(),
            expect.len()
        );
    }
    for (i, (o, (allowed, needle))) in got.iter().zip(expect).enumerate() {
        println!("{name} #{}: allowed={} {}", i + 1, o.allowed, o.detail);
        if o.allowed != *allowed {
            errors.push(format!(
                "#{}: expected allowed={allowed}, got {:?}",
                i + 1,
                o
            ));
        }
        if let Some(n) = needle {
            if !o.detail.contains(n) {
                errors.push(format!(
                    "#{}: detail {:?} does not contain {n:?}",
                    i + 1,
                    o.detail
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{name}:\n  {}", errors.join("\n  ")))
    }
}

/// The runner itself, with Envoy but without the filter: the handshake gates (untrusted,
/// expired, foreign trust domain, non-SPIFFE SAN), both HTTP versions, TCP, source
/// addresses and XFCC sanitizing are Envoy's and the PKI's, so they are checkable now.
#[test]
fn runner_without_filter_handshake_and_transport() -> anyhow::Result<()> {
    let Some(opts) = prerequisites(false)? else {
        return Ok(());
    };
    let sleep = "cluster.local/ns/foo/sa/sleep";
    let pol = policy("PERMISSIVE", serde_json::json!([]))?;
    let src: IpAddr = "127.6.7.200".parse()?;
    let reqs = vec![
        req(Peer::Plaintext, 8080, get("/ip")),
        req(mesh_peer(sleep), 8080, get("/ip")),
        req(
            peer(
                &["spiffe://cluster.local/ns/foo/sa/sleep"],
                CaChoice::Untrusted,
                false,
            ),
            8080,
            get("/ip"),
        ),
        req(
            peer(
                &["spiffe://cluster.local/ns/foo/sa/sleep"],
                CaChoice::Mesh,
                true,
            ),
            8080,
            get("/ip"),
        ),
        req(
            peer(&["https://sleep.foo.example.com/"], CaChoice::Mesh, false),
            8080,
            get("/ip"),
        ),
        req(
            peer(
                &["spiffe://evil.example/ns/foo/sa/sleep"],
                CaChoice::Mesh,
                false,
            ),
            8080,
            get("/ip"),
        ),
        req(
            mesh_peer(sleep),
            8080,
            http_probe(
                "POST",
                "/grpc.health.v1.Health/Check",
                "grpc-echo.foo:9000",
                &[("content-type", "application/grpc")],
                true,
            ),
        ),
        req(
            Peer::Plaintext,
            8080,
            http_probe(
                "POST",
                "/grpc.health.v1.Health/Check",
                "grpc-echo.foo:9000",
                &[],
                true,
            ),
        ),
        req(Peer::Plaintext, 9090, Probe::Tcp),
        req(mesh_peer(sleep), 9090, Probe::Tcp),
        req(
            peer(
                &["spiffe://cluster.local/ns/foo/sa/sleep"],
                CaChoice::Untrusted,
                false,
            ),
            9090,
            Probe::Tcp,
        ),
        req(
            Peer::Plaintext,
            8080,
            http_probe(
                "GET",
                "/ip",
                "h",
                &[("x-forwarded-client-cert", SPOOFED_XFCC)],
                false,
            ),
        ),
        req(
            mesh_peer(sleep),
            8080,
            http_probe(
                "GET",
                "/ip",
                "h",
                &[("x-forwarded-client-cert", SPOOFED_XFCC)],
                false,
            ),
        ),
        E2eRequest {
            source_ip: Some(src),
            ..req(Peer::Plaintext, 8080, get("/ip"))
        },
        // Multiple URI SANs, the first one a SPIFFE ID of the trust domain.
        req(
            peer(
                &[
                    "spiffe://cluster.local/ns/foo/sa/sleep",
                    "https://x.example/",
                ],
                CaChoice::Mesh,
                false,
            ),
            8080,
            get("/ip"),
        ),
    ];
    let out = e2e::run_e2e(&[scenario("no-filter", pol, reqs)], &opts)?;
    check(
        "no-filter",
        &out[0],
        &[
            (true, Some("app saw XFCC: -")),
            (true, Some("URI=spiffe://cluster.local/ns/foo/sa/sleep")),
            (false, None),
            (false, None),
            (false, None),
            (false, None),
            (true, Some("HTTP 200")),
            (true, Some("HTTP 200")),
            (true, Some("echoed")),
            (true, Some("echoed")),
            (false, None),
            (true, Some("app saw XFCC: -")),
            (true, Some("URI=spiffe://cluster.local/ns/foo/sa/sleep")),
            (true, None),
            (true, None),
        ],
    )?;
    if out[0][12].detail.contains("sa/admin") {
        bail!(
            "the app saw the spoofed XFCC on mTLS: {}",
            out[0][12].detail
        );
    }
    Ok(())
}

/// (b) Plaintext under STRICT is denied (HTTP and TCP); mTLS is the control.
#[test]
fn strict_refuses_plaintext() -> anyhow::Result<()> {
    let Some(opts) = prerequisites(true)? else {
        return Ok(());
    };
    let pol = policy("STRICT", serde_json::json!([]))?;
    let sleep = "cluster.local/ns/foo/sa/sleep";
    let reqs = vec![
        req(Peer::Plaintext, 8080, get("/ip")),
        req(
            Peer::Plaintext,
            8080,
            http_probe("GET", "/ip", "httpbin.foo:8000", &[], true),
        ),
        req(Peer::Plaintext, 9090, Probe::Tcp),
        req(mesh_peer(sleep), 8080, get("/ip")),
        req(mesh_peer(sleep), 9090, Probe::Tcp),
    ];
    let out = e2e::run_e2e(&[scenario("strict", pol, reqs)], &opts)?;
    check(
        "strict",
        &out[0],
        &[
            (false, None),
            (false, None),
            (false, None),
            (true, None),
            (true, Some("echoed")),
        ],
    )
}

/// (c) A client-made XFCC naming an allowed principal does not authorize a plaintext
/// request, and on mTLS the app sees the verified URI, not the spoofed one.
#[test]
fn spoofed_xfcc_is_not_an_identity() -> anyhow::Result<()> {
    let Some(opts) = prerequisites(true)? else {
        return Ok(());
    };
    let pol = policy(
        "PERMISSIVE",
        serde_json::json!([{
            "policy": {"namespace": "foo", "name": "admin-only"},
            "action": "ALLOW",
            "rules": [{"from": [{"principals": {"values": [
                {"exact": "cluster.local/ns/foo/sa/admin"},
                {"exact": "cluster.local/ns/foo/sa/sleep"}
            ]}}]}],
        }]),
    )?;
    let spoof = [("x-forwarded-client-cert", SPOOFED_XFCC)];
    let reqs = vec![
        req(
            Peer::Plaintext,
            8080,
            http_probe("GET", "/ip", "httpbin.foo:8000", &spoof, false),
        ),
        req(
            Peer::Plaintext,
            8080,
            http_probe("GET", "/ip", "httpbin.foo:8000", &spoof, true),
        ),
        req(
            mesh_peer("cluster.local/ns/foo/sa/sleep"),
            8080,
            http_probe("GET", "/ip", "httpbin.foo:8000", &spoof, false),
        ),
        req(mesh_peer("cluster.local/ns/foo/sa/admin"), 8080, get("/ip")),
    ];
    let out = e2e::run_e2e(&[scenario("spoofed-xfcc", pol, reqs)], &opts)?;
    check(
        "spoofed-xfcc",
        &out[0],
        &[
            (false, Some("403")),
            (false, Some("403")),
            (true, Some("URI=spiffe://cluster.local/ns/foo/sa/sleep")),
            (true, Some("URI=spiffe://cluster.local/ns/foo/sa/admin")),
        ],
    )?;
    if out[0][2].detail.contains("sa/admin") {
        bail!(
            "the app saw the spoofed identity on an mTLS connection: {}",
            out[0][2].detail
        );
    }
    Ok(())
}

/// (d) untrusted CA and (e) expired certificate: denied under STRICT and PERMISSIVE, over
/// HTTP/1.1, HTTP/2 and TCP; the same identity with a valid certificate is allowed.
#[test]
fn untrusted_and_expired_certificates_are_refused() -> anyhow::Result<()> {
    let Some(opts) = prerequisites(true)? else {
        return Ok(());
    };
    let uri = "spiffe://cluster.local/ns/foo/sa/sleep";
    let mut scenarios = Vec::new();
    for mode in ["STRICT", "PERMISSIVE"] {
        let pol = policy(mode, serde_json::json!([]))?;
        let mut reqs = Vec::new();
        for probe in [
            get("/ip"),
            http_probe("GET", "/ip", "httpbin.foo:8000", &[], true),
            Probe::Tcp,
        ] {
            let port = if matches!(probe, Probe::Tcp) {
                9090
            } else {
                8080
            };
            reqs.push(req(
                peer(&[uri], CaChoice::Untrusted, false),
                port,
                probe.clone(),
            ));
            reqs.push(req(peer(&[uri], CaChoice::Mesh, true), port, probe.clone()));
            reqs.push(req(peer(&[uri], CaChoice::Mesh, false), port, probe));
        }
        scenarios.push(scenario(&format!("certs-{mode}"), pol, reqs));
    }
    let out = e2e::run_e2e(&scenarios, &opts)?;
    let expect: Vec<(bool, Option<&str>)> = (0..3)
        .flat_map(|_| [(false, None), (false, None), (true, None)])
        .collect();
    check("certs-STRICT", &out[0], &expect)?;
    check("certs-PERMISSIVE", &out[1], &expect)
}

/// One port without a declared protocol serves HTTP (connection manager + HTTP filter) and
/// raw TCP (network filter + tcp_proxy), plaintext and mTLS, told apart per connection as
/// Istio's inbound listener does (protocol sniffing). Before, a scenario sending both to one
/// port aborted the whole run.
#[test]
fn one_port_serves_http_and_tcp_by_sniffing() -> anyhow::Result<()> {
    let Some(opts) = prerequisites(true)? else {
        return Ok(());
    };
    let sleep = "cluster.local/ns/foo/sa/sleep";
    let other = "cluster.local/ns/foo/sa/other";
    let h2 = |path: &str| http_probe("GET", path, "httpbin.foo:7070", &[], true);
    let requests = || {
        vec![
            req(Peer::Plaintext, 7070, get("/ip")),
            req(Peer::Plaintext, 7070, h2("/ip")),
            req(Peer::Plaintext, 7070, Probe::Tcp),
            req(mesh_peer(sleep), 7070, get("/ip")),
            req(mesh_peer(sleep), 7070, h2("/ip")),
            req(mesh_peer(sleep), 7070, Probe::Tcp),
            req(mesh_peer(other), 7070, get("/ip")),
            req(mesh_peer(other), 7070, Probe::Tcp),
        ]
    };
    let open = scenario(
        "sniff-open",
        policy("PERMISSIVE", serde_json::json!([]))?,
        requests(),
    );
    let allow_sleep = scenario(
        "sniff-allow-sleep",
        policy(
            "PERMISSIVE",
            serde_json::json!([{
                "policy": {"namespace": "foo", "name": "allow-sleep"},
                "action": "ALLOW",
                "rules": [{"from": [{"principals": {"values": [{"exact": sleep}]}}]}],
            }]),
        )?,
        requests(),
    );
    let out = e2e::run_e2e(&[open, allow_sleep], &opts)?;
    // HTTP answers come from the app through the connection manager (plaintext: no XFCC;
    // mTLS: the verified URI); TCP payloads come back from the echo app through tcp_proxy.
    check(
        "sniff-open",
        &out[0],
        &[
            (true, Some("app saw XFCC: -")),
            (true, Some("HTTP 200 from the app")),
            (true, Some("echoed")),
            (true, Some("URI=spiffe://cluster.local/ns/foo/sa/sleep")),
            (true, Some("HTTP 200 from the app")),
            (true, Some("echoed")),
            (true, Some("URI=spiffe://cluster.local/ns/foo/sa/other")),
            (true, Some("echoed")),
        ],
    )?;
    // The same policy decides on both paths: HTTP denials are the HTTP filter's 403, TCP
    // denials the network filter's closed connection.
    check(
        "sniff-allow-sleep",
        &out[1],
        &[
            (false, Some("HTTP 403 RBAC: access denied")),
            (false, Some("HTTP 403 RBAC: access denied")),
            (false, None),
            (true, Some("URI=spiffe://cluster.local/ns/foo/sa/sleep")),
            (true, Some("HTTP 200 from the app")),
            (true, Some("echoed")),
            (false, Some("HTTP 403 RBAC: access denied")),
            (false, None),
        ],
    )
}
