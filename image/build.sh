#!/usr/bin/env bash
# Builds a FROM-scratch container image for one binary with podman, without pulling anything:
# image/rootfs.sh stages the binary, its shared libraries, CA certificates and user 1000 into a
# temporary build context, and CONTAINERFILE (which copies `rootfs/` to /) says how it runs.
#
#   image/build.sh BINARY CONTAINERFILE TAG [TAG...]
#
# `make image` passes the release binary; tests/image.rs the debug binary its build produced.
# The image is in Docker's format (v2s2), which ECR and ECS take like OCI's: OCI images have
# no HEALTHCHECK, and the Containerfile's health check should reach users of the image.
# --no-cache: nothing to reuse FROM scratch, and the layer-cache lookup races with other
# builds and removals running at the same time (tests build images in parallel).
# Prints the image's size last. Installs podman and runc first if they are missing
# (image/install-podman.sh).
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 BINARY CONTAINERFILE TAG [TAG...]" >&2
  exit 64
fi
binary="$1"
containerfile="$2"
shift 2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

bash "$here/install-podman.sh" || { echo "build: podman is needed to build the image (see above)" >&2; exit 1; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
bash "$here/rootfs.sh" "$binary" "$context/rootfs"
cp "$containerfile" "$context/Containerfile"

tags=()
for t in "$@"; do tags+=(--tag "$t"); done
podman build --quiet --no-cache --format docker --file "$context/Containerfile" "${tags[@]}" "$context" >/dev/null

bytes="$(podman image inspect --format '{{.Size}}' "$1")"
echo "built $*: $(awk -v b="$bytes" 'BEGIN { printf "%.1f MB (%.1f MiB, %d bytes)", b / 1e6, b / 1048576, b }')"
