//! The bounded differential run of CI: generated policy sets and the case corpus through
//! stock Envoy RBAC (configured as Istio translates the policies) and through Envoy +
//! peerguard, the same raw requests to both. Any disagreement not documented as
//! deliberately safer fails.
//!
//! Needs Envoy and the wasm module (see `peerguard_differential::harness`); without them
//! the tests print SKIPPED and pass, unless PEERGUARD_REQUIRE_ENVOY=1, then they fail.
//! Larger runs: `bash integration/differential/run.sh --seeds N`.

use anyhow::{bail, ensure};
use peerguard_differential::cases;
use peerguard_differential::gen::{self, Generated, Origin};
use peerguard_differential::harness::{find_envoy, find_wasm};
use peerguard_differential::run::{prepare, run, run_generated, Options};
use peerguard_filter::istio::parse::parse_str;

/// `Ok(false)` after printing SKIPPED; `Err` when Envoy is required.
fn prerequisites() -> anyhow::Result<bool> {
    let why: Vec<String> = [find_envoy().err(), find_wasm().err()]
        .into_iter()
        .flatten()
        .map(|e| e.to_string())
        .collect();
    if why.is_empty() {
        return Ok(true);
    }
    if std::env::var("PEERGUARD_REQUIRE_ENVOY").is_ok_and(|v| v == "1") {
        bail!("PEERGUARD_REQUIRE_ENVOY=1 but {}", why.join("; "));
    }
    println!("SKIPPED: {}", why.join("; "));
    Ok(false)
}

fn env_u64(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => Ok(v.parse()?),
        Err(_) => Ok(default),
    }
}

#[test]
fn peerguard_agrees_with_envoy_rbac_on_generated_policies_and_the_corpus() -> anyhow::Result<()> {
    if !prerequisites()? {
        return Ok(());
    }
    let opts = Options {
        first_seed: env_u64("PEERGUARD_DIFF_FIRST_SEED", 1)?,
        seeds: env_u64("PEERGUARD_DIFF_SEEDS", 30)?,
        requests_per_set: 12,
        ..Options::default()
    };
    let corpus = cases::load_all(&cases::corpus_dir())?;
    let report = run(&opts, &corpus)?;
    println!("{}", report.render());
    // A run where the reference side allows everything or nothing compares little: the
    // harness itself would be broken.
    ensure!(
        report.reference_allowed > report.requests / 10
            && report.reference_allowed < report.requests * 9 / 10,
        "the reference side allowed {} of {} requests",
        report.reference_allowed,
        report.requests
    );
    ensure!(
        report.findings.is_empty(),
        "{} undocumented disagreements between peerguard and Envoy RBAC (see above)",
        report.findings.len()
    );
    Ok(())
}

/// The harness must see a difference when there is one: the peerguard side gets an
/// allow-nothing policy, the reference side the translation of an allow-all one.
#[test]
fn a_difference_between_the_sides_is_reported() -> anyhow::Result<()> {
    if !prerequisites()? {
        return Ok(());
    }
    let allow_all = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: all, namespace: foo}\nspec: {rules: [{}]}\n";
    let allow_nothing = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: none, namespace: foo}\nspec: {}\n";
    let mut g: Generated = gen::generate(5, 8);
    g.origin = Origin::File("allow-all vs allow-nothing".into());
    g.yaml = allow_all.into();
    let nothing = parse_str(allow_nothing, "allow-nothing.yaml");
    let policy = peerguard_filter::compile::compile(
        &nothing.resources,
        &gen::workload(),
        &gen::mesh_config(),
    );
    let report = run_generated(&[g.clone()], &Options::default(), |g, addrs| {
        let mut p = prepare(g, addrs)?;
        p.policy = policy.clone();
        Ok(p)
    })?;
    println!("{}", report.render());
    // Every request the reference side let through must show up as a disagreement.
    ensure!(
        report.reference_allowed > 0,
        "nothing was allowed by allow-all"
    );
    ensure!(
        report.findings.len() == report.reference_allowed,
        "{} findings for {} requests allowed by the reference side",
        report.findings.len(),
        report.reference_allowed
    );
    Ok(())
}
