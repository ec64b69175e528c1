#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;

fn series(port: u16, tls: Tls, source: &str) -> Series {
    Series {
        port,
        tls,
        source: source.into(),
    }
}

fn policy(mode: &str, dry_run: bool) -> WorkloadPolicy {
    serde_json::from_value(serde_json::json!({
        "schema": 1,
        "workload": {"namespace": "full", "name": "httpbin"},
        "trust_domain": "cluster.local",
        "mtls": {"default": {"mode": mode, "from": "PeerAuthentication full/httpbin", "dry_run": dry_run}},
    }))
    .unwrap()
}

fn sample(policy: Option<WorkloadPolicy>, counts: &[(Series, u64)]) -> Sample {
    Sample {
        workload: "full/httpbin".into(),
        policy,
        transport_mode: None,
        series: counts.iter().cloned().collect(),
        dry_run_refused: 0,
    }
}

#[test]
fn plaintext_in_the_window_is_not_ready_and_names_its_sources() {
    let before = sample(
        Some(policy("PERMISSIVE", false)),
        &[
            (series(80, Tls::Plaintext, "127.0.3.10"), 4),
            (series(80, Tls::Mtls, "cluster.local/ns/full/sa/sleep"), 2),
        ],
    );
    let mut now = before.clone();
    *now.series
        .get_mut(&series(80, Tls::Plaintext, "127.0.3.10"))
        .unwrap() = 7;
    now.series
        .insert(series(80, Tls::Plaintext, "127.0.2.21"), 1);
    let w = judge("http://a:15000", &now, Some(&before));
    assert!(!w.ready);
    let p = &w.ports[0];
    assert_eq!(p.port, Some(80));
    assert_eq!((p.plaintext, p.mtls), (4, 0));
    assert_eq!(p.verdict, Verdict::NotReady);
    assert_eq!(p.why, "plaintext from 127.0.3.10 (3), 127.0.2.21 (1)");
    // Only mTLS in the window: ready.
    let mut later = now.clone();
    *later
        .series
        .get_mut(&series(80, Tls::Mtls, "cluster.local/ns/full/sa/sleep"))
        .unwrap() += 5;
    let w = judge("http://a:15000", &later, Some(&now));
    assert!(w.ready);
    assert_eq!(w.ports[0].verdict, Verdict::Ready);
    assert_eq!(w.ports[0].mtls, 5);
    // Since start: everything counts.
    let w = judge("http://a:15000", &later, None);
    assert_eq!(w.ports[0].plaintext, 8);
}

#[test]
fn a_counter_that_went_down_means_a_restart() {
    let before = sample(None, &[(series(80, Tls::Plaintext, "a"), 10)]);
    let now = sample(None, &[(series(80, Tls::Plaintext, "a"), 2)]);
    let w = judge("x", &now, Some(&before));
    assert_eq!(w.ports[0].plaintext, 2);
    assert_eq!(w.ports[0].mode, None);
}

#[test]
fn modes_decide_what_the_counts_mean() {
    // Enforced STRICT: nothing to decide.
    let w = judge("x", &sample(Some(policy("STRICT", false)), &[]), None);
    assert_eq!(w.ports[0].port, None);
    assert_eq!(w.ports[0].verdict, Verdict::Strict);
    assert!(w.ready);
    // Dry-run STRICT is counted like PERMISSIVE.
    let w = judge(
        "x",
        &sample(
            Some(policy("STRICT", true)),
            &[(series(80, Tls::Plaintext, "127.0.3.10"), 1)],
        ),
        None,
    );
    assert!(w.ports[0].dry_run);
    assert_eq!(w.ports[0].verdict, Verdict::NotReady);
    // DISABLE counts nothing: no evidence, not ready.
    let w = judge("x", &sample(Some(policy("DISABLE", false)), &[]), None);
    assert_eq!(w.ports[0].verdict, Verdict::NotReady);
    assert!(!w.ready);
    // No connection at all: ready, and says so.
    let w = judge("x", &sample(Some(policy("PERMISSIVE", false)), &[]), None);
    assert!(w.ready);
    assert!(
        w.ports[0].why.contains("no connection at all"),
        "{}",
        w.ports[0].why
    );
}

#[test]
fn prometheus_text_with_tags_groups_by_other_labels() {
    let text = r#"# TYPE peerguard_connections counter
peerguard_connections{port="80",tls="plaintext",source="127.0.3.10",pod="httpbin-1"} 3
peerguard_connections{port="80",tls="mtls",source="cluster.local/ns/full/sa/sleep",pod="httpbin-1"} 5
peerguard_connections{pod="httpbin-2",port="80",tls="mtls",source="cluster.local/ns/full/sa/sleep"} 1 1700000000
peerguard_plaintext_dry_run_refused{pod="httpbin-1"} 3
envoy_cluster_upstream_cx_total{envoy_cluster_name="x"} 9
"#;
    let s = samples_from_prometheus(text, "f.txt").unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].workload, "pod=httpbin-1");
    assert_eq!(s[0].series[&series(80, Tls::Plaintext, "127.0.3.10")], 3);
    assert_eq!(s[0].dry_run_refused, 3);
    assert_eq!(
        s[1].series[&series(80, Tls::Mtls, "cluster.local/ns/full/sa/sleep")],
        1
    );
    // Envoy's own output (no other label): one sample named after the input.
    let s = samples_from_prometheus(
        "peerguard_connections{port=\"8080\",tls=\"plaintext\",source=\"10.0.0.1\"} 2\n",
        "http://e:15000/stats/prometheus",
    )
    .unwrap();
    assert_eq!(s[0].workload, "http://e:15000/stats/prometheus");
    // Untagged names (bootstrap without the stats tags) are refused, not misread.
    let err = samples_from_prometheus(
        "peerguard_connections_port_80_tls_plaintext_source_127_0_3_10 2\n",
        "f",
    )
    .unwrap_err();
    assert!(err.to_string().contains("stats_tags"), "{err}");
}

