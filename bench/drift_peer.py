"""Landmark-drift benchmark helpers (run in the MediaPipe venv, $ACUFARM_HOME/mediapipe).

    drift_peer.py make DIR PAIRS     writes DIR/orig/NNNN.png and DIR/aug/NNNN.png: 512² views of
                                     scikit-image's astronaut (zoomed 1-1.5x, cropped) and
                                     their relit, slightly moved counterparts
    drift_peer.py measure DIR        MediaPipe 0.10.21's own pipeline on the same pairs: decode
                                     both PNGs, run solutions.face_mesh (static image mode,
                                     refinement off) on both; prints JSON with pairs/s

The timing covers what `acufarm drift` times: decoding and measuring both images of every pair
(not the report files).
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make(out: Path, pairs: int) -> None:
    from skimage import data

    rng = np.random.default_rng(0)
    face = Image.fromarray(data.astronaut())
    (out / "orig").mkdir(parents=True, exist_ok=True)
    (out / "aug").mkdir(parents=True, exist_ok=True)
    for i in range(pairs):
        # Zoomed-in views (the face stays at least ~93 px wide, the 80 px rule never discards).
        scale = rng.uniform(1.0, 1.5)
        side = int(512 * scale)
        big = face.resize((side, side), Image.Resampling.LANCZOS)
        ox = int(rng.integers(0, min(side - 512, int(150 * scale)) + 1))
        oy = int(rng.integers(0, min(side - 512, int(60 * scale)) + 1))
        canvas = big.crop((ox, oy, ox + 512, oy + 512))
        a = np.asarray(canvas).astype(np.float32) / 255.0
        dx, dy = (int(v) for v in rng.integers(-4, 5, 2))
        relit = np.clip(np.roll(a, (dy, dx), axis=(0, 1)) ** rng.uniform(0.8, 1.25) * rng.uniform(0.8, 1.2), 0, 1)
        canvas.save(out / "orig" / f"{i:04d}.png")
        Image.fromarray((relit * 255 + 0.5).astype(np.uint8)).save(out / "aug" / f"{i:04d}.png")


def measure(root: Path) -> None:
    import mediapipe as mp

    names = sorted(p.name for p in (root / "orig").glob("*.png"))
    found = 0
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False) as fm:
        # One unreported pair first: graph start-up is not part of the steady state.
        for side in ("orig", "aug"):
            fm.process(np.asarray(Image.open(root / side / names[0]).convert("RGB")))
        start = time.perf_counter()
        decode = 0.0
        for name in names:
            for side in ("orig", "aug"):
                t = time.perf_counter()
                rgb = np.asarray(Image.open(root / side / name).convert("RGB"))
                decode += time.perf_counter() - t
                found += fm.process(rgb).multi_face_landmarks is not None
        seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "peer": "mediapipe 0.10.21 solutions.face_mesh",
                "pairs": len(names),
                "faces_found": found,
                "seconds": seconds,
                "decode_seconds": decode,
                "pairs_per_second": len(names) / seconds,
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        measure(Path(sys.argv[2]))
