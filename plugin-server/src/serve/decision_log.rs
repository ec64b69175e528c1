//! `--decision-log-sample`: the one definition of the flag that turns the filter's decision
//! log on (`serve`, and `compile` for a static Envoy configuration). The setting travels in
//! the filter's configuration (`WorkloadPolicy.decision_log`); the line format is
//! `peerguard_filter::schema::DecisionLine`, which `peerguard preview` replays.

use peerguard_filter::schema::DecisionLog;
use peerguard_filter::WorkloadPolicy;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct DecisionLogArgs {
    /// Have the filter log a compact, replayable line (`peerguard-decision {json}`, at info
    /// level in Envoy's `wasm` log) for one decision in N: `1` (every decision), `1/N`, or a
    /// fraction like `0.01`. Counter based, per filter instance, starting with the first
    /// decision. Off when absent. Lines carry only the request headers a policy reads.
    #[arg(long, value_name = "1/N")]
    pub decision_log_sample: Option<DecisionLog>,
}

impl DecisionLogArgs {
    /// Sets the policy's decision log as the flag says (absent: left off).
    pub fn apply(&self, policy: &mut WorkloadPolicy) {
        policy.decision_log = self.decision_log_sample;
    }
}
