//! peerguard in an Istio mesh, in Istio's own resources (issue 13):
//!
//! - [`wasmplugin`]: one `extensions.istio.io/v1alpha1` WasmPlugin per workload selector group
//!   (HTTP and network roots), `pluginConfig` = the compiled `WorkloadPolicy`;
//!   `peerguard serve --istio-wasmplugins` keeps them live ([`writer`]).
//! - [`envoyfilter`]: one `networking.istio.io/v1alpha3` EnvoyFilter inserting the peerguard
//!   filters into Istio's inbound chains with `config_discovery` pointing at `peerguard serve`
//!   (ECDS), for large policies and sub-second pushes that bypass etcd.
//! - [`patch`]: the EnvoyFilter patch semantics the rendered EnvoyFilter uses, applied to a
//!   recorded Istio sidecar configuration (what the tests load into real Envoy).

pub mod envoyfilter;
pub mod patch;
pub mod wasmplugin;
pub mod writer;

/// Labels on every object peerguard writes into a mesh (the writer prunes by them).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "peerguard");
pub const FORM_LABEL: &str = "peerguard.dev/form";
