//! The built page, embedded at compile time when `scripts/build-playground.sh` has made
//! `playground/dist/` (see `build.rs`); empty otherwise.

mod table {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// Every file of the page: path relative to the folder (`index.html`, `pkg/...`), bytes.
pub fn files() -> &'static [(&'static str, &'static [u8])] {
    table::FILES
}

/// Whether the page was built into this binary.
pub fn built() -> bool {
    files().iter().any(|(p, _)| *p == "index.html")
}

/// The file for a request path (`/` is `index.html`), with its content type.
pub fn lookup(path: &str) -> Option<(&'static [u8], &'static str)> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let (_, bytes) = files().iter().find(|(p, _)| *p == rel)?;
    Some((bytes, content_type(rel)))
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        // Browsers stream-compile only this type.
        "wasm" => "application/wasm",
        "png" => "image/png",
        "yaml" | "yml" => "text/yaml; charset=utf-8",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}
