//! Bytes → Istio parser (as a YAML file and as a JSON file) → compile for a few workloads →
//! JSON → engine. Must never panic; parse errors are fine. See `src/compile_check.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server reads files as UTF-8 and reports other bytes as an error before parsing;
    // a lossy conversion lets the fuzzer's random bytes still reach the parser.
    let text = String::from_utf8_lossy(data);
    peerguard_fuzz::compile_check::check(&text, "fuzz.yaml");
    peerguard_fuzz::compile_check::check(&text, "fuzz.json");
});
