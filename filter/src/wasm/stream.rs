//! The network filter context: one per connection. Decides on the first downstream bytes,
//! as Envoy's network RBAC does: at `on_new_connection` the TLS handshake may not be done,
//! so the peer certificate may not be known yet. (Server-first protocols send before any
//! decision; the same holds for Envoy's RBAC.)

use super::check::{check, Verdict};
use super::host;
use super::root::{Active, Shared};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, LogLevel};
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

impl StreamContext for TcpFilter {
    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        match self.state {
            State::Allowed => return Action::Continue,
            State::Denied => return Action::Pause,
            State::Undecided => {}
        }
        let verdict = check(&self.shared, &self.active, "tcp", |_| Err("tcp".into()));
        match verdict {
            Verdict::Allow => {
                self.state = State::Allowed;
                Action::Continue
            }
            Verdict::Deny | Verdict::Refuse => {
                self.state = State::Denied;
                if let Err(s) = hostcalls::close_downstream() {
                    host::log(
                        LogLevel::Error,
                        &format!("peerguard: close_downstream failed: {s:?}"),
                    );
                }
                Action::Pause
            }
        }
    }
}
