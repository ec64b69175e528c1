//! Istio's trust-domain bundle rewriting (`pilot/pkg/security/trustdomain/{bundle,util}.go`).
//! It runs even without aliases: a five-part principal whose trust domain matches the bundle
//! (exactly, or as a `*` pattern in either direction) or is `cluster.local` is rewritten to
//! each bundle member, so `clus*/ns/a/sa/b` becomes the exact `cluster.local/ns/a/sa/b`.

const CLUSTER_LOCAL: &str = "cluster.local";

/// `Bundle.ReplaceTrustDomainAliases`.
pub fn replace_trust_domain_aliases(bundle: &[String], principals: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for principal in principals {
        let parts: Vec<&str> = principal.split('/').collect();
        // `isTrustDomainBeingEnforced`: five parts and a trust domain other than `*`.
        if parts.len() != 5 || parts[0] == "*" {
            out.push(principal.clone());
            continue;
        }
        let td = parts[0];
        if string_match(td, bundle) || td == CLUSTER_LOCAL {
            let mut for_aliases: Vec<String> = Vec::new();
            for member in bundle {
                let p = if suffix_match(member, td) {
                    principal.clone()
                } else {
                    format!("{member}/{}", parts[1..].join("/"))
                };
                if !for_aliases.contains(&p) {
                    for_aliases.push(p);
                }
            }
            out.extend(for_aliases);
        } else {
            out.push(principal.clone());
        }
    }
    out
}

/// `Bundle.ExpandTrustDomainAliases`.
pub fn expand_trust_domain_aliases(bundle: &[String], values: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let add: Vec<String> = if bundle.contains(v) {
            bundle.to_vec()
        } else {
            vec![v.clone()]
        };
        for a in add {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// `stringMatch`: the pattern may be on either side.
fn string_match(a: &str, list: &[String]) -> bool {
    list.iter().any(|s| {
        a == s
            || s == "*"
            || prefix_match(a, s)
            || prefix_match(s, a)
            || suffix_match(a, s)
            || suffix_match(s, a)
    })
}

/// `prefixMatch(a, pattern)`: `pattern` ends with `*` and `a` starts with the rest.
fn prefix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_suffix('*').is_some_and(|p| a.starts_with(p))
}

/// `suffixMatch(a, pattern)`: `pattern` starts with `*` and `a` ends with the rest.
fn suffix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_prefix('*').is_some_and(|p| a.ends_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn patterns_in_the_trust_domain_are_rewritten_to_the_bundle() {
        let b = v(&["cluster.local"]);
        assert_eq!(
            replace_trust_domain_aliases(&b, &v(&["clus*/ns/a/sa/b"])),
            v(&["cluster.local/ns/a/sa/b"])
        );
        assert_eq!(
            replace_trust_domain_aliases(&b, &v(&["*local/ns/a/sa/b"])),
            v(&["*local/ns/a/sa/b"])
        );
        // Not five parts, `*` trust domain, other trust domain: as written.
        let kept = v(&["cluster.local/ns/a/*", "*/ns/a/sa/b", "other.td/ns/a/sa/b"]);
        assert_eq!(replace_trust_domain_aliases(&b, &kept), kept);
    }

    #[test]
    fn cluster_local_points_at_the_mesh_trust_domain_and_aliases() {
        let b = v(&["new-td", "old-td"]);
        assert_eq!(
            replace_trust_domain_aliases(&b, &v(&["cluster.local/ns/a/sa/b"])),
            v(&["new-td/ns/a/sa/b", "old-td/ns/a/sa/b"])
        );
        assert_eq!(
            expand_trust_domain_aliases(&b, &v(&["old-td", "x"])),
            v(&["new-td", "old-td", "x"])
        );
    }
}
