//! The product's native form (`compile --envoy-rbac`, `envoy_config::rbac::translate`) and
//! the reference this harness runs in Envoy (`translate_as_istiod`) are one translator: on
//! every generated set the product form either refuses, for a documented reason, or emits
//! exactly the reference's filters. So every agreement the differential run finds between
//! peerguard and the reference holds for the native form too. No Envoy needed.

use peerguard_differential::envoy::SetAddrs;
use peerguard_differential::gen::{self, generate};
use peerguard_differential::run::prepare;
use peerguard_filter::istio::parse::parse_str;
use peerguard_server::envoy_config::rbac::{translate, translate_as_istiod, TranslateError};
use std::collections::BTreeMap;

#[test]
fn the_native_form_is_the_reference_or_a_documented_refusal() -> anyhow::Result<()> {
    let (workload, mesh) = (gen::workload(), gen::mesh_config());
    let mut refused: BTreeMap<&str, usize> = BTreeMap::new();
    let mut same = 0;
    let mut with_filters = 0;
    for seed in 1..=400u64 {
        let p = prepare(&generate(seed, 0), SetAddrs::of(100, 0)?)?;
        let parsed = parse_str(&p.yaml, "set.yaml");
        let reference = translate_as_istiod(&parsed.resources, &workload, &mesh)?;
        match translate(&parsed.resources, &workload, &mesh) {
            Ok(native) => {
                assert_eq!(native, reference, "seed {seed}:\n{}", p.yaml);
                same += 1;
                with_filters += usize::from(!native.http.is_empty());
            }
            Err(e) => {
                let kind = match e {
                    TranslateError::Invalid { .. } => "invalid object",
                    TranslateError::Jwt { .. } => "JWT attribute",
                    TranslateError::Custom { .. } => "CUSTOM",
                    TranslateError::Unsupported { .. } => "unsupported",
                };
                *refused.entry(kind).or_default() += 1;
            }
        }
    }
    println!("400 generated sets: {same} translated identically ({with_filters} with filters), refused: {refused:?}");
    // Both branches are exercised, and only the refusals the generator can produce occur.
    assert!(same > 200 && with_filters > 100, "{same} / {with_filters}");
    assert!(refused.get("invalid object").is_some_and(|n| *n > 0));
    assert!(refused.get("JWT attribute").is_some_and(|n| *n > 0));
    assert!(!refused.contains_key("unsupported"), "{refused:?}");
    Ok(())
}
