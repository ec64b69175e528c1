#!/usr/bin/env bash
# The policy playground end to end: installs headless Chromium and chromedriver (apt-get),
# builds the page (wasm-bindgen-cli at the crate's version, cached outside the clone), builds
# `peerguard` with the page embedded, and runs the browser test (every conformance case's
# decisions in the page equal `peerguard test`'s; bad YAML shown at its line; screenshots).
#
#   bash scripts/test-playground.sh
#   PEERGUARD_UPDATE_README_IMAGE=1 bash scripts/test-playground.sh   # also refreshes docs/playground.png
#
# Honours CARGO_TARGET_DIR and CONFORMANCE_DIR like scripts/test.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
export CONFORMANCE_DIR=${CONFORMANCE_DIR:-$root/integration/conformance/cases}
export PEERGUARD_REQUIRE_BROWSER=${PEERGUARD_REQUIRE_BROWSER:-1}
bash scripts/setup-browser.sh
bash scripts/build-playground.sh >/dev/null
# Rebuilt after the page so the binary embeds it (playground/build.rs).
cargo build -p peerguard --bin peerguard
cargo test -p peerguard-playground --test browser -- --nocapture
