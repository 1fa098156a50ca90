"""Agreement between acufarm's Rust Face Mesh and MediaPipe's own Python pipeline.

Runs `mediapipe.solutions.face_mesh` (mediapipe 0.10.21, static image mode, refinement off, one
face) and `acufarm landmarks --mesh` on the same PNG and compares the 8 drift points (DESIGN §8)
and the whole 468-point mesh in pixels.

As a script (CI's extra step on a real AcuSim image):

    python tests/drift/agreement.py --acufarm target/debug/acufarm IMAGE [--tolerance 1.0]

prepares IMAGE like the tests do (transparency flattened onto white, centre-cropped to a square,
resized to 512²), prints the per-point table and exits non-zero when the mean of the 8 per-point
differences exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# DESIGN §8: RE_outer, RE_inner, LE_inner, LE_outer, Mouth_R, Mouth_L, Philtrum; NasalBridgeMid is
# the midpoint of 133 and 362.
NAMES = ["RE_outer", "RE_inner", "LE_inner", "LE_outer", "Mouth_R", "Mouth_L", "Philtrum", "NasalBridgeMid"]
INDICES = [33, 133, 362, 263, 61, 291, 0]


def prepare(image: Image.Image, size: int = 512) -> Image.Image:
    """RGB on white, centre-cropped to a square, resized to size²."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


def eight(mesh: np.ndarray) -> np.ndarray:
    pts = mesh[INDICES]
    return np.vstack([pts, (mesh[133] + mesh[362]) / 2.0])


def mediapipe_mesh(rgb: np.ndarray) -> np.ndarray | None:
    """468 × 2 pixel landmarks from MediaPipe's Python solution, or None without a face."""
    import mediapipe as mp

    h, w = rgb.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=0.5
    ) as fm:
        result = fm.process(rgb)
    if not result.multi_face_landmarks:
        return None
    lm = result.multi_face_landmarks[0].landmark
    return np.array([[p.x * w, p.y * h] for p in lm], dtype=np.float64)


def acufarm_mesh(binary: str, path: Path) -> np.ndarray | None:
    out = subprocess.run([binary, "landmarks", "--mesh", str(path)], check=True, capture_output=True, text=True)
    row = json.loads(out.stdout.strip().splitlines()[0])
    if row.get("mesh") is None:
        return None
    return np.array(row["mesh"], dtype=np.float64)


def compare(binary: str, image: Image.Image, workdir: Path, name: str = "face.png") -> dict:
    """Both meshes on `image` (saved as PNG in workdir): per-point and mesh differences in px."""
    path = workdir / name
    image.save(path)
    rgb = np.asarray(Image.open(path).convert("RGB"))
    ours = acufarm_mesh(binary, path)
    theirs = mediapipe_mesh(rgb)
    result = {"image": str(path), "acufarm_found": ours is not None, "mediapipe_found": theirs is not None}
    if ours is None or theirs is None:
        return result
    per_point = np.linalg.norm(eight(ours) - eight(theirs), axis=1)
    mesh = np.linalg.norm(ours - theirs, axis=1)
    result.update(
        per_point=dict(zip(NAMES, per_point.tolist())),
        mean_8=float(per_point.mean()),
        max_8=float(per_point.max()),
        mesh_mean=float(mesh.mean()),
        mesh_max=float(mesh.max()),
        inter_ocular=float(np.linalg.norm(theirs[33] - theirs[263])),
    )
    return result


def table(result: dict) -> str:
    lines = [f"{result['image']}: acufarm vs mediapipe 0.10.21 (px)"]
    if "per_point" not in result:
        lines.append(f"  face found: acufarm {result['acufarm_found']}, mediapipe {result['mediapipe_found']}")
        return "\n".join(lines)
    for name, d in result["per_point"].items():
        lines.append(f"  {name:<15} {d:7.3f}")
    lines.append(f"  {'mean of 8':<15} {result['mean_8']:7.3f}   (max {result['max_8']:.3f})")
    lines.append(f"  {'468-point mesh':<15} {result['mesh_mean']:7.3f}   (max {result['mesh_max']:.3f})")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", type=Path)
    ap.add_argument("--acufarm", default="target/debug/acufarm")
    ap.add_argument("--tolerance", type=float, default=1.0, help="largest allowed mean of the 8 per-point differences (px)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        result = compare(args.acufarm, prepare(Image.open(args.image)), workdir, args.image.stem + "_512.png")
    print(table(result))
    if "per_point" not in result:
        print("FAIL: a face was found by only one of the two (or neither)", file=sys.stderr)
        return 1
    if result["mean_8"] > args.tolerance:
        print(f"FAIL: mean per-point difference {result['mean_8']:.3f} px exceeds {args.tolerance} px", file=sys.stderr)
        return 1
    print(f"OK: mean per-point difference {result['mean_8']:.3f} px ≤ {args.tolerance} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
