#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh dev), checks formatting and
# lints, then runs the Rust suite (unit + end-to-end through the real binary, property tests), the
# dashboard's browser tests (headless Chromium), the
# Python reference suites (exporter checks, sampler parity against k-diffusion, schedule vectors,
# tokenizer ids), the evaluation's PyTorch tests, the landmark-drift agreement with MediaPipe and a
# bounded fuzzing pass; beside
# them, in background lanes, the deployment checks, the GPU image's install steps and the Compose
# stack end to end in containers. The multi-node rehearsal (network namespaces) is part of the
# Rust suite. Each stage prints how long it took; a table of all stages closes the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# The binary and the tests find ONNX Runtime and the Python environment under ACUFARM_HOME.
export ACUFARM_HOME=${ACUFARM_HOME:-${HOME:-/root}/.cache/acufarm}

TIMES=()
stage() {
  local name=$1 started=$SECONDS rc=0
  shift
  echo "==> $name"
  "$@" || rc=$?
  TIMES+=("$(printf '%-22s %5d s%s' "$name" $((SECONDS - started)) "$([ $rc -eq 0 ] || echo "  FAILED (exit $rc)")")")
  echo "==> $name: $((SECONDS - started)) s"
  if [ $rc -ne 0 ]; then
    summary
    exit $rc
  fi
}
summary() {
  echo "==> stage times"
  printf '  %s\n' "${TIMES[@]}"
}

# Lanes: stages that need little CPU (downloads, containers) run in the background beside the
# ones that build and test; each writes target/lanes/NAME.log, printed when it is joined. A
# failing stage still waits for the lanes (they clean up what they started) before exiting.
declare -A LANE_PIDS=()
LANES=target/lanes
lane() {
  local name=$1
  shift
  mkdir -p "$LANES"
  rm -f "$LANES/$name".{log,rc,time}
  echo "==> $name (lane, in the background: $LANES/$name.log)"
  (
    started=$SECONDS rc=0
    "$@" >"$LANES/$name.log" 2>&1 || rc=$?
    echo $((SECONDS - started)) >"$LANES/$name.time"
    echo $rc >"$LANES/$name.rc"
  ) &
  LANE_PIDS[$name]=$!
}
join_lane() {
  local name=$1 rc
  wait "${LANE_PIDS[$name]}" || true
  unset "LANE_PIDS[$name]"
  echo "==> $name (lane) output:"
  cat "$LANES/$name.log"
  rc=$(cat "$LANES/$name.rc" 2>/dev/null || echo 1)
  TIMES+=("$(printf '%-22s %5d s  (lane)%s' "$name" "$(cat "$LANES/$name.time" 2>/dev/null || echo 0)" "$([ "$rc" -eq 0 ] || echo "  FAILED (exit $rc)")")")
  echo "==> $name (lane): exit $rc"
  if [ "$rc" -ne 0 ]; then
    summary
    exit "$rc"
  fi
}
wait_lanes() {
  local pid
  for pid in "${LANE_PIDS[@]}"; do wait "$pid" || true; done
}
trap wait_lanes EXIT

stage setup scripts/setup.sh dev
# The GPU worker image's install steps, run here (no GPU needed): onnxruntime-gpu with the CUDA 13,
# cuDNN 9 and TensorRT wheels, every CUDA provider library checked to resolve its dependencies.
lane gpu-runtime scripts/setup.sh gpu-runtime "$ACUFARM_HOME/gpu-runtime" --no-tensorrt
# Compose schema, Kubernetes schemas (+ CRDs), hadolint, the manifests' references.
lane deploy-check deploy/check.sh
stage fmt cargo fmt --all --check
stage build cargo build --workspace --all-targets --locked
# The Compose stack's `cpu` profile end to end on rootful podman, with the binary just built.
lane compose-e2e env ACUFARM_BIN="$PWD/target/debug/acufarm" deploy/compose/e2e.sh
stage clippy cargo clippy --workspace --all-targets --locked -- -D warnings
stage rust-tests cargo nextest run --workspace --locked --no-fail-fast -E 'not binary(browser)'
# The dashboard in headless Chromium (WebDriver), through the real binary; screenshots land in
# target/screenshots/.
stage browser cargo nextest run --workspace --locked --no-fail-fast -E 'binary(browser)'
stage python-reference env ACUFARM_BIN="$PWD/target/debug/acufarm" "$ACUFARM_HOME/py/bin/python" -m pytest -q -p no:cacheprovider models/tests tests/reference
# The training-based evaluation's PyTorch side: losses on hand values, splits, learning, resume, report.
stage python-evaluate "$ACUFARM_HOME/py/bin/python" -m pytest -q -p no:cacheprovider evaluate/tests
# The Rust Face Mesh against mediapipe 0.10.21 itself (its own venv: it needs numpy < 2).
stage python-drift env ACUFARM_BIN="$PWD/target/debug/acufarm" "$ACUFARM_HOME/mediapipe/bin/python" -m pytest -q -p no:cacheprovider tests/drift
# Every parser of user input under libFuzzer for a bounded time (a loud proptest campaign instead
# where nightly or cargo-fuzz is missing).
stage fuzz env FUZZ_TARGET_DIR="$ACUFARM_HOME/fuzz-target" scripts/fuzz.sh 20
join_lane deploy-check
join_lane gpu-runtime
# The binary just built on the GPU image's ONNX Runtime: same bytes on its CPU provider, and the
# CUDA provider loads everything but the NVIDIA driver.
stage gpu-worker deploy/docker/check-gpu-worker.sh "$ACUFARM_HOME/gpu-runtime" target/debug/acufarm
join_lane compose-e2e
summary
