#!/usr/bin/env bash
# The main job on one machine: an embedded run (SQLite state, local workers, no services) of the
# example spec over the tiny AcuSim-layout dataset in examples/acusim-mini, with the committed tiny
# IC-Light + IP-Adapter bundle, then a verification of every output against the manifest.
# Tiny random weights: the images are noise, by design; everything else is the real pipeline
# (see models/README.md for a bundle from real weights).
set -euo pipefail
cd "$(dirname "$0")/.."
export ACUFARM_HOME=${ACUFARM_HOME:-${HOME:-/root}/.cache/acufarm}
scripts/setup.sh runtime
cargo build --release --locked -p acufarm-cli
# The dashboard is served while the run goes: the run prints its address (sign in with the token
# in out/.state/dashboard.token); on a terminal it stays up after the run until Ctrl-C.
target/release/acufarm run examples/acusim.toml --bundle models/tiny/fc --state-dir out/.state --dashboard "127.0.0.1:${DEMO_DASHBOARD_PORT:-7172}"
target/release/acufarm verify out/acusim-mini-relit
