//! One check: facts → `Request` → `Decision` → what to do, with its log line and counters.

use super::facts::{self, ConnFacts, FactsError, Needs};
use super::host::{self, WasmHost};
use super::root::{Active, Shared};
use crate::schema::{Decision, HttpRequest, Reason, ShadowResult};
use proxy_wasm::types::LogLevel;

pub(crate) enum Verdict {
    Allow,
    /// An authorization denial: HTTP 403 / closed TCP connection.
    Deny,
    /// A transport-level refusal (mTLS mode, untrusted peer): Istio closes these before any
    /// HTTP exchange, so HTTP resets the stream rather than answering.
    Refuse,
}

/// `http` is only called when the engine will run (not in deny-all), so a denied request
/// costs no header copy; it reads what its argument says the configuration can use.
pub(crate) fn check(
    shared: &Shared,
    active: &Active,
    kind: &str,
    http: impl FnOnce(Needs) -> Result<HttpRequest, String>,
) -> Verdict {
    let level = shared.log_level.get();
    let (engine, needs) = match active {
        Active::Ready(e, n) => (e, n),
        Active::DenyAll(why) => {
            shared.metrics.borrow().record_denied();
            log(shared, LogLevel::Info, &format!("deny {kind}: {why}"));
            return Verdict::Deny;
        }
    };
    let conn = conn_facts(shared, kind == "http", needs);
    let conn: ConnFacts = match conn {
        Ok(c) => c,
        Err(e) => {
            shared.metrics.borrow().record_denied();
            log(
                shared,
                LogLevel::Warn,
                &format!("deny {kind}: cannot read the connection: {e}"),
            );
            return Verdict::Deny;
        }
    };
    if let Some(why) = &conn.cert_problem {
        log(
            shared,
            LogLevel::Warn,
            &format!("peer certificate unusable, treating the peer as having no URI SAN: {why}"),
        );
    }
    let http = match http(*needs) {
        Ok(h) => Some(h),
        Err(why) if kind == "http" => {
            shared.metrics.borrow().record_denied();
            log(shared, LogLevel::Warn, &format!("deny {kind}: {why}"));
            return Verdict::Deny;
        }
        Err(_) => None,
    };
    let request = conn.into_request(http);
    let d = engine.decide(&request);
    shared.metrics.borrow().record(&d);
    if host::enabled(level, LogLevel::Debug) {
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
        log(
            shared,
            LogLevel::Debug,
            &format!(
                "{} {kind} {what} port {} from {} peer {peer}: {}",
                if d.allowed { "allow" } else { "deny" },
                request.port,
                request
                    .source_ip
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "?".into()),
                &d.reason,
            ),
        );
        if let Some(a) = &d.audit {
            log(
                shared,
                LogLevel::Debug,
                &format!("audit: matched policy {a}"),
            );
        }
    }
    log_shadows(shared, &d);
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

/// The facts of this request's connection. HTTP requests of a keep-alive connection share
/// them through the connection cache (one `connection.id` read instead of every attribute);
/// a connection without a readable id is read in full each time, never guessed.
fn conn_facts(shared: &Shared, cached: bool, needs: &Needs) -> Result<ConnFacts, FactsError> {
    let id = if cached {
        facts::connection_id(&WasmHost)
    } else {
        None
    };
    if let Some(id) = id {
        if let Some(hit) = shared.conns.borrow().get(id, needs) {
            return Ok(hit.clone());
        }
    }
    let read = {
        let mut sans = shared.sans.borrow_mut();
        facts::read_conn(&WasmHost, &mut sans, needs)?
    };
    if let Some(id) = id {
        shared.conns.borrow_mut().put(id, *needs, read.clone());
    }
    Ok(read)
}

/// Dry-run outcomes are logged at info (Istio: "shadow denied, matched policy ...").
fn log_shadows(shared: &Shared, d: &Decision) {
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
        log(shared, LogLevel::Info, &msg);
    }
}


fn log(shared: &Shared, level: LogLevel, msg: &str) {
    if host::enabled(shared.log_level.get(), level) {
        // Envoy prefixes "wasm log <root_id> <vm_id>:", which names the filter.
        host::log(level, msg);
    }
}
