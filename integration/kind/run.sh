#!/usr/bin/env bash
# The auto mTLS walkthrough in a kind cluster with Istio and peerguard's managed WasmPlugins:
# create a cluster, load the locally built images and module, install Istio (minimal profile)
# and peerguard (manifests/kubernetes/ + --istio-wasmplugins), deploy the seeds' workloads
# (integration/kind/workloads.yaml), run the stages and assert the matrices of
# integration/sandbox/expected-matrices.txt (the one definition the sandbox test reads too),
# check `peerguard readiness` against the sidecars at stages 1 and 3, then delete the cluster.
#
#   bash integration/kind/run.sh           # prints "N passed, M failed"; exit 1 on failure
#
# Needs Docker (an engine that can pull kindest/node and the workload images), kind, kubectl
# and istioctl; without them it prints one SKIP line and exits 0. Env: PEERGUARD_KIND_CLUSTER
# (default peerguard-kind), PEERGUARD_KIND_KEEP=1 (keep the cluster), PEERGUARD_SKIP_IMAGES=1
# (use peerguard/peerguard:dev as built), PEERGUARD_WASM (the module; default: build it).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cluster=${PEERGUARD_KIND_CLUSTER:-peerguard-kind}
node_image=${PEERGUARD_KIND_NODE_IMAGE:-kindest/node:v1.30.0}
expected="$root/integration/sandbox/expected-matrices.txt"
stages="$root/integration/sandbox/stages"

missing=()
for tool in docker kind kubectl istioctl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "SKIP: kind test needs docker, kind, kubectl and istioctl; missing: ${missing[*]}"
  exit 0
fi
if ! docker info >/dev/null 2>&1; then
  echo "SKIP: kind test: no usable Docker engine (docker info failed)"
  exit 0
fi
if ! docker image inspect "$node_image" >/dev/null 2>&1 && ! docker pull -q "$node_image" >/dev/null 2>&1; then
  echo "SKIP: kind test: cannot get $node_image (no image registry reachable)"
  exit 0
fi

step() { printf '\n== %s\n' "$*" >&2; }
passed=0; failed=0
check() { # description expected actual
  if [ "$2" = "$3" ]; then passed=$((passed + 1)); printf 'ok    %s\n' "$1"
  else failed=$((failed + 1)); printf 'FAIL  %s\n      want: %s\n      got:  %s\n' "$1" "$2" "$3"; fi
}
t0=$(date +%s)
finish() {
  rc=$?
  if [ "${PEERGUARD_KIND_KEEP:-0}" = 1 ]; then
    echo "kept cluster $cluster (kind delete cluster --name $cluster)" >&2
  else
    step "delete cluster $cluster"
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  printf '\nkind test took %d s\n%d passed, %d failed\n' $(( $(date +%s) - t0 )) "$passed" "$failed"
  if [ "$rc" -eq 0 ] && [ "$failed" -gt 0 ]; then rc=1; fi
  exit "$rc"
}
trap finish EXIT

step "cluster $cluster"
kind create cluster --name "$cluster" --image "$node_image" --wait 180s
kctl() { kubectl --context "kind-$cluster" "$@"; }

step "images and module"
if [ "${PEERGUARD_SKIP_IMAGES:-0}" != 1 ]; then
  bash integration/docker/build-images.sh
fi
kind load docker-image --name "$cluster" peerguard/peerguard:dev
wasm=${PEERGUARD_WASM:-$(bash scripts/build-wasm.sh | tail -n 1)}
for n in $(kind get nodes --name "$cluster"); do
  docker exec "$n" mkdir -p /var/local/peerguard
  docker cp "$wasm" "$n:/var/local/peerguard/peerguard.wasm"
done

step "Istio (minimal profile)"
# Istio creates only the proxy stats its matcher includes: peerguard's counters (readiness,
# dry-run, decisions) need their prefix.
istioctl --context "kind-$cluster" install -y --set profile=minimal \
  --set 'meshConfig.defaultConfig.proxyStatsMatcher.inclusionPrefixes[0]=wasmcustom.peerguard'

kctl -n istio-system rollout status deploy/istiod --timeout=300s

step "peerguard"
# Istio's CRDs serve security/networking; the legacy authentication.istio.io kinds the
# walkthrough's stage files use come from peerguard's CRD file (only those documents).
awk 'BEGIN { RS = "\n---\n" } /group: authentication\.istio\.io/ { print "---"; print }' \
  manifests/kubernetes/crds/istio-kinds.yaml | kctl apply --server-side -f -
tmp=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj "/O=cluster.local/CN=peerguard kind root CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout "$tmp/ca-key.pem" -out "$tmp/ca-cert.pem" 2>/dev/null
kctl create namespace peerguard-system --dry-run=client -o yaml | kctl apply -f -
kctl -n peerguard-system create secret generic peerguard-ca \
  --from-file="$tmp/ca-cert.pem" --from-file="$tmp/ca-key.pem" --dry-run=client -o yaml | kctl apply -f -
