#!/usr/bin/env bash
# Builds the policy playground page into playground/dist/ (gitignored): the engine crate
# `playground/` compiled to wasm32-unknown-unknown, bound with wasm-bindgen, plus the static
# files of playground/web/. A `peerguard` built afterwards embeds the folder (see
# playground/build.rs) and serves it with `peerguard playground`.
#
#   bash scripts/build-playground.sh     # prints the folder on stdout
#
# wasm-bindgen-cli must match the `wasm-bindgen` crate in Cargo.lock exactly: that version is
# installed with `cargo install --locked` into PEERGUARD_TOOLS (default ~/.cache/peerguard,
# outside the clone) and reused when present.
# Honours CARGO_TARGET_DIR (default: <repo>/target).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "[build-playground] $*" >&2; }

if [ ! -f "$root/.peerguard/env" ]; then bash "$root/scripts/setup.sh"; fi
# shellcheck disable=SC1091
. "$root/.peerguard/env"
target_dir=${CARGO_TARGET_DIR:-$root/target}
export CARGO_TARGET_DIR=$target_dir

# --- wasm-bindgen-cli at the crate's version ---------------------------------------------
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$root/Cargo.lock")
[ -n "$version" ] || { log "no wasm-bindgen in Cargo.lock"; exit 1; }
tools=${PEERGUARD_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/peerguard}
bindgen="$tools/wasm-bindgen-$version/bin/wasm-bindgen"
if [ ! -x "$bindgen" ] || [ "$("$bindgen" --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
  log "cargo install wasm-bindgen-cli --version $version --locked (once, into $tools)"
  # Its own target dir: the project's build dir keeps its cache, and this one is dropped.
  CARGO_TARGET_DIR="$tools/build" cargo install wasm-bindgen-cli --version "$version" --locked \
    --root "$tools/wasm-bindgen-$version" >&2
  rm -rf "$tools/build"
fi

# --- the engine for the page --------------------------------------------------------------
build_args=(build -p peerguard-playground --lib --target wasm32-unknown-unknown --release)
cd "$root"
case "${PEERGUARD_WASM_TOOLCHAIN:-rustup}" in
  rustup)
    log "cargo ${build_args[*]}"
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C panic=abort" cargo "${build_args[@]}" >&2
    ;;
  debian)
    lld=""
    for cand in /usr/bin/rust-lld /usr/bin/wasm-ld-22 /usr/lib/llvm-22/bin/wasm-ld; do
      if [ -x "$cand" ]; then lld=$cand; break; fi
    done
    [ -n "$lld" ] || { log "no rust-lld or wasm-ld-22 found"; exit 1; }
    log "/usr/bin/cargo ${build_args[*]} -Zbuild-std=std,panic_abort"
    RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
      CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$lld" \
      CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C panic=abort" \
      /usr/bin/cargo "${build_args[@]}" -Zbuild-std=std,panic_abort >&2
    ;;
  *) log "unknown PEERGUARD_WASM_TOOLCHAIN=${PEERGUARD_WASM_TOOLCHAIN}"; exit 1 ;;
esac
module="$target_dir/wasm32-unknown-unknown/release/peerguard_playground.wasm"
[ -f "$module" ] || { log "expected $module, not found"; exit 1; }

# --- the folder ---------------------------------------------------------------------------
dist="$root/playground/dist"
stage=$(mktemp -d "$root/playground/.dist.XXXXXX")
trap 'rm -rf "$stage"' EXIT
"$bindgen" --target web --no-typescript --out-dir "$stage/pkg" "$module" >&2
cp -R "$root/playground/web/." "$stage/"
# Examples: the sandbox stages (resources) and the project's conformance cases (scenarios),
# read by the page from examples/ (listed in examples/index.json).
mkdir -p "$stage/examples"
bash "$root/playground/examples.sh" "$root" "$stage/examples" >&2
chmod 755 "$stage"
rm -rf "$dist"
mv "$stage" "$dist"
trap - EXIT
size() { cat "$@" | wc -c; }
gz() { cat "$@" | gzip -9 | wc -c; }
assets=("$dist/pkg/peerguard_playground_bg.wasm" "$dist/pkg/peerguard_playground.js" "$dist"/*.js "$dist"/*.css)
log "page weight (wasm + JS + CSS): $(size "${assets[@]}") bytes, $(gz "${assets[@]}") gzip-compressed"
echo "$dist"
