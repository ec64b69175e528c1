//! `peerguard serve` against hostile or broken config directories (no Envoy needed): alias
//! bombs, symlink loops, FIFOs, a directory that disappears, every workload gone. The server
//! must stay up, bounded and truthful (`/readyz`, metrics, logs).
#![cfg(test)]

mod harness;

use harness::*;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

const DENY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-sleep, namespace: foo}
spec:
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/sleep]}}]}]
";

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb / 1024.0
}

/// 29 KB of YAML: 34 documents, each 111,111 copies of a 600-byte scalar through five levels
/// of anchors (66 MB per document, under what serde-saphyr allows one parse). Read without
/// a budget across the file it took 2.5 GB.
fn alias_bomb() -> String {
    let mut doc = format!("---\na0: &a0 \"{}\"\n", "x".repeat(600));
    for i in 1..=5 {
        let refs = vec![format!("*a{}", i - 1); 10].join(",");
        doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    doc.repeat(34)
}

fn readyz(server: &Server) -> (u16, String) {
    http_get(server.http_port, "/readyz").unwrap()
}

#[test]
fn an_alias_bomb_is_an_error_that_keeps_the_last_good_content_and_memory_stays_bounded() {
    let dir = temp_dir("cfg-bomb");
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    write(&dir.join("cfg/deny.yaml"), DENY);
    let server = Server::start(&dir, "/opt/peerguard.wasm", &[]);
    let before = peak_rss_mib(server.child.id());
    let bomb = alias_bomb();
    assert!(bomb.len() < 30_000);
    write(&dir.join("cfg/deny.yaml"), &bomb);
    wait_for("the bomb reported", Duration::from_secs(30), || {
        server.metric("peerguard_config_over_budget_files") == 1.0
    });
    let peak = peak_rss_mib(server.child.id());
    println!("alias bomb: peak RSS {before:.0} MiB before, {peak:.0} MiB after");
    assert!(peak < 300.0, "peak RSS {peak:.0} MiB");
    let (status, body) = readyz(&server);
    assert_eq!(status, 200, "the last good content is served: {body}");
    assert!(
        body.contains("deny.yaml: unreadable (over the per-file budget")
            && body.contains("serving its last successfully read content"),
        "{body}"
    );
    assert!(
        server
            .log_text()
            .contains("FAIL-CLOSED: deny.yaml: unreadable (over the per-file budget"),
        "{}",
        server.log_text()
    );
    assert_eq!(server.metric("peerguard_config_unreadable_files"), 1.0);

    // A new file over budget was never read: policy updates are held, and that is not ready.
    write(&dir.join("cfg/other.yaml"), &bomb);
    wait_for("the held update reported", Duration::from_secs(30), || {
        server.metric("peerguard_policy_updates_held") == 1.0
    });
    let (status, body) = readyz(&server);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("other.yaml: unreadable (over the per-file budget")
            && body.contains("policy updates are held"),
        "{body}"
    );
    assert_eq!(
        server.metric("peerguard_not_ready{reason=\"policy_updates_held\"}"),
        1.0
    );
    assert!(peak_rss_mib(server.child.id()) < 300.0);
    std::fs::remove_file(dir.join("cfg/other.yaml")).unwrap();
    wait_for("ready again", Duration::from_secs(30), || {
        readyz(&server).0 == 200
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_total_budget_covers_the_whole_directory() {
    let dir = temp_dir("cfg-total");
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    // Room for the workloads, not for the DENY as well.
    let server = Server::start(&dir, "/opt/peerguard.wasm", &["--max-config-nodes", "60"]);
    let used = server.metric("peerguard_config_budget_nodes");
    assert!(used > 0.0 && used <= 60.0, "{used}");
    write(&dir.join("cfg/z-deny.yaml"), DENY);
    wait_for(
        "the file over the total reported",
        Duration::from_secs(30),
        || server.metric("peerguard_config_over_budget_files") == 1.0,
    );
    let (status, body) = readyz(&server);
    assert_eq!(status, 503, "never read: held: {body}");
    assert!(
        body.contains("z-deny.yaml: unreadable (over the directory's total budget"),
        "{body}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn symlink_loops_neither_drop_workloads_nor_grow_memory() {
    let dir = temp_dir("cfg-loops");
    std::fs::create_dir_all(dir.join("cfg/team")).unwrap();
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    write(&dir.join("cfg/team/deny.yaml"), DENY);
    // Two loops: each directory reachable through endless paths.
    symlink(".", dir.join("cfg/loop")).unwrap();
    symlink("..", dir.join("cfg/team/up")).unwrap();
    let server = Server::start(&dir, "/opt/peerguard.wasm", &[]);
    assert_eq!(
        server.metric("peerguard_workloads"),
        2.0,
        "{}",
        server.log_text()
    );
    assert_eq!(
        server.metric("peerguard_config_errors"),
        0.0,
        "{}",
        server.log_text()
    );
    assert_eq!(readyz(&server), (200, "ready\n".to_string()));
    // Reloads stay bounded too.
    write(
        &dir.join("cfg/team/deny.yaml"),
        &DENY.replace("deny-sleep", "deny-other"),
    );
    let reloads = server.metric("peerguard_config_reloads_total");
    wait_for("a reload", Duration::from_secs(30), || {
        server.metric("peerguard_config_reloads_total") > reloads
    });
    assert_eq!(server.metric("peerguard_workloads"), 2.0);
    assert!(peak_rss_mib(server.child.id()) < 200.0);
    let _ = std::fs::remove_dir_all(&dir);
}

fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_fifo_blocks_neither_reloads_nor_shutdown() {
    let dir = temp_dir("cfg-fifo");
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    mkfifo(&dir.join("cfg/pipe.yaml"));
    let mut server = Server::start(&dir, "/opt/peerguard.wasm", &[]);
    let (status, body) = readyz(&server);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("pipe.yaml: unreadable (not a regular file (a FIFO): not read); ignored"),
        "{body}"
    );
    assert_eq!(server.metric("peerguard_workloads"), 2.0);
    let reloads = server.metric("peerguard_config_reloads_total");
    write(&dir.join("cfg/deny.yaml"), DENY);
    wait_for("a reload past the FIFO", Duration::from_secs(30), || {
        server.metric("peerguard_config_reloads_total") > reloads
    });
    let start = Instant::now();
    let st = server.stop();
    assert!(st.success(), "{st:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        start.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readyz_says_when_the_directory_is_missing_the_workloads_are_gone_or_updates_are_held() {
    let dir = temp_dir("cfg-ready");
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    write(&dir.join("cfg/deny.yaml"), DENY);
    let server = Server::start(&dir, "/opt/peerguard.wasm", &[]);
    assert_eq!(server.metric("peerguard_ready"), 1.0);
    let long = Duration::from_secs(30);

    // The directory disappears (an unmounted volume): the last content stays, not ready.
    std::fs::rename(dir.join("cfg"), dir.join("cfg-away")).unwrap();
    wait_for("the missing directory reported", long, || {
        server.metric("peerguard_config_dir_missing") == 1.0
    });
    let (status, body) = readyz(&server);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("/cfg: does not exist: serving the last configuration read from it"),
        "{body}"
    );
    assert_eq!(
        server.metric("peerguard_not_ready{reason=\"config_dir_missing\"}"),
        1.0
    );
    assert_eq!(server.metric("peerguard_ready"), 0.0);
    assert_eq!(
        server.metric("peerguard_workloads"),
        2.0,
        "nothing is dropped"
    );
    std::fs::rename(dir.join("cfg-away"), dir.join("cfg")).unwrap();
    wait_for("ready again", long, || readyz(&server).0 == 200);
    assert_eq!(server.metric("peerguard_config_dir_missing"), 0.0);

    // Every workload gone (a truncated registry file, a bad edit).
    write(&dir.join("cfg/workloads.yaml"), "# nothing here\n");
    wait_for("no workloads", long, || {
        server.metric("peerguard_workloads") == 0.0
    });
    let (status, body) = readyz(&server);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("no workloads registered (there were 2)"),
        "{body}"
    );
    assert_eq!(
        server.metric("peerguard_not_ready{reason=\"no_workloads\"}"),
        1.0
    );
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    wait_for("ready again", long, || readyz(&server).0 == 200);

    // A file never read successfully holds policy updates: not ready while it lasts.
    write(&dir.join("cfg/new.yaml"), "kind: [");
    wait_for("held", long, || {
        server.metric("peerguard_policy_updates_held") == 1.0
    });
    let (status, body) = readyz(&server);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("policy updates are held") && body.contains("new.yaml: unreadable"),
        "{body}"
    );
    std::fs::remove_file(dir.join("cfg/new.yaml")).unwrap();
    wait_for("ready again", long, || readyz(&server).0 == 200);
    assert_eq!(
        server.metric("peerguard_not_ready{reason=\"policy_updates_held\"}"),
        0.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A typo in an Istio kind is an invalid object: served fail-closed, counted, logged, and
/// `/readyz` says the configuration is degraded (issue: a misspelt kind used to vanish).
#[test]
fn a_misspelt_kind_is_an_error_on_readyz_and_in_metrics() {
    let dir = temp_dir("cfg-typo");
    write(&dir.join("cfg/workloads.yaml"), WORKLOADS);
    write(
        &dir.join("cfg/deny.yaml"),
        &DENY.replace("kind: AuthorizationPolicy", "kind: AuthorisationPolicy"),
    );
    let server = Server::start(&dir, "/opt/peerguard.wasm", &[]);
    assert_eq!(
        server.metric("peerguard_config_errors"),
        1.0,
        "{}",
        server.log_text()
    );
    let (status, body) = readyz(&server);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("ready, degraded:") && body.contains("AuthorisationPolicy"),
        "{body}"
    );
    assert!(
        server.log_text().contains("AuthorisationPolicy"),
        "{}",
        server.log_text()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
