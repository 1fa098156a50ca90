#!/usr/bin/env bash
# Training throughput of the evaluation network (`acufarm evaluate`): forward, the three losses,
# backward and the AdamW step on batches from the image cache, for resnet18 and densenet201, plus
# the loader's decode-and-resize rate (PNG 512² -> SIZE², one process per core).
# Usage: bench/evaluate.sh [SIZE] [BATCH] [STEPS] [DEVICE]   (needs scripts/setup.sh dev)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-256}
BATCH=${2:-8}
STEPS=${3:-8}
DEVICE=${4:-cpu}
PY=${ACUFARM_HOME:-${HOME:-/root}/.cache/acufarm}/py/bin/python
results=()
for backbone in resnet18 densenet201; do
  results+=("$(PYTHONPATH=evaluate "$PY" -m acufarm_eval bench --backbone "$backbone" --image-size "$SIZE" \
    --batch-size "$BATCH" --steps "$STEPS" --device "$DEVICE" --decode-images 128)")
  echo "${results[-1]}"
done
"$PY" - "${results[@]}" <<'PY'
import json, sys
rows = [json.loads(s) for s in sys.argv[1:]]
print("\n| backbone | device | threads | input | batch | training samples/s | s per step | decode images/s (workers) |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['backbone']} | {r['device']} | {r['threads']} | {r['image_size']}² | {r['batch_size']} | {r['train_samples_per_s']:.2f} | "
          f"{r['median_step_s']:.2f} | {r['decode_images_per_s']:.0f} ({r['decode_workers']}) |")
PY
