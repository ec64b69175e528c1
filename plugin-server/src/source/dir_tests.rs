#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use std::io::Write;

/// A DENY on two paths; cut after `/admin` it is still valid YAML, and narrower.
const DENY_HEAD: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-paths, namespace: foo}\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths:\n        - /admin\n";
const DENY_TAIL: &str = "        - /secret\n";
const WORKLOAD: &str = "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: a, namespace: foo}\nspec: {serviceAccount: a}\n";

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pg-src-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn source(
    dir: &Path,
    settle: Duration,
) -> (mpsc::Receiver<Arc<Inputs>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let src = Box::new(DirSource {
        dir: dir.to_path_buf(),
        poll: Duration::from_millis(50),
        debounce: Duration::from_millis(20),
        settle,
        total_budget: YamlCost {
            nodes: 1 << 30,
            scalar_bytes: 1 << 30,
        },
    });
    let task = src.run(tx);
    (rx, task)
}

/// Does the policy deny `/secret` (the whole DENY)? `None` if there is no such policy.
fn denies_secret(inputs: &Inputs) -> Option<bool> {
    let json = serde_json::to_string(&inputs.resources).unwrap();
    json.contains("deny-paths")
        .then(|| json.contains("/secret"))
}

async fn next(rx: &mut mpsc::Receiver<Arc<Inputs>>, within: Duration) -> Option<Arc<Inputs>> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_then_slow_write_never_publishes_a_narrower_deny() {
    let dir = tmp("slow-writer");
    std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
    std::fs::write(dir.join("deny.yaml"), format!("{DENY_HEAD}{DENY_TAIL}")).unwrap();
    let settle = Duration::from_millis(300);
    let (mut rx, task) = source(&dir, settle);
    // Just written: not read before it settles (policy held meanwhile), then read whole.
    let first = next(&mut rx, Duration::from_secs(10)).await.unwrap();
    assert!(
        denies_secret(&first) == Some(true) || first.hold_policy(),
        "{:?}",
        first.pending
    );
    let mut inputs = first;
    while denies_secret(&inputs) != Some(true) || inputs.hold_policy() {
        inputs = next(&mut rx, Duration::from_secs(10)).await.unwrap();
    }

    // The writer truncates, writes half, pauses well past the settle period, then finishes.
    let writer = std::thread::spawn({
        let path = dir.join("deny.yaml");
        move || {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .unwrap();
            std::thread::sleep(Duration::from_millis(600));
            f.write_all(DENY_HEAD.as_bytes()).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            f.write_all(DENY_TAIL.as_bytes()).unwrap();
        }
    });
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        if let Some(i) = next(&mut rx, Duration::from_millis(200)).await {
            seen.push(i);
        }
    }
    writer.join().unwrap();
    for i in &seen {
        assert_eq!(
            denies_secret(i),
            Some(true),
            "a narrower or missing DENY was published (pending: {:?})",
            i.pending
        );
        assert!(!i.hold_policy());
    }
    assert!(
        seen.iter().any(|i| i
            .pending
            .iter()
            .any(|p| p.starts_with("deny.yaml: being written"))),
        "the write shows while it lasts"
    );
    assert!(
        seen.last().is_some_and(|i| i.pending.is_empty()),
        "read once closed: {:?}",
        seen.last().map(|i| &i.pending)
    );
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_does_not_block_reading() {
    let dir = tmp("fifo");
    std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
    let c = std::ffi::CString::new(dir.join("pipe.yaml").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo does not retain it.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let (mut rx, task) = source(&dir, Duration::from_millis(100));
    let mut got = next(&mut rx, Duration::from_secs(10))
        .await
        .expect("inputs despite the FIFO");
    while got.registry.workloads.is_empty() {
        got = next(&mut rx, Duration::from_secs(10))
            .await
            .expect("inputs despite the FIFO");
    }
    assert!(got
        .unreadable_summary()
        .iter()
        .any(|l| l.starts_with("pipe.yaml: unreadable (not a regular file (a FIFO)")));
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
