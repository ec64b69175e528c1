//! The client side: which TLS a sidecar originates towards one endpoint (spec 5).
//!
//! A DestinationRule whose `tls` covers the destination port wins, whatever the server
//! does (spec 5.1, 5.2: a DR `ISTIO_MUTUAL` towards a plaintext-only port is how the auto
//! mTLS walkthrough gets its 503). Otherwise auto mTLS decides per endpoint: mTLS iff the
//! endpoint has a sidecar and the server's effective mode on the endpoint's target port is
//! not DISABLE. Pure: no I/O; the server mode comes from [`crate::compile::compile`].

use crate::compile::{compile, MeshConfig, Workload};
use crate::istio::{
    ClientTlsSettings, DestinationRuleSpec, Object, Resource, TlsMode, TrafficPolicy,
};
use crate::schema::MtlsMode;
use serde::{Deserialize, Serialize};

/// What the client sidecar sends on the connection to one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTls {
    Plaintext,
    /// mTLS with the client's Istio workload certificate.
    IstioMutual,
    /// TLS without a client certificate.
    Simple,
    /// mTLS with the certificate files named by the DestinationRule.
    Mutual,
}

/// Why [`ClientTls`] was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum ChoiceSource {
    /// A DestinationRule's `tls` (top level, port level or subset) decided.
    DestinationRule {
        /// `DestinationRule ns/name`.
        object: String,
        /// The TLS settings used, for MUTUAL/SIMPLE origination.
        settings: ClientTlsSettings,
    },
    /// No DestinationRule TLS: auto mTLS decided from the endpoint.
    AutoMtls,
    /// No DestinationRule TLS and auto mTLS is off: plaintext.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub tls: ClientTls,
    pub source: ChoiceSource,
    /// Invalid DestinationRules that name this host (ignored, as Istio's webhook would
    /// have refused them), and other notes for humans.
    #[serde(default)]
    pub diagnostics: Vec<String>,
}

/// The client and mesh settings that change the choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientContext {
    /// The client's namespace (its own DestinationRules are looked up first).
    pub namespace: String,
    /// `meshConfig.rootNamespace`: mesh-wide DestinationRules live there.
    pub root_namespace: String,
    /// `meshConfig.enableAutoMtls` (on by default since 1.5).
    pub auto_mtls: bool,
    /// The cluster DNS domain used to qualify short names (`cluster.local`).
    pub dns_domain: String,
}

impl Default for ClientContext {
    fn default() -> Self {
        ClientContext {
            namespace: "default".into(),
            root_namespace: "istio-system".into(),
            auto_mtls: true,
            dns_domain: "cluster.local".into(),
        }
    }
}

/// The Service being called, and the Service port (not the target port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub service: String,
    pub namespace: String,
    pub port: u16,
    /// The DestinationRule subset the route selects, if any.
    pub subset: Option<String>,
}

impl Destination {
    pub fn fqdn(&self, dns_domain: &str) -> String {
        format!("{}.{}.svc.{}", self.service, self.namespace, dns_domain)
    }
}

/// One endpoint of the destination, as auto mTLS sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The pod runs a sidecar (label `security.istio.io/tlsMode=istio`).
    pub has_sidecar: bool,
    /// The server's effective mode on the endpoint's target port (spec 2.4 / 3.4).
    /// Meaningless without a sidecar.
    pub server_mode: MtlsMode,
}

impl Endpoint {
    /// An endpoint without a sidecar.
    pub fn no_sidecar() -> Self {
        Endpoint {
            has_sidecar: false,
            server_mode: MtlsMode::Disable,
        }
    }

    /// A sidecar endpoint whose mode is compiled from `resources` for `workload` on
    /// `target_port` (the workload port the Service port maps to).
    pub fn sidecar(
        resources: &[Resource],
        workload: &Workload,
        mesh: &MeshConfig,
        target_port: u16,
    ) -> Self {
        let policy = compile(resources, workload, mesh);
        Endpoint {
            has_sidecar: true,
            server_mode: policy.mtls.for_port(target_port).mode,
        }
    }
}

