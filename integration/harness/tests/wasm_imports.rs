//! Guard for the built proxy-wasm module: Envoy refuses a module with an import it does not
//! provide ("Failed to load Wasm module due to a missing import"), which is what
//! `wasm-bindgen`, `getrandom`'s `js` backend or `ring` bring in. Also keeps the module small.
//!
//! The module comes from `scripts/build-wasm.sh`; path from `PEERGUARD_WASM`, else
//! `$CARGO_TARGET_DIR/peerguard.wasm`, else `target/peerguard.wasm` at the workspace root.
//! A missing module prints SKIPPED unless `PEERGUARD_REQUIRE_WASM=1` (CI), because cargo
//! cannot report a skip.
#![cfg(test)]

use std::path::PathBuf;
use wasmparser::{Parser, Payload, TypeRef};

const MAX_BYTES: u64 = 500 * 1024;

fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PEERGUARD_WASM") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("peerguard.wasm")
}

struct Module {
    imports: Vec<(String, String, bool)>,
    exports: Vec<String>,
}

fn read_module(bytes: &[u8]) -> Result<Module, String> {
    let mut m = Module {
        imports: Vec::new(),
        exports: Vec::new(),
    };
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a valid wasm module: {e}"))? {
            Payload::ImportSection(section) => {
                for imports in section {
                    for imp in imports.map_err(|e| e.to_string())? {
                        let (_, imp) = imp.map_err(|e| e.to_string())?;
                        let is_func = matches!(imp.ty, TypeRef::Func(_));
                        m.imports
                            .push((imp.module.to_string(), imp.name.to_string(), is_func));
                    }
                }
            }
            Payload::ExportSection(section) => {
                for exp in section {
                    m.exports
                        .push(exp.map_err(|e| e.to_string())?.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(m)
}

/// Only `env.proxy_*` functions: everything Envoy's proxy-wasm host provides.
fn bad_imports(m: &Module) -> Vec<String> {
    m.imports
        .iter()
        .filter(|(module, name, is_func)| {
            !(module == "env" && name.starts_with("proxy_") && *is_func)
        })
        .map(|(module, name, is_func)| {
            format!(
                "{module}.{name}{}",
                if *is_func { "" } else { " (not a function)" }
            )
        })
        .collect()
}

#[test]
fn built_module_imports_only_proxy_abi_and_is_small() {
    let path = module_path();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            if std::env::var("PEERGUARD_REQUIRE_WASM").as_deref() == Ok("1") {
                panic!("PEERGUARD_REQUIRE_WASM=1 but {} cannot be read: {e} (run scripts/build-wasm.sh)", path.display());
            }
            println!(
                "SKIPPED: {} not found ({e}); run scripts/build-wasm.sh",
                path.display()
            );
            return;
        }
    };
    let m = read_module(&bytes).unwrap();
    let bad = bad_imports(&m);
    assert!(
        bad.is_empty(),
        "{} imports what Envoy does not provide: {bad:?}",
        path.display()
    );
    assert!(
        !m.imports.is_empty(),
        "no imports at all: not a proxy-wasm module?"
    );
    // The SDK exports its allocator as `malloc` on wasm32-unknown-unknown.
    for required in [
        "proxy_abi_version_0_2_1",
        "_initialize",
        "proxy_on_context_create",
        "malloc",
    ] {
        assert!(
            m.exports.iter().any(|e| e == required),
            "module does not export {required}"
        );
    }
    let size = bytes.len() as u64;
    assert!(
        size <= MAX_BYTES,
        "{} is {size} bytes, over the {MAX_BYTES}-byte budget",
        path.display()
    );
    println!(
        "{}: {size} bytes, {} imports, all env.proxy_*",
        path.display(),
        m.imports.len()
    );
}

/// The guard itself must be able to fail: a hand-made module importing wasm-bindgen's
/// placeholder (the import that makes Envoy refuse a module) is caught.
#[test]
fn guard_rejects_foreign_imports() {
    // (module (import "__wbindgen_placeholder__" "__wbindgen_describe" (func (param i32)))
    //         (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
    //         (import "env" "memory" (memory 1)))
    let mut wasm = vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    // type section: 2 types
    let types: Vec<u8> = vec![
        0x02, 0x60, 0x01, 0x7f, 0x00, 0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x01, 0x7f,
    ];
    wasm.push(0x01);
    wasm.push(types.len() as u8);
    wasm.extend(&types);
    let mut imports = vec![0x03];
    for (module, name, desc) in [
        (
            "__wbindgen_placeholder__",
            "__wbindgen_describe",
            vec![0x00, 0x00],
        ),
        ("env", "proxy_log", vec![0x00, 0x01]),
        ("env", "memory", vec![0x02, 0x00, 0x01]),
    ] {
        imports.push(module.len() as u8);
        imports.extend(module.as_bytes());
        imports.push(name.len() as u8);
        imports.extend(name.as_bytes());
        imports.extend(desc);
    }
    wasm.push(0x02);
    wasm.push(imports.len() as u8);
    wasm.extend(&imports);
    let m = read_module(&wasm).unwrap();
    assert_eq!(m.imports.len(), 3);
    assert_eq!(
        bad_imports(&m),
        vec![
            "__wbindgen_placeholder__.__wbindgen_describe".to_string(),
            "env.memory (not a function)".to_string()
        ]
    );
}
