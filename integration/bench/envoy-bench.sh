#!/usr/bin/env bash
# The Envoy benchmark (issue 3) in one command: builds peerguard.wasm, the no-op wasm
# module and the peerguard binary (release), then runs `peerguard bench envoy`:
# Envoy CPU per request, p50/p99 latency and throughput over mTLS (HTTP/1.1 keep-alive at a
# fixed rate and closed-loop; TCP connect+echo) with no filter, native RBAC, a no-op wasm
# filter and peerguard at 10/100/1,000/10,000 policies, interleaved rounds, ratios to the
# no-filter Envoy of the same round; plus .wasm size, Envoy RSS at 1 and 2 workers, and
# the goal checks.
#
#   bash integration/bench/envoy-bench.sh             # full run (about 4-5 min on 2 cores)
#   bash integration/bench/envoy-bench.sh --quick     # about 30-40 s, indicative only
#   bash integration/bench/envoy-bench.sh --only http --rounds 5 --policies 10,100
#
# Other arguments go to `peerguard bench envoy` (`--help` lists them). The table and the
# checks go to stdout; the JSON to --json (default $CARGO_TARGET_DIR/bench/envoy-bench.json).
# Needs Envoy (scripts/setup.sh installs it and writes .peerguard/env) and the wasm toolchain.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
log() { echo "[envoy-bench] $*" >&2; }
cd "$root"

if [ ! -f "$root/.peerguard/env" ]; then
  log "no .peerguard/env: running scripts/setup.sh first"
  bash "$root/scripts/setup.sh"
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

wasm=$(bash "$root/scripts/build-wasm.sh")
noop=$(bash "$root/integration/bench/build-noop-wasm.sh")
# Release: the load client must not be the bottleneck (it shares the 2 cores with Envoy).
log "cargo build --release -p peerguard"
cargo build --release -p peerguard >&2
bin="$CARGO_TARGET_DIR/release/peerguard"
[ -x "$bin" ] || { log "expected $bin, not found"; exit 1; }

extra=()
case " $* " in
  *" --json "*|*" --json="*) ;;
  *) extra+=(--json "$CARGO_TARGET_DIR/bench/envoy-bench.json") ;;
esac
log "$bin bench envoy --wasm $wasm --noop-wasm $noop ${extra[*]} $*"
exec "$bin" bench envoy --wasm "$wasm" --noop-wasm "$noop" "${extra[@]}" "$@"
