#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh dev), checks formatting and
# lints, then runs the Rust suite (unit + end-to-end through the real binary, property tests), the
# dashboard's browser tests (headless Chromium), the
# Python reference suites (exporter checks, sampler parity against k-diffusion, schedule vectors,
# tokenizer ids), the landmark-drift agreement with MediaPipe and a bounded fuzzing pass. Each
# stage prints how long it took; a table of all stages closes the run.
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

stage setup scripts/setup.sh dev
stage fmt cargo fmt --all --check
stage build cargo build --workspace --all-targets --locked
stage clippy cargo clippy --workspace --all-targets --locked -- -D warnings
stage rust-tests cargo nextest run --workspace --locked --no-fail-fast -E 'not binary(browser)'
# The dashboard in headless Chromium (WebDriver), through the real binary; screenshots land in
# target/screenshots/.
stage browser cargo nextest run --workspace --locked --no-fail-fast -E 'binary(browser)'
stage python-reference env ACUFARM_BIN="$PWD/target/debug/acufarm" "$ACUFARM_HOME/py/bin/python" -m pytest -q -p no:cacheprovider models/tests tests/reference
# The Rust Face Mesh against mediapipe 0.10.21 itself (its own venv: it needs numpy < 2).
stage python-drift env ACUFARM_BIN="$PWD/target/debug/acufarm" "$ACUFARM_HOME/mediapipe/bin/python" -m pytest -q -p no:cacheprovider tests/drift
# Every parser of user input under libFuzzer for a bounded time (a loud proptest campaign instead
# where nightly or cargo-fuzz is missing).
stage fuzz env FUZZ_TARGET_DIR="$ACUFARM_HOME/fuzz-target" scripts/fuzz.sh 20
summary
