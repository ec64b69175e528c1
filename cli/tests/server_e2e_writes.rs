//! Non-atomic writers through a real Envoy: a DENY file rewritten in place (truncated, then
//! written with long pauses) while requests are checked continuously. What Envoy enforces
//! must never be wider than the last complete file: not one denied request may reach the app.
//!
//! Needs Envoy and the module, as `server_e2e.rs`.
#![cfg(test)]

mod harness;

use harness::sidecar::*;
use harness::*;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A DENY on two paths. Cut after `/admin` it is still valid YAML, and narrower; empty (just
/// truncated) it holds no policy at all.
const DENY_HEAD: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-paths, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths:
        - /admin
";
const DENY_TAIL: &str = "        - /secret\n";

/// One plaintext request: `"<status> <body>"`, read up to the end of the body (not to the
/// close, which Envoy delays by a second after a local reply).
fn probe(port: u16, path: &str) -> String {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return "closed: connect refused".into();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if let Err(e) = write!(s, "GET {path} HTTP/1.1\r\nhost: httpbin.foo\r\n\r\n") {
        return format!("closed: {e}");
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                let status = head.split_whitespace().nth(1).unwrap_or("?");
                return format!("{status} {body}");
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return format!("closed: after {:?}", String::from_utf8_lossy(&buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return format!("closed: {e}"),
        }
    }
}

#[test]
fn a_deny_rewritten_in_place_with_long_pauses_never_lets_a_denied_request_through() {
    let test = "a_deny_rewritten_in_place_with_long_pauses_never_lets_a_denied_request_through";
    let Some((envoy_bin, wasm)) = prerequisites(test) else {
        return;
    };
    let dir = temp_dir("e2e-writes");
    let app = http_app();
    write(&dir.join("cfg/workloads.yaml"), &workloads(app));
    write(
        &dir.join("cfg/deny.yaml"),
        &format!("{DENY_HEAD}{DENY_TAIL}"),
    );
    let server = Server::start(&dir, &wasm.display().to_string(), &[]);
    let (envoy, port) = Envoy::start(
        &envoy_bin,
        &dir,
        &server,
        &wasm,
        &["--app-port", &app.to_string()],
        "writes",
    );
    let long = Duration::from_secs(30);
    eventually(
        "the DENY in force",
        long,
        &envoy,
        &server,
        || request_path(port, None, false, "/secret").0,
        "403 RBAC: access denied",
    );
    eventually(
        "other paths allowed",
        long,
        &envoy,
        &server,
        || request_path(port, None, false, "/get").0,
        "200 app-ok",
    );

    // Requests the complete file denies, continuously, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let checker = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let start = Instant::now();
            let (mut checked, mut allowed, mut other) = (0usize, Vec::new(), Vec::new());
            while !stop.load(Ordering::SeqCst) {
                for path in ["/secret", "/admin"] {
                    let r = probe(port, path);
                    checked += 1;
                    let at = format!("{:.2}s {path}: {r}", start.elapsed().as_secs_f64());
                    if r.starts_with("200") {
                        allowed.push(at);
                    } else if !r.starts_with("403 RBAC: access denied") {
                        other.push(at);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (checked, allowed, other)
        }
    });

    // The writer: truncate (the file is empty for 2 s), write the first half (a narrower DENY
    // on disk for 3 s), write the rest, close. Both pauses are far longer than the poll
    // interval, the debounce and the settle period.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dir.join("cfg/deny.yaml"))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    f.write_all(DENY_HEAD.as_bytes()).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // Meanwhile the write is visible to operators (checked below), not applied.
    let readyz = http_get(server.http_port, "/readyz").unwrap();
    let pending = server.metric("peerguard_config_files_pending");
    f.write_all(DENY_TAIL.as_bytes()).unwrap();
    drop(f);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let (checked, allowed, other) = checker.join().unwrap();
    println!(
        "non-atomic rewrite: {checked} denied requests checked, {} let through, {} other outcomes",
        allowed.len(),
        other.len()
    );
    assert!(
        allowed.is_empty(),
        "requests the last complete DENY denies reached the app: {allowed:?}\n{}",
        envoy.log_tail()
    );
    assert!(other.is_empty(), "unexpected outcomes: {other:?}");
    assert!(
        checked >= 100,
        "too little traffic to mean anything: {checked}"
    );
    assert_eq!(readyz.0, 200, "{readyz:?}");
    assert!(readyz.1.contains("deny.yaml: being written"), "{readyz:?}");
    assert_eq!(pending, 1.0);
    wait_for("the completed file read", long, || {
        server.metric("peerguard_config_files_pending") == 0.0
    });
    assert_eq!(server.metric("peerguard_config_unreadable_files"), 0.0);

    // A deliberate, complete edit still applies at once: /secret is no longer denied.
    write(&dir.join("cfg/deny.yaml"), DENY_HEAD);
    eventually(
        "the narrowed DENY once complete",
        long,
        &envoy,
        &server,
        || request_path(port, None, false, "/secret").0,
        "200 app-ok",
    );
    assert_eq!(
        request_path(port, None, false, "/admin").0,
        "403 RBAC: access denied"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
