//! Runs every conformance case of `$CONFORMANCE_DIR` (default the repository's
//! `integration/conformance/cases`) in-process: compile + decide. e2e-only requests are skipped (the
//! end-to-end runner covers them). Same runner as `peerguard test`.

use peerguard_filter::scenario::{self, Outcome};
use std::path::PathBuf;

fn cases_dir() -> PathBuf {
    match std::env::var_os("CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../integration/conformance/cases"),
    }
}

#[test]
fn conformance_cases() {
    let dir = cases_dir();
    let loaded = scenario::load_paths(std::slice::from_ref(&dir));
    for e in &loaded.errors {
        eprintln!("INVALID {e}");
    }
    assert!(
        !loaded.scenarios.is_empty() || !loaded.errors.is_empty(),
        "no conformance cases found in {}",
        dir.display()
    );
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for s in &loaded.scenarios {
        let (_, results) = scenario::run_in_process(s);
        for r in results {
            match r.outcome {
                Outcome::Passed => passed += 1,
                Outcome::Skipped => skipped += 1,
                Outcome::Failed(m) => {
                    failed += 1;
                    eprintln!("{}", scenario::failure_line(s, r.index, &m));
                }
            }
        }
    }
    eprintln!("{}", scenario::summary_line(passed, failed, skipped));
    assert!(
        loaded.errors.is_empty(),
        "{} invalid case file(s) in {}",
        loaded.errors.len(),
        dir.display()
    );
    assert_eq!(failed, 0, "{failed} conformance request(s) failed");
    assert!(passed > 0, "no request was run from {}", dir.display());
}
