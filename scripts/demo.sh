#!/usr/bin/env bash
# The main job on one machine: relight the example AcuSim-style render with the committed tiny
# IC-Light + IP-Adapter bundle. Tiny random weights: the output is noise, by design; the pipeline,
# schedules, conditioning and file handling are the real ones (see models/README.md for real weights).
set -euo pipefail
cd "$(dirname "$0")/.."
export ACUFARM_HOME=${ACUFARM_HOME:-${HOME:-/root}/.cache/acufarm}
scripts/setup.sh runtime
cargo build --release --locked -p acufarm-cli
mkdir -p out
target/release/acufarm augment \
  --bundle models/tiny/fc \
  --spec examples/acusim.toml \
  --input examples/images/M_Demo_N_HD_0017.png \
  --scene examples/scenes/warm_room.png \
  --seed 1 \
  --output out/M_Demo_N_HD_0017.png
