"""The acupoint table (map.txt) and AcuSim label files.

A label lists the points the renderer kept as visible; an absent point is occluded (the evidence is
in labels/README.md). Points are grouped by meridian, as AcuSim's example network does: the
classification head predicts, for each point, its index within its meridian.
"""
import json
import re
from dataclasses import dataclass

import numpy as np

# AcuSim's meridians, in the example network's order; EX-HN and EX-B (extra points) share "EX".
MERIDIANS = ("LI", "ST", "SI", "BL", "SJ", "GB", "EX", "RN", "DU")


class LabelError(ValueError):
    """A map.txt or label file that cannot be used; the message names the file and the fix."""


def meridian_of(name):
    """`LI17_天鼎_left` -> `LI`; `EX-HN3_印堂` -> `EX`. Other prefixes form their own group."""
    head = re.match(r"[A-Za-z]+(?:-[A-Za-z]+)?", name)
    letters = head.group(0).upper() if head else name
    return "EX" if letters.startswith("EX") else letters


@dataclass(frozen=True)
class PointTable:
    names: tuple
    groups: tuple  # group name per group, in order
    group_of: np.ndarray  # [P] group index of each point
    local: np.ndarray  # [P] index of each point within its group (the classification target)
    members: tuple  # per group, the global indices of its points (ascending)

    @property
    def count(self):
        return len(self.names)

    @staticmethod
    def from_names(names, source="map.txt"):
        names = list(names)
        if not names:
            raise LabelError(f"{source} lists no points; it needs one acupoint name per line")
        seen = {}
        for i, n in enumerate(names):
            if n in seen:
                raise LabelError(f"{source} lists `{n}` twice (lines {seen[n] + 1} and {i + 1}); remove one")
            seen[n] = i
        order = list(MERIDIANS)
        for n in names:
            g = meridian_of(n)
            if g not in order:
                order.append(g)
        present = [g for g in order if any(meridian_of(n) == g for n in names)]
        index = {g: k for k, g in enumerate(present)}
        group_of = np.array([index[meridian_of(n)] for n in names], dtype=np.int64)
        members, local = [], np.zeros(len(names), dtype=np.int64)
        for k in range(len(present)):
            idx = np.flatnonzero(group_of == k)
            local[idx] = np.arange(len(idx))
            members.append(tuple(int(i) for i in idx))
        return PointTable(tuple(names), tuple(present), group_of, local, tuple(members))

    @staticmethod
    def read(path):
        try:
            with open(path, encoding="utf-8-sig") as f:
                lines = [line.strip() for line in f]
        except OSError as e:
            raise LabelError(f"cannot read {path} ({e.strerror}); the dataset root needs AcuSim's map.txt") from e
        return PointTable.from_names([line for line in lines if line], str(path))

    def parse_label(self, text, source):
        """(visible [P] float32 0/1, xy [P, 2] float32 normalised; 0 where not visible)."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelError(f"{source} is not JSON ({e.msg} at line {e.lineno}); re-copy it from the dataset") from e
        points = doc.get("label") if isinstance(doc, dict) else None
        if not isinstance(points, list):
            raise LabelError(f'{source} has no "label" list; an AcuSim label is {{"label": [{{"name": …, "coordinate": {{…}}}}]}}')
        index = {n: i for i, n in enumerate(self.names)}
        visible = np.zeros(self.count, dtype=np.float32)
        xy = np.zeros((self.count, 2), dtype=np.float32)
        for k, p in enumerate(points):
            name = p.get("name") if isinstance(p, dict) else None
            coord = p.get("coordinate") if isinstance(p, dict) else None
            if not isinstance(name, str) or not isinstance(coord, dict):
                raise LabelError(f"{source}: entry {k} lacks a name or a coordinate; fix or re-copy the label")
            if name not in index:
                raise LabelError(f"{source}: point `{name}` is not in map.txt; use the map.txt of the dataset the labels came from")
            i = index[name]
            if visible[i]:
                raise LabelError(f"{source} lists `{name}` twice; keep one entry")
            x, y = coord.get("x"), coord.get("y")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y)):
                raise LabelError(f"{source}: `{name}` has no numeric coordinate.x / coordinate.y; fix the label")
            x, y = float(x), float(y)
            # Normalised image coordinates: a point may sit just outside the frame, never far away.
            if not (-1.0 <= x <= 2.0 and -1.0 <= y <= 2.0):
                raise LabelError(f"{source}: `{name}` is at ({x:g}, {y:g}), not a normalised image coordinate (0..1); fix the label")
            visible[i] = 1.0
            xy[i] = (x, y)
        return visible, xy
