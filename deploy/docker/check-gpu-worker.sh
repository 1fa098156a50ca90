#!/usr/bin/env bash
# The GPU worker's software without a GPU: the workspace binary (built with the cuda and tensorrt
# features) on the GPU image's ONNX Runtime (scripts/setup.sh gpu-runtime PREFIX).
#   1. `acufarm augment --ep cpu` on the GPU wheel's library writes the same bytes as on the CPU
#      library: the binary and onnxruntime-gpu 1.31.1 agree on the API and the graphs run;
#   2. `--ep cuda` gets as far as the NVIDIA driver: the CUDA provider library loads every CUDA,
#      cuBLAS, cuFFT, cuRAND and cuDNN library and stops only at libcuda.so.1, which the driver
#      brings (so the image lacks nothing but the GPU).
# Usage: deploy/docker/check-gpu-worker.sh PREFIX BIN
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:?usage: check-gpu-worker.sh PREFIX BIN}
bin=${2:?usage: check-gpu-worker.sh PREFIX BIN}
say() { printf 'check-gpu-worker: %s\n' "$*" >&2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
image=$(find examples/acusim-mini -name '*.png' -path '*img_512*' | sort | head -n1)
render() { "$bin" augment --bundle models/tiny/fc --input "$image" --spec examples/acusim.toml --steps 2 "$@"; }

render --ep cpu --output "$tmp/cpu-library.png" 2>"$tmp/cpu.log" || { cat "$tmp/cpu.log" >&2; exit 1; }
gpu_env=(env "ORT_DYLIB_PATH=$prefix/lib/libonnxruntime.so.1.31.1" "LD_LIBRARY_PATH=$(paste -sd: "$prefix/lib.conf")")
"${gpu_env[@]}" "$bin" augment --bundle models/tiny/fc --input "$image" --spec examples/acusim.toml --steps 2 --ep cpu \
  --output "$tmp/gpu-library.png" 2>"$tmp/gpu.log" || { say "the binary cannot render on onnxruntime-gpu's library:"; cat "$tmp/gpu.log" >&2; exit 1; }
if ! cmp -s "$tmp/cpu-library.png" "$tmp/gpu-library.png"; then
  say "onnxruntime-gpu's CPU provider wrote other bytes than onnxruntime's for the same job"
  exit 1
fi
say "--ep cpu on onnxruntime-gpu 1.31.1: the same bytes as on the CPU library ($(basename "$image"))"

if "${gpu_env[@]}" "$bin" augment --bundle models/tiny/fc --input "$image" --spec examples/acusim.toml --steps 2 --ep cuda \
  --output "$tmp/cuda.png" 2>"$tmp/cuda.log"; then
  say "--ep cuda rendered without a GPU (is one here?); nothing to check about the driver"
  exit 0
fi
if ! grep -q 'libcuda.so.1' "$tmp/cuda.log"; then
  say "--ep cuda failed before it reached the NVIDIA driver:"
  cat "$tmp/cuda.log" >&2
  exit 1
fi
say "--ep cuda: the CUDA provider loaded its libraries and stopped only at the driver (libcuda.so.1), as it must without a GPU"
