//! Kubernetes objects → what the rest of the server reads: Istio objects go through the
//! filter's parser (exactly as files do, so an invalid object stays `Resource::Invalid` and is
//! compiled fail-closed); Pods, Services and Namespaces become the workload registry.

use crate::registry::{
    PortSpec, ProbeKind, ProbeSpec, ProbeType, Protocol, ServiceSpec, WorkloadEntry, WorkloadKey,
    WorkloadSpec,
};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, Probe, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use peerguard_filter::istio::parse::{parse_value, ValueOutcome};
use peerguard_filter::istio::{Origin, Resource};
use serde_json::Value;
use std::collections::BTreeMap;

/// An Istio object as parsed: at most one resource, and the errors and skip notes it caused.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IstioEntry {
    pub resource: Option<Resource>,
    pub errors: Vec<String>,
    pub skipped: Vec<String>,
    /// `metadata.generation` and `uid`, for the status and Events about the object.
    pub generation: Option<i64>,
    pub uid: Option<String>,
    /// `status.peerguard` as last written (by any replica).
    pub status: Option<super::status::PeerguardStatus>,
}

/// Annotations that change on every `kubectl apply` and carry nothing peerguard reads; keeping
/// them would cost memory at 10,000 policies.
const DROPPED_ANNOTATIONS: [&str; 1] = ["kubectl.kubernetes.io/last-applied-configuration"];

/// Parse one Istio object delivered by a watch. `origin` names the API it came from
/// (`apiserver security.istio.io/v1 authorizationpolicies`), which prefixes its errors.
///
/// `status` is dropped (peerguard's own status writes must not look like a change), and so are
/// the metadata fields the server maintains (`resourceVersion`, `managedFields`, …); the
/// `apiVersion`/`kind` of the watched API fill in for a list item that lacks them.
pub fn istio_entry(mut value: Value, api_version: &str, kind: &str, origin: &str) -> IstioEntry {
    let generation = value
        .pointer("/metadata/generation")
        .and_then(Value::as_i64);
    let uid = value
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(String::from);
    let status = super::status::read(&value);
    if let Value::Object(map) = &mut value {
        map.remove("status");
        map.entry("apiVersion")
            .or_insert_with(|| Value::String(api_version.into()));
        map.entry("kind")
            .or_insert_with(|| Value::String(kind.into()));
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "name" | "namespace" | "labels" | "annotations" | "creationTimestamp"
                )
            });
            if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
                for a in DROPPED_ANNOTATIONS {
                    ann.remove(a);
                }
            }
        }
    }
    let parsed = match parse_value(
        value,
        Origin {
            file: origin.into(),
            index: 0,
        },
    ) {
        ValueOutcome::Resource { resource, errors } => IstioEntry {
            resource: Some(resource),
            errors: errors.iter().map(|e| e.to_string()).collect(),
            ..Default::default()
        },
        ValueOutcome::Skipped(s) => IstioEntry {
            skipped: vec![s],
            ..Default::default()
        },
        ValueOutcome::Error(e) => IstioEntry {
            errors: vec![e.to_string()],
            ..Default::default()
        },
    };
    IstioEntry {
        generation,
        uid,
        status,
        ..parsed
    }
}

/// What the registry needs of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub key: WorkloadKey,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub ip: Option<String>,
    /// `Succeeded`/`Failed` pods are gone for policy purposes (their IPs get reused).
    pub terminated: bool,
    /// Named container ports, for Services whose `targetPort` is a name.
    pub named_ports: BTreeMap<String, u16>,
    /// Istio's `sidecar.istio.io/inject: "false"` on the pod.
    pub injection_disabled: bool,
    /// The containers' liveness/readiness/startup probes (for `peerguard analyze`).
    pub probes: Vec<ProbeSpec>,
}

/// Istio's annotation that turns the injector's probe rewriting off for one pod. Rewriting is
/// on by default in every built-in profile and covers HTTP, TCP and gRPC probes (Istio docs,
/// "Health Checking of Istio Services").
pub const REWRITE_PROBES_ANNOTATION: &str = "sidecar.istio.io/rewriteAppHTTPProbers";

