#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::source::walk::walk;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

const DENY: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-sleep, namespace: foo}\nspec:\n  action: DENY\n  rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/sleep]}}]}]\n";
const WORKLOAD: &str = "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: a, namespace: foo}\nspec: {serviceAccount: a}\n";

/// Reads the directory once, with no memory of earlier reads.
fn load(dir: &Path) -> Inputs {
    Loader::default().load(dir)
}

fn deny_names(inputs: &Inputs) -> Vec<String> {
    inputs
        .resources
        .iter()
        .filter_map(|r| match r {
            Resource::AuthorizationPolicy(o) => Some(o.metadata.name.clone()),
            _ => None,
        })
        .collect()
}

fn workload_names(inputs: &Inputs) -> Vec<String> {
    inputs
        .registry
        .workloads
        .keys()
        .map(|k| k.to_string())
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pg-dir-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn reads_workloads_and_reports_errors_without_dropping_the_rest() {
    let dir = tmp("basic");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(
        dir.join("w.yaml"),
        "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: a, namespace: foo}\nspec: {serviceAccount: a}\n---\napiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: b, namespace: foo}\nspec: {serviceAccount: b, sidecar: maybe}\n",
    )
    .unwrap();
    std::fs::write(dir.join("sub/c.yml"), "apiVersion: peerguard.dev/v1alpha1\nkind: Workload\nmetadata: {name: c, namespace: bar}\nspec: {serviceAccount: c}\n").unwrap();
    std::fs::write(dir.join("list.json"), r#"{"kind": "List", "items": [{"apiVersion": "peerguard.dev/v1alpha1", "kind": "Workload", "metadata": {"name": "d", "namespace": "bar"}, "spec": {"serviceAccount": "d"}}]}"#).unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "kind: [broken").unwrap();
    let inputs = load(&dir);
    assert_eq!(workload_names(&inputs), vec!["bar/c", "bar/d", "foo/a"]);
    assert!(
        inputs
            .errors
            .iter()
            .any(|e| e.starts_with("w.yaml: Workload foo/b: spec.sidecar: ")),
        "{:?}",
        inputs.errors
    );
    assert!(
        inputs.skipped.iter().all(|s| !s.contains("Workload")),
        "{:?}",
        inputs.skipped
    );
    assert!(
        inputs.cost.nodes > 0 && inputs.unreadable.is_empty() && inputs.source_missing.is_none()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_broken_into_invalid_yaml_keeps_its_last_good_content() {
    let dir = tmp("lastgood");
    std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
    std::fs::write(dir.join("deny.yaml"), DENY).unwrap();
    let mut loader = Loader::default();
    let first = loader.load(&dir);
    assert_eq!(deny_names(&first), vec!["deny-sleep"]);
    assert!(first.unreadable.is_empty() && !first.hold_policy());

    // A syntax error: the parser cannot even tell the kind, so nothing is left of it.
    std::fs::write(
        dir.join("deny.yaml"),
        DENY.replace("action: DENY", "action: [DENY"),
    )
    .unwrap();
    assert!(
        deny_names(&load(&dir)).is_empty(),
        "without memory the DENY is gone: what this guards against"
    );
    let broken = loader.load(&dir);
    assert_eq!(
        deny_names(&broken),
        vec!["deny-sleep"],
        "the last good DENY stays"
    );
    assert_eq!(broken.unreadable.len(), 1);
    assert_eq!(broken.unreadable[0].file, "deny.yaml");
    assert_eq!(broken.unreadable[0].fallback, Fallback::LastGood);
    assert!(!broken.hold_policy());
    assert!(
        broken
            .errors
            .iter()
            .any(|e| e.starts_with("deny.yaml: invalid YAML")),
        "{:?}",
        broken.errors
    );
    assert!(broken.unreadable_summary()[0].contains("last successfully read content"));
    // Other files still update: a workload file breaking keeps its workloads too.
    std::fs::write(dir.join("w.yaml"), "kind: [").unwrap();
    let both = loader.load(&dir);
    assert_eq!(workload_names(&both), vec!["foo/a"]);
    assert_eq!(both.unreadable.len(), 2);

    // Fixed: the new content is used; an edit that removes the DENY is honoured.
    std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
    std::fs::write(
        dir.join("deny.yaml"),
        DENY.replace("deny-sleep", "deny-other"),
    )
    .unwrap();
    let fixed = loader.load(&dir);
    assert_eq!(deny_names(&fixed), vec!["deny-other"]);
    assert!(fixed.unreadable.is_empty());
    // Deleting a file is deliberate: it is forgotten, and recreating it broken holds.
    std::fs::remove_file(dir.join("deny.yaml")).unwrap();
    assert!(deny_names(&loader.load(&dir)).is_empty());
    std::fs::write(dir.join("deny.yaml"), "kind: [").unwrap();
    let held = loader.load(&dir);
    assert!(
        held.hold_policy(),
        "a file never read successfully holds policy updates"
    );
    assert_eq!(held.unreadable[0].fallback, Fallback::Hold);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreadable_kind_on_first_start_holds_policy_but_invalid_objects_do_not() {
    let dir = tmp("first");
    std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
    // A document without a readable kind is unknown content, even if the YAML is fine.
    std::fs::write(
        dir.join("deny.yaml"),
        DENY.replace("kind: AuthorizationPolicy", "kidn: AuthorizationPolicy"),
    )
    .unwrap();
    let inputs = load(&dir);
    assert!(inputs.hold_policy());
    assert!(
        inputs.unreadable_summary()[0].starts_with("deny.yaml: unreadable (object 1 has no kind"),
        "{:?}",
        inputs.unreadable_summary()
    );
    // A readable kind with an invalid field is kept as Invalid (compiled fail-closed).
    std::fs::write(
        dir.join("deny.yaml"),
        DENY.replace("action: DENY", "action: DENY\n  bogus: 1"),
    )
    .unwrap();
    let inputs = load(&dir);
    assert!(!inputs.hold_policy() && inputs.unreadable.is_empty());
    assert!(inputs
        .resources
        .iter()
        .any(|r| matches!(r, Resource::Invalid(_))));
    assert!(!inputs.errors.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// 111 copies of a 100 KB scalar per document, four documents: 44 MB from 400 KB.
fn alias_bomb() -> String {
    let scalar = "y".repeat(100_000);
    let refs = |a: &str| vec![format!("*{a}"); 10].join(",");
    format!(
        "---\na0: &a0 \"{scalar}\"\na1: &a1 [{}]\na2: &a2 [{}]\n",
        refs("a0"),
        refs("a1")
    )
    .repeat(4)
}

#[test]
fn an_over_budget_file_is_an_error_that_keeps_its_last_good_content() {
    let dir = tmp("budget");
    std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
    std::fs::write(dir.join("deny.yaml"), DENY).unwrap();
    let mut loader = Loader::default();
    assert_eq!(deny_names(&loader.load(&dir)), vec!["deny-sleep"]);
    std::fs::write(dir.join("deny.yaml"), alias_bomb()).unwrap();
    let bombed = loader.load(&dir);
    assert_eq!(
        deny_names(&bombed),
        vec!["deny-sleep"],
        "the last good DENY stays"
    );
    assert_eq!(bombed.unreadable.len(), 1);
    assert_eq!(bombed.unreadable[0].fallback, Fallback::LastGood);
    assert!(
        bombed.unreadable_summary()[0]
            .starts_with("deny.yaml: unreadable (over the per-file budget"),
        "{:?}",
        bombed.unreadable_summary()
    );
    assert!(
        bombed
            .errors
            .iter()
            .any(|e| e.starts_with("deny.yaml: over the per-file budget")),
        "{:?}",
        bombed.errors
    );
    // Never read before: held.
    assert!(load(&dir).hold_policy());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_total_budget_covers_the_directory_in_name_order() {
    let dir = tmp("total");
    std::fs::write(dir.join("a-deny.yaml"), DENY).unwrap();
    std::fs::write(dir.join("b-w.yaml"), WORKLOAD).unwrap();
    let all = load(&dir).cost;
    let only_deny = {
        let d = tmp("total-a");
        std::fs::write(d.join("a-deny.yaml"), DENY).unwrap();
        let c = load(&d).cost;
        let _ = std::fs::remove_dir_all(&d);
        c
    };
    // Room for the first file, not for both.
    let mut loader = Loader::new(YamlCost {
        nodes: all.nodes - 1,
        scalar_bytes: all.scalar_bytes,
    });
    let inputs = loader.load(&dir);
    assert_eq!(deny_names(&inputs), vec!["deny-sleep"]);
    assert!(inputs.registry.workloads.is_empty());
    assert_eq!(inputs.cost, only_deny);
    assert_eq!(inputs.unreadable.len(), 1);
    assert_eq!(inputs.unreadable[0].file, "b-w.yaml");
    assert!(inputs.hold_policy(), "never read: held");
    assert!(
        inputs
            .errors
            .iter()
            .any(|e| e.starts_with("b-w.yaml: over the directory's total budget")),
        "{:?}",
        inputs.errors
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn symlink_loops_do_not_duplicate_workloads() {
    let dir = tmp("loops");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
    std::fs::write(dir.join("deny.yaml"), DENY).unwrap();
    symlink(".", dir.join("loop")).unwrap();
    symlink("..", dir.join("sub/up")).unwrap();
    let inputs = load(&dir);
    assert_eq!(
        workload_names(&inputs),
        vec!["foo/a"],
        "{:?}",
        inputs.errors
    );
    assert_eq!(deny_names(&inputs), vec!["deny-sleep"]);
    assert!(inputs.errors.is_empty(), "{:?}", inputs.errors);
    let _ = std::fs::remove_dir_all(&dir);
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo does not retain it.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[test]
fn special_files_are_errors_never_opened() {
    let dir = tmp("fifo");
    std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
    std::fs::write(dir.join("deny.yaml"), DENY).unwrap();
    mkfifo(&dir.join("pipe.yaml"));
    let mut loader = Loader::default();
    let inputs = loader.load(&dir);
    assert_eq!(deny_names(&inputs), vec!["deny-sleep"]);
    assert_eq!(inputs.unreadable.len(), 1);
    assert_eq!(inputs.unreadable[0].fallback, Fallback::Nothing);
    assert!(!inputs.hold_policy(), "a FIFO never held configuration");
    assert!(inputs.unreadable_summary()[0]
        .starts_with("pipe.yaml: unreadable (not a regular file (a FIFO): not read); ignored"));
    // A policy file replaced by a FIFO: its last good content stays.
    std::fs::remove_file(dir.join("deny.yaml")).unwrap();
    mkfifo(&dir.join("deny.yaml"));
    let inputs = loader.load(&dir);
    assert_eq!(deny_names(&inputs), vec!["deny-sleep"]);
    assert!(inputs
        .unreadable
        .iter()
        .any(|u| u.file == "deny.yaml" && u.fallback == Fallback::LastGood));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_directory_keeps_everything_and_says_so() {
    let dir = tmp("missing");
    std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
    std::fs::write(dir.join("deny.yaml"), DENY).unwrap();
    let mut loader = Loader::default();
    assert!(loader.load(&dir).source_missing.is_none());
    let away = dir.with_extension("away");
    let _ = std::fs::remove_dir_all(&away);
    std::fs::rename(&dir, &away).unwrap();
    let gone = loader.load(&dir);
    assert_eq!(workload_names(&gone), vec!["foo/a"]);
    assert_eq!(deny_names(&gone), vec!["deny-sleep"]);
    assert!(
        gone.source_missing
            .as_deref()
            .is_some_and(|m| m.ends_with(": does not exist")),
        "{:?}",
        gone.source_missing
    );
    std::fs::rename(&away, &dir).unwrap();
    std::fs::remove_file(dir.join("deny.yaml")).unwrap();
    let back = loader.load(&dir);
    assert!(back.source_missing.is_none() && deny_names(&back).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pending_files_and_unlistable_directories_keep_their_last_content() {
    let dir = tmp("pending");
    std::fs::create_dir_all(dir.join("team")).unwrap();
    std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
    std::fs::write(dir.join("team/deny.yaml"), DENY).unwrap();
    // Before the first read, a file being written holds policy updates.
    std::fs::write(dir.join("new.yaml"), "apiVersion: security").unwrap();
    let first = Loader::default().load_listed(
        &walk(&dir),
        &Pending::from([("new.yaml".to_string(), "being written".to_string())]),
    );
    assert!(first.hold_policy());
    assert_eq!(first.pending, vec!["new.yaml: being written; not read yet"]);
    std::fs::remove_file(dir.join("new.yaml")).unwrap();
    let mut loader = Loader::default();
    loader.load(&dir);
    // Being written: half of it is on disk.
    std::fs::write(
        dir.join("team/deny.yaml"),
        "apiVersion: security.istio.io/v1\n",
    )
    .unwrap();
    std::fs::write(dir.join("new.yaml"), "apiVersion: security").unwrap();
    let pending = Pending::from([
        ("team/deny.yaml".to_string(), "being written".to_string()),
        ("new.yaml".to_string(), "being written".to_string()),
    ]);
    let inputs = loader.load_listed(&walk(&dir), &pending);
    assert_eq!(deny_names(&inputs), vec!["deny-sleep"]);
    assert!(
        inputs.unreadable.is_empty() && inputs.errors.is_empty(),
        "{:?}",
        inputs.errors
    );
    assert_eq!(
        inputs.pending,
        vec![
            "new.yaml: being written; new, not read yet",
            "team/deny.yaml: being written; its last content read stands in"
        ]
    );
    // A directory that cannot be listed: what was read under it stays.
    std::fs::remove_file(dir.join("new.yaml")).unwrap();
    std::fs::write(dir.join("team/deny.yaml"), DENY).unwrap();
    let mut w = walk(&dir).unwrap();
    w.files.retain(|e| !e.name.starts_with("team/"));
    w.bad_dirs
        .insert("team".into(), "cannot list: permission denied".into());
    let inputs = loader.load_listed(&Ok(w.clone()), &Pending::new());
    assert_eq!(deny_names(&inputs), vec!["deny-sleep"]);
    assert_eq!(inputs.unreadable.len(), 1);
    assert_eq!(inputs.unreadable[0].file, "team/");
    assert_eq!(inputs.unreadable[0].fallback, Fallback::LastGood);
    // Never listed before: unknown content, held.
    let inputs = Loader::default().load_listed(&Ok(w), &Pending::new());
    assert!(inputs.hold_policy());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_same_workload_in_two_files_does_not_drop_it() {
    let dir = tmp("dups");
    std::fs::write(dir.join("w.yaml"), WORKLOAD).unwrap();
    let mut loader = Loader::default();
    loader.load(&dir);
    // A copy (e.g. a backup next to the original): one object.
    std::fs::write(dir.join("w-copy.yaml"), WORKLOAD).unwrap();
    assert_eq!(workload_names(&loader.load(&dir)), vec!["foo/a"]);
    // A conflicting edit in the copy: the definition in force stays.
    std::fs::write(
        dir.join("w-copy.yaml"),
        WORKLOAD.replace("serviceAccount: a", "serviceAccount: other"),
    )
    .unwrap();
    let inputs = loader.load(&dir);
    assert_eq!(workload_names(&inputs), vec!["foo/a"]);
    assert_eq!(
        inputs
            .registry
            .workloads
            .values()
            .next()
            .unwrap()
            .spec
            .service_account,
        "a"
    );
    assert!(
        inputs.errors.iter().any(|e| e.starts_with(
            "w-copy.yaml, w.yaml: Workload foo/a: defined more than once, differently"
        )),
        "{:?}",
        inputs.errors
    );
    let _ = std::fs::remove_dir_all(&dir);
}
