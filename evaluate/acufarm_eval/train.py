"""Training and testing of one unit (fold × seed × arm), resumable from a checkpoint per epoch.

Every arm of a (fold, seed) starts from the same initial weights and draws its batch order from
the same seed, so arms differ only in what they train on. The best epoch is chosen on the
validation models (lowest total validation loss), never on test; a second choice is restricted to
the optimizer-step budget every arm can reach (the smallest arm's steps per epoch × epochs), so
arms are compared at equal steps as well as at equal epochs.
"""
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import losses, metrics
from .data import Batches
from .model import AcupointNet

SOURCES = ("original", "augmented")


class ResumeError(RuntimeError):
    pass


def unit_seed(split_seed, fold, seed):
    return int(np.random.SeedSequence([split_seed, fold, seed]).generate_state(1)[0])


def save_atomic(obj, path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(obj, path):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=True), encoding="utf-8")
    os.replace(tmp, path)


class Context:
    """What every unit shares: config, point table, datasets with their pixel caches, device."""

    def __init__(self, cfg, table, datasets, pixels, sizes, device, fingerprint, out, log):
        self.cfg, self.table, self.datasets = cfg, table, datasets
        self.pixels, self.sizes = pixels, sizes  # per dataset name
        self.device, self.fingerprint, self.out, self.log = device, fingerprint, Path(out), log
        self.names = [n for n in SOURCES if n in datasets]
        self.sources = [(pixels[n], datasets[n].visible, datasets[n].xy) for n in self.names]

    def rows(self, pairs):
        return np.asarray([(self.names.index(d), i) for d, i in pairs], dtype=np.int64).reshape(-1, 2)

    def objective(self, vis, cls, coord):
        """The training objective from the three losses (tensors or numbers)."""
        w = self.cfg["loss_weights"]
        return w["visibility"] * vis + w["classification"] * cls + w["coordinates"] * coord


def unit_folder(out, fold, seed, arm):
    return Path(out) / "checkpoints" / f"f{fold}-s{seed}-{arm}"


def _refuse(path, out):
    return ResumeError(f"{path} was written by an evaluation with other settings or data; pass a new --out, or delete {Path(out) / 'checkpoints'} to start over")


def batch_losses(ctx, out, vis, xy):
    vis_logits, coord, cls = out
    wing = ctx.cfg["soft_wing"]
    return (
        losses.visibility_rmse(vis_logits, vis),
        losses.classification_loss(cls, vis, ctx.table),
        losses.coordinate_loss(coord, xy, vis, omega=wing["omega"], epsilon=wing["epsilon"], theta=wing["theta"]),
    )


def evaluate_rows(ctx, model, rows):
    """(mean losses, per-image record) over `rows` in eval mode."""
    model.eval()
    totals, count, records = np.zeros(3), 0, []
    with torch.no_grad():
        for chunk, imgs, vis, xy in Batches(ctx.sources, rows, ctx.cfg["batch_size"], None, ctx.device):
            out = model(imgs)
            parts = batch_losses(ctx, out, vis, xy)
            totals += np.array([float(p) for p in parts]) * len(chunk)
            count += len(chunk)
            sizes = np.stack([ctx.sizes[ctx.names[s]][r] for s, r in chunk])
            hits = losses.classification_hits(out[2], vis, ctx.table).cpu().numpy()
            records.append(metrics.per_image(out[0].cpu().numpy(), out[1].cpu().numpy(), hits, vis.cpu().numpy(), xy.cpu().numpy(), sizes))
    mean = totals / max(count, 1)
    return {"vis_rmse": mean[0], "cls_ce": mean[1], "coord_softwing": mean[2]}, metrics.concat(records)


