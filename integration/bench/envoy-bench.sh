#!/usr/bin/env bash
# The Envoy benchmark (issues 3 and 16) in one command: builds peerguard.wasm, the no-op
# wasm module, the "before" module (--baseline) and the peerguard binary (release), then
# runs `peerguard bench envoy`: Envoy CPU per request, p50/p99 latency (with intervals) and
# throughput over mTLS (HTTP/1.1 keep-alive and HTTP/2 multiplexed, fixed rate and
# closed-loop; TCP connect+echo) with no filter, native RBAC, a no-op wasm filter,
# peerguard, the baseline module and what `serve` pushes (adaptive) at 10/100/1,000/10,000
# policies, interleaved rounds, ratios to the no-filter Envoy of the same round; the same
# headline points with oha; .wasm size, Envoy RSS at 1 and 2 workers, and the goal checks.
#
#   bash integration/bench/envoy-bench.sh             # full run (about 12-14 min on 2 cores)
#   bash integration/bench/envoy-bench.sh --quick     # about 30-40 s, indicative only
#   bash integration/bench/envoy-bench.sh --only http --rounds 5 --policies 10,100
#   bash integration/bench/envoy-bench.sh --baseline dfac5d7   # "before" = that commit's module
#   bash integration/bench/envoy-bench.sh --no-baseline --no-external
#
# --baseline REV (default dfac5d7, the commit before issue 16's work): builds peerguard.wasm
# from REV in a temporary git worktree (its own CARGO_TARGET_DIR under
# /var/cache/peerguard/bench-baseline/; the module is cached there by commit hash, the
# worktree removed) and adds the `baseline/N` variants.
# --no-baseline: none. The external load generator (oha, installed into
# /var/cache/peerguard/tools by install-oha.sh if missing) is used unless --no-external.
# Other arguments go to `peerguard bench envoy` (`--help` lists them). The table and the
# checks go to stdout; the JSON to --json (default $CARGO_TARGET_DIR/bench/envoy-bench.json).
# Needs Envoy (scripts/setup.sh installs it and writes .peerguard/env) and the wasm toolchain.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
log() { echo "[envoy-bench] $*" >&2; }
cd "$root"
cache_dir=${PEERGUARD_BENCH_CACHE:-/var/cache/peerguard/bench-baseline}

baseline_rev=dfac5d7
external=1
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) baseline_rev=${2:?--baseline needs a git revision}; shift 2 ;;
    --baseline=*) baseline_rev=${1#--baseline=}; shift ;;
    --no-baseline) baseline_rev=""; shift ;;
    --no-external) external=0; pass+=("$1"); shift ;;
    *) pass+=("$1"); shift ;;
  esac
done
set -- "${pass[@]+"${pass[@]}"}"

# peerguard.wasm as of git revision $1, cached by commit hash; prints its path.
baseline_wasm() {
  local hash out wt built
  hash=$(git -C "$root" rev-parse --verify "$1^{commit}") || { log "no such revision: $1"; return 1; }
  out="$cache_dir/peerguard-$hash.wasm"
  if [ -f "$out" ]; then
    log "baseline $1 ($hash): cached $out"
    echo "$out"; return 0
  fi
  mkdir -p "$cache_dir"
  wt="$cache_dir/worktree-$hash"
  git -C "$root" worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
  git -C "$root" worktree prune
  log "baseline $1 ($hash): building peerguard.wasm in a temporary worktree $wt"
  git -C "$root" worktree add --detach --quiet "$wt" "$hash" >&2
  # The worktree shares this clone's toolchain choice (.peerguard is not in git).
  mkdir -p "$wt/.peerguard"
  cp "$root/.peerguard/env" "$wt/.peerguard/env"
  if built=$(CARGO_TARGET_DIR="$cache_dir/target" bash "$wt/scripts/build-wasm.sh" | tail -n1); then
    cp "$built" "$out.tmp" && mv -f "$out.tmp" "$out"
  fi
  git -C "$root" worktree remove --force "$wt"
  git -C "$root" worktree prune
  [ -f "$out" ] || { log "baseline $1: build failed"; return 1; }
  echo "$out"
}

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
if [ -n "$baseline_rev" ]; then
  before=$(baseline_wasm "$baseline_rev")
  extra+=(--baseline-wasm "$before")
fi
if [ "$external" = 1 ]; then
  oha=$(bash "$root/integration/bench/install-oha.sh")
  extra+=(--oha "$oha")
fi
case " $* " in
  *" --json "*|*" --json="*) ;;
  *) extra+=(--json "$CARGO_TARGET_DIR/bench/envoy-bench.json") ;;
esac
log "$bin bench envoy --wasm $wasm --noop-wasm $noop ${extra[*]} $*"
exec "$bin" bench envoy --wasm "$wasm" --noop-wasm "$noop" "${extra[@]}" "$@"
