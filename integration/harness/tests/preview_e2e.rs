//! `peerguard preview` on what a real Envoy 1.40 with the filter recorded: the decision log
//! lines (and peerguard's JSON access log) of real requests over real mTLS and plaintext
//! connections, replayed. Against the configuration that was in force, every replayed
//! decision must be what Envoy answered (zero flips); against a proposed one, exactly the
//! requests designed to flip do.
//!
//! Needs Envoy and the wasm module (see tests/envoy_e2e.rs); without them it prints
//! `SKIPPED: <why>` and passes unless PEERGUARD_REQUIRE_ENVOY=1.

#![cfg(test)]

use anyhow::{bail, Context as _};
use clap::Parser;
use peerguard_harness::client::Probe;
use peerguard_harness::e2e::{self, http_probe, mesh_peer, E2eRequest, E2eScenario, Options, Peer};
use peerguard_harness::require::{require, Needs};
use peerguard_server::cli::preview::{self, Direction, LogFormat};
use peerguard_server::cli::workload::{Mesh, MeshArgs};
use peerguard_server::registry::WorkloadKey;
use peerguard_server::serve::decision_log::DecisionLogArgs;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

const WORKLOADS: &str = "
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: httpbin, namespace: foo, labels: {app: httpbin}}
spec: {serviceAccount: httpbin, services: [{name: httpbin, ports: [{port: 8000}]}]}
---
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: db, namespace: foo, labels: {app: db}}
spec: {serviceAccount: db, services: [{name: db, ports: [{port: 9000, protocol: tcp}]}]}
";

/// Shared by both configurations: the plaintext 127.0.0.3 may GET with `x-token: yes` (a
/// header the decision log must carry).
const TOKEN: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: plain-token, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {ipBlocks: [127.0.0.3/32]}}]
    to: [{operation: {methods: [GET]}}]
    when: [{key: 'request.headers[x-token]', values: ['yes']}]
";

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

fn write_dir(root: &Path, name: &str, policies: &str) -> anyhow::Result<PathBuf> {
    let d = root.join(name);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join("workloads.yaml"), WORKLOADS)?;
    std::fs::write(d.join("token.yaml"), TOKEN)?;
    std::fs::write(d.join("policies.yaml"), policies)?;
    Ok(d)
}

fn load(dir: &Path) -> anyhow::Result<Mesh> {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mesh: MeshArgs,
    }
    let mut args = Cli::try_parse_from(["x"])?.mesh;
    args.config = Some(dir.to_path_buf());
    let mesh = args.load()?;
    if !mesh.config_errors().is_empty() {
        bail!("{}: {:?}", dir.display(), mesh.config_errors());
    }
    Ok(mesh)
}

fn req(peer: Peer, source: &str, port: u16, probe: Probe) -> anyhow::Result<E2eRequest> {
    Ok(E2eRequest {
        peer,
        source_ip: Some(source.parse::<IpAddr>()?),
        port,
        probe,
    })
}

fn http(method: &str, path: &str, headers: &[(&str, &str)], http2: bool) -> Probe {
    http_probe(method, path, "httpbin.foo:8000", headers, http2)
}

