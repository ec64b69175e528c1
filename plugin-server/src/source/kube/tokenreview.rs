//! Workload authentication in a cluster: an Envoy proves it is a pod by presenting the pod's
//! projected ServiceAccount token (audience `peerguard`), which the API server verifies
//! (TokenReview), as istiod authenticates CSRs. What the token says, never what the node
//! claims, decides: its namespace and service account must be the pod's, and a token bound to
//! a pod must be bound to this pod (another pod's token, even of the same service account,
//! gets nothing).

use crate::registry::WorkloadKey;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use kube::Client;

/// The audience Envoy's token must be issued for.
pub const AUDIENCE: &str = "peerguard";

const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// Who a verified token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    pub namespace: String,
    pub service_account: String,
    /// The pod the token is bound to, if any.
    pub pod: Option<String>,
}

impl TokenIdentity {
    /// Whether this identity may receive the certificate of `node`, which runs as
    /// `service_account`; `Err` says why not.
    pub fn authorizes(&self, node: &WorkloadKey, service_account: &str) -> Result<(), String> {
        if self.namespace != node.namespace || self.service_account != service_account {
            return Err(format!(
                "the token is for service account {}/{}, the pod runs as {}/{service_account}",
                self.namespace, self.service_account, node.namespace
            ));
        }
        match &self.pod {
            Some(pod) if *pod != node.name => Err(format!(
                "the token is bound to pod {}/{pod}, not {node}",
                self.namespace
            )),
            _ => Ok(()),
        }
    }
}

/// Reads a TokenReview's verdict; `Err` says why the token is refused.
pub fn identity(review: &TokenReview, audience: &str) -> Result<TokenIdentity, String> {
    let status = review
        .status
        .as_ref()
        .ok_or("the API server returned no TokenReview status")?;
    if status.authenticated != Some(true) {
        return Err(format!(
            "not authenticated: {}",
            status.error.as_deref().unwrap_or("no reason given")
        ));
    }
    // An API server that ignores audiences returns none: the token's audience is then unknown.
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == audience))
    {
        return Err(format!(
            "the token is not for audience {audience:?} (reviewed audiences: {:?})",
            status.audiences
        ));
    }
    let user = status
        .user
        .as_ref()
        .ok_or("the TokenReview names no user")?;
    let username = user.username.as_deref().unwrap_or_default();
    let rest = username
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(|| format!("{username:?} is not a service account"))?;
    let (namespace, service_account) = rest
        .split_once(':')
        .ok_or_else(|| format!("{username:?} is not a service account"))?;
    let pod = user
        .extra
        .as_ref()
        .and_then(|e| e.get(POD_NAME_EXTRA))
        .and_then(|v| v.first())
        .cloned();
    Ok(TokenIdentity {
        namespace: namespace.into(),
        service_account: service_account.into(),
        pod,
    })
}

/// Verifies tokens with the API server's TokenReview API.
pub struct TokenReviewer {
    client: Client,
    audience: String,
}

impl TokenReviewer {
    pub fn new(client: Client) -> Self {
        TokenReviewer {
            client,
            audience: AUDIENCE.into(),
        }
    }

    /// Who `token` belongs to, as the API server says.
    pub async fn review(&self, token: &str) -> Result<TokenIdentity, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.trim().to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview failed: {e}"))?;
        identity(&reviewed, &self.audience)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn review(v: serde_json::Value) -> TokenReview {
        serde_json::from_value(serde_json::json!({"spec": {}, "status": v})).unwrap()
    }

    fn key(ns: &str, n: &str) -> WorkloadKey {
        WorkloadKey {
            namespace: ns.into(),
            name: n.into(),
        }
    }

    #[test]
    fn only_the_pods_own_token_for_the_audience_authorizes() {
        let ok = review(serde_json::json!({
            "authenticated": true, "audiences": ["peerguard"],
            "user": {"username": "system:serviceaccount:foo:httpbin", "extra": {"authentication.kubernetes.io/pod-name": ["httpbin-1"]}}
        }));
        let id = identity(&ok, AUDIENCE).unwrap();
        assert_eq!(id.pod.as_deref(), Some("httpbin-1"));
        assert_eq!(id.authorizes(&key("foo", "httpbin-1"), "httpbin"), Ok(()));
        assert!(id
            .authorizes(&key("foo", "httpbin-2"), "httpbin")
            .unwrap_err()
            .contains("bound to pod foo/httpbin-1"));
        assert!(id.authorizes(&key("foo", "httpbin-1"), "other").is_err());
        assert!(id.authorizes(&key("bar", "httpbin-1"), "httpbin").is_err());

        let unbound = review(
            serde_json::json!({"authenticated": true, "audiences": ["peerguard"], "user": {"username": "system:serviceaccount:foo:httpbin"}}),
        );
        assert_eq!(
            identity(&unbound, AUDIENCE)
                .unwrap()
                .authorizes(&key("foo", "any"), "httpbin"),
            Ok(())
        );

        for (bad, why) in [
            (
                serde_json::json!({"authenticated": false, "error": "token has expired"}),
                "token has expired",
            ),
            (
                serde_json::json!({"authenticated": true, "user": {"username": "system:serviceaccount:foo:httpbin"}}),
                "audience",
            ),
            (
                serde_json::json!({"authenticated": true, "audiences": ["other"], "user": {"username": "system:serviceaccount:foo:httpbin"}}),
                "audience",
            ),
            (
                serde_json::json!({"authenticated": true, "audiences": ["peerguard"], "user": {"username": "alice"}}),
                "not a service account",
            ),
        ] {
            let err = identity(&review(bad), AUDIENCE).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
