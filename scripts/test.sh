#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh dev), then runs the Rust suite
# (unit + end-to-end through the real binary) and the Python reference suites (exporter checks,
# sampler parity against k-diffusion, schedule vectors) and the landmark-drift agreement with
# MediaPipe.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# The binary and the tests find ONNX Runtime and the Python environment under ACUFARM_HOME.
export ACUFARM_HOME=${ACUFARM_HOME:-${HOME:-/root}/.cache/acufarm}

scripts/setup.sh dev

cargo build --workspace --locked
cargo nextest run --workspace --locked --no-fail-fast

ACUFARM_BIN="$PWD/target/debug/acufarm" "$ACUFARM_HOME/py/bin/python" -m pytest -q -p no:cacheprovider models/tests tests/reference

# The Rust Face Mesh against mediapipe 0.10.21 itself (its own venv: it needs numpy < 2).
ACUFARM_BIN="$PWD/target/debug/acufarm" "$ACUFARM_HOME/mediapipe/bin/python" -m pytest -q -p no:cacheprovider tests/drift