/// The TLS the client sidecar in `client` originates towards `endpoint` of `dest`.
pub fn choose(
    resources: &[Resource],
    client: &ClientContext,
    dest: &Destination,
    endpoint: Endpoint,
) -> Choice {
    let mut diagnostics = invalid_rules_for(resources, client, dest);
    if let Some((rule, settings)) = destination_rule_tls(resources, client, dest) {
        let tls = match settings.mode {
            TlsMode::Disable => ClientTls::Plaintext,
            TlsMode::Simple => ClientTls::Simple,
            TlsMode::Mutual => ClientTls::Mutual,
            TlsMode::IstioMutual => ClientTls::IstioMutual,
        };
        if tls == ClientTls::IstioMutual && !endpoint.has_sidecar {
            diagnostics.push(
                "ISTIO_MUTUAL towards an endpoint without a sidecar: the connection will fail"
                    .into(),
            );
        }
        let object = format!(
            "DestinationRule {}/{}",
            namespace_of(rule),
            rule.metadata.name
        );
        return Choice {
            tls,
            source: ChoiceSource::DestinationRule { object, settings },
            diagnostics,
        };
    }
    if !client.auto_mtls {
        return Choice {
            tls: ClientTls::Plaintext,
            source: ChoiceSource::Default,
            diagnostics,
        };
    }
    let tls = if endpoint.has_sidecar && endpoint.server_mode != MtlsMode::Disable {
        ClientTls::IstioMutual
    } else {
        ClientTls::Plaintext
    };
    Choice {
        tls,
        source: ChoiceSource::AutoMtls,
        diagnostics,
    }
}

fn namespace_of<S>(o: &Object<S>) -> &str {
    o.metadata.namespace.as_deref().unwrap_or("default")
}

/// The DestinationRule that applies to `dest` for this client, and its TLS settings for
/// the port, when it sets any.
fn destination_rule_tls<'a>(
    resources: &'a [Resource],
    client: &ClientContext,
    dest: &Destination,
) -> Option<(&'a Object<DestinationRuleSpec>, ClientTlsSettings)> {
    let rule = applicable_rule(resources, client, dest)?;
    let tls = tls_for_port(&rule.spec, dest)?;
    Some((rule, tls))
}

/// Istio's lookup order (`istio:pilot/pkg/model/push_context.go` `destinationRule`):
/// the client's namespace, then the service's namespace, then the root namespace; in each,
/// the most specific host (exact, then the longest wildcard). Rules with a
/// `workloadSelector` target specific client workloads and are not considered here.
fn applicable_rule<'a>(
    resources: &'a [Resource],
    client: &ClientContext,
    dest: &Destination,
) -> Option<&'a Object<DestinationRuleSpec>> {
    let fqdn = dest.fqdn(&client.dns_domain);
    let rules: Vec<&Object<DestinationRuleSpec>> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::DestinationRule(o) if o.spec.workload_selector.is_none() => Some(o),
            _ => None,
        })
        .collect();
    let order = [
        client.namespace.as_str(),
        dest.namespace.as_str(),
        client.root_namespace.as_str(),
    ];
    for (i, ns) in order.iter().enumerate() {
        if order[..i].contains(ns) {
            continue;
        }
        let best = rules
            .iter()
            .filter(|r| namespace_of(r) == *ns && visible_to(r, &client.namespace))
            .filter_map(|r| {
                let host = qualify(&r.spec.host, namespace_of(r), &client.dns_domain);
                host_specificity(&host, &fqdn).map(|s| (s, *r))
            })
            // Ties at the same specificity: the first in input order, like Istio's
            // creation-time order for conflicting rules.
            .fold(
                None::<(usize, &Object<DestinationRuleSpec>)>,
                |best, (s, r)| match best {
                    Some((bs, _)) if bs >= s => best,
                    _ => Some((s, r)),
                },
            );
        if let Some((_, r)) = best {
            return Some(r);
        }
    }
    None
}

