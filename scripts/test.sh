#!/usr/bin/env bash
# The README's test command: installs what is missing, checks formatting and lints (native
# and wasm32, -D warnings), builds the wasm filter and the binary (and links `peerguard`
# into PATH, scripts/link-peerguard.sh), then runs unit
# tests, the conformance suite in-process and through real Envoy, the Envoy and Kubernetes
# (a real API server, integration/kube/apiserver.sh) end-to-end tests and a short fuzzing run.
#   CONFORMANCE_DIR         scenario directory (default: integration/conformance/cases)
#   SHARED_CONFORMANCE_DIR  upstream cases, run too when present (default:
#                           ../shared/conformance/cases beside the clone)
#   FUZZ_SECONDS            fuzzing time per target (default 15)
#   CARGO_TARGET_DIR        build directory (default: /var/tmp/peerguard-target, outside the clone)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/peerguard-target}
export CONFORMANCE_DIR=${CONFORMANCE_DIR:-$root/integration/conformance/cases}
shared=${SHARED_CONFORMANCE_DIR:-$root/../shared/conformance/cases}
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

step "build the policy playground page (wasm-bindgen; headless Chromium for its test)"
bash scripts/setup-browser.sh
bash scripts/build-playground.sh >/dev/null
export PEERGUARD_REQUIRE_BROWSER=${PEERGUARD_REQUIRE_BROWSER:-1}

step "build"
# After the page: `peerguard playground` embeds playground/dist (playground/build.rs), and
# `cargo test` below runs its browser test (playground/tests/browser.rs).
cargo build --workspace --all-targets
pg="$CARGO_TARGET_DIR/debug/peerguard"
bash scripts/link-peerguard.sh "$pg"

step "Kubernetes API server (kube-apiserver 1.20.2 + etcd; built once, cached in ${PEERGUARD_KUBE_CACHE:-/var/cache/peerguard/kube})"
# A cold build takes ~10-15 min on 2 cores; later runs reuse the cached binaries. The
# Kubernetes tests run against this one server and never skip here.
kube_dir=$(mktemp -d /tmp/peerguard-kube.XXXXXX)
trap 'bash "$root/integration/kube/apiserver.sh" stop "$kube_dir" >/dev/null 2>&1 || true; rm -rf "$kube_dir"' EXIT
export PEERGUARD_KUBECONFIG=$(bash integration/kube/apiserver.sh start "$kube_dir" | tail -n 1)
export PEERGUARD_REQUIRE_KUBE=${PEERGUARD_REQUIRE_KUBE:-1}

step "unit and integration tests"
cargo test --workspace --no-fail-fast

step "kind test (integration/kind/run.sh): shellcheck, and the run itself (skips without kind/istioctl/registry)"
# Its manifests and the rendered Istio resources are dry-run against the API server above by
# cli/tests/istio_kube.rs (cargo test).
shellcheck integration/kind/run.sh
bash integration/kind/run.sh

step "conformance, in-process: $CONFORMANCE_DIR"
"$pg" test "$CONFORMANCE_DIR"

step "conformance, through real Envoy"
"$pg" test --envoy "$CONFORMANCE_DIR"

# New cases arrive in the shared directory beside the clone: run them too, and name the
# ones the repository does not have yet (or has in another version).
if [ -d "$shared" ] && [ "$(cd "$shared" && pwd -P)" != "$(cd "$CONFORMANCE_DIR" && pwd -P)" ]; then
  step "conformance beside the clone: $shared"
  missing=() differ=()
  for f in "$shared"/*.yaml; do
    [ -e "$f" ] || continue
    name=$(basename "$f")
    if [ ! -f "$CONFORMANCE_DIR/$name" ]; then missing+=("$name")
    elif ! cmp -s "$f" "$CONFORMANCE_DIR/$name"; then differ+=("$name"); fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "${#missing[@]} case(s) in $shared missing from $CONFORMANCE_DIR: ${missing[*]}"
    echo "  copy them: (cd $shared && cp ${missing[*]} $CONFORMANCE_DIR/)"
  fi
  if [ ${#differ[@]} -gt 0 ]; then
    echo "${#differ[@]} case(s) differ between $shared and $CONFORMANCE_DIR: ${differ[*]}"
  fi
  [ ${#missing[@]} -gt 0 ] || [ ${#differ[@]} -gt 0 ] || echo "every case there is in the repository, unchanged"
  "$pg" test "$shared"
  "$pg" test --envoy "$shared"
fi

step "fuzzing, ${FUZZ_SECONDS:-15} s per target (scripts/fuzz.sh, docs/fuzzing.md)"
if [ -n "${CI:-}" ]; then
  bash scripts/fuzz.sh --seconds "${FUZZ_SECONDS:-15}"
elif rustup run nightly rustc --version >/dev/null 2>&1 && cargo +nightly fuzz --version >/dev/null 2>&1; then
  bash scripts/fuzz.sh --no-install --seconds "${FUZZ_SECONDS:-15}"
else
  echo "SKIPPED: fuzzing needs a nightly toolchain and cargo-fuzz (CI installs both; here: bash scripts/fuzz.sh --seconds 15)"
fi

step "the sandbox in containers (docker-compose)"
if docker info >/dev/null 2>&1 && command -v docker-compose >/dev/null 2>&1; then
  bash integration/docker/compose-test.sh
elif [ -n "${CI:-}" ]; then
  echo "no Docker engine or docker-compose on this CI machine" >&2; exit 1
else
  echo "SKIPPED: no Docker engine or docker-compose"
fi