#[test]
fn prometheus_label_values_are_unescaped() {
    let (name, labels, v) = prometheus_line(r#"m{a="x\"y",b="p\\q"} 4"#).unwrap();
    assert_eq!(name, "m");
    assert_eq!(
        labels,
        vec![("a".into(), "x\"y".into()), ("b".into(), "p\\q".into())]
    );
    assert_eq!(v, 4.0);
    assert!(prometheus_line("m{a=\"x} 4").is_none());
}

#[test]
fn config_dumps_name_the_workload() {
    let p = serde_json::to_string(&policy("PERMISSIVE", false)).unwrap();
    let dump = serde_json::json!({"configs": [{"ecds_filters": [{"ecds_filter": {"typed_config": {"config": {"configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": p}}}}}]}]});
    let found = find_policy(&dump).unwrap();
    assert_eq!(found.workload.name, "httpbin");
    let other = serde_json::json!({"configuration": {"value": "{\"rules\": []}"}});
    assert!(find_policy(&other).is_none());
}

#[test]
fn chunked_bodies_are_joined() {
    assert_eq!(
        dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
        b"abcde"
    );
    assert!(dechunk(b"9\r\nabc").is_err());
}

#[test]
fn unreachable_endpoints_are_errors() {
    let args = Args {
        envoy_admin: vec!["http://127.0.0.1:1".into()],
        prometheus: vec![],
        window: Duration::from_secs(0),
        since_start: true,
        timeout: Duration::from_secs(1),
        output: Format::Text,
    };
    let err = report(&args).unwrap_err();
    assert!(
        format!("{err:#}").contains("--envoy-admin http://127.0.0.1:1"),
        "{err:#}"
    );
    assert_eq!(run(args).unwrap(), 2);
    let file_without_since_start = Args {
        envoy_admin: vec![],
        prometheus: vec!["stats.txt".into()],
        window: Duration::from_secs(1),
        since_start: false,
        timeout: Duration::from_secs(1),
        output: Format::Json,
    };
    assert!(
        format!("{:#}", report(&file_without_since_start).unwrap_err()).contains("--since-start")
    );
}

#[test]
fn the_default_mode_has_a_row_unless_a_counted_port_shows_it() {
    let mut p = policy("PERMISSIVE", false);
    p.mtls.ports.insert(
        8080,
        ModeFrom::new(
            MtlsMode::Strict,
            Some("PeerAuthentication full/httpbin portLevelMtls[8080]".into()),
        ),
    );
    let w = judge("x", &sample(Some(p.clone()), &[]), None);
    let rows: Vec<_> = w
        .ports
        .iter()
        .map(|r| (r.port, r.mode, r.verdict))
        .collect();
    assert_eq!(
        rows,
        vec![
            (None, Some(MtlsMode::Permissive), Verdict::Ready),
            (Some(8080), Some(MtlsMode::Strict), Verdict::Strict)
        ]
    );
    let w = judge(
        "x",
        &sample(
            Some(p),
            &[(series(80, Tls::Mtls, "cluster.local/ns/a/sa/b"), 1)],
        ),
        None,
    );
    let rows: Vec<_> = w.ports.iter().map(|r| r.port).collect();
    assert_eq!(rows, vec![Some(80), Some(8080)]);
}

/// Every slot native RBAC (no filter configuration in the dump): the mode comes from the
/// transport slot `serve` fills (`crate::enforcement`), so STRICT is still reported.
#[test]
fn the_transport_slot_tells_the_mode_when_no_filter_runs() {
    let slot = |rules: Value| serde_json::json!({"configs": [{"ecds_filter": {"name": "peerguard-transport", "typed_config": {"rules": rules}}}]});
    let strict = slot(
        serde_json::json!({"action": "DENY", "policies": {"peerguard-mtls-mode": {"permissions": [{"any": true}], "principals": [{"not_id": {"authenticated": {}}}]}}}),
    );
    assert_eq!(
        transport_mode(&strict).map(|m| m.mode),
        Some(MtlsMode::Strict)
    );
    let disable = slot(
        serde_json::json!({"action": "DENY", "policies": {"peerguard-mtls-mode": {"permissions": [{"any": true}], "principals": [{"authenticated": {}}]}}}),
    );
    assert_eq!(
        transport_mode(&disable).map(|m| m.mode),
        Some(MtlsMode::Disable)
    );
    assert_eq!(transport_mode(&slot(Value::Null)), None);
    let mut s = sample(None, &[]);
    s.transport_mode = transport_mode(&strict);
    let w = judge("x", &s, None);
    assert_eq!(w.ports[0].verdict, Verdict::Strict);
}
