#!/usr/bin/env bash
# Makes `peerguard` callable by name after the README's commands: a symlink to the binary
# they built, in PEERGUARD_BIN_DIR (default /usr/local/bin, on root's PATH on Debian).
# Never replaces a `peerguard` there that is not a symlink; when the directory cannot be
# written, prints the one `export PATH=...` line to run instead.
#   bash scripts/link-peerguard.sh /var/tmp/peerguard-target/debug/peerguard
set -euo pipefail
bin=${1:?usage: link-peerguard.sh PATH-TO-PEERGUARD}
dir=${PEERGUARD_BIN_DIR:-/usr/local/bin}
link="$dir/peerguard"
say() { echo "[peerguard] $*" >&2; }
export_line="export PATH=\"$(dirname "$bin"):\$PATH\""
if [ -e "$link" ] && [ ! -L "$link" ]; then
  say "$link exists and is not a symlink: left alone. To call this build, run: $export_line"
elif mkdir -p "$dir" 2>/dev/null && ln -sfn "$bin" "$link" 2>/dev/null; then
  say "peerguard is $link -> $bin"
  case ":$PATH:" in
    *":$dir:"*) ;;
    *) say "$dir is not on PATH; run: export PATH=\"$dir:\$PATH\"" ;;
  esac
else
  say "cannot write $dir. To call peerguard, run: $export_line"
fi
