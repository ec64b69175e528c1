//! One Envoy for a batch of policy sets, two listener addresses per set: the peerguard side
//! (the shared inbound listener with the wasm filter, exactly as `peerguard test --envoy`
//! builds it) and the reference side (the same listener JSON with the wasm filter replaced
//! by Istio's RBAC filters). Both sides get the same connection manager: the shared one,
//! with `use_remote_address: true` and `xff_num_trusted_hops: 0` set on it here.

use crate::harness::{
    is_peerguard_filter, AppProtocol, Bootstrap, FilterModule, ListenerSpec, PathNormalization,
    TestPki, HCM_NAME,
};
use anyhow::{bail, Context as _};
use peerguard_server::envoy_config::rbac::RbacFilters;
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

/// The two addresses of one set: a pair inside one /31, so that `destination.ip` blocks of
/// length 31 or less see both sides alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetAddrs {
    pub peerguard: Ipv4Addr,
    pub reference: Ipv4Addr,
}

impl SetAddrs {
    /// Set `k` of a batch whose listeners live in 127.`block`.0.0/16.
    pub fn of(block: u8, k: usize) -> anyhow::Result<Self> {
        let hi = u8::try_from(k / 100).context("too many sets in one batch (max 25500)")?;
        let lo = u8::try_from((k % 100) * 2 + 2).context("address")?;
        Ok(SetAddrs {
            peerguard: Ipv4Addr::new(127, block, hi, lo),
            reference: Ipv4Addr::new(127, block, hi, lo + 1),
        })
    }

    /// `(pair /31, surrounding /24, a neighbouring /31)` for the `@dst-*` placeholders.
    pub fn destination_blocks(&self) -> (String, String, String) {
        let [a, b, c, d] = self.peerguard.octets();
        (
            format!("{a}.{b}.{c}.{d}/31"),
            format!("{a}.{b}.{c}.0/24"),
            format!("{a}.{b}.{c}.{}/31", d.wrapping_add(2)),
        )
    }
}

/// What one set needs from Envoy.
pub struct SetListeners<'a> {
    pub addrs: SetAddrs,
    /// The `WorkloadPolicy` JSON for the wasm filter.
    pub policy_json: String,
    pub rbac: &'a RbacFilters,
    /// `serve`'s transport slot (`peerguard-transport`, first in every chain), on both sides:
    /// the adaptive comparison is of what the other slots hold, on serve's listener.
    pub transport: Option<Value>,
}

pub struct BatchConfig<'a> {
    pub sets: &'a [SetListeners<'a>],
    pub http_ports: &'a [u16],
    pub tcp_ports: &'a [u16],
    pub trust_domains: &'a [String],
    pub wasm: &'a Path,
    pub pki: &'a TestPki,
    pub http_upstream: SocketAddr,
    pub tcp_upstream: SocketAddr,
}

impl BatchConfig<'_> {
    /// The Envoy bootstrap.
    pub fn to_json(&self) -> anyhow::Result<Value> {
        let mut specs = Vec::new();
        for (k, s) in self.sets.iter().enumerate() {
            let ports = self
                .http_ports
                .iter()
                .map(|p| (*p, AppProtocol::Http))
                .chain(self.tcp_ports.iter().map(|p| (*p, AppProtocol::Tcp)));
            for (port, proto) in ports {
                specs.push(ListenerSpec {
                    name: format!("set{k}_peerguard_{port}"),
                    address: s.addrs.peerguard,
                    port,
                    protocol: proto,
                    trust_domains: self.trust_domains.to_vec(),
                    policy_json: s.policy_json.clone(),
                    path_normalization: None,
                });
            }
        }
        let bootstrap = Bootstrap {
            listeners: &specs,
            filter: Some(FilterModule { wasm: self.wasm }),
            mesh_root_pem: self.pki.mesh_root_pem(),
            server_cert_pem: &self.pki.server().cert_pem,
            server_key_pem: &self.pki.server().key_pem,
            http_upstream: self.http_upstream,
            tcp_upstream: self.tcp_upstream,
            path_normalization: PathNormalization::Base,
        };
        let mut config = bootstrap.to_json();
        let listeners = config
            .pointer_mut("/static_resources/listeners")
            .and_then(Value::as_array_mut)
            .context("the shared bootstrap has no static listeners")?;
        if listeners.len() != specs.len() {
            bail!(
                "the shared bootstrap made {} listeners for {} specs",
                listeners.len(),
                specs.len()
            );
        }
        let per_set = self.http_ports.len() + self.tcp_ports.len();
        let mut reference = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.iter_mut().enumerate() {
            let set = &self.sets[i / per_set];
            if let Some(t) = &set.transport {
                for chain in chains(l)? {
                    chain["filters"]
                        .as_array_mut()
                        .context("filter chain without filters")?
                        .insert(0, t.clone());
                }
            }
            let mut r = l.clone();
            let name = l["name"]
                .as_str()
                .unwrap_or_default()
                .replace("_peerguard_", "_reference_");
            r["name"] = Value::String(name);
            r["address"]["socket_address"]["address"] =
                Value::String(set.addrs.reference.to_string());
            swap_filters(&mut r, set.rbac).with_context(|| format!("listener {}", l["name"]))?;
            reference.push(r);
        }
        listeners.extend(reference);
        Ok(config)
    }
}

