//! Judging one request: do both sides agree? If not, is it a documented case where
//! peerguard is deliberately safer, and which class of difference does it look like?

use crate::client::Outcome;
use crate::gen::{Case, Origin, Payload, PEERS};

/// One request and what each side did.
#[derive(Debug, Clone)]
pub struct Observation {
    pub origin: Origin,
    /// Index of the request in its set.
    pub index: usize,
    pub case: Case,
    /// The wasm filter's side (both comparisons).
    pub peerguard: Outcome,
    /// Istio's RBAC ([`crate::run::Comparison::Istio`]) or the adaptive choice
    /// ([`crate::run::Comparison::Adaptive`]).
    pub reference: Outcome,
}

/// Everything a judgement may look at.
pub struct Context<'a> {
    /// The policy set as both sides got it (placeholders filled in).
    pub yaml: &'a str,
    pub obs: &'a Observation,
}

/// A documented difference where peerguard refuses what Envoy's RBAC (as Istio configures
/// it) lets through, on purpose.
pub struct KnownSafer {
    pub id: &'static str,
    pub reason: &'static str,
    applies: fn(&Context<'_>) -> bool,
}

/// The documented list. Each entry only ever excuses "peerguard denied, the reference
/// allowed"; any other disagreement fails.
pub const KNOWN_SAFER: &[KnownSafer] = &[KnownSafer {
    id: "invalid-policy-fails-closed",
    reason: "An AuthorizationPolicy that Istio's webhook rejects (a bad CIDR or port, an \
             unknown condition key, DENY without rules...) is, when it reaches istiod anyway, \
             translated value by value: what cannot be converted is skipped, an unknown key \
             drops its rule, a DENY without rules never matches. peerguard compiles the whole \
             object fail-closed instead (docs/semantics.md, spec 4.11): an invalid DENY denies \
             everything it selects, an invalid ALLOW allows nothing.",
    applies: |cx| {
        let parsed = peerguard_filter::istio::parse::parse_str(cx.yaml, "set.yaml");
        has_invalid_policy_for(
            &parsed.resources,
            &crate::gen::workload(),
            &crate::gen::mesh_config(),
        )
    },
}];

/// Whether an AuthorizationPolicy peerguard refuses as invalid may apply to the workload
/// (what [`KNOWN_SAFER`] looks for): one in the workload's namespace or the root namespace,
/// whatever its selector says, since an unreadable selector is read fail-closed as selecting
/// the whole namespace.
pub fn has_invalid_policy_for(
    resources: &[peerguard_filter::istio::Resource],
    workload: &peerguard_filter::compile::Workload,
    mesh: &peerguard_filter::compile::MeshConfig,
) -> bool {
    resources.iter().any(|r| match r {
        peerguard_filter::istio::Resource::Invalid(i) if i.kind == "AuthorizationPolicy" => {
            let ns = i.metadata.namespace.as_deref().unwrap_or("default");
            ns == workload.namespace || ns == mesh.root_namespace
        }
        _ => false,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Agree,
    /// Excused by the [`KNOWN_SAFER`] entry with this id.
    Safer(&'static str),
    Disagree,
}

pub fn judge(cx: &Context<'_>) -> Verdict {
    let o = cx.obs;
    if o.peerguard == o.reference {
        return Verdict::Agree;
    }
    if stricter(&o.peerguard, &o.reference) {
        if let Some(k) = KNOWN_SAFER.iter().find(|k| (k.applies)(cx)) {
            return Verdict::Safer(k.id);
        }
    }
    Verdict::Disagree
}

/// [`crate::run::Comparison::Adaptive`]: both sides are peerguard's, nothing is excused.
pub fn judge_exact(cx: &Context<'_>) -> Verdict {
    if cx.obs.peerguard == cx.obs.reference {
        Verdict::Agree
    } else {
        Verdict::Disagree
    }
}

/// peerguard refused where the reference let through, and nothing else differs: for a
/// keep-alive pair, request by request (`Outcome::allowed` of a pair is "any allowed", so
/// `[403, 200]` against `[200, 200]` would otherwise not count as stricter).
fn stricter(peerguard: &Outcome, reference: &Outcome) -> bool {
    match (peerguard, reference) {
        (Outcome::Pipelined(p), Outcome::Pipelined(r)) if p.len() == r.len() => {
            p.iter().zip(r).all(|(a, b)| a == b || stricter(a, b))
        }
        (p, r) => !p.allowed() && r.allowed(),
    }
}

/// A rough class for grouping disagreements in the report (first match wins). Classes
/// name the feature the request and the policies share, which is where to look first.
pub fn classify(cx: &Context<'_>) -> &'static str {
    let o = cx.obs;
    let yaml = cx.yaml.to_ascii_lowercase();
    let text = o.case.payload.text();
    // Each request of the payload (keep-alive pairs hold two): its target and headers.
    let requests: Vec<(&str, Vec<(String, &str)>)> = text
        .split("\r\n\r\n")
        .filter(|h| !h.is_empty())
        .map(|head| {
            let target = head.split(' ').nth(1).unwrap_or("");
            let headers = head
                .split("\r\n")
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim()))
                .collect();
            (target, headers)
        })
        .collect();
    let side_400 = |x: &Outcome| {
        matches!(
            x,
            Outcome::Http {
                status: 400,
                app: false
            }
        )
    };
    if side_400(&o.peerguard) != side_400(&o.reference) {
        return "one side answers 400 (connection manager / request validation)";
    }
    // Features of the request first, then features of the policy set alone.
    if matches!(o.case.payload, Payload::Http(_)) && yaml.contains("request.headers[host]") {
        return "request.headers[host] condition";
    }
    let repeated = requests.iter().any(|(_, headers)| {
        headers.iter().enumerate().any(|(i, (k, _))| {
            headers[i + 1..].iter().any(|(k2, _)| k2 == k)
                && yaml.contains(&format!("request.headers[{k}]"))
        })
    });
    if repeated {
        return "repeated request header named in a condition";
    }
    let brackets = requests
        .iter()
        .any(|(target, _)| target.contains('[') || target.contains(']'));
    if brackets && yaml.contains("{*") {
        return "path template against `[`/`]`";
    }
    if has_leading_zero_prefix(cx.yaml, o.case.source) {
        return "CIDR prefix length with a leading zero";
    }
    if has_star_in_template_literal(cx.yaml) {
        return "`*` in a literal segment of a path template";
    }
    let uses_addresses = [
        "ipblocks",
        "remoteipblocks",
        "source.ip",
        "remote.ip",
        "x-forwarded-for",
    ]
    .iter()
    .any(|k| yaml.contains(k));
    let forwarded = requests
        .iter()
        .any(|(_, headers)| headers.iter().any(|(k, _)| k == "x-forwarded-for"));
    if uses_addresses && forwarded {
        return "x-forwarded-for with address conditions";
    }
    if matches!(o.case.payload, Payload::Tcp) {
        return "TCP connection";
    }
    if PEERS[o.case.peer].is_some_and(|p| p.uri_sans.len() > 1) {
        return "certificate with several URI SANs";
    }
    "unclassified"
}

/// Some quoted value `<address>/0<digit>...` whose block, read as decimal, holds `source`.
fn has_leading_zero_prefix(yaml: &str, source: std::net::Ipv4Addr) -> bool {
    quoted_values(yaml).any(|v| {
        let Some((a, l)) = v.split_once('/') else {
            return false;
        };
        let (Ok(addr), Ok(len)) = (a.parse::<std::net::Ipv4Addr>(), l.parse::<u32>()) else {
            return false;
        };
        let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
        l.len() > 1 && l.starts_with('0') && (u32::from(addr) & mask) == (u32::from(source) & mask)
    })
}

/// Some quoted path template with a `*` outside its `{*}`/`{**}` operators.
fn has_star_in_template_literal(yaml: &str) -> bool {
    quoted_values(yaml).any(|v| {
        (v.contains("{*}") || v.contains("{**}"))
            && v.replace("{**}", "").replace("{*}", "").contains('*')
    })
}

/// The double-quoted strings of a YAML text (the generator quotes every value; case files
/// quote the values that matter here).
fn quoted_values(yaml: &str) -> impl Iterator<Item = &str> {
    yaml.split('"').skip(1).step_by(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn obs(pg: Outcome, rf: Outcome, head: &str) -> Observation {
        Observation {
            origin: Origin::Seed(1),
            index: 0,
            case: Case {
                peer: 0,
                source: Ipv4Addr::LOCALHOST,
                port: 8080,
                payload: Payload::Http(head.as_bytes().to_vec()),
                h2: false,
            },
            peerguard: pg,
            reference: rf,
        }
    }

    #[test]
    fn equal_outcomes_agree_and_any_difference_disagrees() {
        let ok = Outcome::Http {
            status: 200,
            app: true,
        };
        let denied = Outcome::Http {
            status: 403,
            app: false,
        };
        let o = obs(ok.clone(), ok.clone(), "GET / HTTP/1.1\r\n\r\n");
        assert_eq!(judge(&Context { yaml: "", obs: &o }), Verdict::Agree);
        for (a, b) in [(ok.clone(), denied.clone()), (denied, ok)] {
            let o = obs(a, b, "GET / HTTP/1.1\r\n\r\n");
            assert_eq!(judge(&Context { yaml: "", obs: &o }), Verdict::Disagree);
        }
    }

    #[test]
    fn only_a_peerguard_denial_under_an_invalid_policy_is_excused() {
        let invalid = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec: {action: DENY}\n";
        let valid = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec: {action: DENY, rules: [{}]}\n";
        let ok = Outcome::Http {
            status: 200,
            app: true,
        };
        let denied = Outcome::Http {
            status: 403,
            app: false,
        };
        let safer = obs(denied.clone(), ok.clone(), "GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            judge(&Context {
                yaml: invalid,
                obs: &safer
            }),
            Verdict::Safer("invalid-policy-fails-closed")
        );
        assert_eq!(
            judge(&Context {
                yaml: valid,
                obs: &safer
            }),
            Verdict::Disagree
        );
        // A keep-alive pair: peerguard refused the first request only (seed 1387).
        let pair = |a: &Outcome, b: &Outcome| Outcome::Pipelined(vec![a.clone(), b.clone()]);
        let pipelined = obs(
            pair(&denied, &ok),
            pair(&ok, &ok),
            "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        );
        assert_eq!(
            judge(&Context {
                yaml: invalid,
                obs: &pipelined
            }),
            Verdict::Safer("invalid-policy-fails-closed")
        );
        // ...but not when the other request lets through what the reference refused.
        let mixed = obs(
            pair(&denied, &ok),
            pair(&ok, &denied),
            "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        );
        assert_eq!(
            judge(&Context {
                yaml: invalid,
                obs: &mixed
            }),
            Verdict::Disagree
        );
        let wider = obs(ok, denied, "GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            judge(&Context {
                yaml: invalid,
                obs: &wider
            }),
            Verdict::Disagree
        );
    }

    #[test]
    fn value_shapes_are_recognized() {
        let src = std::net::Ipv4Addr::new(127, 20, 0, 1);
        let zero = r#"ipBlocks: ["127.20.0.0/016"]"#;
        assert!(has_leading_zero_prefix(zero, src));
        assert!(!has_leading_zero_prefix(
            zero,
            std::net::Ipv4Addr::LOCALHOST
        ));
        assert!(!has_leading_zero_prefix(
            r#"["127.20.0.0/16", "0.0.0.0/0"]"#,
            src
        ));
        assert!(has_star_in_template_literal(r#"paths: ["/api/{*}/a*b"]"#));
        assert!(!has_star_in_template_literal(
            r#"paths: ["/api/{**}", "/a*"]"#
        ));
    }

    #[test]
    fn repeated_headers_named_in_a_condition_are_classified() {
        let o = obs(
            Outcome::Http {
                status: 200,
                app: true,
            },
            Outcome::Http {
                status: 403,
                app: false,
            },
            "GET / HTTP/1.1\r\nx-role: user\r\nX-Role: admin\r\n\r\n",
        );
        let yaml = "key: \"request.headers[x-role]\"";
        assert_eq!(
            classify(&Context { yaml, obs: &o }),
            "repeated request header named in a condition"
        );
    }
}
