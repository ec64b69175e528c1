//! `peerguard compile --envoy-rbac`, the native form, as users run it:
//!
//! (a) its output and its refusals (exit 2, the object and field named), no Envoy needed;
//! (b) its output for the conformance cases, pasted into real Envoy listeners: the HTTP
//!     filters before the router, the network filters before `tcp_proxy`, the filter chains
//!     the printed mTLS mode calls for. Every request of every case the native form accepts
//!     must get the case's expected decision; the cases it refuses must be the ones using
//!     what it documents as out of reach (CUSTOM, JWT).
//!
//! (b) needs Envoy (not the wasm module); without it it prints `SKIPPED: <why>` and passes,
//! unless PEERGUARD_REQUIRE_ENVOY=1, then it fails.

#![cfg(test)]

use anyhow::{bail, ensure, Context as _};
use peerguard_filter::scenario::{load_file, Scenario};
use peerguard_filter::schema::MtlsMode;
use peerguard_harness::client::{shoot, Shot};
use peerguard_harness::e2e::{from_scenario, scenario_address, Peer};
use peerguard_harness::envoy::{EnvoyProcess, TempDir};
use peerguard_harness::pki::TestPki;
use peerguard_harness::require::{require, Needs};
use peerguard_harness::upstream::{spawn_http_app, spawn_tcp_echo};
use peerguard_server::envoy_config::{self as ec, AppProtocol, Authz, Certs, Chains, Inbound};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

fn peerguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerguard"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running peerguard: {e}"))
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("peerguard-rbac-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir: {e}"));
    d
}

