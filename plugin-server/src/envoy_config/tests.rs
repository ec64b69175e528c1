use super::*;
use peerguard_filter::schema::MtlsMode;
use serde_json::json;

fn inbound(protocol: AppProtocol, chains: Chains) -> Inbound {
    Inbound {
        name: "in".into(),
        address: "127.0.0.1".into(),
        port: 8080,
        protocol,
        trust_domains: vec!["td".into(), "old.td".into()],
        certs: Certs::Inline {
            cert_pem: "C".into(),
            key_pem: "K".into(),
            ca_pem: "CA".into(),
        },
        authz: Authz::Wasm {
            module: "/m.wasm".into(),
            policy_json: Some("{}".into()),
        },
        chains,
        path_normalization: PathNormalization::Base,
        http_cluster: "app_http".into(),
        tcp_cluster: "app_tcp".into(),
        route_timeout: Some("5s".into()),
    }
}

fn chains(l: &Value) -> Vec<Value> {
    l["filter_chains"].as_array().cloned().unwrap_or_default()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|f| f["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn path_normalization_sets_the_fields_istio_sets() {
    use PathNormalization as P;
    let table = [
        (P::None, (false, false, "KEEP_UNCHANGED")),
        (P::Base, (true, false, "KEEP_UNCHANGED")),
        (P::MergeSlashes, (true, true, "KEEP_UNCHANGED")),
        (
            P::DecodeAndMergeSlashes,
            (true, true, "UNESCAPE_AND_FORWARD"),
        ),
    ];
    for (p, want) in table {
        assert_eq!(super::hcm_fields(p), want, "{p:?}");
        let mut i = inbound(AppProtocol::Http, Chains::Both);
        i.path_normalization = p;
        for c in chains(&i.listener()) {
            let hcm = &c["filters"][0]["typed_config"];
            assert_eq!(
                (
                    hcm["normalize_path"].as_bool(),
                    hcm["merge_slashes"].as_bool(),
                    hcm["path_with_escaped_slashes_action"].as_str()
                ),
                (Some(want.0), Some(want.1), Some(want.2)),
                "{p:?}"
            );
        }
    }
    assert_eq!(PathNormalization::default(), P::Base);
}

#[test]
fn inbound_http_connection_manager_trusts_only_the_direct_peer() {
    let l = inbound(AppProtocol::Http, Chains::Both).listener();
    assert_eq!(chains(&l).len(), 2);
    for c in chains(&l) {
        let hcm = &c["filters"][0]["typed_config"];
        assert_eq!(hcm["use_remote_address"], true);
        assert_eq!(hcm["xff_num_trusted_hops"], 0);
        assert_eq!(hcm["forward_client_cert_details"], "SANITIZE_SET");
        assert_eq!(
            names(&hcm["http_filters"]),
            ["peerguard", "envoy.filters.http.router"]
        );
        let plugin = &hcm["http_filters"][0]["typed_config"]["config"];
        assert_eq!(plugin["failure_policy"], "FAIL_CLOSED");
        assert_eq!(plugin["root_id"], HTTP_ROOT_ID);
        assert_eq!(
            hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"],
            json!({"cluster": "app_http", "timeout": "5s"})
        );
    }
    let out = listener::outbound(
        "out",
        "127.0.0.1",
        15001,
        PathNormalization::Base,
        Vec::new(),
    );
    assert_eq!(
        out["filter_chains"][0]["filters"][0]["typed_config"]["use_remote_address"],
        false
    );
}

#[test]
fn mtls_chain_is_istios_handshake() {
    let l = inbound(AppProtocol::Http, Chains::Both).listener();
    let tls = &chains(&l)[0]["transport_socket"]["typed_config"];
    assert_eq!(tls["require_client_certificate"], true);
    let common = &tls["common_tls_context"];
    assert_eq!(
        common["tls_params"]["tls_minimum_protocol_version"],
        "TLSv1_2"
    );
    assert_eq!(common["alpn_protocols"], json!(["h2", "http/1.1"]));
    let sans = &common["validation_context"]["match_typed_subject_alt_names"];
    assert_eq!(sans[0]["matcher"]["prefix"], "spiffe://td/");
    assert_eq!(sans[1]["matcher"]["prefix"], "spiffe://old.td/");
    // A TCP port negotiates no HTTP ALPN.
    let l = inbound(AppProtocol::Tcp, Chains::Both).listener();
    assert!(
        chains(&l)[0]["transport_socket"]["typed_config"]["common_tls_context"]
            .get("alpn_protocols")
            .is_none()
    );
    assert_eq!(
        names(&chains(&l)[1]["filters"]),
        ["peerguard", "envoy.filters.network.tcp_proxy"]
    );
}

#[test]
fn sniffing_splits_http_and_tcp_per_connection() {
    let l = inbound(AppProtocol::Sniff, Chains::Both).listener();
    assert_eq!(
        names(&l["listener_filters"]),
        [
            "envoy.filters.listener.tls_inspector",
            "envoy.filters.listener.http_inspector"
        ]
    );
    assert_eq!(l["continue_on_listener_filters_timeout"], true);
    let cs = chains(&l);
    let summary: Vec<(String, Value, String)> = cs
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["filter_chain_match"].clone(),
                names(&c["filters"]).join(","),
            )
        })
        .collect();
    let hcm = "envoy.filters.network.http_connection_manager".to_string();
    let tcp = "peerguard,envoy.filters.network.tcp_proxy".to_string();
    assert_eq!(
        summary,
        vec![
            (
                "in_mtls_http".into(),
                json!({"transport_protocol": "tls", "application_protocols": ["h2", "http/1.1", "istio-http/1.0", "istio-http/1.1", "istio-h2"]}),
                hcm.clone()
            ),
            (
                "in_mtls_tcp".into(),
                json!({"transport_protocol": "tls"}),
                tcp.clone()
            ),
            (
                "in_plaintext_http".into(),
                json!({"transport_protocol": "raw_buffer", "application_protocols": ["http/1.0", "http/1.1", "h2c"]}),
                hcm
            ),
            (
                "in_plaintext_tcp".into(),
                json!({"transport_protocol": "raw_buffer"}),
                tcp
            ),
        ]
    );
    // Declared protocols need no HTTP inspector.
    let l = inbound(AppProtocol::Http, Chains::Both).listener();
    assert_eq!(
        names(&l["listener_filters"]),
        ["envoy.filters.listener.tls_inspector"]
    );
    assert!(l.get("continue_on_listener_filters_timeout").is_none());
}

