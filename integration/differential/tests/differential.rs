//! The bounded differential run of CI: generated policy sets and the case corpus through
//! stock Envoy RBAC (configured as Istio translates the policies) and through Envoy +
//! peerguard, the same raw requests to both. Any disagreement not documented as
//! deliberately safer fails.
//!
//! Needs Envoy and the wasm module (see `peerguard_differential::harness`); without them
//! the tests print SKIPPED and pass, unless PEERGUARD_REQUIRE_ENVOY=1, then they fail.
//! Larger runs: `bash integration/differential/run.sh --seeds N`.

use anyhow::{bail, ensure, Context as _};
use peerguard_differential::cases;
use peerguard_differential::gen::{self, Generated, Origin};
use peerguard_differential::harness::{find_envoy, find_wasm};
use peerguard_differential::run::{
    prepare, prepare_adaptive, run, run_generated, Comparison, Options,
};
use peerguard_filter::istio::parse::parse_str;
use peerguard_server::enforcement::Slot;

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
    let corpus = cases::corpus(Comparison::Istio)?;
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

/// Adaptive enforcement: each slot filled as `peerguard serve` fills it with
/// `--enforcement native` (native RBAC wherever `enforcement::choose` allows it) against the
/// wasm filter alone, on generated sets with PeerAuthentications and on the whole corpus.
/// Both sides are peerguard's: every outcome must be the same, connection-level ones too.
#[test]
fn adaptive_enforcement_decides_as_the_wasm_filter() -> anyhow::Result<()> {
    if !prerequisites()? {
        return Ok(());
    }
    let opts = Options {
        comparison: Comparison::Adaptive,
        first_seed: env_u64("PEERGUARD_DIFF_FIRST_SEED", 1)?,
        seeds: env_u64("PEERGUARD_DIFF_ADAPTIVE_SEEDS", 30)?,
        requests_per_set: 10,
        ..Options::default()
    };
    let corpus = cases::corpus(Comparison::Adaptive)?;
    let report = run(&opts, &corpus)?;
    println!("{}", report.render());
    let c = &report.coverage;
    // A run where nothing went through native RBAC, or where one side allows everything or
    // nothing, compares little: the harness or the choice would be broken.
    ensure!(
        c.requests_native_http >= report.requests / 10 && c.requests_native_tcp > 0,
        "too few requests through native RBAC: {} HTTP, {} TCP of {}",
        c.requests_native_http,
        c.requests_native_tcp,
        report.requests
    );
    ensure!(
        ["STRICT", "PERMISSIVE", "DISABLE"]
            .iter()
            .all(|m| c.modes.get(*m).is_some_and(|n| *n > 0)),
        "not every mTLS mode was generated: {:?}",
        c.modes
    );
    ensure!(
        report.reference_allowed > report.requests / 10
            && report.reference_allowed < report.requests * 9 / 10,
        "the adaptive side allowed {} of {} requests",
        report.reference_allowed,
        report.requests
    );
    ensure!(
        report.findings.is_empty(),
        "{} disagreements between adaptive enforcement and the wasm filter (see above)",
        report.findings.len()
    );
    Ok(())
}

/// The adaptive side really runs what `choose` picked: a native HTTP slot replaced by a
/// deny-all RBAC must show up as a disagreement on every request the filter lets through.
#[test]
fn a_difference_in_a_native_slot_is_reported() -> anyhow::Result<()> {
    if !prerequisites()? {
        return Ok(());
    }
    let mut g: Generated = gen::generate(5, 8);
    g.origin = Origin::File("native slot replaced by deny-all".into());
    g.yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: foo}\nspec: {action: DENY, rules: [{to: [{operation: {paths: [\"/nothing-here\"]}}]}]}\n".into();
    g.cases
        .retain(|c| matches!(c.payload, gen::Payload::Http(_)));
    let opts = Options {
        comparison: Comparison::Adaptive,
        ..Options::default()
    };
    let report = run_generated(&[g], &opts, |g, addrs| {
        let mut p = prepare_adaptive(g, addrs)?;
        let e = p.enforcement.as_mut().context("no enforcement")?;
        let Slot::Native { typed_config, .. } = &mut e.http else {
            bail!("expected a native HTTP slot, got {}", e.http);
        };
        typed_config["rules"] = serde_json::json!({"action": "ALLOW", "policies": {}});
        Ok(p)
    })?;
    println!("{}", report.render());
    let wasm_allowed = report
        .findings
        .iter()
        .filter(|f| f.obs.peerguard.allowed() && !f.obs.reference.allowed())
        .count();
    ensure!(wasm_allowed > 0, "the wasm side allowed nothing");
    ensure!(
        report.findings.len() == wasm_allowed && report.reference_allowed == 0,
        "{} findings, {} where only the wasm side allowed, the adaptive side allowed {}",
        report.findings.len(),
        wasm_allowed,
        report.reference_allowed
    );
    Ok(())
}