rm -rf "$tmp"
kctl apply -f manifests/kubernetes/peerguard.yaml
kctl apply -f manifests/istio/rbac-wasmplugins.yaml
kctl -n peerguard-system set image deploy/peerguard peerguard=peerguard/peerguard:dev
kctl -n peerguard-system patch deploy/peerguard --type=json -p '[
  {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--istio-wasmplugins"},
  {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--wasm-url=file:///var/local/peerguard/peerguard.wasm"}]'
kctl -n peerguard-system rollout status deploy/peerguard --timeout=300s

step "workloads (full, partial, legacy)"
kctl apply -f integration/kind/workloads.yaml
for ns in full partial legacy; do
  kctl -n "$ns" wait --for=condition=Available deploy --all --timeout=300s
done

# One row: "FROM TO CODE PRINCIPAL" (GET /headers through the client's own sidecar, if any).
measure() { # from to
  local from_ns=${1#sleep.} to=$2 out code uri
  out=$(kctl -n "$from_ns" exec deploy/sleep -c sleep -- \
    curl -sS --max-time 10 "http://$to:8000/headers" -w '\n%{http_code}' 2>/dev/null) || true
  code=$(printf '%s\n' "$out" | tail -n 1)
  case "$code" in ''|000) code=0 ;; esac
  uri=$(printf '%s\n' "$out" | grep -o 'URI=spiffe://[^";,]*' | head -n 1 | sed 's/^URI=//') || true
  echo "$1 $to $code ${uri:--}"
}
matrix() {
  local from to
  for from in sleep.full sleep.legacy; do
    for to in httpbin.full httpbin.partial httpbin.legacy; do measure "$from" "$to"; done
  done
}
# The rows of matrix N from the shared file, normalized to single spaces.
want_matrix() {
  awk -v n="$1" '$1 == n && NF == 5 { print $2, $3, $4, $5 }' "$expected"
}
# The stage file Istio itself reads too: the -v1 one where the stage has one.
stage_file() {
  local files
  read -r -a files <<<"$(awk -v n="$1" '$1 == "stage" && $2 == n { $1 = ""; $2 = ""; print }' "$expected")"
  local f
  for f in "${files[@]}"; do case "$f" in *-v1.yaml) echo "$f"; return ;; esac; done
  echo "${files[0]}"
}
# Istio and the WasmPlugins take a moment to propagate: retry for up to 90 s.
expect_stage() { # N
  local want got="" i
  want=$(want_matrix "$1")
  for i in $(seq 1 30); do
    got=$(matrix)
    [ "$got" = "$want" ] && break
    sleep 3
  done
  printf '%s\n' "$got" | sed 's/^/      /' >&2
  check "stage $1 matrix ($(stage_file "$1"), after ${i}x3 s at most)" "$want" "$got"
}

step "stage 1"
kctl apply -f "$stages/$(stage_file 1)"
expect_stage 1

step "stage 2 (httpbin.partial: with and without the client URI)"
seen=""
for _ in $(seq 1 10); do
  row=$(measure sleep.full httpbin.partial)
  case "$row" in *" 200 spiffe://"*) seen="$seen uri" ;; *" 200 -") seen="$seen none" ;; esac
done
check "stage 2: both endpoints answered (one with mTLS, one without)" "yes" \
  "$(case "$seen" in *uri*none*|*none*uri*) echo yes ;; *) echo "no:$seen" ;; esac)"

# STRICT-readiness: peerguard's filter (the managed WasmPlugin, in Istio's sidecar) counts
# plaintext and mTLS connections per port and source; `peerguard readiness` reads them from
# httpbin.full's sidecar admin while both sleeps call it for a window.
peerguard_bin=${PEERGUARD_BIN:-$(command -v peerguard || true)}
if [ -z "$peerguard_bin" ]; then
  cargo build -q -p peerguard
  peerguard_bin="${CARGO_TARGET_DIR:-$root/target}/debug/peerguard"
fi
readiness() { # prints `peerguard readiness --output json` for httpbin.full, exit code on stderr
  local port=15990 pf rc=0 out
  kctl -n full port-forward deploy/httpbin "$port:15000" >/dev/null 2>&1 & pf=$!
  sleep 3
  ( for _ in $(seq 1 10); do measure sleep.legacy httpbin.full >/dev/null; measure sleep.full httpbin.full >/dev/null; sleep 1; done ) &
  out=$("$peerguard_bin" readiness --envoy-admin "http://127.0.0.1:$port" --window 15s --output json) || rc=$?
  wait "$!" 2>/dev/null || true
  kill "$pf" 2>/dev/null || true
  echo "readiness exit $rc" >&2
  printf '%s\n' "$out"
}
legacy_ip=$(kctl -n legacy get pod -l app=sleep -o jsonpath='{.items[0].status.podIP}')
step "readiness at stage 1 (PERMISSIVE): sleep.legacy still sends plaintext"
report=$(readiness)
check "readiness names sleep.legacy ($legacy_ip) as a plaintext source of httpbin.full" "yes" \
  "$(printf '%s' "$report" | grep -q "\"source\": *\"$legacy_ip\"" && printf '%s' "$report" | grep -q '"ready": *false' && echo yes || echo "no: $report")"
# The mTLS dry-run (peerguard.dev/dry-run on a STRICT PeerAuthentication) is not run here:
# Istio reads the same PeerAuthentication and enforces STRICT itself (it ignores peerguard's
# annotation), so in an Istio mesh the dry-run cannot keep plaintext working; it is shown where
# peerguard enforces mTLS (the sandbox: cli/tests/sandbox_readiness.rs).

for n in 3 4 5; do
  step "stage $n"
  kctl apply -f "$stages/$(stage_file "$n")"
  expect_stage "$n"
  if [ "$n" = 3 ]; then
    step "readiness at stage 3: STRICT is enforced"
    report=$(readiness)
    check "readiness reports httpbin.full's port 80 as STRICT" "yes" \
      "$(printf '%s' "$report" | grep -q '"verdict": *"STRICT"' && echo yes || echo "no: $report")"
  fi
done

step "peerguard wrote the WasmPlugins"
count=$(kctl get wasmplugins -A -l app.kubernetes.io/managed-by=peerguard --no-headers 2>/dev/null | wc -l)
check "managed WasmPlugins exist" "yes" "$([ "$count" -ge 3 ] && echo yes || echo "no ($count)")"
