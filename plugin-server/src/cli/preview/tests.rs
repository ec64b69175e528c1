//! Recorded traffic with a designed set of flips: the report must name exactly those.

use super::*;
use peerguard_filter::schema::{HttpRequest, HttpVersion, Peer, Request};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

const WORKLOADS: &str = "
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: httpbin, namespace: foo, labels: {app: httpbin}}
spec: {serviceAccount: httpbin, services: [{name: httpbin, ports: [{port: 8000, targetPort: 80}]}]}
---
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: db, namespace: foo, labels: {app: db}}
spec: {serviceAccount: db, services: [{name: db, ports: [{port: 3306, protocol: tcp}]}]}
";

/// In force: sleep and curl may GET httpbin; sleep may reach the database.
const CURRENT: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: readers, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/foo/sa/sleep, cluster.local/ns/bar/sa/curl]}}]
    to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-clients, namespace: foo}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/foo/sa/sleep]}}]
";

/// Proposed: curl loses GET, /admin is denied to everyone, the plaintext 127.0.0.3 may POST,
/// and curl may reach the database.
const PROPOSED: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: readers, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/foo/sa/sleep]}}]
    to: [{operation: {methods: [GET]}}]
  - from: [{source: {ipBlocks: [127.0.0.3/32]}}]
    to: [{operation: {methods: [POST]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin*]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-clients, namespace: foo}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/foo/sa/sleep, cluster.local/ns/bar/sa/curl]}}]
";

const SLEEP: &str = "cluster.local/ns/foo/sa/sleep";
const CURL: &str = "cluster.local/ns/bar/sa/curl";

fn dir(name: &str, policies: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("peerguard-preview-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("workloads.yaml"), WORKLOADS).unwrap();
    std::fs::write(d.join("policies.yaml"), policies).unwrap();
    d
}

fn mesh_args(config: &Path) -> MeshArgs {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        mesh: MeshArgs,
    }
    let mut m = <Cli as clap::Parser>::parse_from(["x"]).mesh;
    m.config = Some(config.to_path_buf());
    m
}

/// One request as the filter saw it: (principal or None for plaintext, source, port,
/// method and path or None for TCP).
type Spec = (
    Option<&'static str>,
    &'static str,
    u16,
    Option<(&'static str, &'static str)>,
);

fn request(s: &Spec) -> Request {
    Request {
        peer: s.0.map(Peer::from_principal),
        source_ip: s.1.parse::<IpAddr>().ok(),
        destination_ip: "127.0.1.1".parse().ok(),
        port: s.2,
        sni: None,
        http: s.3.map(|(m, p)| HttpRequest {
            method: m.into(),
            path: p.into(),
            host: "httpbin.foo:8000".into(),
            headers: Vec::new(),
            version: HttpVersion::Http11,
        }),
    }
}

