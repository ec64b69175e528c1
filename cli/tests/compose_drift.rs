//! The committed `docker-compose.yaml` is exactly `peerguard sandbox compose` (the rendering
//! of the sandbox's one topology description), so the container variant cannot drift from
//! the process sandbox. Needs no Docker.
#![cfg(test)]

use std::path::Path;
use std::process::Command;

const PG: &str = env!("CARGO_BIN_EXE_peerguard");

#[test]
fn committed_compose_file_is_the_rendering() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(PG)
        .args(["sandbox", "compose"])
        .output()
        .expect("running peerguard sandbox compose");
    assert!(
        out.status.success(),
        "peerguard sandbox compose failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let path = repo.join("docker-compose.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if committed != rendered {
        let first = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(rendered.lines().count()));
        panic!(
            "{} differs from `peerguard sandbox compose` (first at line {}):\n  committed: {:?}\n  rendered:  {:?}\n\
             regenerate: cargo run -q -p peerguard -- sandbox compose > docker-compose.yaml",
            path.display(),
            first + 1,
            committed.lines().nth(first).unwrap_or("<end of file>"),
            rendered.lines().nth(first).unwrap_or("<end of output>"),
        );
    }
}

/// A change to the topology (here: another subnet) shows in the rendering: the comparison
/// above can fail.
#[test]
fn rendering_follows_its_inputs() {
    let out = Command::new(PG)
        .args(["sandbox", "compose", "--subnet", "10.99"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("ipv4_address: 10.99.1.20"), "{text}");
    assert!(!text.contains("10.217."), "{text}");
    let bad = Command::new(PG)
        .args(["sandbox", "compose", "--subnet", "10"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
