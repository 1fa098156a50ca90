#!/usr/bin/env bash
# Builds the images of deploy/docker/Dockerfile, tagged acufarm-<target>:$VERSION.
#
#   deploy/docker/build.sh [TARGET…]             the published way: the binary is compiled in the
#                                                Rust builder stage, bases from their registries
#   deploy/docker/build.sh --context [TARGET…]   CI's way: the host's binary (ACUFARM_BIN, default
#                                                target/release/acufarm) laid out by
#                                                scripts/setup.sh image-context, and the local
#                                                debootstrap base (scripts/setup.sh containers)
#
# TARGETs: coordinator worker-cpu worker-gpu (default all three). Environment: CONTAINER_ENGINE
# (default podman, else docker), VERSION (0.1.0), RUNTIME_BASE / CUDA_BASE / BUILDER_BASE (passed
# on when set). Prints each image's build time and size.
set -euo pipefail
cd "$(dirname "$0")/../.."

mode=compile
if [ "${1:-}" = --context ]; then mode=prebuilt; shift; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(coordinator worker-cpu worker-gpu)
engine=${CONTAINER_ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
version=${VERSION:-0.1.0}

# BINARY_FROM is always passed: podman 4.3 resolves a stage named by an ARG only then.
args=(--build-arg "BINARY_FROM=$mode" --build-arg "VERSION=$version")
if [ $mode = prebuilt ]; then
  scripts/setup.sh image-context
  : "${RUNTIME_BASE:=localhost/local/debian:bookworm}" "${CUDA_BASE:=localhost/local/debian:bookworm}"
fi
for name in RUNTIME_BASE CUDA_BASE BUILDER_BASE; do
  if [ -n "${!name:-}" ]; then args+=(--build-arg "$name=${!name}"); fi
done

for target in "${targets[@]}"; do
  case $target in coordinator | worker-cpu | worker-gpu) ;; *) echo "build.sh: unknown target $target" >&2; exit 2 ;; esac
  started=$SECONDS
  "$engine" build -q -f deploy/docker/Dockerfile --target "$target" "${args[@]}" -t "acufarm-$target:$version" . >/dev/null
  size=$("$engine" image inspect --format '{{.Size}}' "acufarm-$target:$version")
  printf 'build.sh: acufarm-%s:%s (%s binary) in %d s, %d MB\n' "$target" "$version" "$mode" \
    $((SECONDS - started)) $((size / 1000000))
done
