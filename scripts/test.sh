#!/usr/bin/env bash
# The README's test command: installs what is missing, builds the wasm filter and the
# binary, starts a real Kubernetes API server (integration/kube/apiserver.sh), then runs unit
# tests, the conformance suite in-process and through real Envoy, and the Envoy and Kubernetes
# end-to-end tests.
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

step "build"
cargo build --workspace --all-targets
pg="$CARGO_TARGET_DIR/debug/peerguard"

step "Kubernetes API server (kube-apiserver 1.20.2 + etcd; built once, cached in ${PEERGUARD_KUBE_CACHE:-/var/cache/peerguard/kube})"
# A cold build takes ~10-15 min on 2 cores; later runs reuse the cached binaries. The
# Kubernetes tests run against this one server and never skip here.
kube_dir=$(mktemp -d /tmp/peerguard-kube.XXXXXX)
trap 'bash "$root/integration/kube/apiserver.sh" stop "$kube_dir" >/dev/null 2>&1 || true; rm -rf "$kube_dir"' EXIT
export PEERGUARD_KUBECONFIG=$(bash integration/kube/apiserver.sh start "$kube_dir" | tail -n 1)
export PEERGUARD_REQUIRE_KUBE=${PEERGUARD_REQUIRE_KUBE:-1}

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
