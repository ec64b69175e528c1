#!/usr/bin/env bash
# The README's test command: installs what is missing, checks formatting and lints (native
# and wasm32, -D warnings), builds the wasm filter and the binary, then runs unit tests, the
# conformance suite in-process and through real Envoy, and the Envoy end-to-end tests.
#   CONFORMANCE_DIR   scenario directory (default: ../shared/conformance/cases)
#   CARGO_TARGET_DIR  build directory (default: /var/tmp/peerguard-target, outside the clone)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/peerguard-target}
export CONFORMANCE_DIR=${CONFORMANCE_DIR:-$root/../shared/conformance/cases}
step() { printf '\n== %s\n' "$*"; }

step "set-up"
bash scripts/setup.sh
set -a; . .peerguard/env; set +a
export PEERGUARD_REQUIRE_ENVOY=${PEERGUARD_REQUIRE_ENVOY:-1}
export PEERGUARD_REQUIRE_WASM=${PEERGUARD_REQUIRE_WASM:-1}

step "build the wasm filter (wasm32-unknown-unknown, $PEERGUARD_WASM_TOOLCHAIN toolchain)"
export PEERGUARD_WASM=$(bash scripts/build-wasm.sh | tail -n 1)

step "format (cargo fmt --check)"
cargo fmt --all --check

step "lint (clippy, -D warnings; clippy.toml lets tests unwrap, expect and panic)"
cargo clippy --workspace --all-targets -- -D warnings

step "lint the wasm32 build (the proxy-wasm adapter exists only there)"
if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  cargo clippy -p peerguard-filter -p peerguard-noop-wasm --no-default-features \
    --target wasm32-unknown-unknown --lib -- -D warnings
elif [ -n "${CI:-}" ]; then
  echo "clippy for wasm32 needs rustup's wasm32-unknown-unknown target" >&2; exit 1
else
  echo "SKIPPED: no rustup wasm32-unknown-unknown target (Debian toolchain has no clippy for it)"
fi

step "build"
cargo build --workspace --all-targets
pg="$CARGO_TARGET_DIR/debug/peerguard"

step "unit and integration tests"
cargo test --workspace --no-fail-fast

step "conformance, in-process: $CONFORMANCE_DIR"
"$pg" test "$CONFORMANCE_DIR"

step "conformance, through real Envoy"
"$pg" test --envoy "$CONFORMANCE_DIR"

step "the sandbox in containers (docker-compose)"
if docker info >/dev/null 2>&1 && command -v docker-compose >/dev/null 2>&1; then
  bash integration/docker/compose-test.sh
elif [ -n "${CI:-}" ]; then
  echo "no Docker engine or docker-compose on this CI machine" >&2; exit 1
else
  echo "SKIPPED: no Docker engine or docker-compose"
fi
