#!/usr/bin/env bash
# The xDS server benchmark in one command: builds peerguard.wasm and the peerguard binary
# (release), then runs `peerguard bench server`:
#   [a] file write -> decision enforced by a real Envoy (p50/p99 over DENY on/off flips,
#       polled with new mTLS connections every 5 ms);
#   [b] a changed policy pushed to 1,000 simulated xDS clients (tonic ECDS streams over real
#       gRPC, one registered workload each): time until all received it, server RSS;
#   [c] compile time of 10,000 AuthorizationPolicies over 100 namespaces and 1,000 workloads.
# Figures and goal checks go to stdout; nothing is asserted. About 1-2 minutes.
#
#   bash integration/bench/server-bench.sh
#   bash integration/bench/server-bench.sh --flips 40 --clients 2000
#   bash integration/bench/server-bench.sh --skip-envoy      # [b] and [c] only
#
# Other arguments go to `peerguard bench server` (`--help` lists them).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
log() { echo "[server-bench] $*" >&2; }
cd "$root"

if [ ! -f "$root/.peerguard/env" ]; then
  log "no .peerguard/env: running scripts/setup.sh first"
  bash "$root/scripts/setup.sh"
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

case " $* " in
  *" --skip-envoy "*) ;;
  *) PEERGUARD_WASM=$(bash "$root/scripts/build-wasm.sh"); export PEERGUARD_WASM ;;
esac
log "cargo build --release -p peerguard"
cargo build --release -p peerguard >&2
bin="$CARGO_TARGET_DIR/release/peerguard"
[ -x "$bin" ] || { log "expected $bin, not found"; exit 1; }
log "$bin bench server $*"
exec "$bin" bench server "$@"
