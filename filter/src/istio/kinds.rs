//! The kinds of Istio's API groups, as served by Istio's CRDs
//! (`istio:manifests/charts/base/files/crd-all.gen.yaml`).
//!
//! An object of another group is not peerguard's business and is skipped. An object of one of
//! these groups must be recognised: a misspelt `kind` or an unknown `apiVersion` is invalid
//! (the API server would refuse it), never skipped, because skipping it would make a DENY or a
//! STRICT vanish.

/// Groups whose every object peerguard recognises.
pub const ISTIO_GROUPS: [&str; 4] = [
    "security.istio.io",
    "networking.istio.io",
    "authentication.istio.io",
    "extensions.istio.io",
];

/// `(group, kind, served versions)`.
const KINDS: [(&str, &str, &[&str]); 16] = [
    (
        "security.istio.io",
        "AuthorizationPolicy",
        &["v1", "v1beta1"],
    ),
    (
        "security.istio.io",
        "PeerAuthentication",
        &["v1", "v1beta1"],
    ),
    (
        "security.istio.io",
        "RequestAuthentication",
        &["v1", "v1beta1"],
    ),
    ("networking.istio.io", "DestinationRule", NETWORKING),
    ("networking.istio.io", "EnvoyFilter", &["v1alpha3"]),
    ("networking.istio.io", "Gateway", NETWORKING),
    ("networking.istio.io", "ProxyConfig", &["v1beta1"]),
    ("networking.istio.io", "ServiceEntry", NETWORKING),
    ("networking.istio.io", "Sidecar", NETWORKING),
    ("networking.istio.io", "VirtualService", NETWORKING),
    ("networking.istio.io", "WorkloadEntry", NETWORKING),
    ("networking.istio.io", "WorkloadGroup", NETWORKING),
    // The pre-1.5 authentication API (removed from Istio, still read by peerguard).
    ("authentication.istio.io", "Policy", &["v1alpha1"]),
    ("authentication.istio.io", "MeshPolicy", &["v1alpha1"]),
    ("extensions.istio.io", "WasmPlugin", &["v1alpha1"]),
    ("extensions.istio.io", "TrafficExtension", &["v1alpha1"]),
];

const NETWORKING: &[&str] = &["v1", "v1alpha3", "v1beta1"];

/// What an `apiVersion` + `kind` pair is, as far as Istio's groups go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// Not one of [`ISTIO_GROUPS`] (or no group at all, like `v1`).
    Foreign,
    /// A kind Istio serves at this version.
    Known,
    /// A kind of the group, at a version Istio does not serve.
    UnknownVersion { versions: &'static [&'static str] },
    /// A kind the group does not have (a misspelling, most likely).
    UnknownKind,
}

/// `security.istio.io/v1` → (`security.istio.io`, `v1`); `v1` → (``, `v1`); a group
/// without its version (`security.istio.io`) → (`security.istio.io`, ``).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some(parts) => parts,
        None if api_version.contains('.') => (api_version, ""),
        None => ("", api_version),
    }
}

/// The Istio group `api_version` names, if any. A group written with another case or with
/// spaces (`Security.istio.io/v1`) is a typo of an Istio group, not another group: the API
/// server would refuse it, and skipping it would lose the object.
pub fn istio_group(api_version: &str) -> Option<&'static str> {
    let (written, _) = split_api_version(api_version);
    let group = written.trim().to_ascii_lowercase();
    ISTIO_GROUPS.iter().copied().find(|g| *g == group)
}

pub fn classify(api_version: &str, kind: &str) -> Classification {
    let Some(group) = istio_group(api_version) else {
        return Classification::Foreign;
    };
    let (written, version) = split_api_version(api_version);
    match KINDS.iter().find(|(g, k, _)| *g == group && *k == kind) {
        None => Classification::UnknownKind,
        Some((_, _, versions)) if written == group && versions.contains(&version) => {
            Classification::Known
        }
        Some((_, _, versions)) => Classification::UnknownVersion { versions },
    }
}

/// The kinds of `group`, for messages.
pub fn kinds_of(group: &str) -> Vec<&'static str> {
    KINDS
        .iter()
        .filter(|(g, _, _)| *g == group)
        .map(|(_, k, _)| *k)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        use Classification::*;
        assert_eq!(
            classify("security.istio.io/v1", "AuthorizationPolicy"),
            Known
        );
        assert_eq!(
            classify("networking.istio.io/v1alpha3", "EnvoyFilter"),
            Known
        );
        assert_eq!(classify("v1", "ConfigMap"), Foreign);
        assert_eq!(classify("telemetry.istio.io/v1", "Telemetry"), Foreign);
        assert_eq!(
            classify("security.istio.io/v1alpha1", "PeerAuthentication"),
            UnknownVersion {
                versions: &["v1", "v1beta1"]
            }
        );
        assert!(matches!(
            classify("networking.istio.io/v1", "EnvoyFilter"),
            UnknownVersion { .. }
        ));
        assert_eq!(
            classify("security.istio.io/v1", "AuthorisationPolicy"),
            UnknownKind
        );
        assert_eq!(classify("security.istio.io/v1", ""), UnknownKind);
        assert!(matches!(
            classify("Security.istio.io/v1", "AuthorizationPolicy"),
            UnknownVersion { .. }
        ));
        assert_eq!(classify(" networking.istio.io/v1", "Gatewy"), UnknownKind);
        assert_eq!(
            classify("extensions.istio.io", "WasmPlugin"),
            UnknownVersion {
                versions: &["v1alpha1"]
            }
        );
        assert_eq!(
            kinds_of("security.istio.io"),
            vec![
                "AuthorizationPolicy",
                "PeerAuthentication",
                "RequestAuthentication"
            ]
        );
    }
}
