//! Where resources come from. A [`Source`] emits complete [`Inputs`] (a resync) whenever
//! what it watches changes; the server recompiles from them. The directory source is in
//! [`dir`]; the Kubernetes source in [`kube`] (its watchers turn `Init..InitDone` into one
//! resync and later events into debounced resyncs).

mod dedupe;
pub mod dir;
pub mod kube;
pub mod loader;
pub mod walk;
mod watch;

use crate::registry::Registry;
use peerguard_filter::istio::parse::YamlCost;
use peerguard_filter::istio::Resource;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Everything a source currently knows.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Istio resources, including `Resource::Invalid` ones (compiled fail-closed).
    pub resources: Vec<Resource>,
    pub registry: Registry,
    /// Parse and registry errors, `file: kind ns/name: field: message`.
    pub errors: Vec<String>,
    /// Objects of kinds nobody handles.
    pub skipped: Vec<String>,
    /// Files that could not be read completely (a syntax error, a document without a readable
    /// kind, an I/O error, a budget exceeded): what they hold is unknown, so they are
    /// fail-closed (see [`Unreadable`]).
    pub unreadable: Vec<Unreadable>,
    /// Files not read this time because they are being written, one line each: their last
    /// content read stands in (a new file is left out until it is complete).
    pub pending: Vec<String>,
    /// Set when the source itself is gone (the config directory missing): the last content
    /// read from it is served, and the server is not ready.
    pub source_missing: Option<String>,
    /// What the files read expanded to, against the source's total budget.
    pub cost: YamlCost,
}

/// A file whose content is (partly) unknown. Its errors have no `Resource::Invalid` to
/// compile fail-closed: a DENY policy with a YAML syntax error would otherwise just vanish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub file: String,
    /// The errors that made it unreadable.
    pub errors: Vec<String>,
    pub fallback: Fallback,
}

/// What stands in for an [`Unreadable`] file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Its last fully read content.
    LastGood,
    /// Nothing, and no policy update may be published (see [`Inputs::hold_policy`]): it was
    /// never read successfully.
    Hold,
    /// Nothing: it is not a regular file (a FIFO, a socket, a device) and never was one, so
    /// it holds no configuration to be unknown.
    Nothing,
}

impl Inputs {
    /// Whether policy (ECDS) updates must be held: some file was never read successfully, so
    /// what it holds, even which namespace, is unknown. A root-namespace DENY in it would
    /// apply to every workload, and a policy moved into it from another file would otherwise
    /// disappear, so no node gets a policy computed without it. Certificates keep flowing.
    pub fn hold_policy(&self) -> bool {
        self.unreadable.iter().any(|u| u.fallback == Fallback::Hold)
    }

    /// One line per unreadable file, for logs and `/readyz`.
    pub fn unreadable_summary(&self) -> Vec<String> {
        self.unreadable
            .iter()
            .map(|u| {
                let what = match u.fallback {
                    Fallback::LastGood => "serving its last successfully read content",
                    Fallback::Hold => {
                        "never read successfully: policy updates are held for every workload"
                    }
                    Fallback::Nothing => "ignored",
                };
                format!("{}: unreadable ({}); {what}", u.file, u.errors.join("; "))
            })
            .collect()
    }
}

/// A provider of [`Inputs`].
pub trait Source: Send + 'static {
    /// For logs, e.g. `directory /etc/peerguard`.
    fn describe(&self) -> String;
    /// Runs until `out` is closed, sending a full [`Inputs`] first and again after every
    /// change (debounced).
    fn run(self: Box<Self>, out: mpsc::Sender<Arc<Inputs>>) -> tokio::task::JoinHandle<()>;
}
