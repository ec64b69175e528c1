// Tests assert by panicking.
#![allow(clippy::panic)]

use super::*;
use crate::istio::{AuthzAction, LegacyMtlsMode, LegacyPeer, LegacyPortSelector, PeerMode};
use std::path::PathBuf;

fn errors(text: &str) -> Vec<String> {
    parse_str(text, "policies.yaml")
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Exactly one error, with this full message, and the object kept as `Invalid`.
fn assert_invalid(text: &str, expected: &str) {
    let parsed = parse_str(text, "policies.yaml");
    let got: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(got, vec![expected.to_string()], "input:\n{text}");
    assert_eq!(parsed.resources.len(), 1, "the invalid object must be kept");
    match &parsed.resources[0] {
        Resource::Invalid(invalid) => {
            let field_and_message = expected
                .split_once(": ")
                .map(|(_, rest)| rest)
                .unwrap_or_default();
            let after_object = field_and_message
                .split_once(": ")
                .map(|(_, rest)| rest)
                .unwrap_or_default();
            assert_eq!(
                invalid.error, after_object,
                "Invalid.error carries field and message"
            );
        }
        other => panic!("expected Resource::Invalid, got {other:?}"),
    }
}

fn ap(spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: foo}}\nspec:\n{spec}")
}

fn pa(spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: pa, namespace: foo}}\nspec:\n{spec}")
}

fn legacy(kind: &str, metadata: &str, spec: &str) -> String {
    format!("apiVersion: authentication.istio.io/v1alpha1\nkind: {kind}\nmetadata: {metadata}\nspec:\n{spec}")
}

// ------------------------------------------------------------------ conformance resources

fn conformance_dir() -> PathBuf {
    std::env::var_os("CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../integration/conformance/cases"
            ))
        })
}

#[test]
fn every_conformance_case_resource_parses_cleanly() {
    let dir = conformance_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipping: no conformance cases at {}", dir.display());
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| has_config_extension(p))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no case files in {}", dir.display());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let case: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_default();
        let resources = case
            .get("resources")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let name = file.display().to_string();
        assert!(
            !resources.is_empty(),
            "{name}: no resources read from the case"
        );

        // As multi-document YAML.
        let yaml = resources
            .iter()
            .map(|r| serde_saphyr::to_string(r).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n");
        // As one JSON List.
        let list =
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": resources.clone()})
                .to_string();

        for (label, parsed) in [
            ("yaml", parse_str(&yaml, &name)),
            ("json list", parse_str(&list, "case.json")),
        ] {
            let errs: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
            assert!(errs.is_empty(), "{name} ({label}): {errs:#?}");
            assert!(
                parsed.skipped.is_empty(),
                "{name} ({label}): skipped {:?}",
                parsed.skipped
            );
            assert_eq!(parsed.resources.len(), resources.len(), "{name} ({label})");
            assert!(
                !parsed
                    .resources
                    .iter()
                    .any(|r| matches!(r, Resource::Invalid(_))),
                "{name} ({label})"
            );
        }
    }
}

// ------------------------------------------------------------------ documents, lists, kinds

#[test]
fn multi_document_yaml_keeps_good_documents_around_a_malformed_one() {
    let text = "\
# leading comment
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
---
---
# only a comment
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: broken
  namespace: foo
spec:
  rules: [{from: [
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all}
spec: {rules: [{}]}
...
";
    let parsed = parse_str(text, "policies.yaml");
    let errs: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("policies.yaml: invalid YAML at line 1"),
        "{}",
        errs[0]
    );
    assert_eq!(parsed.resources.len(), 2);
    let Resource::PeerAuthentication(pa) = &parsed.resources[0] else {
        panic!("{:?}", parsed.resources[0])
    };
    assert_eq!(
        pa.spec.mtls.as_ref().map(|m| m.mode),
        Some(PeerMode::Strict)
    );
    assert_eq!(
        pa.origin,
        Origin {
            file: "policies.yaml".into(),
            index: 0
        }
    );
    let Resource::AuthorizationPolicy(ap) = &parsed.resources[1] else {
        panic!("{:?}", parsed.resources[1])
    };
    assert_eq!(
        ap.metadata.namespace.as_deref(),
        Some("default"),
        "missing namespace → default"
    );
    assert_eq!(ap.spec.rules.as_ref().map(Vec::len), Some(1));
    assert_eq!(ap.origin.index, 1);
}

#[test]
fn malformed_yaml_reports_file_line_and_column() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: security.istio.io/v1\nkind: [oops\n";
    let errs = errors(text);
    assert_eq!(
        errs,
        vec!["policies.yaml: invalid YAML at line 6, column 7: unclosed bracket '['".to_string()]
    );
}

#[test]
fn duplicate_keys_are_refused() {
    let errs = errors(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nkind: AuthorizationPolicy\n",
    );
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0]
            .starts_with("policies.yaml: invalid YAML at line 3, column 1: duplicate mapping key"),
        "{}",
        errs[0]
    );
}

