use super::*;
use peerguard_filter::compile::compile;
use peerguard_filter::istio::parse::parse_str;
use std::collections::BTreeMap;

fn workload() -> Workload {
    Workload {
        namespace: "foo".into(),
        name: "httpbin".into(),
        service_account: "httpbin".into(),
        labels: BTreeMap::from([("app".to_string(), "httpbin".to_string())]),
        ..Workload::default()
    }
}

fn peer_authn(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: istio-system}}\nspec: {{mtls: {{mode: {mode}}}}}\n---\n"
    )
}

fn allow_principals(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-{i:05}, namespace: foo}}\nspec:\n  rules: [{{from: [{{source: {{principals: [\"cluster.local/ns/c/sa/client-{i}\"]}}}}]}}]\n---\n"
            )
        })
        .collect()
}

fn run_with(yaml: &str, opts: &Options) -> Enforcement {
    let parsed = parse_str(yaml, "test.yaml");
    let mesh = MeshConfig::default();
    let policy = compile(&parsed.resources, &workload(), &mesh);
    choose(&parsed.resources, &workload(), &mesh, &policy, opts)
}

fn run(yaml: &str) -> Enforcement {
    run_with(yaml, &Options::default())
}

/// The HTTP slot `slot` fills for `yaml`'s policies under `mode` (how the mode is added to
/// an RBAC config; `choose` keeps the filter on HTTP under STRICT and DISABLE).
fn http_slot_with_mode(yaml: &str, mode: MtlsMode, opts: &Options) -> Slot {
    let parsed = parse_str(yaml, "test.yaml");
    let filters = rbac::translate(&parsed.resources, &workload(), &MeshConfig::default()).unwrap();
    slot(&filters.http, HTTP_RBAC_TYPE, None, mode, opts)
}

fn native_mode() -> Options {
    Options {
        mode: Mode::Native,
        ..Options::default()
    }
}

fn native(s: &Slot) -> &Value {
    match s {
        Slot::Native { typed_config, .. } => typed_config,
        Slot::Wasm { why } => panic!("expected native RBAC, got the filter: {why}"),
    }
}

fn why(s: &Slot) -> &Why {
    match s {
        Slot::Wasm { why } => why,
        Slot::Native { typed_config, .. } => panic!("expected the filter, got {typed_config}"),
    }
}

#[test]
fn strict_and_disable_keep_the_filter_on_http_whatever_the_mode_option() {
    for (mode, m) in [("STRICT", MtlsMode::Strict), ("DISABLE", MtlsMode::Disable)] {
        let yaml = peer_authn(mode) + &allow_principals(2);
        for opts in [Options::default(), native_mode()] {
            assert_eq!(why(&run_with(&yaml, &opts).http), &Why::HttpModeRefusal(m));
        }
    }
    assert_eq!(
        Why::HttpModeRefusal(MtlsMode::Strict).to_string(),
        "STRICT on HTTP: the filter refuses the other transport as the listener would (no response), native RBAC only with a 403"
    );
}

#[test]
fn strict_in_an_allow_rbac_config_requires_a_client_certificate_in_every_policy() {
    let e = run(&(peer_authn("STRICT") + &allow_principals(10)));
    let slot = http_slot_with_mode(&allow_principals(10), MtlsMode::Strict, &native_mode());
    let http = native(&slot);
    assert_eq!(http["@type"], HTTP_RBAC_TYPE);
    assert_eq!(http["rules"]["action"], "ALLOW");
    let policies = http["rules"]["policies"].as_object().unwrap();
    assert_eq!(policies.len(), 10);
    for p in policies.values() {
        let ids = &p["principals"][0]["and_ids"]["ids"];
        assert_eq!(ids[0], json!({"authenticated": {}}), "{p}");
        assert!(ids[1]["or_ids"]["ids"].is_array(), "{p}");
    }
    assert_eq!(slot.to_string(), "native RBAC (10 matchers)");
    // TCP keeps the filter: it refuses plaintext as the connection opens.
    assert_eq!(why(&e.tcp), &Why::TcpStrict);
}

#[test]
fn auto_keeps_the_filter_above_the_size_limit_and_native_mode_does_not() {
    let yaml = allow_principals(DEFAULT_MAX_NATIVE_MATCHERS + 1);
    let auto = http_slot_with_mode(&yaml, MtlsMode::Strict, &Options::default());
    assert_eq!(
        why(&auto),
        &Why::Larger {
            matchers: DEFAULT_MAX_NATIVE_MATCHERS + 1,
            max: DEFAULT_MAX_NATIVE_MATCHERS
        }
    );
    assert!(http_slot_with_mode(&yaml, MtlsMode::Strict, &native_mode()).is_native());
    let wasm = Options {
        mode: Mode::Wasm,
        ..Options::default()
    };
    let e = run_with(&(peer_authn("STRICT") + &allow_principals(1)), &wasm);
    assert_eq!(why(&e.http), &Why::Forced);
    assert_eq!(why(&e.tcp), &Why::Forced);
}

#[test]
fn strict_without_policies_denies_connections_without_a_certificate() {
    let slot = http_slot_with_mode("", MtlsMode::Strict, &native_mode());
    let http = native(&slot);
    assert_eq!(http["rules"]["action"], "DENY");
    assert_eq!(
        http["rules"]["policies"][MTLS_MODE_POLICY],
        json!({"permissions": [{"any": true}], "principals": [{"not_id": {"authenticated": {}}}]})
    );
}

#[test]
fn strict_deny_policies_get_the_mode_as_one_more_deny_policy() {
    let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin, namespace: foo}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/admin\"]}}]}]\n";
    let slot = http_slot_with_mode(yaml, MtlsMode::Strict, &native_mode());
    let http = native(&slot);
    let policies = http["rules"]["policies"].as_object().unwrap();
    assert_eq!(http["rules"]["action"], "DENY");
    assert_eq!(policies.len(), 2, "{http}");
    assert!(policies.contains_key(MTLS_MODE_POLICY));
}

#[test]
fn disable_refuses_certificates_on_both_slots() {
    let e = run(&peer_authn("DISABLE"));
    let refused = json!({"permissions": [{"any": true}], "principals": [{"authenticated": {}}]});
    let http = http_slot_with_mode("", MtlsMode::Disable, &native_mode());
    assert_eq!(
        native(&http)["rules"]["policies"][MTLS_MODE_POLICY],
        refused
    );
    let tcp = native(&e.tcp);
    assert_eq!(tcp["@type"], NETWORK_RBAC_TYPE);
    assert_eq!(tcp["stat_prefix"], "tcp.");
    assert_eq!(tcp["rules"]["policies"][MTLS_MODE_POLICY], refused);
}

#[test]
fn permissive_keeps_the_filter_for_readiness_unless_native_is_forced() {
    let yaml = peer_authn("PERMISSIVE") + &allow_principals(2);
    let e = run(&yaml);
    assert_eq!(why(&e.http), &Why::Permissive);
    // TCP has an enforced ALLOW: a plaintext connection is refused as it opens.
    assert_eq!(why(&e.tcp), &Why::TcpPolicies);
    let forced = Options {
        mode: Mode::Native,
        ..Options::default()
    };
    let e = run_with(&yaml, &forced);
    // No mode added under PERMISSIVE: the policies as Istio generates them.
    let parsed = parse_str(&yaml, "test.yaml");
    let istio = rbac::translate(&parsed.resources, &workload(), &MeshConfig::default()).unwrap();
    assert_eq!(native(&e.http), &istio.http[0]["typed_config"]);
    // Nothing applies to TCP without policies under PERMISSIVE: an allow-all RBAC.
    let e = run_with(&peer_authn("PERMISSIVE"), &forced);
    assert_eq!(native(&e.tcp).get("rules"), None);
}

#[test]
fn what_one_rbac_filter_cannot_express_keeps_the_filter() {
    let deny_and_allow = peer_authn("PERMISSIVE")
        + &allow_principals(1)
        + "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: foo}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/admin\"]}}]}]\n";
    assert_eq!(why(&run(&deny_and_allow).http), &Why::DenyAndAllow);

    let custom = peer_authn("STRICT")
        + "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext, namespace: foo}\nspec:\n  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]\n";
    let e = run(&custom);
    assert!(
        matches!(why(&e.http), Why::NoNativeForm(m) if m.contains("CUSTOM")),
        "{:?}",
        e.http
    );

    let per_port = peer_authn("STRICT")
        + "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: httpbin, namespace: foo}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  mtls: {mode: STRICT}\n  portLevelMtls: {\"8080\": {mode: PERMISSIVE}}\n";
    assert_eq!(why(&run(&per_port).http), &Why::PerPortMtls);

    let dry_run = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system, annotations: {peerguard.dev/dry-run: \"true\"}}\nspec: {mtls: {mode: STRICT}}\n";
    assert_eq!(why(&run(dry_run).http), &Why::MtlsDryRun);
}

#[test]
fn matchers_count_leaves_not_combinators() {
    let rules = json!({"action": "ALLOW", "policies": {
        "a": {"permissions": [{"any": true}], "principals": [{"and_ids": {"ids": [{"authenticated": {}}, {"or_ids": {"ids": [{"authenticated": {"principal_name": {"exact": "x"}}}, {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}]}}]}}]},
        "b": {"permissions": [{"not_rule": {"or_rules": {"rules": [{"header": {"name": ":path"}}, {"destination_port": 80}]}}}], "principals": [{"any": true}]},
    }});
    assert_eq!(count_matchers(&rules), 3 + 2);
}
