#!/usr/bin/env bash
# The large differential run: generated AuthorizationPolicy sets and raw requests through
# stock Envoy RBAC (as Istio configures it) and through Envoy + peerguard, compared.
#
#   bash integration/differential/run.sh --seeds 1000            # seeds 1..1000
#   bash integration/differential/run.sh --seeds 500 --first-seed 7000 --requests 32
#   bash integration/differential/run.sh --seed 42               # replay one seed
#   bash integration/differential/run.sh --seeds 0 --cases corpus   # the reproducers
#   bash integration/differential/run.sh --seed 42 --show        # print both configs
#
# Builds the wasm filter and the runner first. Exit status: 0 no undocumented
# disagreement, 1 disagreements (printed with seed, policies and raw request), 2 the
# harness failed. CARGO_TARGET_DIR defaults to /var/tmp/peerguard-target.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/peerguard-target}
if [ ! -f .peerguard/env ]; then bash scripts/setup.sh; fi
set -a; . .peerguard/env; set +a
export PEERGUARD_WASM=${PEERGUARD_WASM:-$(bash scripts/build-wasm.sh | tail -n 1)}
cargo build -q -p peerguard-differential --bin peerguard-differential
exec "$CARGO_TARGET_DIR/debug/peerguard-differential" "$@"
