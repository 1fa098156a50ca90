"""Training throughput of the evaluation network (forward, the three losses, backward, AdamW step)
on batches from the image cache, and the loader's decode-and-resize rate. bench/evaluate.sh runs it."""
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import synth
from .data import cached_images
from .model import AcupointNet
from .train import Context, batch_losses


def measure(backbone, image_size, batch_size, steps, device, decode_images):
    torch.manual_seed(0)
    tab = synth.table()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        views = max(1, decode_images // 8)
        written = synth.write(root / "data", None, models=8, views=views, size=512)
        paths = [s["image"] for s in written["original"]]
        workers = os.cpu_count() or 1
        pixels, sizes, stats = cached_images(paths, image_size, root / "cache", workers, log=lambda m: None)
        n = len(paths)
        vis = np.zeros((n, tab.count), dtype=np.float32)
        xy = np.zeros((n, tab.count, 2), dtype=np.float32)
        for i, s in enumerate(written["original"]):
            vis[i], xy[i] = tab.parse_label(Path(s["label"]).read_text(encoding="utf-8"), s["label"])
        cfg = {"loss_weights": {"visibility": 1.0, "classification": 1.0, "coordinates": 1.0}, "soft_wing": {"omega": 1.0, "epsilon": 0.01, "theta": 1.0}}
        ctx = Context(cfg, tab, {}, {}, {}, device, "", root, print)
        model = AcupointNet(tab, backbone).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=1e-5)
        model.train()
        times = []
        for step in range(steps + 2):  # two warm-up steps
            idx = np.arange(step * batch_size, (step + 1) * batch_size) % n
            imgs = torch.from_numpy(np.ascontiguousarray(pixels[idx])).to(device)
            v, p = torch.from_numpy(vis[idx]).to(device), torch.from_numpy(xy[idx]).to(device)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            parts = batch_losses(ctx, model(imgs), v, p)
            loss = ctx.objective(*parts)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
            if step >= 2:
                times.append(time.perf_counter() - start)
        per_step = float(np.median(times))
        return {
            "backbone": backbone,
            "image_size": image_size,
            "batch_size": batch_size,
            "device": device,
            "threads": torch.get_num_threads(),
            "steps": steps,
            "train_samples_per_s": batch_size / per_step,
            "median_step_s": per_step,
            "decode_images": n,
            "decode_workers": workers,
            "decode_images_per_s": stats.get("images_per_s"),
            "torch": torch.__version__,
        }
