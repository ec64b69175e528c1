//! Embeds the built page (`playground/dist/`, made by `scripts/build-playground.sh`) into
//! native builds, for `peerguard playground`. When the folder is absent the table is empty
//! and the command says the playground was not built; nothing pretends.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("assets.rs");
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "wasm32");
    let dist = manifest.join("dist");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PEERGUARD_PLAYGROUND_DIST");
    let dist = std::env::var_os("PEERGUARD_PLAYGROUND_DIST")
        .map(PathBuf::from)
        .unwrap_or(dist);
    let mut table = String::from("pub static FILES: &[(&str, &[u8])] = &[\n");
    if !wasm {
        // Watching the crate folder notices dist/ appearing, not only changing.
        println!("cargo:rerun-if-changed={}", manifest.display());
        if dist.join("index.html").is_file() {
            println!("cargo:rerun-if-changed={}", dist.display());
            let mut files = Vec::new();
            collect(&dist, &mut files);
            files.sort();
            for f in files {
                let rel = f
                    .strip_prefix(&dist)
                    .unwrap_or(&f)
                    .to_string_lossy()
                    .replace('\\', "/");
                let _ = writeln!(
                    table,
                    "    ({rel:?}, include_bytes!({:?})),",
                    f.display().to_string()
                );
            }
        }
    }
    table.push_str("];\n");
    if let Err(e) = std::fs::write(&out, table) {
        println!("cargo:warning=cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}
