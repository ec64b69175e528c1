//! One check: facts → `Request` → `Decision` → what to do, with its log line and counters.

use super::config::{Active, Shared};
use super::decision_log;
use super::facts::{self, ConnFacts, FactsError, Needs};
use super::seam::{enabled, Host, Level};
use crate::readiness::{self, Series, Tls};
use crate::schema::{
    Decision, DecisionLine, HttpRequest, MtlsMode, Reason, Request, ShadowResult, WorkloadPolicy,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// An authorization denial: HTTP 403 / closed TCP connection.
    Deny,
    /// A transport-level refusal (mTLS mode, untrusted peer): Istio closes these before any
    /// HTTP exchange, so HTTP resets the stream rather than answering.
    Refuse,
}

/// What is being checked: an HTTP request (its part read from the host as the
/// configuration needs it) or a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Http,
    Tcp,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Tcp => "tcp",
        }
    }
}

pub(crate) fn check(host: &impl Host, shared: &Shared, active: &Active, kind: Kind) -> Verdict {
    let word = kind.word();
    let (engine, needs) = match active {
        Active::Ready(e, n) => (e, n),
        Active::DenyAll(why) => {
            shared.metrics.borrow().record_denied(host);
            log(host, shared, Level::Info, &format!("deny {word}: {why}"));
            return Verdict::Deny;
        }
    };
    // A sampled decision reads every connection attribute and the request line, so its
    // decision log line can be replayed against another configuration; the extra reads
    // cannot change this decision (no rule of this configuration looks at them).
    let sampled = decision_log::sampled(shared, engine.policy());
    let wide;
    let needs = if sampled {
        wide = decision_log::needs(needs);
        &wide
    } else {
        needs
    };
    let (conn, fresh): (ConnFacts, bool) = match conn_facts(host, shared, kind == Kind::Http, needs)
    {
        Ok(c) => c,
        Err(e) => {
            shared.metrics.borrow().record_denied(host);
            log(
                host,
                shared,
                Level::Warn,
                &format!("deny {word}: cannot read the connection: {e}"),
            );
            return Verdict::Deny;
        }
    };
    if let Some(why) = &conn.cert_problem {
        log(
            host,
            shared,
            Level::Warn,
            &format!("peer certificate unusable, treating the peer as having no URI SAN: {why}"),
        );
    }
    // Read only when the engine will run (not in deny-all), so a denied request costs no
    // header copy; it reads what the configuration can use.
    let http: Option<HttpRequest> = match kind {
        Kind::Tcp => None,
        Kind::Http => match facts::read_http(host, *needs) {
            Ok(h) => Some(h),
            Err(why) => {
                shared.metrics.borrow().record_denied(host);
                log(host, shared, Level::Warn, &format!("deny {word}: {why}"));
                return Verdict::Deny;
            }
        },
    };
    let request = conn.into_request(http);
    let d = engine.decide(&request);
    shared.metrics.borrow().record(host, &d);
    // Once per connection: TCP checks once; HTTP reads a connection's facts fresh only on
    // its first request (later ones hit the connection cache).
    if fresh {
        per_connection(host, shared, engine.policy(), &request, &d);
    }
    if enabled(shared.log_level.get(), Level::Debug) {
        let peer = match &request.peer {
            None => "plaintext".to_string(),
            Some(p) if p.uri_sans.is_empty() => "mTLS (no URI SAN)".to_string(),
            Some(p) => p.uri_sans.join(","),
        };
        let what = match &request.http {
            // Not read when no policy names them (`Needs::request_line`).
            Some(h) if h.method.is_empty() && h.path.is_empty() => "request".to_string(),
            Some(h) => format!("{} {} host {}", h.method, h.path, h.host),
            None => "connection".to_string(),
        };
        let source = request
            .source_ip
            .map(|i| i.to_string())
            .unwrap_or_else(|| "?".into());
        let verb = if d.allowed { "allow" } else { "deny" };
        let line = format!(
            "{verb} {word} {what} port {} from {source} peer {peer}: {}",
            request.port, d.reason
        );
        log(host, shared, Level::Debug, &line);
        if let Some(a) = &d.audit {
            log(
                host,
                shared,
                Level::Debug,
                &format!("audit: matched policy {a}"),
            );
        }
    }
    log_shadows(host, shared, &d);
    if sampled {
        let version = match kind {
            Kind::Http => decision_log::http_version(host),
            Kind::Tcp => None,
        };
        let line = DecisionLine::new(engine.policy(), &request, &d, version);
        log(host, shared, Level::Info, &line.render());
    }
    if d.allowed {
        Verdict::Allow
    } else {
        match d.reason {
            Reason::PlaintextRefused | Reason::MtlsRefused | Reason::UntrustedPeer { .. } => {
                Verdict::Refuse
            }
            _ => Verdict::Deny,
        }
    }
}

