//! A no-op proxy-wasm filter: the cost every wasm filter pays before doing any work.
//!
//! It has the same shape as peerguard's module so the benchmark compares like with like:
//! one module for the HTTP and the network filter, the root context choosing the context
//! type from `plugin_root_id` (ending in `tcp`: stream, else HTTP), and contexts that
//! return `Continue` from every callback (the SDK's defaults). It reads no property and
//! keeps no state, so Envoy's per-request cost here is the VM crossings alone.
//!
//! Built for `wasm32-unknown-unknown` by `integration/bench/build-noop-wasm.sh`; on other
//! targets the crate is empty so the native workspace build is unaffected.

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
    use proxy_wasm::types::ContextType;

    struct Root {
        kind: Option<ContextType>,
    }

    struct Noop;

    impl Context for Noop {}
    impl HttpContext for Noop {}
    impl StreamContext for Noop {}

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
            // Unknown root id or unreadable property: HTTP, as peerguard does.
            let root_id = match hostcalls::get_property(vec!["plugin_root_id"]) {
                Ok(Some(bytes)) => String::from_utf8(bytes).unwrap_or_default(),
                _ => String::new(),
            };
            self.kind = Some(if root_id.ends_with("tcp") {
                ContextType::StreamContext
            } else {
                ContextType::HttpContext
            });
            true
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Noop))
        }

        fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
            Some(Box::new(Noop))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(self.kind.unwrap_or(ContextType::HttpContext))
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { kind: None }) });
    }}
}