/// 20 requests from 3 sources (sleep, curl, plaintext 127.0.0.3), and the flips designed
/// into the proposed configuration, by index.
fn traffic() -> (Vec<Spec>, BTreeSet<(usize, Direction)>) {
    use Direction::*;
    let sleep = Some(SLEEP);
    let curl = Some(CURL);
    let plain = None;
    let specs: Vec<(Spec, Option<Direction>)> = vec![
        ((sleep, "127.0.0.1", 80, Some(("GET", "/ip"))), None),
        ((sleep, "127.0.0.1", 80, Some(("GET", "/headers"))), None),
        (
            (sleep, "127.0.0.1", 80, Some(("GET", "/admin/users"))),
            Some(AllowToDeny),
        ),
        ((sleep, "127.0.0.1", 80, Some(("POST", "/post"))), None),
        ((sleep, "127.0.0.1", 80, Some(("GET", "/ip"))), None),
        ((sleep, "127.0.0.1", 3306, None), None),
        (
            (sleep, "127.0.0.1", 80, Some(("GET", "/a/../admin"))),
            Some(AllowToDeny),
        ),
        (
            (curl, "127.0.0.2", 80, Some(("GET", "/ip"))),
            Some(AllowToDeny),
        ),
        (
            (curl, "127.0.0.2", 80, Some(("GET", "/status/200"))),
            Some(AllowToDeny),
        ),
        ((curl, "127.0.0.2", 80, Some(("POST", "/post"))), None),
        ((curl, "127.0.0.2", 3306, None), Some(DenyToAllow)),
        ((curl, "127.0.0.2", 80, Some(("DELETE", "/x"))), None),
        (
            (curl, "127.0.0.2", 80, Some(("GET", "/admin"))),
            Some(AllowToDeny),
        ),
        (
            (plain, "127.0.0.3", 80, Some(("POST", "/post"))),
            Some(DenyToAllow),
        ),
        ((plain, "127.0.0.3", 80, Some(("POST", "/admin"))), None),
        ((plain, "127.0.0.3", 80, Some(("GET", "/ip"))), None),
        (
            (plain, "127.0.0.3", 80, Some(("POST", "/anything"))),
            Some(DenyToAllow),
        ),
        ((plain, "127.0.0.3", 3306, None), None),
        ((plain, "127.0.0.4", 80, Some(("POST", "/post"))), None),
        ((sleep, "127.0.0.1", 80, Some(("PUT", "/put"))), None),
    ];
    let flips = specs
        .iter()
        .enumerate()
        .filter_map(|(i, (_, d))| d.map(|d| (i, d)))
        .collect();
    (specs.into_iter().map(|(s, _)| s).collect(), flips)
}

