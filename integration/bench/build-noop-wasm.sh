#!/usr/bin/env bash
# Builds the no-op proxy-wasm module (integration/noop-wasm) the Envoy benchmark uses as
# the floor cost of a wasm filter. Same toolchain handling as scripts/build-wasm.sh (read
# from .peerguard/env: rustup target, or Debian's rustc-web with -Zbuild-std), same flags
# (release profile, -C panic=abort), so the two modules differ only in what they do.
#
#   bash integration/bench/build-noop-wasm.sh     # prints the module's path on stdout
#
# Output: $CARGO_TARGET_DIR/peerguard-noop.wasm (default target dir: <repo>/target).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
log() { echo "[build-noop-wasm] $*" >&2; }

if [ ! -f "$root/.peerguard/env" ]; then
  log "no .peerguard/env: running scripts/setup.sh first"
  bash "$root/scripts/setup.sh"
fi
# shellcheck disable=SC1091
. "$root/.peerguard/env"

target=wasm32-unknown-unknown
target_dir=${CARGO_TARGET_DIR:-$root/target}
export CARGO_TARGET_DIR=$target_dir
wasm_rustflags="-C panic=abort"
build_args=(build -p peerguard-noop-wasm --target "$target" --release)

cd "$root"
case "${PEERGUARD_WASM_TOOLCHAIN:-rustup}" in
  rustup)
    log "cargo ${build_args[*]} (rustup toolchain)"
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$wasm_rustflags" \
      cargo "${build_args[@]}" >&2
    ;;
  debian)
    lld=""
    for cand in /usr/bin/rust-lld /usr/bin/wasm-ld-22 /usr/lib/llvm-22/bin/wasm-ld; do
      if [ -x "$cand" ]; then lld=$cand; break; fi
    done
    [ -n "$lld" ] || { log "no rust-lld or wasm-ld-22 found (apt-get install lld-22 rust-web-llvm)"; exit 1; }
    log "/usr/bin/cargo ${build_args[*]} -Zbuild-std=std,panic_abort (debian toolchain, linker $lld)"
    RUSTC_BOOTSTRAP=1 \
      RUSTC=/usr/bin/rustc \
      CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$lld" \
      CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$wasm_rustflags" \
      /usr/bin/cargo "${build_args[@]}" -Zbuild-std=std,panic_abort >&2
    ;;
  *)
    log "unknown PEERGUARD_WASM_TOOLCHAIN=${PEERGUARD_WASM_TOOLCHAIN}"; exit 1 ;;
esac

built="$target_dir/$target/release/peerguard_noop_wasm.wasm"
[ -f "$built" ] || { log "expected $built, not found"; exit 1; }
out="$target_dir/peerguard-noop.wasm"
cp "$built" "$out.tmp" && mv -f "$out.tmp" "$out"
log "module: $out ($(stat -c %s "$out") bytes)"
echo "$out"