/// `exportTo`: empty or `*` = everywhere, `.` = the rule's own namespace, else names.
fn visible_to(rule: &Object<DestinationRuleSpec>, client_ns: &str) -> bool {
    let export = &rule.spec.export_to;
    export.is_empty()
        || export
            .iter()
            .any(|e| e == "*" || e == client_ns || (e == "." && namespace_of(rule) == client_ns))
}

/// `ResolveShortnameToFQDN`: a name without a dot is a short Service name in the rule's
/// namespace; anything with a dot (or `*`) is taken as written.
fn qualify(host: &str, ns: &str, dns_domain: &str) -> String {
    if host == "*" || host.contains('.') || host.parse::<std::net::IpAddr>().is_ok() {
        host.to_ascii_lowercase()
    } else {
        format!("{}.{ns}.svc.{dns_domain}", host.to_ascii_lowercase())
    }
}

/// How specifically `pattern` names `fqdn`: exact beats any wildcard, a longer wildcard
/// suffix beats a shorter one; `None` when it does not match.
fn host_specificity(pattern: &str, fqdn: &str) -> Option<usize> {
    if pattern == fqdn {
        return Some(usize::MAX);
    }
    let suffix = pattern.strip_prefix('*')?;
    if suffix.is_empty() || fqdn.ends_with(suffix) {
        Some(suffix.len())
    } else {
        None
    }
}

/// The TLS settings for the Service port. Port-level settings replace the top level for
/// their port (spec 5.1: no field-wise inheritance; a port entry without `tls` leaves the
/// port without DR TLS). A subset's policy replaces the top level; a subset without TLS
/// for the port falls back to the top-level policy (`mtls_checker.go`).
fn tls_for_port(spec: &DestinationRuleSpec, dest: &Destination) -> Option<ClientTlsSettings> {
    let subset_policy = dest
        .subset
        .as_ref()
        .and_then(|name| spec.subsets.iter().find(|s| &s.name == name))
        .and_then(|s| s.traffic_policy.as_ref());
    if let Some(tls) = subset_policy.and_then(|p| policy_tls(p, dest.port)) {
        return Some(tls);
    }
    spec.traffic_policy
        .as_ref()
        .and_then(|p| policy_tls(p, dest.port))
}

fn policy_tls(policy: &TrafficPolicy, port: u16) -> Option<ClientTlsSettings> {
    match policy
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)))
    {
        Some(port_policy) => port_policy.tls.clone(),
        None => policy.tls.clone(),
    }
}

