//! Seeded generation of what both sides are given: a set of AuthorizationPolicies (YAML, as
//! a user writes it) and the raw requests to send. One `u64` seed gives one set; the same
//! seed always gives the same set.
//!
//! The world is fixed: the workload `foo/httpbin` (labels `app: httpbin, version: v1`),
//! HTTP on [`HTTP_PORTS`], TCP on [`TCP_PORT`], clients from [`SOURCES`] with the
//! certificates of [`PEERS`]. Policies and requests draw from shared vocabularies so that
//! they meet often; requests also reuse values found in the set's policies.
//!
//! Destination addresses differ per run (each side has its own listener address), so
//! `destination.ip` values are written as placeholders ([`DST_PAIR`], [`DST_NET`],
//! [`DST_OTHER`]) and filled in by the runner with blocks that cover both sides' addresses
//! (or neither).

mod mtls;
mod policy;
mod request;
pub mod rng;
pub mod yaml;

pub use request::{Case, Payload};

use peerguard_filter::compile::{MeshConfig, Workload};
use rng::Rng;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const HTTP_PORTS: [u16; 2] = [8080, 8081];
pub const TCP_PORT: u16 = 9000;

/// Client source addresses (the client binds to them; all are loopback on Linux).
pub const SOURCES: [Ipv4Addr; 5] = [
    Ipv4Addr::new(127, 10, 0, 1),
    Ipv4Addr::new(127, 10, 0, 2),
    Ipv4Addr::new(127, 10, 1, 5),
    Ipv4Addr::new(127, 20, 0, 1),
    Ipv4Addr::new(127, 0, 0, 1),
];

/// The /31 holding both sides' listener addresses.
pub const DST_PAIR: &str = "@dst-pair";
/// The /24 around them.
pub const DST_NET: &str = "@dst-net";
/// A /31 next to them (covers neither).
pub const DST_OTHER: &str = "@dst-other";

/// Which CA signs a peer certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ca {
    Mesh,
    Untrusted,
}

/// A client identity: `None` is plaintext; otherwise the URI SANs of its certificate.
#[derive(Debug, Clone, Copy)]
pub struct PeerSpec {
    pub uri_sans: &'static [&'static str],
    pub ca: Ca,
}

/// The client identities requests pick from; index 0 is plaintext.
pub const PEERS: [Option<PeerSpec>; 13] = [
    None,
    Some(mesh(&["spiffe://cluster.local/ns/foo/sa/sleep"])),
    Some(mesh(&["spiffe://cluster.local/ns/bar/sa/admin"])),
    Some(mesh(&["spiffe://cluster.local/ns/baz-prod/sa/sleep-v2"])),
    Some(mesh(&["spiffe://cluster.local/ns/istio-system/sa/gateway"])),
    Some(mesh(&[
        "spiffe://cluster.local/ns/foo/sa/sleep",
        "spiffe://other.td/ns/bar/sa/admin",
    ])),
    Some(mesh(&[
        "spiffe://other.td/ns/foo/sa/admin",
        "spiffe://cluster.local/ns/bar/sa/sleep",
    ])),
    Some(mesh(&["spiffe://cluster.local/ns/foo/sa/sleep/extra"])),
    Some(mesh(&[
        "https://web.example/ns/foo/sa/sleep",
        "spiffe://cluster.local/ns/qux/sa/sleep",
    ])),
    // Fails the handshake on both sides: no SAN in the mesh trust domain.
    Some(mesh(&["spiffe://other.td/ns/foo/sa/sleep"])),
    Some(PeerSpec {
        uri_sans: &["spiffe://cluster.local/ns/foo/sa/sleep"],
        ca: Ca::Untrusted,
    }),
    Some(mesh(&[
        "spiffe://cluster.local/ns/foo/sa/sleep",
        "spiffe://cluster.local/ns/bar/sa/admin",
    ])),
    Some(mesh(&["spiffe://cluster.local/ns/Foo/sa/Sleep"])),
];

const fn mesh(uri_sans: &'static [&'static str]) -> PeerSpec {
    PeerSpec {
        uri_sans,
        ca: Ca::Mesh,
    }
}

/// The workload both sides protect.
pub fn workload() -> Workload {
    Workload {
        namespace: "foo".into(),
        name: "httpbin".into(),
        service_account: "httpbin".into(),
        labels: BTreeMap::from([
            ("app".to_string(), "httpbin".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]),
        ..Workload::default()
    }
}

/// Trust domain `cluster.local`, no aliases, root namespace `istio-system`.
pub fn mesh_config() -> MeshConfig {
    MeshConfig::default()
}

/// Where a policy set comes from, to reproduce it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Seed(u64),
    /// A case file (see `crate::cases`).
    File(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Seed(s) => write!(f, "seed {s}"),
            Origin::File(p) => write!(f, "case file {p}"),
        }
    }
}

impl Origin {
    /// The command that runs this set again.
    pub fn replay(&self) -> String {
        match self {
            Origin::Seed(s) => format!("bash integration/differential/run.sh --seed {s}"),
            Origin::File(p) => format!("bash integration/differential/run.sh --cases {p}"),
        }
    }
}

/// One policy set and its requests.
#[derive(Debug, Clone)]
pub struct Generated {
    pub origin: Origin,
    /// Multi-document YAML with the `@dst-*` placeholders.
    pub yaml: String,
    pub cases: Vec<Case>,
}

