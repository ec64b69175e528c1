//! The configuration lifecycle of one root context: configuration bytes → an [`Active`]
//! engine (or deny-all), shared by the roots of the VM that carry the same bytes.

use super::check::Kind;
use super::config_text::{self, ConfigKey, ConfigText, Scan};
use super::der::SanCache;
use super::facts::{ConnCache, Needs};
use super::metrics::Metrics;
use super::seam::{Host, Level};
use crate::decide::Engine;
use crate::schema::WorkloadPolicy;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

/// What a new stream is checked against. Streams keep the one they started with, so a
/// configuration swap never changes a decision half-way.
#[derive(Clone)]
pub(crate) enum Active {
    /// The engine, and which optional attributes its policies can look at.
    Ready(Rc<Engine>, Needs),
    /// No valid configuration yet: everything is denied, and this says why.
    DenyAll(Rc<str>),
}

/// State shared by the root and the contexts it creates (all on one VM thread).
pub(crate) struct Shared {
    /// One per VM (see [`vm_metrics`]): every root defines the same counters.
    pub metrics: Rc<RefCell<Metrics>>,
    pub sans: RefCell<SanCache>,
    /// Connection facts by `connection.id`, for the HTTP filter's keep-alive requests.
    pub conns: RefCell<ConnCache>,
    /// Cached so a per-request debug line costs nothing when debug is off; refreshed on tick.
    pub log_level: Cell<Level>,
    /// Decisions taken by this root's streams, for the decision log's counter-based sampling.
    pub decisions: Cell<u64>,
}

/// Root ids ending in `tcp` (`peerguard_tcp`) are network filters; anything else is HTTP.
pub(crate) fn kind_of(root_id: &str) -> Kind {
    if root_id.ends_with("tcp") {
        Kind::Tcp
    } else {
        Kind::Http
    }
}

thread_local! {
    /// Engines alive in this VM by configuration: the HTTP and the network filter of a
    /// listener usually carry the same policy, and one engine (the indexes of 10,000
    /// policies are megabytes) serves both. Weak: an engine lives as long as a root or an
    /// in-flight stream holds it.
    static ENGINES: RefCell<Vec<(ConfigKey, Weak<Engine>)>> = const { RefCell::new(Vec::new()) };
    /// The counters are the same Envoy metrics for every root of the VM; their per-policy
    /// name tables are kept once.
    static METRICS: Rc<RefCell<Metrics>> = Rc::new(RefCell::new(Metrics::default()));
}

fn vm_metrics() -> Rc<RefCell<Metrics>> {
    METRICS.with(Rc::clone)
}

/// Parse and index a configuration. Nothing of this happens per request. The text is
/// parsed as it is read (`config_text`), never held whole.
fn load(text: &ConfigText<impl Host>) -> Result<Engine, String> {
    let reader = std::io::BufReader::with_capacity(config_text::PIECE, text.reader());
    let policy: WorkloadPolicy = serde_json::from_reader(reader)
        .map_err(|e| format!("configuration is not a valid WorkloadPolicy JSON: {e}"))?;
    Engine::new(policy).map_err(|e| format!("configuration rejected: {e}"))
}

/// The engine for this configuration: a live one of another root, or a new one.
fn shared_engine(key: ConfigKey, text: &ConfigText<impl Host>) -> Result<Rc<Engine>, String> {
    let live = ENGINES.with(|e| {
        let mut e = e.borrow_mut();
        e.retain(|(_, w)| w.strong_count() > 0);
        e.iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
    });
    if let Some(engine) = live {
        return Ok(engine);
    }
    let engine = Rc::new(load(text)?);
    ENGINES.with(|e| e.borrow_mut().push((key, Rc::downgrade(&engine))));
    Ok(engine)
}

/// One root context's state, host-independent.
pub(crate) struct Lifecycle {
    pub shared: Rc<Shared>,
    pub active: Active,
    kind: Option<Kind>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            shared: Rc::new(Shared {
                metrics: vm_metrics(),
                sans: RefCell::new(SanCache::default()),
                conns: RefCell::new(ConnCache::default()),
                log_level: Cell::new(Level::Info),
                decisions: Cell::new(0),
            }),
            active: Active::DenyAll("no configuration received yet".into()),
            kind: None,
        }
    }
}

impl Lifecycle {
    pub fn cached_kind(&self) -> Option<Kind> {
        self.kind
    }

    pub fn kind(&mut self, host: &impl Host) -> Kind {
        *self.kind.get_or_insert_with(|| kind_of(&host.root_id()))
    }

    pub fn start(&self, host: &impl Host) {
        self.shared.log_level.set(host.log_level());
    }

    /// `on_configure`: `false` rejects the configuration (Envoy refuses it at start, NACKs
    /// it on an update), and the previous state stays in force.
    /// `size`: the configuration's length in bytes, as `on_configure` gives it.
    pub fn configure(&mut self, host: &impl Host, size: usize) -> bool {
        let kind = self.kind(host);
        self.shared.log_level.set(host.log_level());
        {
            let mut m = self.shared.metrics.borrow_mut();
            if m.is_empty() {
                *m = Metrics::base(host);
            }
        }
        let text = ConfigText::new(host, size);
        let key = match text.scan() {
            Ok(Scan::Text(key)) => key,
            Err(why) => {
                host.log(Level::Error, &format!("{why}; rejecting"));
                return false;
            }
            Ok(Scan::Empty) => {
                // Fail closed but start: a listener without policy denies everything.
                let why = "no configuration (empty plugin configuration): denying every request";
                host.log(Level::Warn, why);
                self.active = Active::DenyAll(why.into());
                return true;
            }
        };
        // Facts cached under the previous configuration are not reused under this one
        // (they are still correct, but may lack an attribute only the new one needs).
        self.shared.conns.borrow_mut().clear();
        match shared_engine(key, &text) {
            Ok(engine) => {
                let policy = engine.policy();
                let needs = Needs::of(policy);
                self.shared
                    .metrics
                    .borrow_mut()
                    .define_policies(host, policy);
                host.log(
                    Level::Info,
                    &format!(
                        "configured {} filter for workload {}/{}: {} policies, default mTLS {:?}, {} port overrides, reads {needs:?}",
                        if kind == Kind::Tcp { "network" } else { "HTTP" },
                        policy.workload.namespace,
                        policy.workload.name,
                        policy.policies.len(),
                        policy.mtls.default.mode,
                        policy.mtls.ports.len(),
                    ),
                );
                for d in &policy.diagnostics {
                    host.log(Level::Warn, &format!("compile diagnostic: {d}"));
                }
                self.active = Active::Ready(engine, needs);
                true
            }
            Err(why) => {
                let keeps = match self.active {
                    Active::Ready(..) => "the previous configuration stays in force",
                    Active::DenyAll(_) => "every request stays denied",
                };
                host.log(Level::Error, &format!("{why}; rejecting it ({keeps})"));
                false
            }
        }
    }

    /// The root's 1 s tick: keeps the debug-line gate in step with runtime log-level
    /// changes, and flushes the allow counters (see `Metrics::flush`).
    pub fn tick(&self, host: &impl Host) {
        self.shared.log_level.set(host.log_level());
        self.shared.metrics.borrow().flush(host);
    }
}