/// The STRICT-readiness counters and the dry-run STRICT would-be refusal of one new
/// connection (`crate::readiness`). Only ports enforced as PERMISSIVE (PERMISSIVE, or a
/// dry-run STRICT) are counted: the others accept one transport only.
fn per_connection(
    host: &impl Host,
    shared: &Shared,
    policy: &WorkloadPolicy,
    request: &Request,
    d: &Decision,
) {
    if policy.mtls.for_port(request.port).enforced() != MtlsMode::Permissive {
        return;
    }
    let (tls, source) = match &request.peer {
        None => (
            Tls::Plaintext,
            request
                .source_ip
                .or_else(|| facts::source_ip(host))
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| readiness::OTHER.to_string()),
        ),
        Some(p) => (
            Tls::Mtls,
            p.uri_sans
                .iter()
                .find_map(|s| crate::identity::strip_spiffe(s))
                .or(p.uri_sans.first().map(String::as_str))
                .unwrap_or(readiness::OTHER)
                .to_string(),
        ),
    };
    if let Some(by) = &d.dry_run.strict_refused {
        shared.metrics.borrow().record_dry_run_refused(host);
        // The source address (with its port) is read for the line only when it is printed.
        if enabled(shared.log_level.get(), Level::Info) {
            log(
                host,
                shared,
                Level::Info,
                &format!(
                    "dry-run STRICT: would refuse plaintext connection from {} to port {} (STRICT set by {by}, annotation {}); accepted as PERMISSIVE",
                    facts::source_address(host).unwrap_or_else(|| source.clone()),
                    request.port,
                    readiness::MTLS_DRY_RUN_ANNOTATION,
                ),
            );
        }
    }
    shared.metrics.borrow().record_connection(
        host,
        Series {
            port: request.port,
            tls,
            source,
        },
    );
}

/// The facts of this request's connection, and whether they were read fresh (`false`: a
/// later request of a keep-alive connection). HTTP requests of a keep-alive connection share
/// them through the connection cache (one `connection.id` read instead of every attribute);
/// a connection without a readable id is read in full each time, never guessed.
fn conn_facts(
    host: &impl Host,
    shared: &Shared,
    cached: bool,
    needs: &Needs,
) -> Result<(ConnFacts, bool), FactsError> {
    let id = if cached {
        facts::connection_id(host)
    } else {
        None
    };
    // Fresh means a connection not seen before: one read again because this request needs
    // more of it (a sampled decision) is the same connection.
    let mut known = false;
    if let Some(id) = id {
        let conns = shared.conns.borrow();
        if let Some(hit) = conns.get(id, needs) {
            return Ok((hit.clone(), false));
        }
        known = conns.knows(id);
    }
    let read = {
        let mut sans = shared.sans.borrow_mut();
        facts::read_conn(host, &mut sans, needs)?
    };
    if let Some(id) = id {
        shared.conns.borrow_mut().put(id, *needs, read.clone());
    }
    Ok((read, !known))
}

/// Dry-run outcomes are logged at info (Istio: "shadow denied, matched policy ...").
fn log_shadows(host: &impl Host, shared: &Shared, d: &Decision) {
    let stages = [
        ("DENY", d.dry_run.deny, &d.dry_run.deny_matched),
        ("ALLOW", d.dry_run.allow, &d.dry_run.allow_matched),
    ];
    for (stage, result, matched) in stages {
        let Some(result) = result else { continue };
        let outcome = match result {
            ShadowResult::Denied => "shadow denied",
            ShadowResult::Allowed => "shadow allowed",
        };
        let msg = match matched {
            Some(m) => format!("{outcome}, matched policy {m} (dry-run {stage})"),
            None => format!("{outcome}, no dry-run {stage} policy matched"),
        };
        log(host, shared, Level::Info, &msg);
    }
}

/// Envoy prefixes "wasm log <root_id> <vm_id>:", which names the filter.
fn log(host: &impl Host, shared: &Shared, level: Level, msg: &str) {
    if enabled(shared.log_level.get(), level) {
        host.log(level, msg);
    }
}
