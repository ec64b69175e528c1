//! The HTTP filter context: one per request.

use super::check::{check, Verdict};
use super::host;
use super::root::{Active, Shared};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use std::rc::Rc;

pub(crate) struct HttpFilter {
    shared: Rc<Shared>,
    active: Active,
}

impl HttpFilter {
    pub fn new(shared: Rc<Shared>, active: Active) -> Self {
        HttpFilter { shared, active }
    }
}

impl Context for HttpFilter {}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let verdict = check(&self.shared, &self.active, "http", host::http_request);
        match verdict {
            Verdict::Allow => Action::Continue,
            Verdict::Deny => {
                if let Err(s) =
                    hostcalls::send_http_response(403, vec![], Some(b"RBAC: access denied"))
                {
                    host::log(
                        LogLevel::Error,
                        &format!("peerguard: 403 not sent ({s:?}); resetting"),
                    );
                    let _ = hostcalls::reset_http_request();
                }
                Action::Pause
            }
            Verdict::Refuse => {
                if let Err(s) = hostcalls::reset_http_request() {
                    host::log(
                        LogLevel::Error,
                        &format!("peerguard: reset failed ({s:?}); answering 403"),
                    );
                    let _ =
                        hostcalls::send_http_response(403, vec![], Some(b"RBAC: access denied"));
                }
                Action::Pause
            }
        }
    }
}