const MESH: &str = r#"
apiVersion: peerguard.dev/v1alpha1
kind: Workload
metadata: {name: httpbin, namespace: foo, labels: {app: httpbin}}
spec:
  serviceAccount: httpbin
  services: [{name: httpbin, ports: [{name: http, port: 8000, targetPort: 80}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec:
  mtls: {mode: STRICT}
  selector: {matchLabels: {app: httpbin}}
  portLevelMtls: {"9000": {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: istio-system}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-sleep, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/foo/sa/sleep"]}}]
    to: [{operation: {methods: ["GET"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-all, namespace: foo}
spec: {action: AUDIT, rules: [{}]}
"#;

#[test]
fn compile_envoy_rbac_prints_filters_and_modes_or_refuses() {
    let dir = tempdir("cli");
    std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
    let d = dir.to_string_lossy().into_owned();
    let o = peerguard(&[
        "compile",
        "--envoy-rbac",
        "--config",
        &d,
        "--workload",
        "foo/httpbin",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    // DENY first, then ALLOW, HTTP and network alike; named and typed as Envoy wants them.
    let http = out["http_filters"].as_array().unwrap();
    let net = out["network_filters"].as_array().unwrap();
    assert_eq!(http.len(), 2, "{out}");
    assert_eq!(net.len(), 2, "{out}");
    assert_eq!(http[0]["name"], ec::RBAC_HTTP_FILTER);
    assert_eq!(http[0]["typed_config"]["@type"], ec::HTTP_RBAC_TYPE);
    assert_eq!(http[0]["typed_config"]["rules"]["action"], "DENY");
    assert!(http[0]["typed_config"]["rules"]["policies"]
        ["ns[istio-system]-policy[deny-admin]-rule[0]"]
        .is_object());
    assert_eq!(http[1]["typed_config"]["rules"]["action"], "ALLOW");
    assert_eq!(net[1]["name"], ec::RBAC_NETWORK_FILTER);
    assert_eq!(net[1]["typed_config"]["@type"], ec::NETWORK_RBAC_TYPE);
    // On TCP the method-only ALLOW rule is gone (nothing allowed), the path-only DENY
    // matches every connection: Istio's translation.
    assert_eq!(net[1]["typed_config"]["rules"]["policies"], json!({}));
    // The mode, per port, with the chains the listener must have.
    assert_eq!(out["mtls"]["default"]["mode"], "STRICT", "{out}");
    assert_eq!(
        out["mtls"]["default"]["from"],
        "PeerAuthentication foo/default"
    );
    assert_eq!(out["mtls"]["ports"]["9000"]["mode"], "DISABLE");
    assert!(out["mtls"]["ports"]["9000"]["filter_chains"]
        .as_str()
        .unwrap()
        .starts_with("only the plaintext chain"));
    // AUDIT has no filter, and says so.
    assert!(
        err.contains("note: AuthorizationPolicy foo/audit-all (mesh.yaml): action AUDIT"),
        "{err}"
    );

    // Refusals: exit 2, nothing on stdout, the object and field named.
    let refused = [
        (
            "custom.yaml",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext, namespace: foo}\nspec: {action: CUSTOM, provider: {name: opa}, rules: [{}]}\n",
            "error: AuthorizationPolicy foo/ext (custom.yaml): spec.action: CUSTOM",
        ),
        (
            "jwt.yaml",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: jwt, namespace: foo}\nspec: {rules: [{from: [{source: {requestPrincipals: [\"*\"]}}]}]}\n",
            "error: AuthorizationPolicy foo/jwt (jwt.yaml): spec.rules[0].from[0].source.requestPrincipals: JWT",
        ),
        (
            "invalid.yaml",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: bad, namespace: foo}\nspec: {action: DENY, rules: [{from: [{source: {ipBlocks: [\"10.0.0.0/33\"]}}]}]}\n",
            "AuthorizationPolicy foo/bad",
        ),
    ];
    for (file, yaml, want) in refused {
        let dir = tempdir(file);
        std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
        std::fs::write(dir.join(file), yaml).unwrap();
        let d = dir.to_string_lossy().into_owned();
        let o = peerguard(&[
            "compile",
            "--envoy-rbac",
            "--config",
            &d,
            "--workload",
            "foo/httpbin",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{file}: {err}");
        assert!(o.stdout.is_empty(), "{file}");
        assert!(err.contains(want), "{file}: {err}");
        // The same object for a workload of another namespace does not concern it.
        let o = peerguard(&[
            "compile",
            "--envoy-rbac",
            "--config",
            &d,
            "--workload",
            "bar/web",
        ]);
        if file != "invalid.yaml" {
            // (an invalid object anywhere makes `compile` refuse the input as a whole)
            assert_eq!(
                o.status.code(),
                Some(0),
                "{file}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The case's resources and workload (as a registry entry) in a directory for `--config`.
fn write_case(s: &Scenario, dir: &Path) -> anyhow::Result<()> {
    let mut docs: Vec<String> = s
        .raw_resources
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    let w = &s.workload;
    let mut services: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for svc in &w.services {
        services.entry(svc).or_default();
    }
    for p in &w.service_ports {
        let mut port = json!({"port": p.port, "targetPort": p.target_port});
        if let Some(n) = &p.name {
            port["name"] = json!(n);
        }
        services.entry(&p.service).or_default().push(port);
    }
    let services: Vec<Value> = services
        .into_iter()
        .map(|(name, ports)| json!({"name": name, "ports": ports}))
        .collect();
    docs.push(serde_json::to_string(&json!({
        "apiVersion": "peerguard.dev/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": w.name, "namespace": w.namespace, "labels": w.labels},
        "spec": {"serviceAccount": w.service_account, "services": services},
    }))?);
    std::fs::write(dir.join("case.yaml"), docs.join("\n---\n"))?;
    Ok(())
}

/// `compile --envoy-rbac` for the case: `Ok(Err(stderr))` when refused (exit 2).
fn native_form(s: &Scenario, dir: &Path) -> anyhow::Result<Result<Value, String>> {
    write_case(s, dir)?;
    let d = dir.to_string_lossy().into_owned();
    let workload = format!("{}/{}", s.workload.namespace, s.workload.name);
    let pn = serde_json::to_value(s.path_normalization)?;
    let hops = s.num_trusted_proxies.to_string();
    let mut args = vec![
        "compile",
        "--envoy-rbac",
        "--config",
        &d,
        "--workload",
        &workload,
        "--trust-domain",
        &s.trust_domain,
        "--root-namespace",
        &s.root_namespace,
        "--path-normalization",
        pn.as_str().unwrap_or("BASE"),
        "--num-trusted-proxies",
        &hops,
    ];
    let aliases = s.trust_domain_aliases.join(",");
    if !aliases.is_empty() {
        args.extend(["--trust-domain-alias", &aliases]);
    }
    let o = peerguard(&args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    match o.status.code() {
        Some(0) => Ok(Ok(
            serde_json::from_slice(&o.stdout).with_context(|| format!("{}: output", s.name))?
        )),
        Some(2) => Ok(Err(err)),
        c => bail!("{}: compile --envoy-rbac exited {c:?}: {err}", s.name),
    }
}

fn mode_of(native: &Value, port: u16) -> anyhow::Result<MtlsMode> {
    let m = native["mtls"]["ports"]
        .get(port.to_string())
        .unwrap_or(&native["mtls"]["default"]);
    Ok(serde_json::from_value(m["mode"].clone())?)
}

/// The listener the printed form asks for: Istio's chains for a STRICT or DISABLE port; for
/// PERMISSIVE both chains selected by the transport (Istio selects its mTLS chain by its own
/// ALPN, which the test clients, not being sidecars, do not send).
fn listener(
    name: String,
    addr: Ipv4Addr,
    port: u16,
    protocol: AppProtocol,
    s: &Scenario,
    native: &Value,
    pki: &TestPki,
) -> anyhow::Result<Value> {
    let chains = match mode_of(native, port)? {
        MtlsMode::Permissive => Chains::Both,
        m => Chains::Istio(m),
    };
    let list = |k: &str| native[k].as_array().cloned().unwrap_or_default();
    let mut trust_domains = vec![s.trust_domain.clone()];
    trust_domains.extend(s.trust_domain_aliases.iter().cloned());
    let mut l = Inbound {
        name,
        address: addr.to_string(),
        port,
        protocol,
        trust_domains,
        certs: Certs::Inline {
            cert_pem: pki.server().cert_pem.clone(),
            key_pem: pki.server().key_pem.clone(),
            ca_pem: pki.mesh_root_pem().to_string(),
        },
        authz: Authz::Rbac {
            http: list("http_filters"),
            network: list("network_filters"),
        },
        chains,
        path_normalization: s.path_normalization,
        http_cluster: "app_http".into(),
        tcp_cluster: "app_tcp".into(),
        route_timeout: Some("5s".into()),
    }
    .listener();
    // `numTrustedProxies`, as the printed note asks of the connection manager.
    for chain in l["filter_chains"].as_array_mut().into_iter().flatten() {
        for f in chain["filters"].as_array_mut().into_iter().flatten() {
            if f["typed_config"]["http_filters"].is_array() {
                f["typed_config"]["xff_num_trusted_hops"] = json!(s.num_trusted_proxies);
            }
        }
    }
    Ok(l)
}

#[test]
fn compile_envoy_rbac_output_in_real_envoy_gives_the_conformance_decisions() -> anyhow::Result<()> {
    let test = "compile_envoy_rbac_output_in_real_envoy_gives_the_conformance_decisions";
    let Some(tools) = require(test, Needs::Envoy)? else {
        return Ok(());
    };
    let cases_dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../integration/conformance/cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&cases_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let work = tempdir("envoy");
    let mut translated: Vec<(Scenario, Value)> = Vec::new();
    let mut refused = Vec::new();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        let s = load_file(f).map_err(|e| anyhow::anyhow!("{}: {e:?}", f.display()))?;
        let dir = work.join(format!("case{}", translated.len() + refused.len()));
        std::fs::create_dir_all(&dir)?;
        match native_form(&s, &dir)? {
            Ok(v) => translated.push((s, v)),
            Err(e) => refused.push((s.name.clone(), e)),
        }
    }
    for (name, why) in &refused {
        println!("refused: {name}: {}", why.lines().next().unwrap_or(""));
        // Only for what the native form documents as out of reach.
        ensure!(
            why.contains("CUSTOM") || why.contains("JWT"),
            "{name}: refused for an undocumented reason:\n{why}"
        );
    }
    ensure!(
        translated.len() >= 20,
        "only {} cases translated",
        translated.len()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let pki = TestPki::new()?;
        let http_app = spawn_http_app().await?;
        let tcp_app = spawn_tcp_echo().await?;
        let base = (std::process::id() as usize * 7919) % 50_000;
        let mut listeners = Vec::new();
        let mut plans = Vec::new();
        for (i, (s, native)) in translated.iter().enumerate() {
            let addr = scenario_address(base, i)?;
            let compiled = peerguard_filter::compile::compile(&s.resources, &s.workload(), &s.mesh());
            let e2e = from_scenario(s, &compiled)?;
            let mut ports: BTreeMap<u16, AppProtocol> = BTreeMap::new();
            for r in &e2e.requests {
                let p = match r.probe {
                    peerguard_harness::client::Probe::Http(_) => AppProtocol::Http,
                    peerguard_harness::client::Probe::Tcp => AppProtocol::Tcp,
                };
                let merged = match ports.get(&r.port) {
                    Some(prev) if *prev != p => AppProtocol::Sniff,
                    _ => p,
                };
                ports.insert(r.port, merged);
            }
            for (port, proto) in ports {
                listeners.push(listener(
                    format!("c{i}_{port}"),
                    addr,
                    port,
                    proto,
                    s,
                    native,
                    &pki,
                )?);
            }
            plans.push((addr, e2e));
        }
        let cluster = |name: &str, a: SocketAddr| {
            ec::static_cluster(name, &[(a.ip().to_string(), a.port())])
        };
        let config = ec::bootstrap(
            None,
            ec::admin("127.0.0.1", 0),
            listeners,
            vec![cluster("app_http", http_app), cluster("app_tcp", tcp_app)],
        );
        let dir = TempDir::new("peerguard-envoy-rbac")?;
        let path = dir.path().join("envoy.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        let envoy = EnvoyProcess::start(
            &tools.envoy,
            &path,
            dir.path(),
            &["--concurrency".to_string(), "1".to_string()],
            Duration::from_secs(30),
        )?;
        let mut checked = 0;
        let (mut allowed, mut denied) = (0, 0);
        let mut wrong = Vec::new();
        for ((s, _), (addr, e2e)) in translated.iter().zip(&plans) {
            for (j, (r, want)) in e2e.requests.iter().zip(&s.requests).enumerate() {
                let client_cert = match &r.peer {
                    Peer::Plaintext => None,
                    Peer::Mtls(spec) => Some(Arc::new(pki.client(spec)?)),
                };
                let shot = Shot {
                    target: SocketAddr::new(IpAddr::V4(*addr), r.port),
                    source_ip: r.source_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    client_cert,
                    mesh_root: pki.mesh_root_der().clone(),
                    probe: r.probe.clone(),
                    timeout: Duration::from_secs(3),
                    alpn: None,
                };
                let got = shoot(&shot).await.map_err(|e| e.0)?;
                checked += 1;
                if got.allowed {
                    allowed += 1;
                } else {
                    denied += 1;
                }
                if got.allowed != want.expect.allowed() {
                    wrong.push(format!(
                        "{} request {} ({}): expected {:?}, got {}",
                        s.name,
                        j + 1,
                        want.about.as_deref().unwrap_or(""),
                        want.expect,
                        got.detail
                    ));
                }
            }
        }
        drop(envoy);
        println!(
            "native RBAC form: {} cases translated, {} refused; {checked} requests ({allowed} allowed, {denied} denied), {} wrong",
            translated.len(),
            refused.len(),
            wrong.len()
        );
        for w in &wrong {
            println!("WRONG: {w}");
        }
        ensure!(allowed > 0 && denied > 0, "a run with one outcome only tests nothing");
        let _ = std::fs::remove_dir_all(&work);
        ensure!(wrong.is_empty(), "{} requests got another decision than the case expects", wrong.len());
        Ok(())
    })
}
