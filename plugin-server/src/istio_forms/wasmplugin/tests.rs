use super::*;
use crate::source::loader::Loader;
use peerguard_filter::{Engine, WorkloadPolicy};

fn mesh() -> MeshConfig {
    MeshConfig {
        trust_domain: "cluster.local".into(),
        trust_domain_aliases: vec![],
        root_namespace: "istio-system".into(),
        path_normalization: Default::default(),
        num_trusted_proxies: 0,
    }
}

fn workload(name: &str, labels: &str, sa: &str, ports: &str) -> String {
    format!(
        "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: foo, labels: {labels}}}\nspec:\n  serviceAccount: {sa}\n  services: [{{name: httpbin, ports: {ports}}}]\n---\n"
    )
}

const ALLOW_GET: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-get, namespace: foo}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n---\n";

fn inputs(name: &str, text: &str) -> Inputs {
    let dir = std::env::temp_dir().join(format!("pg-wasmplugin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mesh.yaml"), text).unwrap();
    let i = Loader::default().load_path(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(i.errors.is_empty(), "{:?}", i.errors);
    i
}

fn module() -> ModuleArgs {
    ModuleArgs {
        url: "oci://registry.example/peerguard:1".into(),
        sha256: None,
    }
}

#[test]
fn pods_of_one_deployment_share_one_plugin_selected_without_per_pod_labels() {
    let http = "[{port: 8000, targetPort: 80}]";
    let text = workload(
        "httpbin-5d7c-a",
        "{app: httpbin, pod-template-hash: 5d7c}",
        "httpbin",
        http,
    ) + &workload(
        "httpbin-5d7c-b",
        "{app: httpbin, pod-template-hash: 5d7c}",
        "httpbin",
        http,
    ) + ALLOW_GET;
    let r = render(&inputs("one", &text), &mesh(), &module());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.objects.len(), 1, "{:#?}", r.objects);
    let o = &r.objects[0];
    let name = group_name(&[("app".to_string(), "httpbin".to_string())].into());
    assert_eq!(o["metadata"]["name"], json!(name));
    assert!(name.starts_with("peerguard-httpbin-"), "{name}");
    assert_eq!(
        o["spec"]["selector"],
        json!({"matchLabels": {"app": "httpbin"}})
    );
    assert_eq!(o["spec"]["pluginName"], "peerguard_http");
    assert_eq!(o["spec"]["phase"], "AUTHZ");
    assert_eq!(o["spec"]["failStrategy"], "FAIL_CLOSE");
    assert_eq!(o["spec"]["url"], "oci://registry.example/peerguard:1");
    let policy: WorkloadPolicy = serde_json::from_value(o["spec"]["pluginConfig"].clone()).unwrap();
    assert_eq!(policy.workload.name, name);
    assert_eq!(policy.policies.len(), 1);
    Engine::new(policy).unwrap();
}

#[test]
fn tcp_ports_get_a_network_plugin_and_policy_changes_keep_names() {
    let ports =
        "[{port: 8000, targetPort: 80}, {name: tcp, port: 9000, targetPort: 9001, protocol: tcp}]";
    let base = workload("httpbin-a", "{app: httpbin}", "httpbin", ports);
    let before = render(&inputs("tcp1", &base), &mesh(), &module());
    let after = render(&inputs("tcp2", &(base + ALLOW_GET)), &mesh(), &module());
    assert_eq!(before.objects.len(), 2);
    let tcp = &before.objects[1];
    assert_eq!(tcp["spec"]["type"], "NETWORK");
    assert_eq!(tcp["spec"]["pluginName"], "peerguard_tcp");
    assert_eq!(
        tcp["spec"]["match"],
        json!([{"mode": "SERVER", "ports": [{"number": 9001}]}])
    );
    for (b, a) in before.objects.iter().zip(&after.objects) {
        assert_eq!(b["metadata"], a["metadata"]);
        assert_ne!(b["spec"]["pluginConfig"], a["spec"]["pluginConfig"]);
    }
}

#[test]
fn one_selector_two_policies_fails_closed_and_unlabelled_pods_are_reported() {
    // Same labels, but b is behind another Service, which a legacy Policy makes STRICT.
    let http = "[{port: 8000}]";
    let text = workload("a", "{app: httpbin}", "one", http)
        + &workload("b", "{app: httpbin}", "two", http).replace("name: httpbin, ports", "name: other, ports")
        + &workload("c", "{}", "three", http)
        + "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: other, namespace: foo}\nspec:\n  targets: [{name: other}]\n  peers: [{mtls: {}}]\n";
    let r = render(&inputs("conflict", &text), &mesh(), &module());
    assert_eq!(r.refused, 1);
    assert_eq!(r.objects.len(), 1);
    let config = &r.objects[0]["spec"]["pluginConfig"];
    assert!(
        serde_json::from_value::<WorkloadPolicy>(config.clone()).is_err(),
        "{config}"
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("DENY every request") && w.contains("foo/a, foo/b")),
        "{:?}",
        r.warnings
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("workload foo/c: no labels")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn a_selector_that_also_matches_another_group_is_warned() {
    let http = "[{port: 8000}]";
    let text = workload("a", "{app: httpbin}", "httpbin", http)
        + &workload("b", "{app: httpbin, version: v2}", "httpbin", http);
    let r = render(&inputs("overlap", &text), &mesh(), &module());
    assert_eq!(r.objects.len(), 2);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("also selects the pods of") && w.contains("foo/b")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn module_urls_are_checked() {
    let m = |url: &str, sha: Option<&str>| ModuleArgs {
        url: url.into(),
        sha256: sha.map(String::from),
    };
    assert!(m("file:///x.wasm", None).check().is_ok());
    assert!(m("oci://r/x:1", None).check().is_ok());
    assert_eq!(
        m("https://h/x.wasm", None).check(),
        Err(ModuleError::NeedsSha("https://h/x.wasm".into()))
    );
    assert!(m("https://h/x.wasm", Some(&"a".repeat(64))).check().is_ok());
    assert!(matches!(
        m("https://h/x.wasm", Some("abc")).check(),
        Err(ModuleError::Sha(_))
    ));
    assert!(matches!(
        m("http://h/x.wasm", None).check(),
        Err(ModuleError::Scheme(_))
    ));
}
