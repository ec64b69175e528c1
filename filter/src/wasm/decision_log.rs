//! The filter's side of the decision log (the line format is `schema::DecisionLine`):
//! which decisions are sampled, and what a sampled decision reads beyond its policy's needs.

use super::config::Shared;
use super::facts::Needs;
use super::seam::Host;
use crate::schema::{HttpVersion, WorkloadPolicy};

/// Counts this decision and says whether it gets a line (never when the log is off).
pub(crate) fn sampled(shared: &Shared, policy: &WorkloadPolicy) -> bool {
    let Some(log) = policy.decision_log else {
        return false;
    };
    let n = shared.decisions.get();
    shared.decisions.set(n.wrapping_add(1));
    log.sampled(n)
}

/// Every connection attribute and the request line: a replay against another configuration
/// may look at any of them. Headers stay as the configuration needs them (only those its
/// policies read are logged: see `schema::decision_log`).
pub(crate) fn needs(n: &Needs) -> Needs {
    Needs {
        source_ip: true,
        destination_ip: true,
        sni: true,
        request_line: true,
        headers: n.headers,
    }
}

/// `request.protocol` (`HTTP/1.1`, `HTTP/2`); `None` when unreadable or another version
/// (HTTP/1.0, HTTP/3): the version only matters for what the codec accepts.
pub(crate) fn http_version(host: &impl Host) -> Option<HttpVersion> {
    let b = host.property(&["request", "protocol"]).ok()??;
    match b.as_slice() {
        b"HTTP/1.1" => Some(HttpVersion::Http11),
        b"HTTP/2" => Some(HttpVersion::Http2),
        _ => None,
    }
}
