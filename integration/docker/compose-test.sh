#!/usr/bin/env bash
# The auto mTLS walkthrough in containers: builds the images (build-images.sh, no registry),
# starts the committed docker-compose.yaml, and checks stages 1 and 3 THROUGH THE CONTAINERS:
# every matrix row is measured inside its client pod's container (`sandbox matrix --from`),
# stage 3 is applied by the controller container, `down -v` always runs.
#
#   bash integration/docker/compose-test.sh      # prints "N passed, M failed"; exit 1 on failure
#
# Env: DOCKER_COMPOSE (default docker-compose, else `docker compose`), PEERGUARD_SKIP_IMAGES=1
# (use the images as built), and build-images.sh's variables. Uses the fixed network
# 10.217.0.0/16 of docker-compose.yaml: one run at a time per Docker engine.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
file="$root/docker-compose.yaml"
project=${PEERGUARD_COMPOSE_PROJECT:-peerguard-compose-test}
if [ -n "${DOCKER_COMPOSE:-}" ]; then read -r -a dc <<<"$DOCKER_COMPOSE"
elif command -v docker-compose >/dev/null 2>&1; then dc=(docker-compose)
else dc=(docker compose); fi
compose() { "${dc[@]}" -p "$project" -f "$file" "$@"; }
step() { printf '\n== %s\n' "$*" >&2; }
t0=$(date +%s)
passed=0; failed=0
check() { # description expected actual
  if [ "$2" = "$3" ]; then passed=$((passed + 1)); printf 'ok    %s\n' "$1"
  else failed=$((failed + 1)); printf 'FAIL  %s\n      want: %s\n      got:  %s\n' "$1" "$2" "$3"; fi
}

if [ "${PEERGUARD_SKIP_IMAGES:-0}" != 1 ]; then
  step "images"
  bash integration/docker/build-images.sh
fi

finish() {
  rc=$?
  if [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ]; then
    step "logs (controller, sidecars)"
    compose logs --no-color --tail 30 peerguard >&2 || true
    compose exec -T peerguard sh -c 'tail -n 5 /state/envoy/*/envoy.log /state/serve.log' >&2 || true
  fi
  step "down"
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  printf '\ncompose test took %d s\n%d passed, %d failed\n' $(( $(date +%s) - t0 )) "$passed" "$failed"
  if [ "$rc" -eq 0 ] && [ "$failed" -gt 0 ]; then rc=1; fi
  if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then echo "aborted (exit $rc)"; fi
  exit "$rc"
}
trap finish EXIT

step "up ($file, project $project)"
compose down -v --remove-orphans >/dev/null 2>&1 || true
t_up=$(date +%s)
compose up -d >/dev/null
ready=""
for _ in $(seq 1 180); do
  logs=$(compose logs --no-color peerguard 2>&1 || true)
  case "$logs" in *"sandbox: up in"*) ready=1; break ;; esac
  if [ -z "$(compose ps -q peerguard)" ] || [ "$(docker inspect -f '{{.State.Running}}' "$(compose ps -q peerguard)")" != true ]; then
    break
  fi
  sleep 1
done
printf '%s\n' "$(compose logs --no-color peerguard 2>&1 | sed 's/^[^|]*| //' | grep '^sandbox:' || true)" >&2
check "controller ready (sandbox: up)" 1 "${ready:-0}"
[ -n "$ready" ] || exit 1
echo "ready $(( $(date +%s) - t_up )) s after compose up" >&2

# One row per client pod, measured in that pod's container: "from to code principal".
matrix() {
  local pod
  for pod in sleep.full sleep.legacy; do
    compose exec -T "${pod//./-}" peerguard sandbox --dir /state matrix --from "$pod" --output json \
      | jq -r '.[] | "\(.from) \(.to) \(.code) \(.principal // "-")"'
  done
}
expect() { # stage-name expected-lines
  local got line want_line i=0
  got=$(matrix)
  printf '%s\n' "$got" | sed 's/^/      /' >&2
  while IFS= read -r want_line; do
    i=$((i + 1))
    line=$(printf '%s\n' "$got" | sed -n "${i}p")
    check "$1: ${want_line% * *}" "$want_line" "$line"
  done <<<"$2"
}
SF=spiffe://cluster.local/ns/full/sa/sleep

step "stage 1 (MeshPolicy PERMISSIVE, applied by up)"
expect "stage 1" "sleep.full httpbin.full 200 $SF
sleep.full httpbin.partial 200 $SF
sleep.full httpbin.legacy 200 -
sleep.legacy httpbin.full 200 -
sleep.legacy httpbin.partial 200 -
sleep.legacy httpbin.legacy 200 -"

step "stage 3 (Policy httpbin in full: STRICT)"
out=$(compose exec -T peerguard peerguard sandbox --dir /state apply \
  /usr/local/share/peerguard/stages/3-strict.yaml 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out" | sed 's/^/      /' >&2
check "apply 3-strict.yaml in the controller container" 0 "$rc"
expect "stage 3" "sleep.full httpbin.full 200 $SF
sleep.full httpbin.partial 200 $SF
sleep.full httpbin.legacy 200 -
sleep.legacy httpbin.full 0 -
sleep.legacy httpbin.partial 200 -
sleep.legacy httpbin.legacy 200 -"
# curl's view of the refused plaintext connection: 000 / exit 56.
compose exec -T sleep-legacy peerguard sandbox --dir /state exec sleep.legacy -- \
  GET http://httpbin.full:8000/headers >/dev/null 2>&1 && rc=0 || rc=$?
check "stage 3: sleep.legacy exec httpbin.full exits 56" 56 "$rc"
# The refusal was peerguard's, not a missing chain (Filter chains: both chains exist on every
# port): the transport slot's native RBAC (`transport.rbac.denied`, STRICT held there whatever
# enforces the policies) or the wasm filter (`peerguard_plaintext_refused`), read from
# httpbin.full's sidecar admin port (bash's /dev/tcp: the images have no curl).
refused=$(compose exec -T peerguard bash -c 'exec 3<>/dev/tcp/10.217.1.20/15000
  printf "GET /stats HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n" >&3; cat <&3' \
  | sed -n -e 's/^wasmcustom.peerguard_plaintext_refused: \([0-9]*\).*/\1/p' \
    -e 's/^transport.rbac.denied: \([0-9]*\).*/\1/p' \
  | awk '{ n += $1 } END { if (NR) print n }')
check "stage 3: httpbin.full's sidecar counted the refusals (>= 2)" yes "$([ "${refused:-0}" -ge 2 ] && echo yes || echo "no (${refused:-none})")"
