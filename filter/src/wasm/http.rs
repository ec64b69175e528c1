//! The HTTP filter context: one per request.

use super::check::{check, Kind, Verdict};
use super::config::{Active, Shared};
use super::host::{self, WasmHost};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
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
        match check(&WasmHost, &self.shared, &self.active, Kind::Http) {
            Verdict::Allow => Action::Continue,
            Verdict::Deny => {
                host::deny_http();
                Action::Pause
            }
            Verdict::Refuse => {
                host::refuse_http();
                Action::Pause
            }
        }
    }
}
