//! `--xds serve`: the filter configuration (ECDS) and the certificates (SDS) come from a
//! `peerguard serve` that the sandbox runs on 127.<net>.0.2, and each sidecar's ECDS/SDS
//! plumbing is taken from `peerguard bootstrap` for its workload. The server reads the
//! sandbox's resource store (plus one generated file of peerguard `Workload`s) and watches
//! it, so `sandbox apply` reaches the filters through the server.

use super::config::XdsParts;
use super::probe;
use super::state::{write_atomic, Settings, State};
use super::topology::{AppKind, Topology};
use anyhow::{bail, Context as _};
use peerguard_filter::schema::WorkloadPolicy;
use peerguard_server::enforcement::{Enforcement, Slot};
use peerguard_server::envoy_config::listener::{HTTP_FILTER, TCP_FILTER};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn grpc_addr(settings: &Settings) -> SocketAddr {
    let [a, b] = settings.prefix();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, 0, 2)), 15010)
}

fn http_addr(settings: &Settings) -> SocketAddr {
    let [a, b] = settings.prefix();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, 0, 2)), 15014)
}

fn server_state(st: &State) -> PathBuf {
    st.dir.join("serve")
}

fn token_file(st: &State, namespace: &str, name: &str) -> PathBuf {
    server_state(st)
        .join("tokens")
        .join(namespace)
        .join(format!("{name}.token"))
}

/// One peerguard `Workload` per sidecar pod, next to the Istio resources the server reads.
pub fn write_workloads(st: &State, t: &Topology) -> anyhow::Result<()> {
    let docs: Vec<String> = t
        .pods
        .iter()
        .filter(|p| p.sidecar)
        .map(|p| {
            let services: Vec<Value> = t
                .services_of(p)
                .map(|s| json!({"name": s.name, "ports": [{"name": s.port_name, "port": s.port, "targetPort": s.target_port}]}))
                .collect();
            let w = json!({
                "apiVersion": "peerguard.dev/v1alpha1",
                "kind": "Workload",
                "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels},
                "spec": {"serviceAccount": p.service_account, "services": services},
            });
            serde_json::to_string(&w).unwrap_or_default()
        })
        .collect();
    // YAML (one JSON document per `---`), so the resource store's JSON snapshots never
    // include it.
    write_atomic(
        &st.resources_dir().join("workloads.yaml"),
        &docs.join("\n---\n"),
    )
}

