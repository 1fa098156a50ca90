"""A small AcuSim-layout dataset drawn from the real labels in labels/, for tests and benchmarks.

Each model takes one of the four real frontal labels (cycling), its own scale, and per view a
shift, rotation and scale jitter applied to every point; points pushed out of the frame are left
out, as AcuSim leaves out occluded ones. The image shows the figure those points outline (face
hull and shoulders) with a dot on every visible point, coloured by meridian, on a plain
background. The "augmented" copies keep that geometry and change what an img2img relight
changes: background, skin tone, brightness and grain. These are drawings, not AcuSim renders:
the point configurations and visibility sets are AcuSim's, the pixels are not.
"""
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .points import PointTable

LABELS = Path(__file__).parent / "labels"
BASES = ("asher", "grace", "minami", "novak")
MODELS = (
    "M_Asher_N_HD",
    "F_Grace_N_HA",
    "F_Minami_N_HB",
    "M_Novak_S_BD",
    "M_Orin_N_HC",
    "F_Yara_F_HA",
    "M_Taro_S_HD",
    "F_Lena_N_HB",
    "M_Idris_N_HA",
    "F_Sora_S_HC",
)
MERIDIAN_COLOURS = ((200, 40, 40), (40, 150, 40), (40, 70, 200), (200, 160, 20), (150, 40, 170), (20, 160, 170), (230, 110, 20), (90, 90, 90), (240, 60, 150))


def table():
    return PointTable.read(LABELS / "map.txt")


def base_label(name):
    return json.loads((LABELS / f"{name}.json").read_text(encoding="utf-8"))["label"]


def view_points(model, view, points):
    rng = np.random.default_rng([model, view, 7])
    scale = (0.72 + 0.07 * (model % 5)) * rng.uniform(0.9, 1.1)
    angle = math.radians(rng.uniform(-20, 20))
    shift = rng.uniform(-0.14, 0.14, size=2)
    c = np.array([0.5, 0.6])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    out = []
    for p in points:
        xy = np.array([p["coordinate"]["x"], p["coordinate"]["y"]])
        x, y = c + scale * rot @ (xy - c) + shift
        if 0.02 <= x <= 0.98 and 0.02 <= y <= 0.98:
            out.append({"name": p["name"], "coordinate": {"x": round(float(x), 6), "y": round(float(y), 6), "n": p["coordinate"]["n"], "h": p["coordinate"]["h"]}})
    return out, (scale, rot, shift, c)


def _hull(points):
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def draw(size, label, geometry, tab, background, skin, dot_gain=1.0, grain=0.0, rng=None):
    k = 4  # drawn at 4× and reduced, for smooth edges
    s = size * k
    img = Image.new("RGB", (s, s), background)
    d = ImageDraw.Draw(img)
    scale, rot, shift, c = geometry
    # shoulders: an ellipse under the face, moved like the points
    cx, cy = c + scale * rot @ (np.array([0.5, 1.05]) - c) + shift
    d.ellipse([(cx - 0.45 * scale) * s, (cy - 0.12 * scale) * s, (cx + 0.45 * scale) * s, (cy + 0.25 * scale) * s], fill=tuple(int(v * 0.9) for v in skin))
    pts = [(p["coordinate"]["x"] * s, p["coordinate"]["y"] * s) for p in label]
    hull = _hull(pts)
    if len(hull) >= 3:
        d.polygon(hull, fill=skin)
    index = {n: i for i, n in enumerate(tab.names)}
    r = max(1.5, size / 80) * k
    for p, (x, y) in zip(label, pts):
        g = int(tab.group_of[index[p["name"]]])
        colour = tuple(int(min(255, v * dot_gain)) for v in MERIDIAN_COLOURS[g % len(MERIDIAN_COLOURS)])
        d.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    img = img.resize((size, size), Image.LANCZOS)
    if grain > 0 and rng is not None:
        arr = np.asarray(img).astype(np.float32) + rng.normal(0, grain, size=(size, size, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img


def write(original, augmented=None, models=6, views=8, size=96, variants=1):
    """Writes the dataset (and its augmented copies); returns {"original": [sample…], "augmented": […]}
    with sample = {"id", "model", "group", "image", "label"(, "source")}."""
    if not 1 <= models <= len(MODELS):
        raise ValueError(f"--models must be 1..{len(MODELS)}")
    tab = table()
    bases = {b: base_label(b) for b in BASES}
    written = {"original": [], "augmented": []}
    roots = [("original", Path(original))] + ([("augmented", Path(augmented))] if augmented else [])
    for _, root in roots:
        (root / "train" / "image" / f"img_{size}").mkdir(parents=True, exist_ok=True)
        (root / "train" / "label" / "label").mkdir(parents=True, exist_ok=True)
        (root / "map.txt").write_bytes((LABELS / "map.txt").read_bytes())
    for m in range(models):
        folder = MODELS[m]
        gender, name = folder.split("_")[:2]
        skin = (222 - 14 * (m % 4), 180 - 12 * (m % 3), 150 - 10 * (m % 5))
        for v in range(views):
            label, geometry = view_points(m, v, bases[BASES[m % len(BASES)]])
            stem = f"{folder}_{v:04d}"
            text = json.dumps({"label": label}, ensure_ascii=False)
            o = Path(original)
            img_path = o / "train" / "image" / f"img_{size}" / f"{stem}.png"
            lab_path = o / "train" / "label" / "label" / f"{stem}.json"
            draw(size, label, geometry, tab, (236, 236, 236), skin).save(img_path)
            lab_path.write_text(text, encoding="utf-8")
            written["original"].append({"id": stem, "model": folder, "group": f"{gender}_{name}", "image": str(img_path), "label": str(lab_path)})
            if augmented:
                for n in range(variants):
                    a = Path(augmented) / (f"v{n}" if n else "")
                    (a / "train" / "image" / f"img_{size}").mkdir(parents=True, exist_ok=True)
                    (a / "train" / "label" / "label").mkdir(parents=True, exist_ok=True)
                    rng = np.random.default_rng([m, v, n, 11])
                    bg = tuple(int(x) for x in rng.integers(30, 230, size=3))
                    gain = rng.uniform(0.7, 1.25)
                    tone = tuple(int(min(255, x * gain)) for x in skin)
                    aug_img = a / "train" / "image" / f"img_{size}" / f"{stem}.png"
                    aug_lab = a / "train" / "label" / "label" / f"{stem}.json"
                    draw(size, label, geometry, tab, bg, tone, dot_gain=rng.uniform(0.8, 1.2), grain=6.0, rng=rng).save(aug_img)
                    aug_lab.write_text(text, encoding="utf-8")
                    written["augmented"].append({"id": f"v{n}/{stem}" if n else stem, "model": folder, "group": f"{gender}_{name}", "image": str(aug_img), "label": str(aug_lab), "source": stem})
    return written
