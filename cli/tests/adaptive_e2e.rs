//! Adaptive enforcement through `peerguard serve` and a real Envoy from `peerguard bootstrap`:
//! a small STRICT policy set is pushed as native RBAC into the HTTP slot (over ECDS, as a
//! TypedStruct) with the mTLS mode in the transport slot; growing past the size limit moves
//! the slot to the wasm filter; every decision stays the same across the switch, including
//! a plaintext client's closed connection (Istio's STRICT has no plaintext chain).
//!
//! Needs Envoy and the module as `server_e2e.rs` does (`SKIPPED: ...` otherwise, unless
//! `PEERGUARD_REQUIRE_ENVOY=1`).
#![cfg(test)]

mod harness;

use harness::sidecar::*;
use harness::*;
use std::time::Duration;

const STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
";

fn allow(name: &str, principal: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: foo}}
spec:
  rules: [{{from: [{{source: {{principals: [{principal}]}}}}]}}]
---
"
    )
}

/// Envoy's counter of requests the native RBAC HTTP filter allowed (absent: 0).
fn rbac_allowed(envoy: &Envoy) -> u64 {
    let Some((_, body)) = http_get(envoy.admin, "/stats?filter=rbac.allowed$") else {
        return 0;
    };
    body.lines()
        .filter(|l| l.starts_with("http.") && !l.contains("shadow"))
        .filter_map(|l| l.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn small_strict_sets_go_native_and_large_ones_to_the_filter_with_the_same_decisions() {
    let Some((envoy_bin, wasm)) =
        prerequisites("small_strict_sets_go_native_and_large_ones_to_the_filter")
    else {
        return;
    };
    let dir = temp_dir("e2e-adaptive");
    let app = http_app();
    write(&dir.join("cfg/workloads.yaml"), &workloads(app));
    write(&dir.join("cfg/strict.yaml"), STRICT);
    write(
        &dir.join("cfg/allow.yaml"),
        &allow("allow-sleep", "cluster.local/ns/bar/sa/sleep"),
    );
    let server = Server::start(&dir, &wasm.display().to_string(), &[]);
    let (envoy, port) = Envoy::start(
        &envoy_bin,
        &dir,
        &server,
        &wasm,
        &["--app-port", &app.to_string()],
        "adaptive",
    );
    let state = dir.join("state");
    let sleep = client_cert(&state, "spiffe://cluster.local/ns/bar/sa/sleep", false);
    let other = client_cert(&state, "spiffe://cluster.local/ns/bar/sa/other", false);
    let long = Duration::from_secs(30);

    let check = |stage: &str| {
        eventually(
            &format!("{stage}: the allowed principal"),
            long,
            &envoy,
            &server,
            || request(port, Some(&sleep), true),
            "200 app-ok",
        );
        assert!(
            request(port, Some(&other), true).starts_with("403 RBAC: access denied"),
            "{stage}: another principal must get a 403"
        );
        // STRICT: a plaintext client's connection is closed, never answered (no 403).
        let plain = request(port, None, false);
        assert!(
            plain.starts_with("closed"),
            "{stage}: plaintext got {plain:?}"
        );
    };

    // One ALLOW policy under STRICT: native RBAC in the HTTP slot, the mode in the
    // transport slot; TCP keeps the filter (it refuses plaintext as it connects).
    check("native");
    wait_for("the native slot to be counted", long, || {
        server.metric("peerguard_native_rbac_slots") == 1.0
    });
    let before = rbac_allowed(&envoy);
    assert!(
        request(port, Some(&sleep), true).starts_with("200"),
        "the allowed principal"
    );
    assert!(
        rbac_allowed(&envoy) > before,
        "Envoy's RBAC filter decided the request:\n{}",
        envoy.log_tail()
    );

    // Past the size limit (32 matchers): the wasm filter, same decisions.
    let many: String = (0..40)
        .map(|i| {
            allow(
                &format!("allow-{i:02}"),
                &format!("cluster.local/ns/x/sa/s{i}"),
            )
        })
        .collect();
    write(&dir.join("cfg/many.yaml"), &many);
    wait_for("the slot to move to the filter", long, || {
        server.metric("peerguard_native_rbac_slots") == 0.0
    });
    check("wasm");
    let before = rbac_allowed(&envoy);
    assert!(request(port, Some(&sleep), true).starts_with("200"));
    assert_eq!(
        rbac_allowed(&envoy),
        before,
        "the filter, not Envoy's RBAC, decides now"
    );

    // And back.
    std::fs::remove_file(dir.join("cfg/many.yaml")).unwrap();
    wait_for("the slot to go native again", long, || {
        server.metric("peerguard_native_rbac_slots") == 1.0
    });
    check("native again");
    assert_eq!(
        server.metric("peerguard_xds_rejects_total{type=\"ecds\"}"),
        0.0,
        "Envoy rejected a config:\n{}",
        envoy.log_tail()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
