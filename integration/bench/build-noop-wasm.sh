#!/usr/bin/env bash
# Builds the no-op proxy-wasm module (integration/noop-wasm) the Envoy benchmark uses as
# the floor cost of a wasm filter, with scripts/build-wasm.sh: same toolchain, same flags,
# so the two modules differ only in what they do.
#
#   bash integration/bench/build-noop-wasm.sh     # prints the module's path on stdout
#
# Output: $CARGO_TARGET_DIR/peerguard-noop.wasm.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec bash "$root/scripts/build-wasm.sh" peerguard-noop-wasm peerguard-noop.wasm
