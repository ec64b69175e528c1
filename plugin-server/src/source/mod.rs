//! Where resources come from. A [`Source`] emits complete [`Inputs`] (a resync) whenever
//! what it watches changes; the server recompiles from them. The directory source is in
//! [`dir`]; a Kubernetes source plugs in later behind the same trait (its watchers turn
//! `Init..InitDone` into one resync and later events into debounced resyncs).

pub mod dir;

use crate::registry::Registry;
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
}

/// A provider of [`Inputs`].
pub trait Source: Send + 'static {
    /// For logs, e.g. `directory /etc/peerguard`.
    fn describe(&self) -> String;
    /// Runs until `out` is closed, sending a full [`Inputs`] first and again after every
    /// change (debounced).
    fn run(self: Box<Self>, out: mpsc::Sender<Arc<Inputs>>) -> tokio::task::JoinHandle<()>;
}
