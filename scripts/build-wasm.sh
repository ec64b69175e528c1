#!/usr/bin/env bash
# Builds the peerguard proxy-wasm module (one .wasm for the HTTP and the network filter).
#
#   bash scripts/build-wasm.sh            # prints the path of the built module on stdout
#   bash scripts/build-wasm.sh PACKAGE OUT  # another proxy-wasm package of the workspace
#                                           # (the benchmark's no-op module), copied to OUT
#
# Uses the toolchain recorded by scripts/setup.sh in .peerguard/env:
#   rustup: the wasm32-unknown-unknown target from rustup, plain `cargo build`.
#   debian: Debian's rustc-web/cargo-web (no prebuilt std for wasm32), so std is rebuilt
#           with -Zbuild-std (RUSTC_BOOTSTRAP=1) and linked with rust-lld from lld-22.
# Honours CARGO_TARGET_DIR (default: <repo>/target). The module is copied to
# $CARGO_TARGET_DIR/peerguard.wasm, a stable path for Envoy configs and tests.
# Fails if the module is larger than PEERGUARD_WASM_MAX_BYTES (default 500 KB).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "[build-wasm] $*" >&2; }

if [ ! -f "$root/.peerguard/env" ]; then
  log "no .peerguard/env: running scripts/setup.sh first"
  bash "$root/scripts/setup.sh"
fi
# shellcheck disable=SC1091
. "$root/.peerguard/env"

target=wasm32-unknown-unknown
target_dir=${CARGO_TARGET_DIR:-$root/target}
export CARGO_TARGET_DIR=$target_dir
max_bytes=${PEERGUARD_WASM_MAX_BYTES:-512000}
# panic=abort: no unwinding machinery in the module (a panic traps the VM either way, and
# the code denies unwrap/expect/panic). Set for this target only, so native builds keep
# the workspace profile. Passed through the target-specific variable so a user's global
# RUSTFLAGS for the host is not clobbered.
wasm_rustflags="-C panic=abort"

# opt-level "s" comes from the workspace release profile. PEERGUARD_WASM_OPT_LEVEL=z trades
# some speed for ~10% less size if the module ever nears the limit (measured: 434 KB → 391 KB).
if [ -n "${PEERGUARD_WASM_OPT_LEVEL:-}" ]; then
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=$PEERGUARD_WASM_OPT_LEVEL
fi

package=${1:-peerguard-filter}
out_name=${2:-peerguard.wasm}
build_args=(build -p "$package" --no-default-features --target "$target" --release)

cd "$root"
case "${PEERGUARD_WASM_TOOLCHAIN:-rustup}" in
  rustup)
    log "cargo ${build_args[*]} (rustup toolchain)"
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$wasm_rustflags" \
      cargo "${build_args[@]}" >&2
    ;;
  debian)
    # Debian's rustc-web has no std rlibs for wasm32: rebuild std (and panic_abort, needed
    # by -C panic=abort) from rust-web-src. Debian ships rust-lld as part of lld-NN, not next
    # to rustc, so name it explicitly.
    # rust-web-llvm (recommended by rustc-web) links /usr/bin/rust-lld -> lld-22; rustc
    # passes `-flavor wasm` itself for this target. wasm-ld-22 (lld-22 alone) is equivalent.
    lld=""
    for cand in /usr/bin/rust-lld /usr/bin/wasm-ld-22 /usr/lib/llvm-22/bin/wasm-ld; do
      if [ -x "$cand" ]; then lld=$cand; break; fi
    done
    if [ -z "$lld" ]; then
      log "no rust-lld or wasm-ld-22 found (apt-get install lld-22 rust-web-llvm)"; exit 1
    fi
    cargo_bin=/usr/bin/cargo
    [ -x "$cargo_bin" ] || { log "$cargo_bin missing (apt-get install cargo-web)"; exit 1; }
    log "$cargo_bin ${build_args[*]} -Zbuild-std=std,panic_abort (debian toolchain, linker $lld)"
    RUSTC_BOOTSTRAP=1 \
      RUSTC=/usr/bin/rustc \
      CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$lld" \
      CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$wasm_rustflags" \
      "$cargo_bin" "${build_args[@]}" -Zbuild-std=std,panic_abort >&2
    ;;
  *)
    log "unknown PEERGUARD_WASM_TOOLCHAIN=${PEERGUARD_WASM_TOOLCHAIN}"; exit 1 ;;
esac

built="$target_dir/$target/release/${package//-/_}.wasm"
[ -f "$built" ] || { log "expected $built, not found"; exit 1; }
out="$target_dir/$out_name"
# Copy through a temporary name so a running Envoy never reads a half-written file.
cp "$built" "$out.tmp" && mv -f "$out.tmp" "$out"
size=$(stat -c %s "$out")
log "module: $out ($size bytes, $((size / 1024)) KiB; limit $max_bytes bytes)"
if [ "$size" -gt "$max_bytes" ]; then
  log "module is larger than the limit"; exit 1
fi
echo "$out"
