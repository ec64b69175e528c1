//! proxy-wasm adapter. Not built yet.
