//! TCP versus HTTP (spec 4.10). On a TCP connection HTTP-only attributes cannot be
//! evaluated: ALLOW rules that use one are dropped, DENY/AUDIT/CUSTOM rules lose those
//! fields (and may become wider: an emptied entry matches anything). Done once, in
//! `Engine::new`.

use crate::schema::{Action, Condition, Field, Operation, Rule, Source};

fn is_http_only(c: &Condition) -> bool {
    matches!(
        c,
        Condition::RequestHeader { .. } | Condition::RequestAuth { .. }
    )
}

fn source_uses_http(s: &Source) -> bool {
    !s.request_principals.is_empty()
}

fn operation_uses_http(o: &Operation) -> bool {
    !o.hosts.is_empty() || !o.methods.is_empty() || !o.paths.is_empty()
}

/// Whether a rule mentions any HTTP-only attribute, positive or negative.
pub(crate) fn uses_http(r: &Rule) -> bool {
    r.from.iter().flatten().any(source_uses_http)
        || r.to.iter().flatten().any(operation_uses_http)
        || r.when.iter().any(is_http_only)
}

/// A rule as the network (TCP) RBAC filter sees it.
pub(crate) enum Variant {
    /// The rule uses no HTTP-only attribute: the same rule (not copied).
    Same,
    /// An ALLOW rule that needs HTTP: dropped.
    Dropped,
    /// A DENY/AUDIT/CUSTOM rule without its HTTP-only fields.
    Narrowed(Rule),
}

/// The rule as the network (TCP) RBAC filter sees it.
pub(crate) fn tcp_variant(action: Action, r: &Rule) -> Variant {
    if !uses_http(r) {
        return Variant::Same;
    }
    match action {
        Action::Allow => Variant::Dropped,
        Action::Deny | Action::Audit | Action::Custom => Variant::Narrowed(Rule {
            from: r.from.as_ref().map(|f| {
                f.iter()
                    .map(|s| Source {
                        request_principals: Field::default(),
                        ..s.clone()
                    })
                    .collect()
            }),
            to: r.to.as_ref().map(|t| {
                t.iter()
                    .map(|o| Operation {
                        hosts: Field::default(),
                        methods: Field::default(),
                        paths: Field::default(),
                        ..o.clone()
                    })
                    .collect()
            }),
            when: r
                .when
                .iter()
                .filter(|c| !is_http_only(c))
                .cloned()
                .collect(),
        }),
    }
}