#[test]
fn malformed_json_reports_position() {
    let parsed = parse_str(
        "{\"apiVersion\": \"security.istio.io/v1\",\n \"kind\": }",
        "p.json",
    );
    let errs: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        vec!["p.json: invalid JSON at line 2, column 10: expected value".to_string()]
    );
}

#[test]
fn json_objects_lists_and_arrays() {
    let pa = r#"{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication","metadata":{"name":"default","namespace":"istio-system"},"spec":{"mtls":{"mode":"PERMISSIVE"}}}"#;
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"foo"}}"#;
    let list = format!(r#"{{"apiVersion":"v1","kind":"List","items":[{pa},{cm}]}}"#);
    for (text, file) in [
        (list.as_str(), "l.json"),
        (list.as_str(), "l.yaml"),
        (&*format!("[{pa},{cm}]"), "a.json"),
    ] {
        let parsed = parse_str(text, file);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.resources.len(), 1);
        assert_eq!(
            parsed.skipped,
            vec![format!(
                "{file}: ConfigMap foo/c: not handled by peerguard, skipped"
            )]
        );
        assert_eq!(parsed.resources[0].clone(), {
            let Resource::PeerAuthentication(o) = &parsed.resources[0] else {
                panic!()
            };
            assert_eq!(
                o.spec.mtls.as_ref().map(|m| m.mode),
                Some(PeerMode::Permissive)
            );
            parsed.resources[0].clone()
        });
    }
    // A YAML List whose items are typed kinds (as `kubectl get -o yaml` prints).
    let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1alpha3\n  kind: DestinationRule\n  metadata: {name: dr, namespace: foo}\n  spec: {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, loadBalancer: {simple: ROUND_ROBIN}}}\n- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata: {name: p, namespace: foo}\n  spec: {}\n";
    let parsed = parse_str(yaml, "list.yaml");
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    assert_eq!(parsed.resources.len(), 2);
    assert!(matches!(&parsed.resources[0], Resource::DestinationRule(o) if o.origin.index == 0));
    assert!(
        matches!(&parsed.resources[1], Resource::AuthorizationPolicy(o) if o.origin.index == 1 && o.spec.action == AuthzAction::Allow)
    );
}

#[test]
fn kinds_peerguard_does_not_use_are_skipped() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: foo}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ef, namespace: foo}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: wasm, namespace: foo}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: bar}
";
    let parsed = parse_str(text, "f.yaml");
    assert!(parsed.errors.is_empty() && parsed.resources.is_empty());
    assert_eq!(
        parsed.skipped,
        vec![
            "f.yaml: VirtualService foo/vs: not handled by peerguard, skipped",
            "f.yaml: EnvoyFilter foo/ef: not handled by peerguard, skipped",
            "f.yaml: WasmPlugin foo/wasm: not handled by peerguard, skipped",
            "f.yaml: Telemetry bar/t: not handled by peerguard, skipped",
        ]
    );
}

#[test]
fn non_objects_are_errors() {
    assert_eq!(
        errors("just a string\n"),
        vec!["policies.yaml: object 1 is not a Kubernetes object (a mapping with apiVersion and kind): found a string"]
    );
    assert_eq!(
        errors("kind: PeerAuthentication\n"),
        vec!["policies.yaml: object 1 has no apiVersion (or it is not a string): not a Kubernetes object"]
    );
}