/// The set for `seed`, with `requests` requests: AuthorizationPolicies only (what the
/// comparison with Istio's RBAC translation reads; both sides run PERMISSIVE).
pub fn generate(seed: u64, requests: usize) -> Generated {
    generate_with(seed, requests, false)
}

/// As [`generate`] (the same AuthorizationPolicies and requests for the same seed), with
/// PeerAuthentications in front: the mTLS mode varies for the adaptive comparison.
pub fn generate_adaptive(seed: u64, requests: usize) -> Generated {
    generate_with(seed, requests, true)
}

fn generate_with(seed: u64, requests: usize, peer_authentication: bool) -> Generated {
    let mut rng = Rng::new(seed);
    let mut policy_rng = rng.fork(1);
    let mut request_rng = rng.fork(2);
    let mut mtls_rng = rng.fork(3);
    let mut docs = Vec::new();
    if peer_authentication {
        docs.extend(mtls::peer_authentications(&mut mtls_rng));
    }
    let mut policies = policy::policy_set(&mut policy_rng);
    // JWT attributes have no native form (the slot keeps the filter, both sides run the
    // same filter): most adaptive sets go without them, so that more reach native RBAC.
    if peer_authentication && mtls_rng.chance(80) {
        policies.iter_mut().for_each(policy::strip_jwt);
    }
    docs.extend(policies);
    let hints = policy::Hints::of(&docs);
    let yaml = docs
        .iter()
        .map(yaml::to_yaml)
        .collect::<Vec<_>>()
        .join("---\n");
    let cases = (0..requests)
        .map(|_| request::case(&mut request_rng, &hints))
        .collect();
    Generated {
        origin: Origin::Seed(seed),
        yaml,
        cases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerguard_filter::istio::parse::parse_str;

    #[test]
    fn generated_sets_are_reproducible_and_both_sides_can_be_built() -> anyhow::Result<()> {
        let mut invalid = 0;
        for seed in 0..300u64 {
            let a = generate(seed, 10);
            let b = generate(seed, 10);
            assert_eq!(a.yaml, b.yaml);
            assert_eq!(format!("{:?}", a.cases), format!("{:?}", b.cases));
            let p = crate::run::prepare(&a, crate::envoy::SetAddrs::of(100, 0)?)?;
            let parsed = parse_str(&p.yaml, "gen.yaml");
            invalid += usize::from(!parsed.errors.is_empty());
        }
        // A few sets carry a policy the webhook would refuse, most do not.
        assert!(
            (1..60).contains(&invalid),
            "{invalid} of 300 sets have invalid policies"
        );
        Ok(())
    }

    #[test]
    fn adaptive_sets_add_peer_authentications_of_every_mode_to_the_same_requests(
    ) -> anyhow::Result<()> {
        use peerguard_filter::istio::Resource;
        let mut modes = std::collections::BTreeMap::new();
        let (mut with_pa, mut port_level, mut jwt) = (0, 0, 0);
        for seed in 0..300u64 {
            let a = generate_adaptive(seed, 10);
            assert_eq!(a.yaml, generate_adaptive(seed, 10).yaml);
            let p = crate::run::prepare_adaptive(&a, crate::envoy::SetAddrs::of(100, 0)?)?;
            let parsed = parse_str(&p.yaml, "gen.yaml");
            let pas: Vec<_> = parsed
                .resources
                .iter()
                .filter_map(|r| match r {
                    Resource::PeerAuthentication(o) => Some(o),
                    _ => None,
                })
                .collect();
            with_pa += usize::from(!pas.is_empty());
            port_level += usize::from(pas.iter().any(|o| !o.spec.port_level_mtls.is_empty()));
            jwt += usize::from(
                p.yaml.contains("equestPrincipals") || p.yaml.contains("request.auth."),
            );
            *modes
                .entry(format!("{:?}", p.policy.mtls.default.mode))
                .or_insert(0) += 1;
        }
        assert!(
            (200..290).contains(&with_pa),
            "{with_pa} of 300 sets with a PeerAuthentication"
        );
        assert!(
            port_level > 10,
            "{port_level} of 300 sets with portLevelMtls"
        );
        assert!(
            jwt > 10 && jwt < 100,
            "{jwt} of 300 sets with JWT attributes"
        );
        for m in ["Strict", "Permissive", "Disable"] {
            assert!(modes.get(m).is_some_and(|n| *n >= 30), "{modes:?}");
        }
        Ok(())
    }

    #[test]
    fn strip_jwt_removes_request_principals_and_what_they_leave_empty() {
        let mut doc = serde_json::json!({"spec": {"rules": [
            {"from": [{"source": {"requestPrincipals": ["*"]}}, {"source": {"namespaces": ["a"], "notRequestPrincipals": ["x"]}}],
             "when": [{"key": "request.auth.principal", "values": ["x"]}]},
            {"from": [{"source": {"requestPrincipals": ["*"]}}], "to": [{"operation": {"paths": ["/a"]}}]},
        ]}});
        policy::strip_jwt(&mut doc);
        assert_eq!(
            doc,
            serde_json::json!({"spec": {"rules": [
                {"from": [{"source": {"namespaces": ["a"]}}]},
                {"to": [{"operation": {"paths": ["/a"]}}]},
            ]}})
        );
    }
}