/// Invalid DestinationRules are ignored (Istio's webhook refuses them); say so when one
/// would have named this host.
fn invalid_rules_for(
    resources: &[Resource],
    client: &ClientContext,
    dest: &Destination,
) -> Vec<String> {
    let fqdn = dest.fqdn(&client.dns_domain);
    resources
        .iter()
        .filter_map(|r| match r {
            Resource::Invalid(inv) if inv.kind == "DestinationRule" => {
                let ns = inv.metadata.namespace.as_deref().unwrap_or("default");
                let host = inv
                    .raw
                    .pointer("/spec/host")
                    .and_then(|h| h.as_str())
                    .unwrap_or("");
                host_specificity(&qualify(host, ns, &client.dns_domain), &fqdn).map(|_| {
                    format!(
                        "{}: DestinationRule {ns}/{} is invalid and ignored: {}",
                        inv.origin, inv.metadata.name, inv.error
                    )
                })
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::parse::parse_str;

    fn resources(yaml: &str) -> Vec<Resource> {
        let parsed = parse_str(yaml, "test.yaml");
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        parsed.resources
    }

    fn ctx(ns: &str) -> ClientContext {
        ClientContext {
            namespace: ns.into(),
            ..ClientContext::default()
        }
    }

    fn dest(svc: &str, ns: &str, port: u16) -> Destination {
        Destination {
            service: svc.into(),
            namespace: ns.into(),
            port,
            subset: None,
        }
    }

    const SIDECAR_PERMISSIVE: Endpoint = Endpoint {
        has_sidecar: true,
        server_mode: MtlsMode::Permissive,
    };
    const SIDECAR_STRICT: Endpoint = Endpoint {
        has_sidecar: true,
        server_mode: MtlsMode::Strict,
    };
    const SIDECAR_DISABLE: Endpoint = Endpoint {
        has_sidecar: true,
        server_mode: MtlsMode::Disable,
    };

    #[test]
    fn auto_mtls_follows_the_endpoint() {
        let d = dest("httpbin", "partial", 8000);
        let c = ctx("full");
        assert_eq!(
            choose(&[], &c, &d, SIDECAR_PERMISSIVE).tls,
            ClientTls::IstioMutual
        );
        assert_eq!(
            choose(&[], &c, &d, SIDECAR_STRICT).tls,
            ClientTls::IstioMutual
        );
        assert_eq!(
            choose(&[], &c, &d, SIDECAR_DISABLE).tls,
            ClientTls::Plaintext
        );
        assert_eq!(
            choose(&[], &c, &d, Endpoint::no_sidecar()).tls,
            ClientTls::Plaintext
        );
        assert_eq!(
            choose(&[], &c, &d, SIDECAR_PERMISSIVE).source,
            ChoiceSource::AutoMtls
        );
    }

    #[test]
    fn without_auto_mtls_the_client_sends_plaintext() {
        let c = ClientContext {
            auto_mtls: false,
            ..ctx("full")
        };
        let choice = choose(&[], &c, &dest("httpbin", "full", 8000), SIDECAR_STRICT);
        assert_eq!(choice.tls, ClientTls::Plaintext);
        assert_eq!(choice.source, ChoiceSource::Default);
    }

    const DR_ISTIO_MUTUAL_FULL: &str = "
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: httpbin-full-mtls, namespace: full}
spec:
  host: httpbin.full.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
";

    #[test]
    fn destination_rule_wins_over_auto_mtls() {
        let r = resources(DR_ISTIO_MUTUAL_FULL);
        let choice = choose(
            &r,
            &ctx("full"),
            &dest("httpbin", "full", 8000),
            SIDECAR_DISABLE,
        );
        assert_eq!(choice.tls, ClientTls::IstioMutual);
        assert!(
            matches!(&choice.source, ChoiceSource::DestinationRule { object, .. } if object == "DestinationRule full/httpbin-full-mtls")
        );
        // Other hosts are untouched.
        assert_eq!(
            choose(
                &r,
                &ctx("full"),
                &dest("httpbin", "partial", 8000),
                SIDECAR_DISABLE
            )
            .tls,
            ClientTls::Plaintext
        );
        // Visible from other namespaces too (no exportTo).
        assert_eq!(
            choose(
                &r,
                &ctx("legacy"),
                &dest("httpbin", "full", 8000),
                SIDECAR_DISABLE
            )
            .tls,
            ClientTls::IstioMutual
        );
    }

    #[test]
    fn istio_mutual_to_an_endpoint_without_sidecar_is_flagged() {
        let r = resources(DR_ISTIO_MUTUAL_FULL);
        let choice = choose(
            &r,
            &ctx("full"),
            &dest("httpbin", "full", 8000),
            Endpoint::no_sidecar(),
        );
        assert_eq!(choice.tls, ClientTls::IstioMutual);
        assert_eq!(choice.diagnostics.len(), 1);
    }

    #[test]
    fn short_host_resolves_in_the_rule_namespace_only() {
        let r = resources(
            "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: full}
spec: {host: httpbin, trafficPolicy: {tls: {mode: DISABLE}}}
",
        );
        assert_eq!(
            choose(
                &r,
                &ctx("full"),
                &dest("httpbin", "full", 8000),
                SIDECAR_STRICT
            )
            .tls,
            ClientTls::Plaintext
        );
        assert_eq!(
            choose(
                &r,
                &ctx("full"),
                &dest("httpbin", "partial", 8000),
                SIDECAR_STRICT
            )
            .tls,
            ClientTls::IstioMutual
        );
    }

    #[test]
    fn dotted_host_is_taken_as_written() {
        // `httpbin.full` is not short (it has a dot), so it is not `httpbin.full.svc.cluster.local`.
        let r = resources(
            "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: full}
spec: {host: httpbin.full, trafficPolicy: {tls: {mode: DISABLE}}}
",
        );
        assert_eq!(
            choose(
                &r,
                &ctx("full"),
                &dest("httpbin", "full", 8000),
                SIDECAR_STRICT
            )
            .tls,
            ClientTls::IstioMutual
        );
    }

    #[test]
    fn port_level_settings_override_for_their_service_port() {
        let r = resources(
            "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: full}
spec:
  host: httpbin.full.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 8000}
      tls: {mode: DISABLE}
    - port: {number: 9000}
      tls: {mode: SIMPLE}
    - port: {number: 9001}
      loadBalancer: {simple: ROUND_ROBIN}
",
        );
        let c = ctx("full");
        assert_eq!(
            choose(&r, &c, &dest("httpbin", "full", 8000), SIDECAR_STRICT).tls,
            ClientTls::Plaintext
        );
        assert_eq!(
            choose(&r, &c, &dest("httpbin", "full", 9000), SIDECAR_STRICT).tls,
            ClientTls::Simple
        );
        assert_eq!(
            choose(&r, &c, &dest("httpbin", "full", 7000), SIDECAR_DISABLE).tls,
            ClientTls::IstioMutual
        );
        // A port entry without tls does not inherit the top-level tls: auto mTLS decides.
        let choice = choose(&r, &c, &dest("httpbin", "full", 9001), SIDECAR_DISABLE);
        assert_eq!(
            (choice.tls, choice.source),
            (ClientTls::Plaintext, ChoiceSource::AutoMtls)
        );
    }

    #[test]
    fn lookup_order_and_wildcards() {
        let r = resources(
            "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: default, namespace: istio-system}
spec: {host: '*.local', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ns-wide, namespace: partial}
spec: {host: '*.partial.svc.cluster.local', trafficPolicy: {tls: {mode: DISABLE}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mine, namespace: legacy}
spec: {host: httpbin.partial.svc.cluster.local, exportTo: ['.'], trafficPolicy: {tls: {mode: SIMPLE}}}
",
        );
        // Mesh-wide wildcard from the root namespace.
        assert_eq!(
            choose(
                &r,
                &ctx("full"),
                &dest("httpbin", "full", 8000),
                SIDECAR_DISABLE
            )
            .tls,
            ClientTls::IstioMutual
        );
        // The service namespace comes before the root namespace.
        assert_eq!(
            choose(
                &r,
                &ctx("full"),
                &dest("httpbin", "partial", 8000),
                SIDECAR_STRICT
            )
            .tls,
            ClientTls::Plaintext
        );
        // The client namespace comes first; exportTo '.' keeps it private to legacy.
        assert_eq!(
            choose(
                &r,
                &ctx("legacy"),
                &dest("httpbin", "partial", 8000),
                SIDECAR_STRICT
            )
            .tls,
            ClientTls::Simple
        );
    }

    #[test]
    fn most_specific_host_in_a_namespace_wins() {
        let r = resources(
            "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a-wide, namespace: full}
spec: {host: '*.svc.cluster.local', trafficPolicy: {tls: {mode: DISABLE}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b-narrow, namespace: full}
spec: {host: '*.full.svc.cluster.local', trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}}
",
        );
        assert_eq!(
            choose(
                &r,
                &ctx("full"),
                &dest("httpbin", "full", 8000),
                SIDECAR_STRICT
            )
            .tls,
            ClientTls::Mutual
        );
        assert_eq!(
            choose(
                &r,
                &ctx("full"),
                &dest("httpbin", "other", 8000),
                SIDECAR_STRICT
            )
            .tls,
            ClientTls::Plaintext
        );
    }

    #[test]
    fn subset_tls_overrides_and_falls_back() {
        let r = resources(
            "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: full}
spec:
  host: httpbin
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {tls: {mode: DISABLE}}
  - name: v2
    labels: {version: v2}
",
        );
        let mut d = dest("httpbin", "full", 8000);
        d.subset = Some("v1".into());
        assert_eq!(
            choose(&r, &ctx("full"), &d, SIDECAR_STRICT).tls,
            ClientTls::Plaintext
        );
        d.subset = Some("v2".into());
        assert_eq!(
            choose(&r, &ctx("full"), &d, SIDECAR_STRICT).tls,
            ClientTls::IstioMutual
        );
    }

    /// The walkthrough (spec 5.4) with the server mode compiled from the resources.
    #[test]
    fn walkthrough_with_compiled_server_modes() {
        use crate::compile::ServicePort;
        let mesh = MeshConfig::default();
        let httpbin = |ns: &str| Workload {
            namespace: ns.into(),
            name: "httpbin".into(),
            service_account: "httpbin".into(),
            labels: [
                ("app".to_string(), "httpbin".to_string()),
                ("version".to_string(), "v1".to_string()),
            ]
            .into(),
            services: vec!["httpbin".into()],
            service_ports: vec![ServicePort {
                service: "httpbin".into(),
                name: Some("http".into()),
                port: 8000,
                target_port: 80,
            }],
        };
        let mesh_permissive = "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec: {peers: [{mtls: {mode: PERMISSIVE}}]}\n";
        let strict = "---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: httpbin, namespace: full}\nspec: {targets: [{name: httpbin}], peers: [{mtls: {}}]}\n";
        let plaintext = "---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: httpbin, namespace: full}\nspec: {targets: [{name: httpbin}]}\n";
        let dr = format!("---\n{DR_ISTIO_MUTUAL_FULL}");
        let c = ctx("full");
        let to = |yaml: &str, ns: &str| {
            let r = resources(yaml);
            let ep = Endpoint::sidecar(&r, &httpbin(ns), &mesh, 80);
            choose(&r, &c, &dest("httpbin", ns, 8000), ep).tls
        };
        // Stage 1 and 3: mTLS to every sidecar endpoint.
        assert_eq!(to(mesh_permissive, "full"), ClientTls::IstioMutual);
        assert_eq!(
            to(&format!("{mesh_permissive}{strict}"), "full"),
            ClientTls::IstioMutual
        );
        // Stage 4: the server only serves plaintext; auto mTLS follows. partial is untouched.
        assert_eq!(
            to(&format!("{mesh_permissive}{plaintext}"), "full"),
            ClientTls::Plaintext
        );
        assert_eq!(
            to(&format!("{mesh_permissive}{plaintext}"), "partial"),
            ClientTls::IstioMutual
        );
        // Stage 5: the DestinationRule forces mTLS anyway (the 503 of the walkthrough).
        assert_eq!(
            to(&format!("{mesh_permissive}{plaintext}{dr}"), "full"),
            ClientTls::IstioMutual
        );
    }

    #[test]
    fn dr_without_tls_leaves_auto_mtls() {
        let r = resources(
            "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: full}
spec: {host: httpbin, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}
",
        );
        let choice = choose(
            &r,
            &ctx("full"),
            &dest("httpbin", "full", 8000),
            SIDECAR_PERMISSIVE,
        );
        assert_eq!(
            (choice.tls, choice.source),
            (ClientTls::IstioMutual, ChoiceSource::AutoMtls)
        );
    }
}