fn chains(listener: &mut Value) -> anyhow::Result<&mut Vec<Value>> {
    listener["filter_chains"]
        .as_array_mut()
        .context("listener without filter_chains")
}

/// Replaces peerguard's filter in every chain (network filter, or HTTP filter inside the
/// connection manager) by the RBAC filters; exactly one replacement per chain, so a change
/// in the shared listener's shape fails here instead of silently testing nothing.
fn swap_filters(listener: &mut Value, rbac: &RbacFilters) -> anyhow::Result<()> {
    for chain in chains(listener)? {
        let filters = chain["filters"]
            .as_array_mut()
            .context("filter chain without filters")?;
        let mut replaced = 0;
        let mut out = Vec::with_capacity(filters.len() + rbac.network.len());
        for f in filters.drain(..) {
            if is_peerguard_filter(&f["name"]) {
                out.extend(rbac.network.iter().cloned());
                replaced += 1;
                continue;
            }
            let mut f = f;
            if f["name"] == HCM_NAME {
                let http = f["typed_config"]["http_filters"]
                    .as_array_mut()
                    .context("connection manager without http_filters")?;
                let before = http.len();
                let mut new_http = Vec::with_capacity(before + rbac.http.len());
                for h in http.drain(..) {
                    if is_peerguard_filter(&h["name"]) {
                        new_http.extend(rbac.http.iter().cloned());
                        replaced += 1;
                    } else {
                        new_http.push(h);
                    }
                }
                *http = new_http;
            }
            out.push(f);
        }
        *filters = out;
        if replaced != 1 {
            bail!("expected exactly one peerguard filter per chain, found {replaced}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rbac() -> RbacFilters {
        RbacFilters {
            http: vec![
                json!({"name": "envoy.filters.http.rbac", "n": 1}),
                json!({"name": "envoy.filters.http.rbac", "n": 2}),
            ],
            network: vec![json!({"name": "envoy.filters.network.rbac"})],
            omitted: Vec::new(),
        }
    }

    #[test]
    fn the_reference_listener_is_the_shared_one_with_rbac_in_place_of_peerguard(
    ) -> anyhow::Result<()> {
        let pki = TestPki::new()?;
        let r = rbac();
        let sets = [SetListeners {
            addrs: SetAddrs::of(150, 3)?,
            policy_json: "{}".into(),
            rbac: &r,
            transport: None,
        }];
        let cfg = BatchConfig {
            sets: &sets,
            http_ports: &[8080],
            tcp_ports: &[9000],
            trust_domains: &["cluster.local".to_string()],
            wasm: Path::new("/x.wasm"),
            pki: &pki,
            http_upstream: "127.0.0.1:1".parse()?,
            tcp_upstream: "127.0.0.1:2".parse()?,
        }
        .to_json()?;
        let ls = cfg["static_resources"]["listeners"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(ls.len(), 4);
        let (pg_http, ref_http) = (&ls[0], &ls[2]);
        assert_eq!(
            ref_http["address"]["socket_address"]["address"],
            "127.150.0.9"
        );
        assert_eq!(
            pg_http["address"]["socket_address"]["address"],
            "127.150.0.8"
        );
        for chain in 0..2 {
            let pg = &pg_http["filter_chains"][chain]["filters"][0]["typed_config"];
            let rf = &ref_http["filter_chains"][chain]["filters"][0]["typed_config"];
            assert_eq!(pg["use_remote_address"], true);
            assert_eq!(pg["xff_num_trusted_hops"], 0);
            // Identical connection managers but for the authorization filters.
            let strip = |v: &Value| {
                let mut v = v.clone();
                v["http_filters"] = json!(null);
                v
            };
            assert_eq!(strip(pg), strip(rf));
            assert_eq!(pg["http_filters"][0]["name"], "peerguard");
            assert_eq!(rf["http_filters"][0]["n"], 1);
            assert_eq!(rf["http_filters"][1]["n"], 2);
            assert_eq!(rf["http_filters"][2]["name"], pg["http_filters"][1]["name"]);
        }
        let ref_tcp = &ls[3]["filter_chains"][1]["filters"];
        assert_eq!(ref_tcp[0]["name"], "envoy.filters.network.rbac");
        assert_eq!(ref_tcp[1]["name"], "envoy.filters.network.tcp_proxy");
        assert_eq!(ls[1]["filter_chains"][1]["filters"][0]["name"], "peerguard");
        Ok(())
    }
}
