"""Label and map.txt parsing under random damage (seeded, so a failure reproduces): every input is
either read or refused with LabelError naming the file — never another exception."""
import json
import random

import pytest

from acufarm_eval.points import LabelError, PointTable
from acufarm_eval.synth import LABELS, base_label, table

VALUES = [None, True, 0, -1, 1e309, "x", "", [], {}, [1, 2], {"x": 1}, float("nan"), 0.5, "0.5", 10**40]


def damaged(rng, doc):
    doc = json.loads(json.dumps(doc))
    points = doc["label"]
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        p = rng.choice(points) if points else None
        if kind == 0 and p:
            p["name"] = rng.choice(VALUES + ["GV20_百会", p["name"] + "x"])
        elif kind == 1 and p and isinstance(p.get("coordinate"), dict):
            p["coordinate"][rng.choice(["x", "y", "n"])] = rng.choice(VALUES)
        elif kind == 2 and p and isinstance(p, dict) and p:
            del p[rng.choice(list(p))]
        elif kind == 3 and p:
            points.append(json.loads(json.dumps(p)))
        elif kind == 4:
            doc = rng.choice([doc, {"labels": points}, points, rng.choice(VALUES)])
            if not isinstance(doc, dict) or "label" not in doc:
                return doc
        elif kind == 5 and p:
            p["coordinate"] = rng.choice(VALUES)
    return doc


@pytest.mark.parametrize("seed", range(40))
def test_damaged_labels_are_read_or_refused_by_name(seed):
    rng = random.Random(seed)
    tab = table()
    source = base_label(rng.choice(["asher", "grace", "minami", "novak"]))
    for _ in range(25):
        text = json.dumps(damaged(rng, {"label": source}), ensure_ascii=False)
        if rng.random() < 0.2:
            text = text[: rng.randrange(len(text) + 1)]
        try:
            vis, xy = tab.parse_label(text, "labels/x 1.json")
        except LabelError as e:
            assert "labels/x 1.json" in str(e)
        else:
            assert vis.shape == (174,) and xy.shape == (174, 2)
            assert set(vis.tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("seed", range(20))
def test_damaged_point_tables_are_read_or_refused(seed):
    rng = random.Random(seed)
    names = (LABELS / "map.txt").read_text(encoding="utf-8").split("\n")
    for _ in range(20):
        lines = list(names)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(3)
            i = rng.randrange(len(lines))
            if op == 0:
                lines.insert(i, rng.choice(lines))
            elif op == 1:
                del lines[i]
            else:
                lines[i] = rng.choice(["", "  ", "ZZ1_x", "EX-XY1_y", "1234", "_"])
        try:
            t = PointTable.from_names([n.strip() for n in lines if n.strip()], "map.txt")
        except LabelError as e:
            assert "map.txt" in str(e)
        else:
            assert sorted(i for m in t.members for i in m) == list(range(t.count))
            assert all(t.local[m[j]] == j for m in t.members for j in range(len(m)))
