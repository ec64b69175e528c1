#!/usr/bin/env bash
# Copies the page's examples into OUT and writes OUT/index.json:
#   the sandbox stages (integration/sandbox/stages/*.yaml: resources, loaded into the editor
#   with the sandbox's httpbin.full workload) and the project's conformance cases
#   (integration/conformance/cases/*.yaml: whole scenarios, imported).
# Usage: examples.sh REPO_ROOT OUT
set -euo pipefail
root=$1 out=$2
mkdir -p "$out"
entries=()
json_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
for f in "$root"/integration/sandbox/stages/*.yaml; do
  b=$(basename "$f"); cp "$f" "$out/stage-$b"
  entries+=("{\"kind\":\"resources\",\"file\":\"stage-$b\",\"title\":$(json_str "sandbox stage ${b%.yaml}")}")
done
for f in "$root"/integration/conformance/cases/*.yaml; do
  b=$(basename "$f"); cp "$f" "$out/case-$b"
  entries+=("{\"kind\":\"scenario\",\"file\":\"case-$b\",\"title\":$(json_str "case ${b%.yaml}")}")
done
(IFS=,; printf '[%s]\n' "${entries[*]}") > "$out/index.json"
echo "[examples] ${#entries[@]} examples in $out" >&2