pub async fn start(
    st: &State,
    settings: &Settings,
    t: &Topology,
    foreground: bool,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the peerguard binary")?;
    let wasm = settings
        .wasm
        .as_ref()
        .context("--xds serve needs the wasm filter")?;
    let log = std::fs::File::create(st.dir.join("serve.log")).context("serve log")?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--config-dir")
        .arg(st.resources_dir())
        .arg("--wasm")
        .arg(wasm)
        .arg("--state-dir")
        .arg(server_state(st))
        .args([
            "--listen",
            &grpc_addr(settings).to_string(),
            "--http-listen",
            &http_addr(settings).to_string(),
        ])
        .args([
            "--trust-domain",
            &t.trust_domain,
            "--root-namespace",
            &t.root_namespace,
        ])
        .args(
            settings
                .decision_log
                .map(|d| vec!["--decision-log-sample".to_string(), d.to_string()])
                .unwrap_or_default(),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("serve log")?)
        .stderr(log);
    super::run::spawn(st, cmd, "peerguard serve", foreground)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = probe::request(
            None,
            http_addr(settings),
            "GET",
            "localhost",
            "/readyz",
            Duration::from_secs(1),
        )
        .await;
        let tokens = t
            .pods
            .iter()
            .filter(|p| p.sidecar)
            .all(|p| token_file(st, &p.namespace, &p.name).is_file());
        if r.code == 200 && tokens {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "peerguard serve not ready (readyz {} {}; tokens {}); log {}",
                r.code,
                r.body.trim(),
                if tokens { "present" } else { "missing" },
                st.dir.join("serve.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Per sidecar pod, the ECDS/SDS parts of `peerguard bootstrap --node <ns>/<name>`.
pub fn parts(
    st: &State,
    settings: &Settings,
    t: &Topology,
) -> anyhow::Result<BTreeMap<String, XdsParts>> {
    let exe = std::env::current_exe().context("locating the peerguard binary")?;
    let mut out = BTreeMap::new();
    for p in t.pods.iter().filter(|p| p.sidecar) {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "bootstrap",
            "--node",
            &format!("{}/{}", p.namespace, p.name),
        ])
        .args([
            "--server",
            &grpc_addr(settings).to_string(),
            "--trust-domain",
            &t.trust_domain,
            "--format",
            "json",
        ])
        .arg("--token-file")
        .arg(token_file(st, &p.namespace, &p.name));
        if let Some(w) = &settings.wasm {
            cmd.arg("--wasm").arg(w);
        }
        let o = cmd.output().context("running peerguard bootstrap")?;
        if !o.status.success() {
            bail!(
                "peerguard bootstrap for {}: {}",
                p.id(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        let b: Value = serde_json::from_slice(&o.stdout).context("peerguard bootstrap output")?;
        out.insert(
            p.id(),
            XdsParts::from_bootstrap(&b).with_context(|| p.id())?,
        );
    }
    Ok(out)
}

/// Waits until every inbound sidecar's slots hold what `serve` computes for the current
/// resources: the wasm filter's policy (mode and authorization; diagnostics may differ) and,
/// for a slot that holds native RBAC ([`peerguard_server::enforcement`]), that RBAC config.
pub async fn wait_ecds(
    t: &Topology,
    expected: &BTreeMap<String, (WorkloadPolicy, Enforcement)>,
    deadline: Instant,
) -> anyhow::Result<()> {
    for p in t
        .pods
        .iter()
        .filter(|p| p.sidecar && p.app != AppKind::None)
    {
        let (policy, chosen) = expected.get(&p.id()).context("no expected policy")?;
        let want = serde_json::to_value(policy)?;
        let native = [(HTTP_FILTER, &chosen.http), (TCP_FILTER, &chosen.tcp)];
        loop {
            let r = probe::admin_get(
                IpAddr::V4(p.ip),
                t.ports.admin,
                "/config_dump?resource=ecds_filters",
            )
            .await;
            let dump = serde_json::from_str::<Value>(&r.body).ok();
            let got = dump.as_ref().and_then(find_policy);
            // A slot the listener does not have (no TCP port: no `peerguard-tcp`) is not in
            // the dump; the HTTP slot always is.
            let slot_ok = |name: &str, slot: &Slot| {
                let config = dump.as_ref().and_then(|d| ecds_config(d, name));
                match (slot, config) {
                    (_, None) => name != HTTP_FILTER,
                    (Slot::Native { typed_config, .. }, Some(c)) => {
                        canonical(&c) == canonical(typed_config)
                    }
                    (Slot::Wasm { .. }, Some(c)) => find_policy(&c).is_some_and(|got| {
                        got.get("mtls") == want.get("mtls")
                            && got.get("policies") == want.get("policies")
                    }),
                }
            };
            if native.iter().all(|(name, slot)| slot_ok(name, slot)) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: the filter config from peerguard serve does not match the resources (got mtls {}, want {}; slots: http {}, tcp {})",
                    p.id(),
                    got.as_ref().and_then(|g| g.get("mtls")).map(Value::to_string).unwrap_or_else(|| "none".into()),
                    want.get("mtls").map(Value::to_string).unwrap_or_default(),
                    chosen.http,
                    chosen.tcp,
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// The `typed_config` of the ECDS filter `name` in a `resource=ecds_filters` config dump.
fn ecds_config(dump: &Value, name: &str) -> Option<Value> {
    dump["configs"]
        .as_array()?
        .iter()
        .map(|c| &c["ecds_filter"])
        .find(|f| f["name"] == name)
        .map(|f| f["typed_config"].clone())
}

/// A config as protobuf's JSON printer shows it: default values (false, 0, "", empty
/// objects and lists, enum value 0 such as RBAC's ALLOW) left out.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), canonical(v)))
                .filter(|(k, v)| {
                    let empty_map = k == "policies" && v.as_object().is_some_and(|m| m.is_empty());
                    let enum_default = k == "action" && v == "ALLOW";
                    !(is_default(v) || empty_map || enum_default)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    }
}

/// The `WorkloadPolicy` JSON inside an ECDS config dump (the wasm plugin's
/// `configuration` string).
fn find_policy(v: &Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if let Some(s) = m
                .get("configuration")
                .and_then(|c| c.get("value"))
                .and_then(Value::as_str)
            {
                if let Ok(p) = serde_json::from_str::<Value>(s) {
                    if p.get("mtls").is_some() {
                        return Some(p);
                    }
                }
            }
            m.values().find_map(find_policy)
        }
        Value::Array(a) => a.iter().find_map(find_policy),
        _ => None,
    }
}
