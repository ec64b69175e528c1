#!/usr/bin/env bash
# The README's main command: installs what is missing, builds peerguard and the wasm
# filter, and starts the auto mTLS sandbox (Istio's "Automatic mutual TLS" walkthrough on
# real Envoy sidecars, one loopback address per pod). Prints the stage-1 matrix when ready.
#
#   bash scripts/sandbox.sh                 # start in the background (state: .peerguard/sandbox)
#   bash scripts/sandbox.sh --foreground    # stay attached; Ctrl-C stops everything
#   (any argument is passed to `peerguard sandbox up`)
#
# Then (`peerguard` is linked into PATH, scripts/link-peerguard.sh):
#   peerguard sandbox exec sleep.full -- GET http://httpbin.partial:8000/headers
#   peerguard sandbox apply integration/sandbox/stages/3-strict.yaml && peerguard sandbox matrix
#   peerguard sandbox down
# Env: CARGO_TARGET_DIR (default /var/tmp/peerguard-target), PEERGUARD_SANDBOX_DIR.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/peerguard-target}
step() { printf '\n== %s\n' "$*" >&2; }

step "set-up"
bash scripts/setup.sh
set -a; . .peerguard/env; set +a

step "build the wasm filter"
PEERGUARD_WASM=$(bash scripts/build-wasm.sh | tail -n 1)
export PEERGUARD_WASM

step "build peerguard"
cargo build -p peerguard >&2
pg="$CARGO_TARGET_DIR/debug/peerguard"
bash scripts/link-peerguard.sh "$pg"

step "start the sandbox"
"$pg" sandbox down >/dev/null 2>&1 || true
case " $* " in
  *" --foreground "*)
    printf 'next (another terminal): peerguard sandbox exec sleep.full -- GET http://httpbin.partial:8000/headers\n' >&2
    exec "$pg" sandbox up --wasm "$PEERGUARD_WASM" "$@" ;;
esac
start=$(date +%s%N)
"$pg" sandbox up --wasm "$PEERGUARD_WASM" "$@"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf '\nsandbox started and stage-1 matrix measured in %d.%03d s\n' $((ms / 1000)) $((ms % 1000)) >&2
printf 'next: peerguard sandbox exec sleep.full -- GET http://httpbin.partial:8000/headers\n' >&2
printf '      peerguard sandbox apply integration/sandbox/stages/3-strict.yaml; peerguard sandbox matrix\n' >&2
printf '      peerguard sandbox down\n' >&2