/// Writes the log as Envoy would: decision lines among other log lines, one broken line.
/// Returns the log's path and, per request, its line number.
fn write_log(current: &Mesh, specs: &[Spec], name: &str) -> (PathBuf, Vec<usize>) {
    let mut text = String::from("[info][main] starting main dispatch loop\n");
    let mut lines = Vec::new();
    for s in specs {
        let workload = if s.2 == 3306 { "db" } else { "httpbin" };
        let entry = current
            .inputs
            .registry
            .get(&WorkloadKey {
                namespace: "foo".into(),
                name: workload.into(),
            })
            .unwrap();
        let policy = current.compile(&entry.to_compile());
        let req = request(s);
        // What the filter saw: Envoy normalized the path first.
        let seen = peerguard_filter::hcm::admit(&req, policy.path_normalization).unwrap();
        let d = peerguard_filter::decide::decide(&policy, &seen);
        let line = DecisionLine::new(&policy, &seen, &d, Some(HttpVersion::Http11));
        text.push_str(&format!(
            "[2026-12-04 10:00:00.000][7][info][wasm] [context.cc:1192] wasm log peerguard_http peerguard: {}\n",
            line.render()
        ));
        lines.push(text.lines().count());
    }
    text.push_str("[info][wasm] wasm log peerguard_http peerguard: peerguard-decision {\"v\":1,\n");
    let path = std::env::temp_dir().join(format!(
        "peerguard-preview-{}-{name}.log",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    (path, lines)
}

#[test]
fn exactly_the_designed_requests_flip() {
    let cur_dir = dir("cur", CURRENT);
    let prop_dir = dir("prop", PROPOSED);
    let current = mesh_args(&cur_dir).load().unwrap();
    let proposed = mesh_args(&prop_dir).load().unwrap();
    let (specs, want) = traffic();
    let (log, line_of) = write_log(&current, &specs, "designed");
    let (recorded, bad, ignored) = read_logs(std::slice::from_ref(&log), LogFormat::Auto).unwrap();
    assert_eq!((recorded.len(), bad.len(), ignored), (20, 1, 1));
    let report = replay(current, proposed, &recorded, bad, ignored, usize::MAX);
    assert!(
        report.config_errors.is_empty(),
        "{:?}",
        report.config_errors
    );
    assert!(
        report.recorded_mismatch.is_empty(),
        "{:?}",
        report.recorded_mismatch
    );

    let got: BTreeSet<(usize, Direction)> = report
        .groups
        .iter()
        .flat_map(|g| {
            g.requests.iter().map(|f| {
                let i = line_of.iter().position(|l| *l == f.at.line).unwrap();
                (i, g.direction)
            })
        })
        .collect();
    assert_eq!(
        got,
        want,
        "flipped requests (index, direction)\n{}",
        render(&report)
    );
    let t = &report.totals;
    assert_eq!(
        (
            t.recorded,
            t.replayed,
            t.flipped,
            t.unchanged,
            t.unreplayable
        ),
        (20, 20, want.len(), 20 - want.len(), 1)
    );
    assert_eq!((t.allow_to_deny, t.deny_to_allow), (5, 3));
    assert_eq!(report.unreplayable[0].at.line, line_of[19] + 1);

    // Grouped by the deciding policy and the source, with counts.
    let group = |source: &str, decided: &str| {
        report
            .groups
            .iter()
            .find(|g| g.source == source && g.decided_by.contains(decided))
            .map(|g| (g.direction, g.count, g.policy.clone()))
    };
    assert_eq!(
        group(SLEEP, "no-admin"),
        Some((
            Direction::AllowToDeny,
            2,
            Some("foo/no-admin[rule 0]".into())
        ))
    );
    assert_eq!(
        group(CURL, "none matched"),
        Some((Direction::AllowToDeny, 2, None))
    );
    assert_eq!(group(CURL, "no-admin").map(|g| g.1), Some(1));
    assert_eq!(
        group("plaintext 127.0.0.3", "none matched"),
        Some((Direction::DenyToAllow, 2, None)),
        "a flip to ALLOW is grouped by the decision it replaces"
    );
    let text = render(&report);
    println!("{text}");
    assert!(
        text.contains("ALLOW → DENY (5)") && text.contains("DENY → ALLOW (3)"),
        "{text}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["totals"]["flipped"], 8);
    assert_eq!(json["groups"][0]["direction"], "ALLOW->DENY");
    let _ = std::fs::remove_file(log);
}

#[test]
fn exit_codes_and_unreplayable_lines() {
    let cur_dir = dir("cur2", CURRENT);
    let prop_dir = dir("prop2", PROPOSED);
    let current = mesh_args(&cur_dir).load().unwrap();
    let (specs, _) = traffic();
    let (log, _) = write_log(&current, &specs, "codes");
    let args = |proposed: &Path, extra: &[&str]| {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let cur = cur_dir.display().to_string();
        let prop = proposed.display().to_string();
        let l = log.display().to_string();
        let mut argv = vec!["preview", "--current", &cur, "--proposed", &prop, &l];
        argv.extend_from_slice(extra);
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().args
    };
    assert_eq!(run(args(&prop_dir, &[])).unwrap(), 1, "flips");
    assert_eq!(
        run(args(&cur_dir, &[])).unwrap(),
        0,
        "the same configuration"
    );
    assert_eq!(
        run(args(&cur_dir, &["--strict"])).unwrap(),
        2,
        "a broken line"
    );
    assert_eq!(run(args(&cur_dir, &["--config", "x"])).unwrap(), 2);

    // An invalid object: exit 2, the error names file, object and field.
    let broken = dir("broken", &format!("{PROPOSED}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: bad, namespace: foo}}\nspec: {{action: NOPE}}\n"));
    assert_eq!(run(args(&broken, &[])).unwrap(), 2);
    let report = replay(
        current.clone(),
        mesh_args(&broken).load().unwrap(),
        &read_logs(std::slice::from_ref(&log), LogFormat::Auto)
            .unwrap()
            .0,
        Vec::new(),
        0,
        1,
    );
    assert!(
        report
            .config_errors
            .iter()
            .any(|e| e.starts_with("proposed: ")
                && e.contains("policies.yaml")
                && e.contains("foo/bad")
                && e.contains("action")),
        "{:?}",
        report.config_errors
    );

    // A proposed policy reading a header the log does not carry: not guessed.
    let header = dir(
        "header",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: token, namespace: foo}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  rules:\n  - when: [{key: 'request.headers[x-token]', values: [a]}]\n",
    );
    let report = replay(
        current,
        mesh_args(&header).load().unwrap(),
        &read_logs(std::slice::from_ref(&log), LogFormat::Auto)
            .unwrap()
            .0,
        Vec::new(),
        0,
        1,
    );
    // The HTTP lines (17) lack x-token; the 3 TCP ones replay (db: no policy now).
    assert_eq!(report.totals.unreplayable, 17, "{}", render(&report));
    assert!(report.unreplayable[0].why.contains("x-token"));
    assert_eq!(report.totals.replayed, 3);
    let _ = std::fs::remove_file(log);
}

#[test]
fn access_log_lines_replay_too() {
    let cur_dir = dir("cur3", CURRENT);
    let prop_dir = dir("prop3", PROPOSED);
    let lines = [
        // curl GET /ip: flips to DENY.
        r#"{"peerguard_access_log":"1","workload":"foo/httpbin","protocol":"HTTP/1.1","method":"GET","path":"/ip","authority":"httpbin.foo:8000","source":"127.0.0.2","remote":"127.0.0.2","local":"127.0.1.1","local_port":"80","tls":"TLSv1.3","peer_uri_san":"spiffe://cluster.local/ns/bar/sa/curl","sni":null,"response_code":200,"headers":{}}"#,
        // sleep GET /ip: unchanged.
        r#"{"peerguard_access_log":"1","workload":"foo/httpbin","protocol":"HTTP/2","method":"GET","path":"/ip","authority":"httpbin.foo:8000","source":"127.0.0.1","local_port":80,"tls":"TLSv1.3","peer_uri_san":"spiffe://cluster.local/ns/foo/sa/sleep","headers":{}}"#,
        // curl TCP to the database: flips to ALLOW.
        r#"{"peerguard_access_log":"1","workload":"foo/db","protocol":null,"method":null,"source":"127.0.0.2","local_port":3306,"tls":"TLSv1.3","peer_uri_san":"spiffe://cluster.local/ns/bar/sa/curl"}"#,
        r#"{"unrelated":"json"}"#,
        r#"{"peerguard_access_log":"1","workload":"nobody/here","local_port":80,"method":"GET","path":"/"}"#,
    ];
    let log = std::env::temp_dir().join(format!(
        "peerguard-preview-{}-access.log",
        std::process::id()
    ));
    std::fs::write(&log, lines.join("\n")).unwrap();
    let (recorded, bad, ignored) = read_logs(std::slice::from_ref(&log), LogFormat::Auto).unwrap();
    assert_eq!((recorded.len(), bad.len(), ignored), (4, 0, 1));
    let (_, bad, _) = read_logs(std::slice::from_ref(&log), LogFormat::Access).unwrap();
    assert_eq!(bad.len(), 1, "--log-format access: every line must be one");
    let report = replay(
        mesh_args(&cur_dir).load().unwrap(),
        mesh_args(&prop_dir).load().unwrap(),
        &recorded,
        Vec::new(),
        ignored,
        10,
    );
    let flips: Vec<(usize, Direction)> = report
        .groups
        .iter()
        .flat_map(|g| g.requests.iter().map(move |f| (f.at.line, g.direction)))
        .collect();
    assert_eq!(
        flips,
        [(1, Direction::AllowToDeny), (3, Direction::DenyToAllow)],
        "{}",
        render(&report)
    );
    assert_eq!(report.totals.unchanged, 1);
    assert_eq!(report.unreplayable.len(), 1);
    assert!(report.unreplayable[0]
        .why
        .contains("nobody/here is not in the registry"));
    let _ = std::fs::remove_file(log);
}
