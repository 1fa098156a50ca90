#!/usr/bin/env bash
# Worker-pipeline benchmark (CPU provider): acufarm's pipeline and diffusers' ONNX img2img pipeline
# side by side on the plain tiny bundle (512², S=20, t0=0.4, CFG 2), then the IC-Light + IP-Adapter
# bundle on acufarm. Usage: bench/pipeline.sh [IMAGES] [THREADS]   (needs scripts/setup.sh dev)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${1:-3}
THREADS=${2:-$(nproc)}
PY=${ACUFARM_HOME:-${HOME:-/root}/.cache/acufarm}/py/bin/python
cargo build --release --locked -p acufarm-bench >&2
common=(--images "$IMAGES" --size 512 --steps 20 --t0 0.4 --cfg 2 --threads "$THREADS")
ours=$(target/release/pipeline-bench --bundle models/tiny/plain "${common[@]}")
peer=$("$PY" bench/pipeline_peer.py --bundle models/tiny/plain "${common[@]}")
fc=$(target/release/pipeline-bench --bundle models/tiny/fc "${common[@]}")
echo "$ours"; echo "$peer"; echo "$fc"
"$PY" - "$ours" "$peer" "$fc" <<'PY'
import json, sys
ours, peer, fc = (json.loads(s) for s in sys.argv[1:])
print(f"\n| run | images/s | UNet calls/image | outside ONNX Runtime |")
print(f"|---|---|---|---|")
print(f"| acufarm, tiny plain | {ours['images_per_second']:.4f} | {ours['unet_calls_per_image']:.0f} | {100*ours['outside_ort_share']:.1f}% |")
print(f"| diffusers ONNX img2img, tiny plain | {peer['images_per_second']:.4f} | {peer['unet_calls_per_image']:.0f} | - |")
print(f"| acufarm, tiny fc (IC-Light + IP-Adapter) | {fc['images_per_second']:.4f} | {fc['unet_calls_per_image']:.0f} | {100*fc['outside_ort_share']:.1f}% |")
print(f"\nacufarm / diffusers images/s ratio: {ours['images_per_second'] / peer['images_per_second']:.3f}")
PY
