#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::evaluate::{evaluate, State};
use crate::scenario_io::{export, import};
use peerguard_filter::scenario::{load_file, run_in_process};
use std::path::PathBuf;

/// The shared cases and the project's own, as `peerguard test` reads them.
fn case_files() -> Vec<PathBuf> {
    // The project's cases (CONFORMANCE_DIR, as scripts/test.sh sets it), and the upstream
    // shared ones when present; a file name seen twice is read once.
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let own = std::env::var_os("CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("integration/conformance/cases"));
    let shared = std::env::var_os("SHARED_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/conformance/cases"));
    let mut files: std::collections::BTreeMap<std::ffi::OsString, PathBuf> = Default::default();
    for (dir, required) in [(own, true), (shared, false)] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if required => panic!("{}: {e}", dir.display()),
            Err(_) => continue,
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.entry(p.file_name().unwrap().to_owned()).or_insert(p);
            }
        }
    }
    let files: Vec<PathBuf> = files.into_values().collect();
    assert!(files.len() > 20, "found only {} cases", files.len());
    files
}

/// Imported into the page's state and evaluated, every case decides every request as
/// `peerguard test` does (same allow/deny, same reason, audit and dry-run).
#[test]
fn every_case_imported_decides_as_peerguard_test() {
    for f in case_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        let scenario = load_file(&f).unwrap();
        let (_, expected) = run_in_process(&scenario);
        let state = import(&text, &f.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        let got = evaluate(&state);
        assert!(got.errors.is_empty(), "{}: {:?}", f.display(), got.errors);
        assert_eq!(got.results.len(), expected.len(), "{}", f.display());
        for (g, e) in got.results.iter().zip(&expected) {
            assert_eq!(
                g.decision,
                e.decision,
                "{} request[{}]",
                f.display(),
                e.index
            );
            assert_eq!(g.e2e_only, e.decision.is_none());
            if let Some(m) = &g.mismatches {
                assert!(m.is_empty(), "{} request[{}]: {m:?}", f.display(), e.index);
            }
        }
    }
}

/// Exported, a case loads in the scenario reader and decides the same again.
#[test]
fn export_round_trips_every_case() {
    for f in case_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        let state = import(&text, "case.yaml").unwrap();
        let yaml = export(&state).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let again = import(&yaml, "exported.yaml").unwrap();
        let a = evaluate(&state);
        let b = evaluate(&again);
        let decisions = |e: &crate::evaluate::Evaluation| {
            e.results
                .iter()
                .map(|r| r.decision.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(decisions(&a), decisions(&b), "{}", f.display());
    }
}

fn state(resources: &str, requests: serde_json::Value) -> State {
    serde_json::from_value(serde_json::json!({
        "resources": resources,
        "workload": {"namespace": "foo", "name": "httpbin", "service_account": "httpbin", "labels": {"app": "httpbin"}},
        "requests": requests,
    }))
    .unwrap()
}

#[test]
fn a_syntax_error_denies_everything_and_names_its_line() {
    let s = state(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: a\n  namespace: foo\nspec:\n  rules: [\n",
        serde_json::json!([{"peer": null, "port": 80, "protocol": "tcp"}]),
    );
    let e = evaluate(&s);
    assert_eq!(e.errors.len(), 1, "{:?}", e.errors);
    assert!(e.errors[0].location.is_some(), "{:?}", e.errors);
    assert!(e.config_invalid.is_some());
    let d = e.results[0].decision.as_ref().unwrap();
    assert!(!d.allowed);
}

#[test]
fn a_request_error_names_the_request_and_field() {
    let s = state(
        "",
        serde_json::json!([{"peer": null, "port": 80, "protocol": "http"}]),
    );
    let e = evaluate(&s);
    let err = e.results[0].error.as_deref().unwrap();
    assert!(err.starts_with("requests[0].http:"), "{err}");
}

#[test]
fn export_refuses_resources_with_errors() {
    let s = state(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: a\n  namespace: foo\nspec:\n  mtls:\n    mode: SOMETIMES\n",
        serde_json::json!([]),
    );
    let err = export(&s).unwrap_err();
    assert!(err.contains("PeerAuthentication foo/a"), "{err}");
}
