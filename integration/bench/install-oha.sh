#!/usr/bin/env bash
# Installs oha (an HTTP load generator from the Rust registry, https://crates.io/crates/oha)
# for the Envoy benchmark's independent figures, outside the clone so it survives `git
# clean` and is shared by clones: /var/cache/peerguard/tools/bin/oha
# (PEERGUARD_TOOLS overrides the root). Prints the binary's path.
#
# Why oha: it presents a client certificate (--cert/--key, with --cacert for the server's
# root), speaks HTTP/1.1 and HTTP/2 (--http2) over rustls, holds a fixed rate (-q) and
# writes JSON (--output-format json). Debian's h2load and wrk cannot present a client
# certificate, which the benchmark's listeners require (mTLS, as in the mesh).
set -euo pipefail
log() { echo "[install-oha] $*" >&2; }
tools=${PEERGUARD_TOOLS:-/var/cache/peerguard/tools}
version=${PEERGUARD_OHA_VERSION:-1.16.0}
bin="$tools/bin/oha"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q " $version"; then
  echo "$bin"; exit 0
fi
log "cargo install oha@$version --locked --root $tools (a few minutes, once)"
mkdir -p "$tools"
nice cargo install oha --version "$version" --locked --root "$tools" >&2
"$bin" --version >&2
echo "$bin"
