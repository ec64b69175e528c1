#!/usr/bin/env bash
# Installs what the playground's browser test needs: Debian's headless Chromium and its
# WebDriver (chromedriver). Idempotent: returns at once when both are present.
# Prints nothing on stdout; the test finds them on PATH (chromium, chromedriver).
set -euo pipefail
log() { echo "[setup-browser] $*" >&2; }
missing=()
for p in chromium chromium-driver; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
    log "need root to apt-get install ${missing[*]}"; exit 1
  fi
else
  sudo=()
fi
log "apt-get update"
"${sudo[@]}" apt-get update -qq >&2
log "apt-get install ${missing[*]}"
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
command -v chromium >/dev/null && command -v chromedriver >/dev/null \
  || { log "chromium or chromedriver not on PATH after install"; exit 1; }