#[test]
fn istio_chains_follow_the_mode() {
    let strict = inbound(AppProtocol::Http, Chains::Istio(MtlsMode::Strict)).listener();
    assert_eq!(names(&l_chains(&strict)), ["in_mtls"]);
    let permissive = inbound(AppProtocol::Http, Chains::Istio(MtlsMode::Permissive)).listener();
    assert_eq!(names(&l_chains(&permissive)), ["in_mtls", "in_plaintext"]);
    assert_eq!(
        chains(&permissive)[0]["filter_chain_match"]["application_protocols"][0],
        "istio"
    );
    let disable = inbound(AppProtocol::Http, Chains::Istio(MtlsMode::Disable)).listener();
    assert_eq!(names(&l_chains(&disable)), ["in_plaintext"]);
    assert_eq!(disable["listener_filters"], json!([]));
    assert!(chains(&disable)[0].get("filter_chain_match").is_none());
}

fn l_chains(l: &Value) -> Value {
    l["filter_chains"].clone()
}

#[test]
fn authorization_filters_by_source() {
    let mut i = inbound(AppProtocol::Sniff, Chains::Both);
    i.authz = Authz::None;
    let l = i.listener();
    assert_eq!(
        names(&chains(&l)[0]["filters"][0]["typed_config"]["http_filters"]),
        ["envoy.filters.http.router"]
    );
    assert_eq!(
        names(&chains(&l)[1]["filters"]),
        ["envoy.filters.network.tcp_proxy"]
    );
    i.authz = Authz::Ecds {
        source: xds_config_source("tok"),
    };
    i.certs = Certs::Sds {
        source: xds_config_source("tok"),
    };
    let l = i.listener();
    // serve's listener: the transport slot first in every chain.
    for c in chains(&l) {
        let t = &c["filters"][0];
        assert_eq!(t["name"], listener::TRANSPORT_FILTER);
        assert_eq!(
            t["config_discovery"]["type_urls"],
            serde_json::json!([super::NETWORK_RBAC_TYPE])
        );
    }
    let http = &chains(&l)[0]["filters"][1]["typed_config"]["http_filters"][0];
    assert_eq!(http["name"], listener::HTTP_FILTER);
    assert_eq!(
        http["config_discovery"]["config_source"]["api_config_source"]["grpc_services"][0]
            ["initial_metadata"][0]["value"],
        "tok"
    );
    assert_eq!(chains(&l)[1]["filters"][1]["name"], listener::TCP_FILTER);
    let common = &chains(&l)[0]["transport_socket"]["typed_config"]["common_tls_context"];
    assert_eq!(
        common["tls_certificate_sds_secret_configs"][0]["name"],
        "default"
    );
    assert_eq!(
        common["combined_validation_context"]["validation_context_sds_secret_config"]["name"],
        "ROOTCA"
    );
}

#[test]
fn xds_cluster_addresses() {
    let c = xds_cluster("127.0.0.1:15010").unwrap_or_default();
    assert_eq!(c["type"], "STATIC");
    assert_eq!(
        xds_cluster("peerguard.mesh:15010").unwrap_or_default()["type"],
        "STRICT_DNS"
    );
    let unix = xds_cluster("unix:/run/pg.sock").unwrap_or_default();
    assert_eq!(
        unix["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
            ["path"],
        "/run/pg.sock"
    );
    assert!(xds_cluster("nowhere").is_err());
    assert!(xds_cluster("h:notaport").is_err());
}

#[test]
fn native_rbac_filters_go_before_the_router_and_tcp_proxy_in_order() {
    let mut i = inbound(AppProtocol::Sniff, Chains::Istio(MtlsMode::Strict));
    i.authz = Authz::Rbac {
        http: vec![
            json!({"name": RBAC_HTTP_FILTER, "n": 1}),
            json!({"name": RBAC_HTTP_FILTER, "n": 2}),
        ],
        network: vec![json!({"name": RBAC_NETWORK_FILTER})],
    };
    let l = i.listener();
    let cs = chains(&l);
    assert_eq!(cs.len(), 2);
    let http = &cs[0]["filters"][0]["typed_config"]["http_filters"];
    assert_eq!(
        names(http),
        [
            RBAC_HTTP_FILTER,
            RBAC_HTTP_FILTER,
            "envoy.filters.http.router"
        ]
    );
    assert_eq!(http[1]["n"], 2);
    assert_eq!(
        names(&cs[1]["filters"]),
        [RBAC_NETWORK_FILTER, "envoy.filters.network.tcp_proxy"]
    );
    // No policy, no filter.
    i.authz = Authz::Rbac {
        http: Vec::new(),
        network: Vec::new(),
    };
    let cs = chains(&i.listener());
    assert_eq!(
        names(&cs[0]["filters"][0]["typed_config"]["http_filters"]),
        ["envoy.filters.http.router"]
    );
    assert_eq!(
        names(&cs[1]["filters"]),
        ["envoy.filters.network.tcp_proxy"]
    );
}
