#!/usr/bin/env bash
# Landmark-drift throughput on CPU at 512²: `acufarm drift` (1 thread and one per core) and
# MediaPipe 0.10.21's own Python Face Mesh on the same pairs, both decoding and measuring both
# images of every pair. Usage: bench/drift.sh [PAIRS]   (needs scripts/setup.sh dev)
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${1:-200}
MP=${ACUFARM_HOME:-${HOME:-/root}/.cache/acufarm}/mediapipe/bin/python
cargo build --release --locked -p acufarm-cli >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$MP" bench/drift_peer.py make "$work" "$PAIRS"
ours() {
  target/release/acufarm drift --original "$work/orig" --augmented "$work/aug" --out "$work/report" --threads "$1" 2>&1 >/dev/null \
    | sed -n 's/^measured \([0-9]*\) pairs in \([0-9.]*\) s .*per image \([0-9.]*\) ms decoding, \([0-9.]*\) ms face mesh.*/{"pairs": \1, "seconds": \2, "decode_ms": \3, "mesh_ms": \4}/p'
}
one=$(ours 1)
all=$(ours "$(nproc)")
peer=$("$MP" bench/drift_peer.py measure "$work")
echo "$one"; echo "$all"; echo "$peer"
"$MP" - "$one" "$all" "$peer" "$(nproc)" <<'PY'
import json, sys
one, allc, peer = (json.loads(s) for s in sys.argv[1:4])
cores = sys.argv[4]
rate = lambda r: r["pairs"] / r["seconds"]
print("\n| run | pairs | pairs/s | ms per image |")
print("|---|---|---|---|")
for name, r in [("acufarm drift, 1 thread", one), (f"acufarm drift, {cores} threads", allc)]:
    print(f"| {name} | {r['pairs']} | {rate(r):.1f} | {1000 * r['seconds'] / (2 * r['pairs']):.2f} |")
print(f"| {peer['peer']} | {peer['pairs']} | {peer['pairs_per_second']:.1f} | {1000 * peer['seconds'] / (2 * peer['pairs']):.2f} |")
print(f"\nMediaPipe: {1000 * peer['decode_seconds'] / (2 * peer['pairs']):.2f} ms per image of that is PNG decoding (Pillow), "
      f"{1000 * (peer['seconds'] - peer['decode_seconds']) / (2 * peer['pairs']):.2f} ms Face Mesh on the decoded image")
print(f"acufarm (1 thread): {one['decode_ms']:.2f} ms per image decoding (image crate), {one['mesh_ms']:.2f} ms Face Mesh")
print(f"\nacufarm (1 thread) / MediaPipe pairs/s: {rate(one) / peer['pairs_per_second']:.2f}")
PY
