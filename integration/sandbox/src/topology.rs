//! The sandbox topology: namespaces, Services, pods (with or without a sidecar) and their
//! loopback addresses. One description (`integration/sandbox/topology.yaml`, compiled in)
//! drives the processes, the Envoy configs and the client resolver table.

use anyhow::{bail, Context as _};
use peerguard_filter::compile::{MeshConfig, ServicePort, Workload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const DEFAULT_TOPOLOGY: &str = include_str!("../topology.yaml");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub trust_domain: String,
    pub root_namespace: String,
    pub dns_domain: String,
    pub ports: Ports,
    pub services: Vec<Service>,
    pub pods: Vec<Pod>,
    pub matrix: Matrix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    pub outbound: u16,
    pub admin: u16,
    pub app_behind_sidecar: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub port: u16,
    pub port_name: String,
    pub target_port: u16,
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// No application process (a client-only pod such as sleep).
    None,
    Httpbin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub sidecar: bool,
    pub app: AppKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub path: String,
}

impl Service {
    /// `name.namespace`, how the walkthrough names Services (and pods).
    pub fn id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    pub fn fqdn(&self, dns_domain: &str) -> String {
        format!("{}.{}.svc.{dns_domain}", self.name, self.namespace)
    }

    pub fn selects(&self, pod: &Pod) -> bool {
        pod.namespace == self.namespace
            && self
                .selector
                .iter()
                .all(|(k, v)| pod.labels.get(k) == Some(v))
    }
}

impl Pod {
    pub fn id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    pub fn spiffe(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

impl Topology {
    pub fn load(path: Option<&std::path::Path>) -> anyhow::Result<Topology> {
        let (text, name) = match path {
            Some(p) => (
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
                p.display().to_string(),
            ),
            None => (
                DEFAULT_TOPOLOGY.to_string(),
                "integration/sandbox/topology.yaml (built in)".to_string(),
            ),
        };
        let topo: Topology = serde_saphyr::from_str(&text)
            .with_context(|| format!("{name}: not a sandbox topology"))?;
        topo.validate().with_context(|| name.clone())?;
        Ok(topo)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let mut ids = std::collections::BTreeSet::new();
        for p in &self.pods {
            if !ids.insert(p.id()) {
                bail!("pods: duplicate pod {}", p.id());
            }
        }
        let mut ips = std::collections::BTreeSet::new();
        for p in &self.pods {
            if !ips.insert(p.ip) {
                bail!("pods: address {} used twice", p.ip);
            }
            if !p.ip.is_loopback() {
                bail!("pods: {} address {} is not in 127.0.0.0/8", p.id(), p.ip);
            }
        }
        for s in &self.services {
            if !self.pods.iter().any(|p| s.selects(p)) {
                bail!("services: {} selects no pod", s.id());
            }
        }
        for id in self.matrix.from.iter() {
            self.pod(id)?;
        }
        for id in self.matrix.to.iter() {
            self.service(id)?;
        }
        Ok(())
    }

    /// Moves every pod to 127.`net`.x.y.
    pub fn with_net(mut self, net: u8) -> Topology {
        for p in &mut self.pods {
            let o = p.ip.octets();
            p.ip = Ipv4Addr::new(127, net, o[2], o[3]);
        }
        self
    }

    /// Moves every pod to `a.b.x.y` (the containers' network of `sandbox compose`, where
    /// each pod has its own network namespace and address).
    pub fn with_prefix(mut self, a: u8, b: u8) -> Topology {
        for p in &mut self.pods {
            let o = p.ip.octets();
            p.ip = Ipv4Addr::new(a, b, o[2], o[3]);
        }
        self
    }

    pub fn mesh(&self) -> MeshConfig {
        MeshConfig {
            trust_domain: self.trust_domain.clone(),
            trust_domain_aliases: Vec::new(),
            root_namespace: self.root_namespace.clone(),
            ..MeshConfig::default()
        }
    }

    pub fn pod(&self, id: &str) -> anyhow::Result<&Pod> {
        self.pods.iter().find(|p| p.id() == id).with_context(|| {
            format!(
                "no pod {id:?} (pods: {})",
                self.pods.iter().map(Pod::id).collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// A Service by `name.namespace`, `name.namespace.svc[.domain]`, or its short name
    /// when `from_ns` is given (as a pod's DNS search path resolves it).
    pub fn resolve_host(&self, host: &str, from_ns: Option<&str>) -> Option<&Service> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.services.iter().find(|s| {
            host == s.id()
                || host == format!("{}.svc", s.id())
                || host == s.fqdn(&self.dns_domain)
                || (Some(s.namespace.as_str()) == from_ns && host == s.name)
        })
    }

    pub fn service(&self, id: &str) -> anyhow::Result<&Service> {
        self.resolve_host(id, None).with_context(|| {
            format!(
                "no service {id:?} (services: {})",
                self.services
                    .iter()
                    .map(Service::id)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    pub fn endpoints<'a>(&'a self, svc: &'a Service) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods.iter().filter(move |p| svc.selects(p))
    }

    pub fn services_of<'a>(&'a self, pod: &'a Pod) -> impl Iterator<Item = &'a Service> + 'a {
        self.services.iter().filter(move |s| s.selects(pod))
    }

    /// The pod as `compile` sees a server workload.
    pub fn workload(&self, pod: &Pod) -> Workload {
        let services: Vec<&Service> = self.services_of(pod).collect();
        Workload {
            namespace: pod.namespace.clone(),
            name: pod
                .labels
                .get("app")
                .cloned()
                .unwrap_or_else(|| pod.name.clone()),
            service_account: pod.service_account.clone(),
            labels: pod.labels.clone(),
            services: services.iter().map(|s| s.name.clone()).collect(),
            service_ports: services
                .iter()
                .map(|s| ServicePort {
                    service: s.name.clone(),
                    name: Some(s.port_name.clone()),
                    port: s.port,
                    target_port: s.target_port,
                })
                .collect(),
        }
    }

    /// Distinct target ports the pod serves (what its inbound listeners bind).
    pub fn target_ports(&self, pod: &Pod) -> Vec<u16> {
        let mut ports: Vec<u16> = self.services_of(pod).map(|s| s.target_port).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_topology_is_the_walkthrough() {
        let t = Topology::load(None).unwrap();
        let partial = t.service("httpbin.partial").unwrap();
        let eps: Vec<(String, bool)> = t.endpoints(partial).map(|p| (p.id(), p.sidecar)).collect();
        assert_eq!(
            eps,
            vec![
                ("httpbin.partial".into(), true),
                ("httpbin-nosidecar.partial".into(), false)
            ]
        );
        assert!(t.pod("sleep.full").unwrap().sidecar);
        assert!(!t.pod("sleep.legacy").unwrap().sidecar);
        assert_eq!(
            t.resolve_host("httpbin.full.svc.cluster.local", None)
                .unwrap()
                .id(),
            "httpbin.full"
        );
        assert_eq!(
            t.resolve_host("httpbin", Some("legacy")).unwrap().id(),
            "httpbin.legacy"
        );
        assert!(t.resolve_host("httpbin", None).is_none());
        let w = t.workload(t.pod("httpbin.full").unwrap());
        assert_eq!(
            (w.services.clone(), w.service_ports[0].target_port),
            (vec!["httpbin".to_string()], 80)
        );
    }

    #[test]
    fn net_moves_every_pod() {
        let t = Topology::load(None).unwrap().with_net(77);
        assert!(t.pods.iter().all(|p| p.ip.octets()[1] == 77));
    }
}
