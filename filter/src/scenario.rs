//! Conformance scenario files (format: `../shared/conformance/README.md`).
