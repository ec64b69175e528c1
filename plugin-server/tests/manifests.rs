//! The shipped Istio manifests carry configurations the filter accepts.

#![cfg(test)]

use peerguard_filter::{Engine, WorkloadPolicy};

#[test]
fn wasmplugin_plugin_configs_are_workload_policies() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/istio/wasmplugin.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let docs: Vec<_> = docs.into_iter().filter(|d| !d.is_null()).collect();
    assert_eq!(docs.len(), 2, "{path}: an HTTP and a TCP WasmPlugin");
    let mut roots = Vec::new();
    for d in &docs {
        assert_eq!(d["kind"], "WasmPlugin");
        assert_eq!(d["spec"]["failStrategy"], "FAIL_CLOSE");
        roots.push(
            d["spec"]["pluginName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        let policy: WorkloadPolicy = serde_json::from_value(d["spec"]["pluginConfig"].clone())
            .unwrap_or_else(|e| panic!("{path}: pluginConfig is not a WorkloadPolicy: {e}"));
        Engine::new(policy).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    assert_eq!(roots, ["peerguard_http", "peerguard_tcp"]);
}

/// `manifests/envoy/reference-sidecar.yaml` is exactly `peerguard bootstrap --static` (the one
/// Envoy-config vocabulary) with `@PLACEHOLDERS@` as inputs: the copy users read cannot drift
/// from what the code generates.
#[test]
fn reference_sidecar_is_the_generated_one() {
    use peerguard_server::bootstrap::{reference, Reference};
    use peerguard_server::envoy_config::PathNormalization;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/envoy/reference-sidecar.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // Numbers in the template are placeholders too; strings stay placeholders on both sides.
    let ports = [
        ("@ADMIN_PORT@", 61001u16),
        ("@HTTP_PORT@", 61002),
        ("@TCP_PORT@", 61003),
        ("@APP_PORT@", 61004),
    ];
    let mut filled = text.clone();
    for (k, v) in ports {
        assert!(filled.contains(k), "{path}: no {k}");
        filled = filled.replace(k, &v.to_string());
    }
    let committed: serde_json::Value =
        serde_saphyr::from_str(&filled).unwrap_or_else(|e| panic!("{path}: {e}"));
    let generated = reference(&Reference {
        wasm: "@WASM@".into(),
        cert: "@CERT@".into(),
        key: "@KEY@".into(),
        ca: "@CA@".into(),
        policy_json: Some("@POLICY@".into()),
        trust_domains: vec!["@TRUST_DOMAIN@".into()],
        address: "0.0.0.0".into(),
        http_port: 61002,
        tcp_port: 61003,
        app_address: "127.0.0.1".into(),
        app_port: 61004,
        admin_port: 61001,
        path_normalization: PathNormalization::Base,
    });
    if committed != generated {
        panic!(
            "{path} differs from the generated reference sidecar.\n--- generated ---\n{}",
            serde_saphyr::to_string(&generated).unwrap_or_default()
        );
    }
}

/// `manifests/istio/envoyfilter-ecds.yaml` is exactly `peerguard manifests istio envoyfilter`
/// with its defaults (the comment lines above the object aside).
#[test]
fn envoyfilter_manifest_is_the_rendered_one() {
    use peerguard_server::istio_forms::envoyfilter::{render, Options};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/istio/envoyfilter-ecds.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let committed: serde_json::Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let rendered = render(&Options::default()).unwrap();
    if committed != rendered {
        panic!(
            "{path} differs from `peerguard manifests istio envoyfilter`:\n{}",
            serde_saphyr::to_string(&rendered).unwrap_or_default()
        );
    }
}

/// `manifests/istio/envoyfilter-direct-peer.yaml` is exactly the EnvoyFilter `peerguard
/// manifests istio wasmplugin` renders with the WasmPlugins (the comment lines aside).
#[test]
fn direct_peer_manifest_is_the_rendered_one() {
    use peerguard_server::istio_forms::envoyfilter::render_direct_peer;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/istio/envoyfilter-direct-peer.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let committed: serde_json::Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let rendered = render_direct_peer("istio-system");
    assert_eq!(
        rendered["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]
            ["use_remote_address"],
        true
    );
    if committed != rendered {
        panic!(
            "{path} differs from the rendering:\n{}",
            serde_saphyr::to_string(&rendered).unwrap_or_default()
        );
    }
}
