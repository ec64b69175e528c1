//! A fake proxy behind the [`Host`] seam, for native tests of the whole adapter.

use super::seam::{Host, HostError, Level};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

#[derive(Default)]
pub(crate) struct FakeHost {
    pub props: HashMap<String, Vec<u8>>,
    /// A property path whose read fails with a host error.
    pub fail: Option<String>,
    /// Every property read, in order.
    pub reads: RefCell<Vec<String>>,
    /// Every call into the host, in order (`property connection.id`, `increment`, ...):
    /// what a request costs in VM crossings, for the tests that pin the hot path.
    pub calls: RefCell<Vec<String>>,
    pub headers: Vec<(String, String)>,
    pub config: Option<Vec<u8>>,
    pub root_id: String,
    pub logs: RefCell<Vec<(Level, String)>>,
    /// Defined counters by name → id.
    pub counters: RefCell<BTreeMap<String, u32>>,
    /// Counter values by id.
    pub values: RefCell<HashMap<u32, i64>>,
}

impl FakeHost {
    /// The configuration's length, as `on_configure` is given it.
    pub fn config_size(&self) -> usize {
        self.config.as_ref().map_or(0, Vec::len)
    }

    pub fn with(mut self, path: &str, v: impl Into<Vec<u8>>) -> Self {
        self.props.insert(path.to_string(), v.into());
        self
    }

    /// The value of a defined counter (0 when defined and never incremented).
    pub fn counter(&self, name: &str) -> Option<i64> {
        let id = *self.counters.borrow().get(name)?;
        Some(self.values.borrow().get(&id).copied().unwrap_or(0))
    }

    fn call(&self, what: String) {
        self.calls.borrow_mut().push(what);
    }

    /// The host calls made so far, and forgets them (so a test can look at one request).
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.logs.borrow().iter().any(|(_, m)| m.contains(needle))
    }
}

impl Host for FakeHost {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        let key = path.join(".");
        self.reads.borrow_mut().push(key.clone());
        self.call(format!("property {key}"));
        if self.fail.as_deref() == Some(key.as_str()) {
            return Err(HostError {
                path: key,
                status: "InternalFailure".into(),
            });
        }
        Ok(self.props.get(&key).cloned())
    }

    fn request_headers(&self) -> Result<Vec<(String, String)>, String> {
        self.call("request_headers".into());
        Ok(self.headers.clone())
    }

    fn request_header(&self, name: &str) -> Result<String, String> {
        self.call(format!("request_header {name}"));
        Ok(self
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default())
    }

    fn plugin_configuration_part(&self, start: usize, max: usize) -> Result<Vec<u8>, String> {
        self.call(format!("plugin_configuration_part {start}"));
        let all = self.config.as_deref().unwrap_or_default();
        Ok(all
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take(max)
            .copied()
            .collect())
    }

    fn root_id(&self) -> String {
        self.call("root_id".into());
        self.root_id.clone()
    }

    fn log_level(&self) -> Level {
        self.call("log_level".into());
        Level::Debug
    }

    fn log(&self, level: Level, msg: &str) {
        self.call("log".into());
        self.logs.borrow_mut().push((level, msg.to_string()));
    }

    fn define_counter(&self, name: &str) -> Result<u32, String> {
        self.call(format!("define_counter {name}"));
        let mut c = self.counters.borrow_mut();
        let next = u32::try_from(c.len()).map_err(|e| e.to_string())?;
        Ok(*c.entry(name.to_string()).or_insert(next))
    }

    fn increment(&self, id: u32, by: i64) {
        self.call("increment".into());
        *self.values.borrow_mut().entry(id).or_insert(0) += by;
    }
}