def train_unit(ctx, split, arm, seed, train_pairs, budget, meter):
    """Trains one unit to the end (or resumes it) and returns its result (also result.json)."""
    cfg = ctx.cfg
    key = f"f{split.fold}-s{seed}-{arm}"
    folder = unit_folder(ctx.out, split.fold, seed, arm)
    folder.mkdir(parents=True, exist_ok=True)
    result_path = folder / "result.json"
    if result_path.exists():
        done = json.loads(result_path.read_text(encoding="utf-8"))
        if done.get("fingerprint") != ctx.fingerprint:
            raise _refuse(result_path, ctx.out)
        ctx.log(f"evaluate: {key} already trained ({done['epochs']} epochs); kept")
        meter.skip(len(train_pairs) * cfg["epochs"])
        return done
    torch.manual_seed(unit_seed(cfg["split_seed"], split.fold, seed))
    model = AcupointNet(ctx.table, cfg["backbone"], cfg.get("weights")).to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
    rows = ctx.rows(train_pairs)
    val_rows = ctx.rows([("original", i) for i in split.rows(ctx.datasets["original"], split.val)])
    steps_per_epoch = math.ceil(len(rows) / cfg["batch_size"])
    state = {"epoch": 0, "steps": 0, "history": [], "best": None, "best_steps": None}
    last = folder / "last.pt"
    if last.exists():
        saved = torch.load(last, map_location="cpu", weights_only=False)
        if saved.get("fingerprint") != ctx.fingerprint:
            raise _refuse(last, ctx.out)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]
        ctx.log(f"evaluate: {key} resumes after epoch {state['epoch']} of {cfg['epochs']}")
        meter.skip(len(rows) * state["epoch"])
    base = unit_seed(cfg["split_seed"], split.fold, seed)
    for epoch in range(state["epoch"], cfg["epochs"]):
        started = time.monotonic()
        model.train()
        sums, seen = np.zeros(3), 0
        for chunk, imgs, vis, xy in Batches(ctx.sources, rows, cfg["batch_size"], [base, epoch], ctx.device):
            parts = batch_losses(ctx, model(imgs), vis, xy)
            loss = ctx.objective(*parts)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["steps"] += 1
            sums += np.array([float(p.detach()) for p in parts]) * len(chunk)
            seen += len(chunk)
        seconds = time.monotonic() - started
        train = dict(zip(("vis_rmse", "cls_ce", "coord_softwing"), (sums / max(seen, 1)).tolist()))
        val, _ = evaluate_rows(ctx, model, val_rows)
        val = {k: float(v) for k, v in val.items()}
        score = ctx.objective(val["vis_rmse"], val["cls_ce"], val["coord_softwing"])
        state["history"].append({"epoch": epoch + 1, "steps": state["steps"], "train": train, "val": val, "val_total": score, "train_seconds": seconds, "samples_per_s": seen / max(seconds, 1e-9)})
        state["epoch"] = epoch + 1
        if state["best"] is None or score < state["best"]["score"]:
            state["best"] = {"epoch": epoch + 1, "steps": state["steps"], "score": score}
            save_atomic({"model": model.state_dict(), "epoch": epoch + 1, "fingerprint": ctx.fingerprint}, folder / "best.pt")
        # Within the common step budget; an arm whose first epoch already exceeds it (1 epoch of
        # `both`) keeps that first epoch, marked as over the budget.
        within = state["steps"] <= budget
        if (within and (state["best_steps"] is None or state["best_steps"]["over_budget"] or score < state["best_steps"]["score"])) or state["best_steps"] is None:
            state["best_steps"] = {"epoch": epoch + 1, "steps": state["steps"], "score": score, "over_budget": not within}
            save_atomic({"model": model.state_dict(), "epoch": epoch + 1, "fingerprint": ctx.fingerprint}, folder / "best_steps.pt")
        save_atomic({"fingerprint": ctx.fingerprint, "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "state": state}, last)
        meter.done(seen, seconds)
        ctx.log(
            f"evaluate: {key} epoch {epoch + 1}/{cfg['epochs']} · train vis {train['vis_rmse']:.3f} cls {train['cls_ce']:.3f} coord {train['coord_softwing']:.3f}"
            f" · val vis {val['vis_rmse']:.3f} cls {val['cls_ce']:.3f} coord {val['coord_softwing']:.3f}"
            f" · {seen / max(seconds, 1e-9):.1f} samples/s · ETA {meter.eta()}"
        )
        meter.progress(key, epoch + 1, cfg["epochs"])
    result = test_unit(ctx, split, arm, seed, model, folder, state, steps_per_epoch, budget)
    write_json_atomic(result, result_path)
    return result


def test_unit(ctx, split, arm, seed, model, folder, state, steps_per_epoch, budget):
    test_rows = ctx.rows([("original", i) for i in split.rows(ctx.datasets["original"], split.test)])
    fit_rows = ctx.rows([("original", i) for i in split.rows(ctx.datasets["original"], split.train)])
    arrays = {}
    for name, file in (("best", "best.pt"), ("best_steps", "best_steps.pt")):
        saved = torch.load(folder / file, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        _, record = evaluate_rows(ctx, model, test_rows)
        for k, v in record.items():
            arrays[f"{name}.{k}"] = v
        if name == "best":
            _, fit = evaluate_rows(ctx, model, fit_rows)
            for k, v in fit.items():
                arrays[f"train_fit.{k}"] = v
    arrays["test_rows"] = test_rows[:, 1]
    arrays["fit_rows"] = fit_rows[:, 1]
    tmp = folder / "test.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, folder / "test.npz")
    return {
        "fingerprint": ctx.fingerprint,
        "fold": split.fold,
        "seed": seed,
        "arm": arm,
        "epochs": state["epoch"],
        "steps": state["steps"],
        "steps_per_epoch": steps_per_epoch,
        "step_budget": budget,
        "best": state["best"],
        "best_steps": state["best_steps"],
        "history": state["history"],
    }


class Meter:
    """Samples trained per second in this process, and the time left for everything planned."""

    def __init__(self, planned, progress_path):
        self.planned, self.finished, self.measured, self.seconds = planned, 0, 0, 0.0
        self.progress_path = progress_path

    def skip(self, samples):
        self.finished += samples

    def done(self, samples, seconds):
        self.finished += samples
        self.measured += samples
        self.seconds += seconds

    def eta_seconds(self):
        if self.measured == 0:
            return None
        return max(0.0, (self.planned - self.finished) * self.seconds / self.measured)

    def eta(self):
        s = self.eta_seconds()
        if s is None:
            return "?"
        s = int(round(s))
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"

    def progress(self, unit, epoch, epochs):
        write_json_atomic(
            {"unit": unit, "epoch": epoch, "epochs": epochs, "samples_done": self.finished, "samples_planned": self.planned, "eta_s": self.eta_seconds()},
            self.progress_path,
        )
