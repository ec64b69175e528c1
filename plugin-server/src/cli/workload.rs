//! The arguments that name a workload and the mesh it lives in, shared by `explain` and
//! `compile`.

use anyhow::{bail, Context};
use peerguard_filter::compile::{MeshConfig, Workload};
use peerguard_filter::istio::parse::{parse_path, Parsed};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct WorkloadArgs {
    /// File or directory of Istio resources (YAML/JSON).
    #[arg(long)]
    pub config: PathBuf,
    /// The server workload, `namespace/name`.
    #[arg(long)]
    pub workload: String,
    /// Workload labels, `k=v,k2=v2`.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// Services (in the workload namespace) that select the workload, for legacy Policy targets.
    #[arg(long, value_delimiter = ',')]
    pub services: Vec<String>,
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// `meshConfig.trustDomainAliases` (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub trust_domain_alias: Vec<String>,
    #[arg(long, default_value = "istio-system")]
    pub root_namespace: String,
    /// `meshConfig.pathNormalization`: NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES
    /// (must match the connection manager in front of the filter).
    #[arg(long, default_value = "BASE")]
    pub path_normalization: peerguard_filter::schema::PathNormalization,
    /// Proxies in front of the workload that append to X-Forwarded-For
    /// (`numTrustedProxies`): `remoteIpBlocks`/`remote.ip` use the address that many hops
    /// from the right; 0 means the direct peer.
    #[arg(long, default_value_t = 0)]
    pub num_trusted_proxies: u32,
}

pub(crate) fn pair(v: &str, what: &str) -> anyhow::Result<(String, String)> {
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
        _ => bail!("--{what} {v:?}: expected key=value"),
    }
}

fn non_empty(v: &[String]) -> Vec<String> {
    v.iter().filter(|s| !s.is_empty()).cloned().collect()
}

impl WorkloadArgs {
    pub fn resolve(&self) -> anyhow::Result<(Workload, MeshConfig)> {
        let Some((namespace, name)) = self
            .workload
            .split_once('/')
            .filter(|(n, w)| !n.is_empty() && !w.is_empty())
        else {
            bail!("--workload {:?}: expected namespace/name", self.workload);
        };
        let labels = self
            .labels
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| pair(l, "labels"))
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let workload = Workload {
            namespace: namespace.into(),
            name: name.into(),
            service_account: self.service_account.clone(),
            labels,
            services: non_empty(&self.services),
            service_ports: Vec::new(),
        };
        let mesh = MeshConfig {
            trust_domain: self.trust_domain.clone(),
            trust_domain_aliases: non_empty(&self.trust_domain_alias),
            root_namespace: self.root_namespace.clone(),
            path_normalization: self.path_normalization,
            num_trusted_proxies: self.num_trusted_proxies,
        };
        Ok((workload, mesh))
    }

    /// Every resource under `--config`; an unreadable path is an error, parse errors are
    /// returned in `Parsed::errors` for the caller to report.
    pub fn read_config(&self) -> anyhow::Result<Parsed> {
        std::fs::metadata(&self.config)
            .with_context(|| format!("--config {}", self.config.display()))?;
        Ok(parse_path(&self.config))
    }
}