/// The probes of a container, ports resolved against its named ports; a probe on a port name
/// the container does not declare is left out (the kubelet cannot send it either).
fn container_probes(
    c: &Container,
    named: &BTreeMap<String, u16>,
    rewritten: bool,
) -> Vec<ProbeSpec> {
    let port = |p: &IntOrString| match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(s) => s.parse::<u16>().ok().or_else(|| named.get(s).copied()),
    };
    let one = |kind: ProbeKind, p: &Probe| -> Option<ProbeSpec> {
        let (probe_type, port, path) = if let Some(h) = &p.http_get {
            (ProbeType::Http, Some(port(&h.port)?), h.path.clone())
        } else if let Some(t) = &p.tcp_socket {
            (ProbeType::Tcp, Some(port(&t.port)?), None)
        } else if let Some(g) = &p.grpc {
            (ProbeType::Grpc, Some(u16::try_from(g.port).ok()?), None)
        } else {
            (ProbeType::Exec, None, None)
        };
        Some(ProbeSpec {
            kind,
            probe_type,
            port,
            path,
            rewritten,
            container: Some(c.name.clone()),
        })
    };
    [
        (ProbeKind::Liveness, &c.liveness_probe),
        (ProbeKind::Readiness, &c.readiness_probe),
        (ProbeKind::Startup, &c.startup_probe),
    ]
    .into_iter()
    .filter_map(|(kind, p)| p.as_ref().and_then(|p| one(kind, p)))
    .collect()
}

pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let meta = &pod.metadata;
    let key = WorkloadKey {
        namespace: meta.namespace.clone()?,
        name: meta.name.clone()?,
    };
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut named_ports = BTreeMap::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for p in c.ports.as_deref().unwrap_or_default() {
            if let (Some(name), Ok(port)) = (&p.name, u16::try_from(p.container_port)) {
                named_ports.insert(name.clone(), port);
            }
        }
    }
    let inject = |m: &Option<BTreeMap<String, String>>| {
        m.as_ref()
            .and_then(|m| m.get("sidecar.istio.io/inject"))
            .is_some_and(|v| v == "false")
    };
    let rewritten = !meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(REWRITE_PROBES_ANNOTATION))
        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    let probes = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .flat_map(|c| {
            let mut named = BTreeMap::new();
            for p in c.ports.as_deref().unwrap_or_default() {
                if let (Some(name), Ok(port)) = (&p.name, u16::try_from(p.container_port)) {
                    named.insert(name.clone(), port);
                }
            }
            container_probes(c, &named, rewritten)
        })
        .collect();
    Some(PodInfo {
        key,
        labels: meta.labels.clone().unwrap_or_default(),
        // The API server defaults it; an old object without one runs as `default`.
        service_account: spec
            .and_then(|s| {
                s.service_account_name
                    .clone()
                    .or_else(|| s.service_account.clone())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        ip: status
            .and_then(|s| s.pod_ip.clone())
            .filter(|s| !s.is_empty()),
        terminated: matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ),
        named_ports,
        injection_disabled: inject(&meta.labels) || inject(&meta.annotations),
        probes,
    })
}

/// One Service port: `port` → `targetPort` (a number, or a container port name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub name: Option<String>,
    pub port: u16,
    pub target: TargetPort,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    /// `None`: a Service without a selector (endpoints managed elsewhere) selects no pod.
    pub selector: Option<BTreeMap<String, String>>,
    pub ports: Vec<ServicePortInfo>,
}

/// Istio's protocol selection: `appProtocol`, else the port name's prefix (`http-web`,
/// `grpc`, `tcp-db`); TCP-only protocols are TCP, everything else is read as HTTP (what the
/// registry defaults to for a port without a protocol).
fn protocol(name: Option<&str>, app_protocol: Option<&str>) -> Protocol {
    let p = app_protocol
        .or(name)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let prefix = p.split(['-', '_']).next().unwrap_or_default();
    match prefix {
        "tcp" | "tls" | "mongo" | "mysql" | "redis" | "https" | "udp" => Protocol::Tcp,
        _ => Protocol::Http,
    }
}

