//! Conformance scenario files (format: `../shared/conformance/README.md`). Not built yet.

/// One scenario file. Not built yet.
#[derive(Debug, Clone, Default)]
pub struct Scenario {}
