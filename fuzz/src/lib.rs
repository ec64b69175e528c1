//! Shared code of peerguard's fuzz targets (`fuzz_targets/`):
//! - [`compile_check`]: what target `parse_compile` asks of every compiled policy;
//! - [`cert`]: PEM wrapping as Envoy hands a peer certificate to the filter, and the
//!   x509-parser reading used as the second opinion of target `peer_identity`;
//! - [`gen`]: the policies and raw requests target `decide_path` generates;
//! - [`reference`]: a slow, obviously-correct model of normalization and decision for exactly
//!   the rules [`gen`] generates, which the filter's engine must agree with.
//!
//! A disagreement or an unexpected state is a `panic!`: under libFuzzer that is the crash
//! report, with the input saved under `fuzz/artifacts/<target>/`.

pub mod cert;
pub mod compile_check;
pub mod gen;
pub mod reference;
