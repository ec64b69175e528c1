//! The shipped Istio manifests carry configurations the filter accepts.

use peerguard_filter::{Engine, WorkloadPolicy};

#[test]
fn wasmplugin_plugin_configs_are_workload_policies() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/istio/wasmplugin.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let docs: Vec<_> = docs.into_iter().filter(|d| !d.is_null()).collect();
    assert_eq!(docs.len(), 2, "{path}: an HTTP and a TCP WasmPlugin");
    let mut roots = Vec::new();
    for d in &docs {
        assert_eq!(d["kind"], "WasmPlugin");
        assert_eq!(d["spec"]["failStrategy"], "FAIL_CLOSE");
        roots.push(d["spec"]["pluginName"].as_str().unwrap_or_default().to_string());
        let policy: WorkloadPolicy = serde_json::from_value(d["spec"]["pluginConfig"].clone())
            .unwrap_or_else(|e| panic!("{path}: pluginConfig is not a WorkloadPolicy: {e}"));
        Engine::new(policy).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    assert_eq!(roots, ["peerguard_http", "peerguard_tcp"]);
}
