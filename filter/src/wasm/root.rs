//! The root context: the proxy-wasm shell around [`Lifecycle`].

use super::config::{kind_of, Lifecycle};
use super::host::WasmHost;
use super::seam::Host;
use super::{check::Kind, http::HttpFilter, stream::TcpFilter};
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;
use std::time::Duration;

#[derive(Default)]
pub(crate) struct Root {
    life: Lifecycle,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        self.life.start(&WasmHost);
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let _ = proxy_wasm::hostcalls::set_tick_period(Duration::from_secs(1));
        self.life.configure(&WasmHost, plugin_configuration_size)
    }

    fn on_tick(&mut self) {
        self.life.tick(&WasmHost);
    }

    fn get_type(&self) -> Option<ContextType> {
        let kind = self
            .life
            .cached_kind()
            .unwrap_or_else(|| kind_of(&WasmHost.root_id()));
        Some(match kind {
            Kind::Tcp => ContextType::StreamContext,
            Kind::Http => ContextType::HttpContext,
        })
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpFilter::new(
            self.life.shared.clone(),
            self.life.active.clone(),
        )))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(TcpFilter::new(
            self.life.shared.clone(),
            self.life.active.clone(),
        )))
    }
}
