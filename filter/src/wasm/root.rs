//! The root context: configuration lifecycle and the factory of per-stream contexts.

use super::facts::SanCache;
use super::host;
use super::metrics::Metrics;
use super::{http::HttpFilter, stream::TcpFilter};
use crate::decide::Engine;
use crate::schema::WorkloadPolicy;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// What a new stream is checked against. Streams keep the one they started with, so a
/// configuration swap never changes a decision half-way.
#[derive(Clone)]
pub(crate) enum Active {
    Ready(Rc<Engine>),
    /// No valid configuration yet: everything is denied, and this says why.
    DenyAll(Rc<str>),
}

/// State shared by the root and the contexts it creates (all on one VM thread).
pub(crate) struct Shared {
    pub metrics: RefCell<Metrics>,
    pub sans: RefCell<SanCache>,
    /// Cached so a per-request debug line costs nothing when debug is off; refreshed on tick.
    pub log_level: Cell<LogLevel>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Tcp,
}

pub(crate) struct Root {
    shared: Rc<Shared>,
    active: Active,
    kind: Option<Kind>,
}

/// Root ids ending in `tcp` (`peerguard_tcp`) are network filters; anything else is HTTP.
fn kind_of(root_id: &str) -> Kind {
    if root_id.ends_with("tcp") {
        Kind::Tcp
    } else {
        Kind::Http
    }
}

impl Root {
    pub fn new() -> Self {
        Root {
            shared: Rc::new(Shared {
                metrics: RefCell::new(Metrics::default()),
                sans: RefCell::new(SanCache::default()),
                log_level: Cell::new(LogLevel::Info),
            }),
            active: Active::DenyAll("no configuration received yet".into()),
            kind: None,
        }
    }

    fn kind(&mut self) -> Kind {
        if let Some(k) = self.kind {
            return k;
        }
        let k = kind_of(&host::root_id());
        self.kind = Some(k);
        k
    }

    fn log(&self, level: LogLevel, msg: &str) {
        host::log(level, msg);
    }

    /// Parse and index a configuration. Nothing of this happens per request.
    fn load(bytes: &[u8]) -> Result<(Engine, WorkloadPolicy), String> {
        let policy: WorkloadPolicy = serde_json::from_slice(bytes)
            .map_err(|e| format!("configuration is not a valid WorkloadPolicy JSON: {e}"))?;
        let engine =
            Engine::new(policy.clone()).map_err(|e| format!("configuration rejected: {e}"))?;
        Ok((engine, policy))
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        self.shared.log_level.set(host::log_level());
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let kind = self.kind();
        self.shared.log_level.set(host::log_level());
        {
            let mut m = self.shared.metrics.borrow_mut();
            if m.is_empty() {
                *m = Metrics::base();
            }
        }
        // Keeps the debug-line gate in step with runtime log-level changes.
        let _ = proxy_wasm::hostcalls::set_tick_period(Duration::from_secs(5));
        let bytes = match host::plugin_configuration() {
            Ok(b) => b,
            Err(why) => {
                self.log(LogLevel::Error, &format!("{why}; rejecting"));
                return false;
            }
        };
        let bytes = match bytes.filter(|b| !b.iter().all(u8::is_ascii_whitespace)) {
            Some(b) => b,
            None => {
                // Fail closed but start: a listener without policy denies everything.
                let why = "no configuration (empty plugin configuration): denying every request";
                self.log(LogLevel::Warn, why);
                self.active = Active::DenyAll(why.into());
                return true;
            }
        };
        match Self::load(&bytes) {
            Ok((engine, policy)) => {
                self.shared.metrics.borrow_mut().define_policies(&policy);
                self.log(
                    LogLevel::Info,
                    &format!(
                        "configured {} filter for workload {}/{}: {} policies, default mTLS {:?}, {} port overrides",
                        if kind == Kind::Tcp { "network" } else { "HTTP" },
                        policy.workload.namespace,
                        policy.workload.name,
                        policy.policies.len(),
                        policy.mtls.default.mode,
                        policy.mtls.ports.len(),
                    ),
                );
                for d in &policy.diagnostics {
                    self.log(LogLevel::Warn, &format!("compile diagnostic: {d}"));
                }
                self.active = Active::Ready(Rc::new(engine));
                true
            }
            Err(why) => {
                let keeps = match self.active {
                    Active::Ready(_) => "the previous configuration stays in force",
                    Active::DenyAll(_) => "every request stays denied",
                };
                self.log(LogLevel::Error, &format!("{why}; rejecting it ({keeps})"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.shared.log_level.set(host::log_level());
    }

    fn get_type(&self) -> Option<ContextType> {
        let kind = self.kind.unwrap_or_else(|| kind_of(&host::root_id()));
        Some(match kind {
            Kind::Http => ContextType::HttpContext,
            Kind::Tcp => ContextType::StreamContext,
        })
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpFilter::new(
            self.shared.clone(),
            self.active.clone(),
        )))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(TcpFilter::new(
            self.shared.clone(),
            self.active.clone(),
        )))
    }
}
