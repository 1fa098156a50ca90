"""Datasets: the index `acufarm evaluate` writes, labels as arrays, and images decoded and resized
once on several CPU processes into a uint8 cache per dataset and size (a .npy file, memory-mapped
while training), so the training loop only copies batches out of memory.

index.json: {"format": 1, "map": PATH, "datasets": {"original": {"root": …, "samples": [SAMPLE…]},
"augmented": {…}}} with SAMPLE = {"id", "model", "group", "image", "label"} (+ "source", the
original's id, for augmented samples). `group` is what the split keeps together: the anatomical
model (the person), whatever size, hairstyle or eye state the file name carries.
"""
import contextlib
import hashlib
import json
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .points import LabelError, PointTable


@dataclass
class Dataset:
    name: str
    root: str
    ids: list
    models: list
    groups: list
    images: list
    sources: list  # original id per sample (itself for originals)
    visible: np.ndarray  # [N, P]
    xy: np.ndarray  # [N, P, 2]

    def __len__(self):
        return len(self.ids)


def load_index(path):
    with open(path, encoding="utf-8") as f:
        index = json.load(f)
    if index.get("format") != 1:
        raise LabelError(f"{path} is not an evaluation index of format 1; run it through `acufarm evaluate`")
    table = PointTable.read(index["map"])
    datasets = {}
    for name, d in index["datasets"].items():
        samples = d["samples"]
        vis = np.zeros((len(samples), table.count), dtype=np.float32)
        xy = np.zeros((len(samples), table.count, 2), dtype=np.float32)
        for i, s in enumerate(samples):
            try:
                text = Path(s["label"]).read_text(encoding="utf-8-sig")
            except OSError as e:
                raise LabelError(f"cannot read label {s['label']} ({e.strerror}); every image needs its label") from e
            vis[i], xy[i] = table.parse_label(text, s["label"])
        datasets[name] = Dataset(
            name,
            d.get("root", ""),
            [s["id"] for s in samples],
            [s["model"] for s in samples],
            [s["group"] for s in samples],
            [s["image"] for s in samples],
            [s.get("source", s["id"]) for s in samples],
            vis,
            xy,
        )
    if "original" not in datasets or not len(datasets["original"]):
        raise LabelError("the original dataset holds no labelled images; point --original at an AcuSim-layout root")
    known = set(datasets["original"].ids)
    if "augmented" in datasets:
        orphans = [s for s in datasets["augmented"].sources if s not in known]
        if orphans:
            raise LabelError(f"{len(orphans)} augmented images have no original (e.g. `{orphans[0]}`); pass the --original the run read")
    return table, datasets


def _decode(job):
    path, size = job
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                flat.alpha_composite(rgba)
                im = flat
            rgb = im.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8), (w, h), None
    except Exception as e:  # Pillow raises many kinds for a broken file
        return None, (0, 0), f"{path}: {e}"


def cache_key(paths, size):
    h = hashlib.sha256(f"acufarm-eval-cache 1 {size}\n".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def cached_images(paths, size, cache_dir, workers, log=print):
    """(uint8 [N, size, size, 3] memory-mapped, float32 [N, 2] original (width, height), decode stats)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(paths, size)
    pixels, sizes = cache_dir / f"{key}.npy", cache_dir / f"{key}.sizes.npy"
    if pixels.exists() and sizes.exists():
        return np.load(pixels, mmap_mode="r"), np.load(sizes), {"key": key, "cached": True, "images": len(paths)}
    start = time.monotonic()
    tmp = cache_dir / f"{key}.{os.getpid()}.tmp.npy"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
    dims = np.zeros((len(paths), 2), dtype=np.float32)
    errors = []
    jobs = [(p, size) for p in paths]
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(paths) > 1 else contextlib.nullcontext() as pool:
        results = pool.map(_decode, jobs, chunksize=max(1, len(jobs) // (workers * 8))) if pool else map(_decode, jobs)
        for i, (arr, wh, err) in enumerate(results):
            if err:
                errors.append(err)
            else:
                out[i], dims[i] = arr, wh
    if errors:
        del out
        tmp.unlink(missing_ok=True)
        raise LabelError(f"{len(errors)} images cannot be decoded (first: {errors[0]}); re-copy or remove them")
    out.flush()
    del out
    np.save(sizes, dims)
    os.replace(tmp, pixels)
    seconds = time.monotonic() - start
    rate = len(paths) / max(seconds, 1e-9)
    log(f"evaluate: decoded and resized {len(paths)} images to {size}² on {workers} processes: {rate:.0f} images/s")
    return np.load(pixels, mmap_mode="r"), dims, {"key": key, "cached": False, "images": len(paths), "seconds": seconds, "images_per_s": rate}


class Batches:
    """Batches of (rows, uint8 images, visible, xy) over several sources (one per dataset), each
    gathered on a background thread while the previous one trains. `rows`: [N, 2] of (source,
    row); `order_seed` shuffles them (None keeps their order)."""

    def __init__(self, sources, rows, batch_size, order_seed=None, device="cpu"):
        self.sources = sources
        rows = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
        if order_seed is not None:
            rows = rows[np.random.default_rng(order_seed).permutation(len(rows))]
        self.chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        self.device = device

    def __len__(self):
        return len(self.chunks)

    def _gather(self, chunk):
        import torch

        first = self.sources[0][0]
        imgs = np.empty((len(chunk),) + first.shape[1:], dtype=np.uint8)
        vis = np.empty((len(chunk),) + self.sources[0][1].shape[1:], dtype=np.float32)
        xy = np.empty((len(chunk),) + self.sources[0][2].shape[1:], dtype=np.float32)
        for k, (pixels, visible, coords) in enumerate(self.sources):
            at = np.flatnonzero(chunk[:, 0] == k)
            if at.size == 0:
                continue
            rows = chunk[at, 1]
            order = np.argsort(rows, kind="stable")  # memory-mapped reads in file order
            imgs[at[order]] = pixels[rows[order]]
            vis[at], xy[at] = visible[rows], coords[rows]
        imgs, vis, xy = torch.from_numpy(imgs), torch.from_numpy(vis), torch.from_numpy(xy)
        if self.device != "cpu":
            imgs = imgs.pin_memory().to(self.device, non_blocking=True)
            vis, xy = vis.to(self.device), xy.to(self.device)
        return chunk, imgs, vis, xy

    def __iter__(self):
        ahead, failed = {}, []

        def fetch(i):
            try:
                ahead[i] = self._gather(self.chunks[i])
            except BaseException as e:  # handed to the training thread below
                failed.append(e)

        worker = None
        for i in range(len(self.chunks)):
            if worker is None:
                fetch(i)
            else:
                worker.join()
            if failed:
                raise failed[0]
            batch = ahead.pop(i)
            worker = threading.Thread(target=fetch, args=(i + 1,)) if i + 1 < len(self.chunks) else None
            if worker is not None:
                worker.start()
            yield batch
