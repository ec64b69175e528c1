//! The network filter context: one per connection.
//!
//! A plaintext connection is decided at `on_new_connection`, before `tcp_proxy` (the next
//! filter) opens the upstream connection: under STRICT Istio has no plaintext filter chain
//! at all, so a plaintext client must never reach the app — not even to read the greeting
//! of a server-first protocol (SMTP, MySQL). Returning `Pause` there stops the filter
//! chain, so `tcp_proxy` never connects.
//!
//! A TLS connection is decided on its first downstream bytes, as Envoy's network RBAC
//! does: at `on_new_connection` the handshake has not finished, so the peer certificate is
//! not known yet. There, as with Istio's RBAC, the upstream connection exists before the
//! decision, and a server-first app's greeting can reach a TLS client that authorization
//! then denies.

use super::check::{check, Kind, Verdict};
use super::config::{Active, Shared};
use super::host::{self, WasmHost};
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Undecided,
    Allowed,
    Denied,
}

pub(crate) struct TcpFilter {
    shared: Rc<Shared>,
    active: Active,
    state: State,
}

impl TcpFilter {
    pub fn new(shared: Rc<Shared>, active: Active) -> Self {
        TcpFilter {
            shared,
            active,
            state: State::Undecided,
        }
    }
}

impl Context for TcpFilter {}

impl TcpFilter {
    fn decide(&mut self) -> Action {
        let verdict = check(&WasmHost, &self.shared, &self.active, Kind::Tcp);
        match verdict {
            Verdict::Allow => {
                self.state = State::Allowed;
                Action::Continue
            }
            Verdict::Deny | Verdict::Refuse => {
                self.state = State::Denied;
                host::close_downstream();
                Action::Pause
            }
        }
    }
}

impl StreamContext for TcpFilter {
    fn on_new_connection(&mut self) -> Action {
        // `connection.tls_version` exists (possibly empty) on every TLS connection, from
        // accept on, and never on a plaintext one. A host error counts as TLS: the
        // connection is then decided on its first bytes, as before, never let through.
        match host::is_plaintext() {
            true => self.decide(),
            false => Action::Continue,
        }
    }

    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        match self.state {
            State::Allowed => Action::Continue,
            State::Denied => Action::Pause,
            State::Undecided => self.decide(),
        }
    }
}
