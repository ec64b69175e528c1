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
mod tests;
