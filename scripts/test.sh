#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh dev), then runs the Rust suite
# (unit + end-to-end through the real binary) and the Python reference suites (exporter checks,
# sampler parity against k-diffusion, schedule vectors).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
HOME_DIR=${ACUFARM_HOME:-$HOME/.cache/acufarm}

scripts/setup.sh dev

cargo build --workspace --locked
cargo nextest run --workspace --locked --no-fail-fast

ACUFARM_BIN="$PWD/target/debug/acufarm" "$HOME_DIR/py/bin/python" -m pytest -q -p no:cacheprovider models/tests tests/reference