#[test]
fn parse_value_for_watched_objects() {
    let value = serde_json::json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "foo", "uid": "1", "resourceVersion": "7",
                     "creationTimestamp": "2024-01-01T00:00:00Z", "annotations": {"istio.io/dry-run": "true"}},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]},
        "status": {"validationMessages": []}
    });
    let origin = Origin {
        file: "kube".into(),
        index: 0,
    };
    let ValueOutcome::Resource {
        resource: Resource::AuthorizationPolicy(o),
        errors,
    } = parse_value(value, origin)
    else {
        panic!("not parsed")
    };
    assert!(errors.is_empty());
    assert_eq!(o.spec.action, AuthzAction::Deny);
    assert_eq!(
        o.metadata.creation_timestamp.as_deref(),
        Some("2024-01-01T00:00:00Z")
    );
    assert_eq!(
        o.metadata
            .annotations
            .get("istio.io/dry-run")
            .map(String::as_str),
        Some("true")
    );

    let yaml = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: a\n  creationTimestamp: 2024-01-01T00:00:00Z\n";
    let parsed = parse_str(yaml, "ts.yaml");
    assert!(
        matches!(&parsed.resources[..], [Resource::PeerAuthentication(o)] if o.metadata.creation_timestamp.as_deref() == Some("2024-01-01T00:00:00Z")),
        "{parsed:?}"
    );

    let skipped = parse_value(
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "x"}}),
        Origin {
            file: "kube".into(),
            index: 3,
        },
    );
    assert_eq!(
        skipped,
        ValueOutcome::Skipped("kube: Service x/s: not handled by peerguard, skipped".into())
    );
}

