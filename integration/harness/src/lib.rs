//! peerguard's test harness: everything that runs a real Envoy for tests, tools and
//! benchmarks, kept out of the product crate.
//!
//! - [`envoy`]: finding Envoy and the wasm module, one Envoy process per guard;
//! - [`pki`]: a throw-away mesh PKI (roots, Envoy's server certificate, client certificates);
//! - [`require`]: the one require-or-skip rule for tests that need Envoy;
//! - [`http1`]: the one raw HTTP/1.1 client (blocking and async); [`tls`]: client configs;
//! - [`client`]: one fresh connection per request (plaintext or mTLS; HTTP/1.1, HTTP/2, TCP);
//! - [`upstream`]: the apps behind Envoy (an HTTP app that reports what it received, a TCP echo);
//! - [`e2e`]: the runner behind `peerguard test --envoy`.

pub mod client;
pub mod e2e;
pub mod envoy;
pub mod http1;
pub mod pki;
pub mod require;
pub mod tls;
pub mod upstream;
