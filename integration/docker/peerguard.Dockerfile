# The peerguard image: the `peerguard` binary (server, CLI, sandbox controller, and the demo
# httpbin as `peerguard demo httpbin`) plus the wasm filter and the sandbox's stage files.
# integration/docker/build-images.sh builds it from the binary built on the host (Debian 12
# glibc, like the base). With a registry: --build-arg BASE=debian:bookworm-slim.
#
# Build context: `peerguard` (binary), `peerguard.wasm`, `stages/` (integration/sandbox/stages).
ARG BASE=peerguard/debian-base:bookworm
FROM ${BASE}
COPY peerguard /usr/local/bin/peerguard
COPY peerguard.wasm /usr/local/share/peerguard/peerguard.wasm
COPY stages/ /usr/local/share/peerguard/stages/
CMD ["peerguard", "--help"]