#[test]
fn preview_replays_what_envoy_decided() -> anyhow::Result<()> {
    let Some(tools) = require("preview_e2e", Needs::EnvoyAndWasm)? else {
        return Ok(());
    };
    let root = std::env::temp_dir().join(format!("peerguard-preview-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let current_dir = write_dir(&root, "current", CURRENT)?;
    let proposed_dir = write_dir(&root, "proposed", PROPOSED)?;
    let current = load(&current_dir)?;

    // The filter configuration in force, compiled as `serve` does, with the decision log
    // on for every decision (`--decision-log-sample 1`).
    let log_all = DecisionLogArgs {
        decision_log_sample: Some("1".parse().map_err(anyhow::Error::msg)?),
    };
    let policy = |name: &str| -> anyhow::Result<_> {
        let entry = current
            .inputs
            .registry
            .get(&WorkloadKey {
                namespace: "foo".into(),
                name: name.into(),
            })
            .context("registered")?;
        let mut p = current.compile(&entry.to_compile());
        log_all.apply(&mut p);
        Ok(p)
    };
    let (sleep, curl, plain) = (mesh_peer(SLEEP), mesh_peer(CURL), Peer::Plaintext);
    let token = [("x-token", "yes")];
    // (request, designed flip)
    let web: Vec<(E2eRequest, Option<Direction>)> = vec![
        (
            req(
                sleep.clone(),
                "127.0.0.1",
                8000,
                http("GET", "/ip", &[], false),
            )?,
            None,
        ),
        (
            req(
                sleep.clone(),
                "127.0.0.1",
                8000,
                http("GET", "/admin/users", &[], false),
            )?,
            Some(Direction::AllowToDeny),
        ),
        (
            req(
                sleep.clone(),
                "127.0.0.1",
                8000,
                http("POST", "/post", &[], false),
            )?,
            None,
        ),
        // Envoy normalizes this to /admin before the filter: the log records that.
        (
            req(
                sleep.clone(),
                "127.0.0.1",
                8000,
                http("GET", "/a/../admin", &[], false),
            )?,
            Some(Direction::AllowToDeny),
        ),
        (
            req(
                curl.clone(),
                "127.0.0.2",
                8000,
                http("GET", "/ip", &[], false),
            )?,
            Some(Direction::AllowToDeny),
        ),
        (
            req(
                curl.clone(),
                "127.0.0.2",
                8000,
                http("GET", "/headers", &[], true),
            )?,
            Some(Direction::AllowToDeny),
        ),
        (
            req(
                curl.clone(),
                "127.0.0.2",
                8000,
                http("DELETE", "/x", &[], false),
            )?,
            None,
        ),
        (
            req(
                plain.clone(),
                "127.0.0.3",
                8000,
                http("POST", "/post", &[], false),
            )?,
            Some(Direction::DenyToAllow),
        ),
        (
            req(
                plain.clone(),
                "127.0.0.3",
                8000,
                http("GET", "/ip", &token, false),
            )?,
            None,
        ),
        (
            req(
                plain.clone(),
                "127.0.0.3",
                8000,
                http("GET", "/ip", &[], false),
            )?,
            None,
        ),
        (
            req(
                plain.clone(),
                "127.0.0.3",
                8000,
                http("GET", "/admin", &token, true),
            )?,
            Some(Direction::AllowToDeny),
        ),
        (
            req(
                plain.clone(),
                "127.0.0.4",
                8000,
                http("POST", "/post", &[("cookie", "secret")], false),
            )?,
            None,
        ),
    ];
    let db: Vec<(E2eRequest, Option<Direction>)> = vec![
        (req(sleep, "127.0.0.1", 9000, Probe::Tcp)?, None),
        (
            req(curl, "127.0.0.2", 9000, Probe::Tcp)?,
            Some(Direction::DenyToAllow),
        ),
        (req(plain, "127.0.0.3", 9000, Probe::Tcp)?, None),
    ];
    let designed: BTreeSet<(usize, Direction)> = web
        .iter()
        .chain(&db)
        .enumerate()
        .filter_map(|(i, (_, d))| d.map(|d| (i, d)))
        .collect();
    let scenario = |name: &str, reqs: &[(E2eRequest, Option<Direction>)]| -> anyhow::Result<_> {
        Ok(E2eScenario {
            name: name.into(),
            trust_domains: vec!["cluster.local".into()],
            policy: policy(name)?,
            requests: reqs.iter().map(|(r, _)| r.clone()).collect(),
        })
    };
    let envoy_log = root.join("envoy.log");
    let access_log = root.join("access.log");
    let opts = Options {
        envoy: Some(tools.envoy.clone()),
        wasm: tools.wasm.clone(),
        // One request at a time: the log's order is the requests' order.
        parallelism: 1,
        envoy_args: vec!["--component-log-level".into(), "wasm:info".into()],
        log_copy: Some(envoy_log.clone()),
        access_log: Some(access_log.clone()),
        ..Options::default()
    };
    let observed: Vec<_> =
        e2e::run_e2e(&[scenario("httpbin", &web)?, scenario("db", &db)?], &opts)?
            .into_iter()
            .flatten()
            .collect();
    let total = web.len() + db.len();
    assert_eq!(observed.len(), total);

    // The decision log: one line per request, the decision Envoy enforced.
    let (recorded, bad, _) = preview::read_logs(std::slice::from_ref(&envoy_log), LogFormat::Auto)?;
    let text = std::fs::read_to_string(&envoy_log)?;
    assert!(bad.is_empty(), "{bad:?}");
    assert!(
        !text.contains("secret"),
        "a header no policy reads is not logged"
    );
    assert_eq!(
        recorded.len(),
        total,
        "decision lines in {}",
        envoy_log.display()
    );
    let replayed = preview::decisions(load(&current_dir)?, &recorded);
    for (k, ((r, o), d)) in recorded.iter().zip(&observed).zip(&replayed).enumerate() {
        println!(
            "#{k}: Envoy allowed={} ({}); {}",
            o.allowed,
            o.detail,
            r.line.render()
        );
        assert_eq!(
            r.line.allowed,
            Some(o.allowed),
            "#{k}: the line records Envoy's answer"
        );
        let d = d.as_ref().map_err(|e| anyhow::anyhow!("#{k}: {e}"))?;
        assert_eq!(
            d.allowed, o.allowed,
            "#{k}: the replay decides as Envoy did: {}",
            d.reason
        );
    }
    assert_eq!(
        recorded[3].line.http.as_ref().map(|h| h.path.as_str()),
        Some("/admin"),
        "the path as the filter saw it"
    );

    // Current against itself: nothing flips. Against the proposal: exactly the designed set.
    let same = preview::replay(
        load(&current_dir)?,
        load(&current_dir)?,
        &recorded,
        Vec::new(),
        0,
        usize::MAX,
    );
    assert_eq!(
        (
            same.totals.replayed,
            same.totals.flipped,
            same.totals.recorded_mismatch
        ),
        (total, 0, 0)
    );
    let flips = |report: &preview::Report,
                 recorded: &[preview::Recorded]|
     -> BTreeSet<(usize, Direction)> {
        report
            .groups
            .iter()
            .flat_map(|g| {
                g.requests.iter().filter_map(move |f| {
                    recorded
                        .iter()
                        .position(|r| r.at == f.at)
                        .map(|i| (i, g.direction))
                })
            })
            .collect()
    };
    let report = preview::replay(
        load(&current_dir)?,
        load(&proposed_dir)?,
        &recorded,
        Vec::new(),
        0,
        usize::MAX,
    );
    println!("{}", preview::render(&report));
    assert_eq!(flips(&report, &recorded), designed);
    assert_eq!(report.totals.unreplayable, 0);

    // The same traffic from Envoy's access log in peerguard's JSON format.
    let (from_access, bad, _) =
        preview::read_logs(std::slice::from_ref(&access_log), LogFormat::Auto)?;
    for l in std::fs::read_to_string(&access_log)?.lines() {
        println!("access log: {l}");
    }
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        from_access.len(),
        total,
        "access-log lines in {}",
        access_log.display()
    );
    // Envoy writes a TCP connection's access-log line when the connection closes, so the
    // lines need not be in the requests' order: compare per request key (workload, port,
    // peer, source, request line), taking Envoy's answers from the decision-log lines above,
    // which are in order and were checked against what the clients saw.
    let key = |l: &peerguard_filter::schema::DecisionLine| {
        let http = l
            .http
            .as_ref()
            .map(|h| format!("{} {}", h.method, h.path))
            .unwrap_or_default();
        format!("{} {} {:?} {:?} {http}", l.workload, l.port, l.peer, l.src)
    };
    let mut want: Vec<(String, bool)> = recorded
        .iter()
        .zip(&observed)
        .map(|(r, o)| (key(&r.line), o.allowed))
        .collect();
    let mut got = Vec::new();
    for (k, d) in preview::decisions(load(&current_dir)?, &from_access)
        .iter()
        .enumerate()
    {
        let d = d
            .as_ref()
            .map_err(|e| anyhow::anyhow!("access log #{k}: {e}"))?;
        got.push((key(&from_access[k].line), d.allowed));
    }
    want.sort();
    got.sort();
    assert_eq!(got, want, "replayed access-log decisions = Envoy's answers");
    let report = preview::replay(
        load(&current_dir)?,
        load(&proposed_dir)?,
        &from_access,
        Vec::new(),
        0,
        usize::MAX,
    );
    // By request key, as above: the access log's order is not the requests' order.
    let by_key = |set: BTreeSet<(usize, Direction)>,
                  lines: &[preview::Recorded]|
     -> BTreeSet<(String, Direction)> {
        set.into_iter()
            .filter_map(|(i, d)| lines.get(i).map(|r| (key(&r.line), d)))
            .collect()
    };
    assert_eq!(
        by_key(flips(&report, &from_access), &from_access),
        by_key(designed, &recorded),
        "{}",
        preview::render(&report)
    );
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