pub fn service_info(svc: &Service) -> Option<ServiceInfo> {
    let meta = &svc.metadata;
    let spec = svc.spec.as_ref();
    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .map(|ports| {
            ports
                .iter()
                .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
                .filter_map(|p| {
                    let port = u16::try_from(p.port).ok()?;
                    let target = match &p.target_port {
                        None => TargetPort::Number(port),
                        Some(IntOrString::Int(n)) => TargetPort::Number(u16::try_from(*n).ok()?),
                        Some(IntOrString::String(s)) => match s.parse::<u16>() {
                            Ok(n) => TargetPort::Number(n),
                            Err(_) => TargetPort::Name(s.clone()),
                        },
                    };
                    Some(ServicePortInfo {
                        name: p.name.clone().filter(|n| !n.is_empty()),
                        port,
                        target,
                        protocol: protocol(p.name.as_deref(), p.app_protocol.as_deref()),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ServiceInfo {
        namespace: meta.namespace.clone()?,
        name: meta.name.clone()?,
        selector: spec
            .and_then(|s| s.selector.clone())
            .filter(|s| !s.is_empty()),
        ports,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    /// `istio-injection=disabled`: pods there run without a sidecar.
    pub injection_disabled: bool,
}

pub fn namespace_info(ns: &Namespace) -> Option<NamespaceInfo> {
    let labels = ns.metadata.labels.as_ref();
    Some(NamespaceInfo {
        name: ns.metadata.name.clone()?,
        injection_disabled: labels
            .and_then(|l| l.get("istio-injection"))
            .is_some_and(|v| v == "disabled"),
    })
}

/// The registry entries of the running pods, each with the Services that select it.
pub fn workload_entries<'a>(
    pods: impl Iterator<Item = &'a PodInfo>,
    services: &[&ServiceInfo],
    namespaces: &BTreeMap<String, NamespaceInfo>,
    origin: &str,
) -> Vec<WorkloadEntry> {
    let mut by_ns: BTreeMap<&str, Vec<&ServiceInfo>> = BTreeMap::new();
    for s in services {
        by_ns.entry(s.namespace.as_str()).or_default().push(s);
    }
    pods.filter(|p| !p.terminated)
        .map(|pod| {
            let services = by_ns
                .get(pod.key.namespace.as_str())
                .map(|list| list.as_slice())
                .unwrap_or_default()
                .iter()
                .filter(|s| {
                    s.selector
                        .as_ref()
                        .is_some_and(|sel| sel.iter().all(|(k, v)| pod.labels.get(k) == Some(v)))
                })
                .map(|s| ServiceSpec {
                    name: s.name.clone(),
                    ports: s
                        .ports
                        .iter()
                        .filter_map(|p| {
                            let target = match &p.target {
                                TargetPort::Number(n) => *n,
                                // A name the pod does not declare: Kubernetes sends no traffic
                                // for this port to the pod, so it is not the pod's port.
                                TargetPort::Name(n) => *pod.named_ports.get(n)?,
                            };
                            Some(PortSpec {
                                name: p.name.clone(),
                                port: p.port,
                                target_port: Some(target),
                                protocol: p.protocol,
                            })
                        })
                        .collect(),
                })
                .collect();
            let ns_disabled = namespaces
                .get(&pod.key.namespace)
                .is_some_and(|n| n.injection_disabled);
            WorkloadEntry {
                key: pod.key.clone(),
                labels: pod.labels.clone(),
                spec: WorkloadSpec {
                    service_account: pod.service_account.clone(),
                    services,
                    sidecar: !(pod.injection_disabled || ns_disabled),
                    address: pod.ip.clone(),
                    probes: pod.probes.clone(),
                },
                file: origin.to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn pod(y: &str) -> PodInfo {
        let p: Pod = serde_json::from_value(serde_saphyr::from_str::<Value>(y).unwrap()).unwrap();
        pod_info(&p).unwrap()
    }

    fn service(y: &str) -> ServiceInfo {
        let s: Service =
            serde_json::from_value(serde_saphyr::from_str::<Value>(y).unwrap()).unwrap();
        service_info(&s).unwrap()
    }

    #[test]
    fn pods_get_their_services_with_target_ports_resolved() {
        let p = pod("metadata: {name: httpbin-1, namespace: foo, labels: {app: httpbin, v: '1'}}\nspec:\n  serviceAccountName: httpbin\n  containers: [{name: c, ports: [{name: web, containerPort: 8080}]}]\nstatus: {podIP: 10.0.0.5, phase: Running}\n");
        let other_ns = service("metadata: {name: httpbin, namespace: bar}\nspec: {selector: {app: httpbin}, ports: [{port: 80}]}\n");
        let s = service("metadata: {name: httpbin, namespace: foo}\nspec:\n  selector: {app: httpbin}\n  ports: [{name: http, port: 8000, targetPort: web}, {name: tcp-db, port: 5432, targetPort: 15432}, {name: gone, port: 1, targetPort: nosuch}, {name: dns, port: 53, protocol: UDP}]\n");
        let unrelated = service("metadata: {name: sleep, namespace: foo}\nspec: {selector: {app: sleep}, ports: [{port: 80}]}\n");
        let headless =
            service("metadata: {name: ext, namespace: foo}\nspec: {ports: [{port: 80}]}\n");
        let entries = workload_entries(
            [&p].into_iter(),
            &[&other_ns, &s, &unrelated, &headless],
            &BTreeMap::new(),
            "apiserver v1/pods",
        );
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.key.to_string(), "foo/httpbin-1");
        assert_eq!(e.spec.service_account, "httpbin");
        assert_eq!(e.spec.address.as_deref(), Some("10.0.0.5"));
        assert!(e.spec.sidecar);
        assert_eq!(e.spec.services.len(), 1, "{:?}", e.spec.services);
        let ports: Vec<_> = e.spec.services[0]
            .ports
            .iter()
            .map(|p| (p.port, p.target_port, p.protocol))
            .collect();
        assert_eq!(
            ports,
            vec![
                (8000, Some(8080), Protocol::Http),
                (5432, Some(15432), Protocol::Tcp)
            ]
        );
    }

    #[test]
    fn probes_are_read_with_named_ports_and_the_rewrite_annotation() {
        let p = pod("metadata: {name: a, namespace: foo}\nspec:\n  containers:\n  - name: app\n    ports: [{name: health, containerPort: 8081}]\n    livenessProbe: {httpGet: {path: /healthz, port: health}}\n    readinessProbe: {tcpSocket: {port: 8080}}\n    startupProbe: {exec: {command: ['true']}}\n  - name: grpc\n    livenessProbe: {grpc: {port: 9090}}\n    readinessProbe: {httpGet: {port: nosuch}}\n");
        let got: Vec<_> = p
            .probes
            .iter()
            .map(|p| (p.kind, p.probe_type, p.port, p.rewritten))
            .collect();
        assert_eq!(
            got,
            vec![
                (ProbeKind::Liveness, ProbeType::Http, Some(8081), true),
                (ProbeKind::Readiness, ProbeType::Tcp, Some(8080), true),
                (ProbeKind::Startup, ProbeType::Exec, None, true),
                (ProbeKind::Liveness, ProbeType::Grpc, Some(9090), true),
            ]
        );
        let off = pod("metadata: {name: b, namespace: foo, annotations: {sidecar.istio.io/rewriteAppHTTPProbers: 'false'}}\nspec:\n  containers: [{name: app, livenessProbe: {httpGet: {port: 80}}}]\n");
        assert!(!off.probes[0].rewritten);
        let entries = workload_entries([&off].into_iter(), &[], &BTreeMap::new(), "x");
        assert_eq!(entries[0].spec.probes, off.probes);
    }

    #[test]
    fn finished_pods_are_not_workloads_and_injection_is_read() {
        let done = pod("metadata: {name: job-1, namespace: foo}\nspec: {containers: []}\nstatus: {phase: Succeeded}\n");
        let off = pod("metadata: {name: legacy, namespace: foo, annotations: {sidecar.istio.io/inject: 'false'}}\nspec: {containers: []}\n");
        let plain = pod("metadata: {name: p, namespace: noinject}\nspec: {containers: []}\n");
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "noinject", "labels": {"istio-injection": "disabled"}}})).unwrap();
        let nss = BTreeMap::from([("noinject".to_string(), namespace_info(&ns).unwrap())]);
        let entries = workload_entries([&done, &off, &plain].into_iter(), &[], &nss, "x");
        let got: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    e.key.to_string(),
                    e.spec.service_account.clone(),
                    e.spec.sidecar,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("foo/legacy".into(), "default".into(), false),
                ("noinject/p".into(), "default".into(), false)
            ]
        );
    }

    #[test]
    fn istio_objects_go_through_the_parser_and_invalid_ones_stay() {
        let good = serde_json::json!({
            "metadata": {"name": "deny", "namespace": "foo", "resourceVersion": "7", "managedFields": [{}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"action": "DENY", "rules": [{}]},
            "status": {"conditions": []}
        });
        let e = istio_entry(
            good,
            "security.istio.io/v1",
            "AuthorizationPolicy",
            "apiserver security.istio.io/v1 authorizationpolicies",
        );
        assert!(e.errors.is_empty(), "{:?}", e.errors);
        match e.resource {
            Some(Resource::AuthorizationPolicy(o)) => {
                assert_eq!(o.metadata.namespace.as_deref(), Some("foo"));
                assert!(o.metadata.annotations.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let bad = serde_json::json!({"metadata": {"name": "typo", "namespace": "foo"}, "spec": {"action": "DENY", "rulez": []}});
        let e = istio_entry(
            bad,
            "security.istio.io/v1",
            "AuthorizationPolicy",
            "apiserver security.istio.io/v1 authorizationpolicies",
        );
        assert!(
            matches!(e.resource, Some(Resource::Invalid(_))),
            "{:?}",
            e.resource
        );
        assert!(
            e.errors.iter().any(|m| m.starts_with("apiserver security.istio.io/v1 authorizationpolicies: AuthorizationPolicy foo/typo: spec")),
            "{:?}",
            e.errors
        );
    }
}