#[test]
fn parse_path_reads_directories_in_sorted_order() {
    let dir = std::env::temp_dir().join(format!("peerguard-parse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sub = dir.join("b-sub");
    assert!(std::fs::create_dir_all(&sub).is_ok());
    let write = |p: PathBuf, t: &str| assert!(std::fs::write(p, t).is_ok());
    write(
        dir.join("c.yml"),
        &pa("  mtls: {mode: STRICT}\n").replace("name: pa", "name: c"),
    );
    write(
        sub.join("x.json"),
        r#"{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"b","namespace":"foo"},"spec":{}}"#,
    );
    write(
        dir.join("a.yaml"),
        &pa("  mtls: {mode: DISABLE}\n").replace("name: pa", "name: a"),
    );
    write(dir.join("notes.txt"), "not: [config");
    write(dir.join("d.yaml"), "\u{0}\u{ff}");
    assert!(std::fs::write(dir.join("e.yaml"), [0xff_u8, 0xfe, 0x00]).is_ok());
    // ConfigMap-mount layout: hidden data dir + file symlink; a directory link loop.
    assert!(std::fs::create_dir_all(dir.join("..data")).is_ok());
    write(
        dir.join("..data").join("z.yaml"),
        &pa("  mtls: {mode: STRICT}\n").replace("name: pa", "name: z"),
    );
    #[cfg(unix)]
    {
        assert!(
            std::os::unix::fs::symlink(dir.join("..data").join("z.yaml"), dir.join("z.yaml"))
                .is_ok()
        );
        assert!(std::os::unix::fs::symlink(&dir, sub.join("loop")).is_ok());
    }

    let parsed = parse_path(&dir);
    let names: Vec<String> = parsed
        .resources
        .iter()
        .map(|r| match r {
            Resource::PeerAuthentication(o) => o.metadata.name.clone(),
            Resource::AuthorizationPolicy(o) => o.metadata.name.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    let expected: &[&str] = if cfg!(unix) {
        &["a", "b", "c", "z"]
    } else {
        &["a", "b", "c"]
    };
    assert_eq!(names, expected);
    let errs: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs.iter().any(|e| e.contains("e.yaml: not UTF-8 text")),
        "{errs:?}"
    );

    let missing = parse_path(&dir.join("nope.yaml"));
    assert_eq!(missing.errors.len(), 1);
    assert!(
        missing.errors[0].message.starts_with("cannot read: "),
        "{:?}",
        missing.errors
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ typed decoding

#[test]
fn wrong_type_names_the_exact_field() {
    let text = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-get, namespace: foo}\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source: {principals: x}\n";
    assert_invalid(text, "policies.yaml: AuthorizationPolicy foo/deny-get: spec.rules[0].from[0].source.principals: invalid type: string \"x\", expected a sequence");
    assert_invalid(
        &ap("  rules:\n  - to:\n    - operation: {ports: [8080]}\n"),
        "policies.yaml: AuthorizationPolicy foo/p: spec.rules[0].to[0].operation.ports[0]: invalid type: integer `8080`, expected a string",
    );
    assert_invalid(
        &ap("  rules: {from: x}\nmetadata: {name: again}\n").replace("metadata: {name: p, namespace: foo}\n", ""),
        "policies.yaml: AuthorizationPolicy default/again: spec.rules: invalid type: map, expected a sequence",
    );
}

#[test]
fn unknown_fields_are_refused() {
    assert_invalid(
        &ap("  rules:\n  - from:\n    - source: {principal: [a]}\n"),
        "policies.yaml: AuthorizationPolicy foo/p: spec.rules[0].from[0].source.principal: unknown field `principal`, expected one of `principals`, `notPrincipals`, `requestPrincipals`, `notRequestPrincipals`, `namespaces`, `notNamespaces`, `serviceAccounts`, `notServiceAccounts`, `trustDomains`, `notTrustDomains`, `ipBlocks`, `notIpBlocks`, `remoteIpBlocks`, `notRemoteIpBlocks`",
    );
    assert_invalid(
        &pa("  mtls: {mode: STRICT}\n  mtlsMode: STRICT\n"),
        "policies.yaml: PeerAuthentication foo/pa: spec.mtlsMode: unknown field `mtlsMode`, expected one of `selector`, `mtls`, `portLevelMtls`",
    );
}

#[test]
fn destination_rule_accepts_unknown_traffic_policy_fields() {
    let text = "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: dr, namespace: foo}\nspec:\n  host: h\n  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 1}}\n    tls: {mode: MUTUAL, clientCertificate: /c}\n";
    let parsed = parse_str(text, "dr.yaml");
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    assert!(matches!(&parsed.resources[0], Resource::DestinationRule(o) if o.spec.host == "h"));
    assert_invalid(
        &text.replace("mode: MUTUAL", "mode: ISTIO_MTLS"),
        "policies.yaml: DestinationRule foo/dr: spec.trafficPolicy.tls.mode: unknown value `ISTIO_MTLS`, allowed values are `DISABLE`, `SIMPLE`, `MUTUAL`, `ISTIO_MUTUAL`",
    );
}

#[test]
fn unknown_enum_values_list_the_allowed_ones() {
    assert_invalid(
        &pa("  mtls: {mode: STRCT}\n"),
        "policies.yaml: PeerAuthentication foo/pa: spec.mtls.mode: unknown value `STRCT`, allowed values are `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`",
    );
    assert_invalid(
        &ap("  action: DENIED\n  rules: [{}]\n"),
        "policies.yaml: AuthorizationPolicy foo/p: spec.action: unknown value `DENIED`, allowed values are `ALLOW`, `DENY`, `AUDIT`, `CUSTOM`",
    );
}

#[test]
fn metadata_errors_and_missing_name() {
    assert_invalid(
        &pa("  mtls: {}\n").replace("name: pa, ", ""),
        "policies.yaml: PeerAuthentication foo/<unnamed>: metadata.name: required",
    );
    assert_invalid(
        &pa("  mtls: {}\n").replace("namespace: foo}", "namespace: foo, labels: [a]}"),
        "policies.yaml: PeerAuthentication foo/pa: metadata.labels: invalid type: sequence, expected a map",
    );
}

// ------------------------------------------------------------------ PeerAuthentication validation

#[test]
fn peer_authentication_validation() {
    let parsed = parse_str(&pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n    \"9000\": {}\n"), "pa.yaml");
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let Resource::PeerAuthentication(o) = &parsed.resources[0] else {
        panic!()
    };
    assert_eq!(
        o.spec.port_level_mtls.get(&8080).map(|m| m.mode),
        Some(PeerMode::Disable)
    );
    assert_eq!(
        o.spec.port_level_mtls.get(&9000).map(|m| m.mode),
        Some(PeerMode::Unset)
    );

    assert_invalid(
        &pa("  portLevelMtls: {8080: {mode: STRICT}}\n"),
        "policies.yaml: PeerAuthentication foo/pa: spec.portLevelMtls: portLevelMtls requires selector (mesh/namespace peer authentication cannot have port level mTLS)",
    );
    assert_invalid(
        &pa("  selector: {matchLabels: {}}\n  portLevelMtls: {8080: {mode: STRICT}}\n"),
        "policies.yaml: PeerAuthentication foo/pa: spec.portLevelMtls: portLevelMtls requires selector (mesh/namespace peer authentication cannot have port level mTLS)",
    );
    assert_invalid(
        &pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls: {0: {mode: STRICT}}\n"),
        "policies.yaml: PeerAuthentication foo/pa: spec.portLevelMtls.0: invalid port 0: must be 1..65535",
    );
    assert_invalid(
        &pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls: {70000: {mode: STRICT}}\n"),
        "policies.yaml: PeerAuthentication foo/pa: spec.portLevelMtls.70000: invalid port 70000: must be 1..65535",
    );
    assert_invalid(
        &pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls: {http: {mode: STRICT}}\n"),
        "policies.yaml: PeerAuthentication foo/pa: spec.portLevelMtls.http: invalid port \"http\": keys are workload port numbers 1..65535",
    );
    assert_invalid(
        &pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls: {}\n"),
        "policies.yaml: PeerAuthentication foo/pa: spec.portLevelMtls: portLevelMtls, if set, must have at least one port",
    );
    assert_invalid(
        &pa("  selector: {matchLabels: {app: \"*\"}}\n"),
        "policies.yaml: PeerAuthentication foo/pa: spec.selector.matchLabels.app: wildcard is not supported in selector",
    );
}

// ------------------------------------------------------------------ AuthorizationPolicy validation

fn ap_error(spec: &str, expected_tail: &str) {
    assert_invalid(
        &ap(spec),
        &format!("policies.yaml: AuthorizationPolicy foo/p: {expected_tail}"),
    );
}

#[test]
fn authorization_policy_structure() {
    ap_error(
        "  action: DENY\n",
        "spec.rules: DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
    );
    ap_error(
        "  action: DENY\n  rules: []\n",
        "spec.rules: DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
    );
    ap_error(
        "  action: CUSTOM\n  rules: [{}]\n",
        "spec.provider.name: must not be empty with CUSTOM action",
    );
    ap_error(
        "  action: ALLOW\n  provider: {name: ext}\n  rules: [{}]\n",
        "spec.provider: must not be set with non CUSTOM action, found ALLOW",
    );
    ap_error(
        "  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n",
        "spec.selector: only one of selector or targetRef/targetRefs can be set",
    );
    ap_error(
        "  rules: [{from: []}]\n",
        "spec.rules[0].from: `from` must not be empty",
    );
    ap_error(
        "  rules: [{to: []}]\n",
        "spec.rules[0].to: `to` must not be empty",
    );
    ap_error(
        "  rules: [{}, {from: [{}]}]\n",
        "spec.rules[1].from[0].source: `source` must be set",
    );
    ap_error(
        "  rules: [{from: [{source: {}}]}]\n",
        "spec.rules[0].from[0].source: `source` must not be empty",
    );
    ap_error(
        "  rules: [{to: [{}]}]\n",
        "spec.rules[0].to[0].operation: `operation` must be set",
    );
    ap_error(
        "  rules: [{to: [{operation: {methods: []}}]}]\n",
        "spec.rules[0].to[0].operation: `operation` must not be empty",
    );
    ap_error(
        "  rules: [{from: [{source: {principals: [a, \"\"]}}]}]\n",
        "spec.rules[0].from[0].source.principals[1]: empty value not allowed",
    );
    ap_error(
        "  rules: [{to: [{operation: {paths: [\"\"]}}]}]\n",
        "spec.rules[0].to[0].operation.paths[0]: empty value not allowed",
    );
    ap_error(
        "  selector: {matchLabels: {app: \"*\"}}\n",
        "spec.selector.matchLabels.app: wildcard is not supported in selector",
    );
    ap_error(
        "  selector: {matchLabels: {\"\": a}}\n",
        "spec.selector.matchLabels: empty key is not supported in selector",
    );
    ap_error(
        &format!("  selector: {{matchLabels: {{app: {}}}}}\n", "v".repeat(64)),
        "spec.selector.matchLabels.app: label value is 64 characters long, at most 63 are allowed",
    );

    // Accepted shapes. An empty label value is accepted, as Istio does (it selects workloads
    // whose label is present and empty).
    for ok in ["  selector: {matchLabels: {app: \"\"}}\n", "  {}\n", "  rules: [{}]\n", "  action: DENY\n  rules: [{}]\n", "  action: AUDIT\n", "  action: CUSTOM\n  provider: {name: ext}\n  rules: [{to: [{operation: {paths: [/admin]}}]}]\n"] {
        let parsed = parse_str(&ap(ok), "ok.yaml");
        assert!(parsed.errors.is_empty(), "{ok}: {:?}", parsed.errors);
    }
}

#[test]
fn authorization_policy_values() {
    ap_error(
        "  rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]\n",
        "spec.rules[0].from[0].source.ipBlocks[0]: invalid IP address or CIDR \"10.0.0.0/33\"",
    );
    ap_error(
        "  rules: [{from: [{source: {notRemoteIpBlocks: [10.0.0.300]}}]}]\n",
        "spec.rules[0].from[0].source.notRemoteIpBlocks[0]: invalid IP address or CIDR \"10.0.0.300\"",
    );
    ap_error(
        "  rules: [{to: [{operation: {paths: [\"/a/{**}/b/{*}\"]}}]}]\n",
        "spec.rules[0].to[0].operation.paths[0]: invalid path template \"/a/{**}/b/{*}\": {**} must be the last operator",
    );
    ap_error(
        "  rules: [{to: [{operation: {notPaths: [\"/a/x{*}\"]}}]}]\n",
        "spec.rules[0].to[0].operation.notPaths[0]: invalid path template \"/a/x{*}\": '{' or '}' are only allowed in the whole-segment operators {*} and {**}",
    );
    ap_error("  rules: [{to: [{operation: {ports: [\"80a\"]}}]}]\n", "spec.rules[0].to[0].operation.ports[0]: invalid port \"80a\": must be a decimal number 0-65535");
    ap_error("  rules: [{to: [{operation: {notPorts: [\"65536\"]}}]}]\n", "spec.rules[0].to[0].operation.notPorts[0]: invalid port \"65536\": must be a decimal number 0-65535");
    ap_error(
        "  rules: [{from: [{source: {trustDomains: [\"clu*ster.local\"]}}]}]\n",
        "spec.rules[0].from[0].source.trustDomains[0]: wildcard '*' is only allowed as the first or last character, found \"clu*ster.local\"",
    );
    ap_error(
        "  rules: [{from: [{source: {notTrustDomains: [td/ns/foo]}}]}]\n",
        "spec.rules[0].from[0].source.notTrustDomains[0]: trust domain must not contain '/', found \"td/ns/foo\"",
    );
    ap_error(
        "  rules: [{from: [{source: {serviceAccounts: [\"foo/*\"]}}]}]\n",
        "spec.rules[0].from[0].source.serviceAccounts[0]: wildcards are not allowed in service accounts, found \"foo/*\"",
    );
    ap_error(
        "  rules: [{from: [{source: {serviceAccounts: [foo/sleep], namespaces: [foo]}}]}]\n",
        "spec.rules[0].from[0].source: serviceAccounts cannot be combined with principals or namespaces in the same source",
    );
    let many: Vec<String> = (0..17).map(|i| format!("sa{i}")).collect();
    ap_error(
        &format!("  rules: [{{from: [{{source: {{serviceAccounts: [{}]}}}}]}}]\n", many.join(", ")),
        "spec.rules[0].from[0].source.serviceAccounts: at most 16 service accounts are allowed, found 17",
    );
    let parsed = parse_str(&ap("  rules: [{to: [{operation: {paths: [\"/allow/admin/{**}\", \"/v1/{*}/items/{**}\", \"/a*\"]}}]}]\n"), "ok.yaml");
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    // Inner wildcards in principals are literal characters for Istio, not an error.
    let parsed = parse_str(&ap("  rules: [{from: [{source: {principals: [\"*/ns/foo/sa/*\", \"a*b\"], trustDomains: [\"*.local\", \"td*\", \"*\"]}}]}]\n"), "ok.yaml");
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
}

#[test]
fn authorization_policy_conditions() {
    let when = |cond: &str| format!("  rules:\n  - when:\n    - {cond}\n");
    ap_error(
        &when("{key: \"request.header[x-token]\", values: [a]}"),
        "spec.rules[0].when[0].key: unknown attribute \"request.header[x-token]\"; accepted keys are request.headers[<name>], source.ip, remote.ip, source.namespace, source.serviceAccount, source.trustDomain, source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[<claim>], destination.ip, destination.port, connection.sni, experimental.envoy.filters.<filter>[<key>]",
    );
    ap_error(
        &when("{key: \"request.headers[]\", values: [a]}"),
        "spec.rules[0].when[0].key: bad key \"request.headers[]\": should have the format a[b]",
    );
    ap_error(
        &when("{key: destination.labels, values: [a]}"),
        "spec.rules[0].when[0].key: attribute destination.labels is no longer supported, migrate to use workload selector",
    );
    ap_error(
        &when("{key: destination.namespace, values: [a]}"),
        "spec.rules[0].when[0].key: attribute destination.namespace is not supported (deprecated: only supported in the Istio simulator)",
    );
    ap_error(&when("{key: source.ip}"), "spec.rules[0].when[0]: at least one of `values` or `notValues` must be set for key \"source.ip\"");
    ap_error(
        &when("{key: source.ip, values: [1.2.3.4/40]}"),
        "spec.rules[0].when[0].values[0]: invalid IP address or CIDR \"1.2.3.4/40\"",
    );
    ap_error(
        &when("{key: destination.ip, notValues: [\"::1/129\"]}"),
        "spec.rules[0].when[0].notValues[0]: invalid IP address or CIDR \"::1/129\"",
    );
    ap_error(
        &when("{key: destination.port, values: [\"-1\"]}"),
        "spec.rules[0].when[0].values[0]: invalid port \"-1\": must be a decimal number 0-65535",
    );
    ap_error(
        &when("{key: source.trustDomain, values: [\"a*b\"]}"),
        "spec.rules[0].when[0].values[0]: wildcard '*' is only allowed as the first or last character, found \"a*b\"",
    );
    ap_error(
        &when("{key: connection.sni, values: [\"\"]}"),
        "spec.rules[0].when[0].values[0]: empty value not allowed",
    );

    for key in [
        "request.headers[X-Token]",
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.serviceAccount",
        "source.trustDomain",
        "source.principal",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "request.auth.claims[groups]",
        "request.auth.claims[nested][key]",
        "destination.ip",
        "destination.port",
        "connection.sni",
        "experimental.envoy.filters.network.mysql_proxy[db.table]",
    ] {
        let value = match key {
            "source.ip" | "remote.ip" | "destination.ip" => "10.0.0.0/8",
            "destination.port" => "8080",
            _ => "v",
        };
        let parsed = parse_str(
            &ap(&when(&format!("{{key: \"{key}\", values: [\"{value}\"]}}"))),
            "ok.yaml",
        );
        assert!(parsed.errors.is_empty(), "{key}: {:?}", parsed.errors);
    }
}

#[test]
fn several_errors_in_one_object_are_all_reported() {
    let parsed = parse_str(
        &ap("  action: DENY\n  rules:\n  - from: []\n    to: [{operation: {ports: [x]}}]\n"),
        "m.yaml",
    );
    let errs: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        vec![
            "m.yaml: AuthorizationPolicy foo/p: spec.rules[0].from: `from` must not be empty",
            "m.yaml: AuthorizationPolicy foo/p: spec.rules[0].to[0].operation.ports[0]: invalid port \"x\": must be a decimal number 0-65535",
        ]
    );
    let Resource::Invalid(invalid) = &parsed.resources[0] else {
        panic!()
    };
    assert_eq!(invalid.kind, "AuthorizationPolicy");
    assert_eq!(invalid.metadata.namespace.as_deref(), Some("foo"));
    assert_eq!(
        invalid.raw.pointer("/spec/action").and_then(Value::as_str),
        Some("DENY"),
        "raw kept for fail-closed handling"
    );
}

// ------------------------------------------------------------------ legacy Policy / MeshPolicy

#[test]
fn legacy_peers_and_targets() {
    let text = legacy(
        "Policy",
        "{name: httpbin, namespace: full}",
        "  targets:\n  - name: httpbin\n    ports: [{number: 8000}, {name: http}]\n  peers:\n  - jwt: {issuer: x}\n  - mtls:\n  - mtls: {mode: PERMISSIVE}\n  peerIsOptional: true\n  origins: [{jwt: {issuer: y}}]\n  originIsOptional: true\n  principalBinding: USE_ORIGIN\n",
    );
    let parsed = parse_str(&text, "l.yaml");
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let Resource::LegacyPolicy(o) = &parsed.resources[0] else {
        panic!("{:?}", parsed.resources)
    };
    assert_eq!(o.spec.targets[0].name, "httpbin");
    assert_eq!(
        o.spec.targets[0].ports,
        vec![
            LegacyPortSelector::Number(8000),
            LegacyPortSelector::Name("http".into())
        ]
    );
    assert!(matches!(o.spec.peers[0], LegacyPeer::Jwt(_)));
    assert_eq!(
        o.spec.mtls_mode(),
        Some(LegacyMtlsMode::Strict),
        "bare `- mtls:` is STRICT and the first mtls peer decides"
    );
    assert!(o.spec.peer_is_optional && o.spec.has_origins);

    let mesh = legacy(
        "MeshPolicy",
        "{name: default, namespace: ignored}",
        "  peers:\n  - mtls: {}\n",
    );
    let parsed = parse_str(&mesh, "m.yaml");
    let Resource::MeshPolicy(o) = &parsed.resources[0] else {
        panic!("{:?}", parsed)
    };
    assert_eq!(o.metadata.namespace, None, "MeshPolicy is cluster-scoped");
    assert_eq!(o.spec.mtls_mode(), Some(LegacyMtlsMode::Strict));

    let none = legacy(
        "Policy",
        "{name: default, namespace: foo}",
        "  peers: [{mtls: {mode: PERMISSIVE, allowTls: true}}]\n",
    );
    let Resource::LegacyPolicy(o) = &parse_str(&none, "n.yaml").resources[0] else {
        panic!()
    };
    assert_eq!(o.spec.mtls_mode(), Some(LegacyMtlsMode::Permissive));
    let empty = legacy("Policy", "{name: default, namespace: foo}", "  {}\n");
    let Resource::LegacyPolicy(o) = &parse_str(&empty, "n.yaml").resources[0] else {
        panic!()
    };
    assert_eq!(o.spec.mtls_mode(), None, "no peers: plaintext only");
}

#[test]
fn legacy_decoding_errors() {
    assert_invalid(
        &legacy("Policy", "{name: default, namespace: foo}", "  peers: [{mtls: {mode: STRICTER}}]\n"),
        "policies.yaml: Policy foo/default: spec.peers[0].mtls.mode: unknown value `STRICTER`, allowed values are `STRICT`, `PERMISSIVE`",
    );
    assert_invalid(
        &legacy("Policy", "{name: default, namespace: foo}", "  peer: [{mtls: {}}]\n"),
        "policies.yaml: Policy foo/default: spec.peer: unknown field `peer`, expected one of `targets`, `peers`, `peerIsOptional`, `origins`, `originIsOptional`, `principalBinding`",
    );
    assert_invalid(
        &legacy("Policy", "{name: svc, namespace: foo}", "  targets: [{name: svc, ports: [{number: 0}]}]\n"),
        "policies.yaml: Policy foo/svc: spec.targets[0].ports[0].number: invalid port integer `0`: must be 1..65535",
    );
    assert_invalid(
        &legacy(
            "Policy",
            "{name: svc, namespace: foo}",
            "  targets: [{name: svc}]\n  peers: [{mtls: {}, jwt: {}}]\n",
        ),
        "policies.yaml: Policy foo/svc: spec.peers[0]: a peer needs exactly one of `mtls` or `jwt`",
    );
    assert_invalid(
        &legacy("Policy", "{name: svc, namespace: foo}", "  targets: svc\n"),
        "policies.yaml: Policy foo/svc: spec.targets: invalid type: string \"svc\", expected a sequence",
    );
}

#[test]
fn legacy_naming_rules() {
    assert_invalid(
        &legacy("MeshPolicy", "{name: boo}", "  peers: [{mtls: {}}]\n"),
        "policies.yaml: MeshPolicy boo: metadata.name: MeshPolicy must be named \"default\", found \"boo\"",
    );
    assert_invalid(
        &legacy("MeshPolicy", "{name: default}", "  targets: [{name: a}]\n"),
        "policies.yaml: MeshPolicy default: spec.targets: MeshPolicy must not have targets",
    );
    assert_invalid(
        &legacy("Policy", "{name: strict, namespace: foo}", "  peers: [{mtls: {}}]\n"),
        "policies.yaml: Policy foo/strict: metadata.name: a Policy without targets must be named \"default\", found \"strict\"",
    );
    assert_invalid(
        &legacy("Policy", "{name: default, namespace: foo}", "  targets: [{name: a}]\n"),
        "policies.yaml: Policy foo/default: spec.targets: the Policy named \"default\" must not have targets",
    );
}

#[test]
fn never_panics_on_odd_input() {
    let inputs = [
        "", "---", "...", "null", "[]", "[[[[[[[[[[]]]]]]]]]]", "{", "- - -", "&a [*a]", "!!binary x", "\t\t", "a: *unknown",
        "apiVersion: 1\nkind: 2\n", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nspec: 5\n",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: 5\n",
        "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nspec: {peers: [5, null, {mtls: 5}, {}], targets: [null, {ports: [null, {number: -1}, {name: 5}]}]}\n",
        "apiVersion: v1\nkind: List\nitems: [1, null, {kind: List, items: [[]]}]\n",
    ];
    for input in inputs {
        let _ = parse_str(input, "odd.yaml");
        let _ = parse_str(input, "odd.json");
    }
}
