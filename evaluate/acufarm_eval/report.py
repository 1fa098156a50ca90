"""evaluation.json, evaluation.md and the plots, from the units' results and test predictions.

Every number in evaluation.md is formatted from evaluation.json by `fmt` (tests check that)."""
import json
import math
import shutil

import numpy as np
import torch

from . import metrics
from .train import unit_folder

# 5 mm in image widths: in AcuSim's frontal M_Asher label (labels/asher_all.json) the two ST1
# points, which sit straight below the pupils, are 0.1914 image widths apart; the mean adult
# interpupillary distance is 63 mm, so 5 mm ≈ 0.1914 · 5 / 63 = 0.0152 widths (7.8 px at 512²).
ST1_SPAN_WIDTHS = 0.595215 - 0.403809
PUPIL_MM = 63.0
STAGES = (("equal_epochs", "best"), ("equal_steps", "best_steps"))
NO_VERDICT = "no verdict: not better than the mean position"


def _beats(value, baseline, better):
    if not (math.isfinite(value) and math.isfinite(baseline)):
        return False
    return value < baseline if better == "lower" else value > baseline


def radius_widths(mm):
    return ST1_SPAN_WIDTHS * mm / PUPIL_MM


def fmt(value, metric):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if metric.endswith("_px"):
        return f"{value:.2f}"
    return f"{value:.4f}"


def _load(ctx, result):
    with np.load(unit_folder(ctx.out, result["fold"], result["seed"], result["arm"]) / "test.npz") as z:
        return {k: z[k] for k in z.files}


def _record(arrays, prefix):
    return {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + ".")}


def _baseline(ctx, split, rows):
    """Predicting each point's mean training position (and its training visibility rate)."""
    d = ctx.datasets["original"]
    train = np.asarray(split.rows(d, split.train))
    vis = d.visible[train]
    freq = vis.mean(0)
    mean = (d.xy[train] * vis[..., None]).sum(0) / np.maximum(vis.sum(0), 1)[:, None]
    n = len(rows)
    logits = np.log(np.clip(freq, 1e-6, 1 - 1e-6) / np.clip(1 - freq, 1e-6, 1))
    sizes = ctx.sizes["original"][rows]
    record = metrics.per_image(np.tile(logits, (n, 1)), np.tile(mean, (n, 1, 1)), np.zeros(n), d.visible[rows], d.xy[rows], sizes)
    return record


def _mean_curves(units):
    epochs = min(len(u["history"]) for u in units)
    out = []
    for e in range(epochs):
        rows = [u["history"][e] for u in units]
        out.append(
            {
                "epoch": e + 1,
                "steps": float(np.mean([r["steps"] for r in rows])),
                "train": {k: float(np.mean([r["train"][k] for r in rows])) for k in rows[0]["train"]},
                "val": {k: float(np.mean([r["val"][k] for r in rows])) for k in rows[0]["val"]},
                "samples_per_s": float(np.mean([r["samples_per_s"] for r in rows])),
            }
        )
    return out


def write(ctx, plans, results, loading):
    cfg, out = ctx.cfg, ctx.out
    radius = radius_widths(cfg["radius_mm"])
    groups_all = ctx.datasets["original"].groups
    arms = list(cfg["arms"])
    by_arm = {a: [r for r in results if r["arm"] == a] for a in arms}
    doc = {
        "format": 1,
        "generated_by": "acufarm evaluate",
        "config": cfg,
        "initialisation": "pretrained" if cfg["weights"] else "random",
        "environment": {"torch": torch.__version__, "device": ctx.device, "threads": torch.get_num_threads()},
        "points": ctx.table.count,
        "visibility_rule": "a point is visible when its label lists it; the dataset leaves occluded points out (evaluate/acufarm_eval/labels/README.md)",
        "radius": {"mm": cfg["radius_mm"], "image_widths": radius, "px_at_512": radius * 512, "rule": "ST1 left-right span in AcuSim's frontal label = 63 mm interpupillary distance"},
        "datasets": {n: {"root": d.root, "images": len(d), "models": len(set(d.groups))} for n, d in ctx.datasets.items()},
        "loading": loading,
        "splits": [
            {"fold": s.fold, "test": list(s.test), "val": list(s.val), "train": list(s.train), "test_images": len(s.rows(ctx.datasets["original"], s.test))}
            for s in plans
        ],
        "arms": {},
        "comparisons": {},
    }
    per_stage_sums = {stage: {} for stage, _ in STAGES}
    test_groups = None
    for a in arms:
        units = by_arm[a]
        arrays = [(u, _load(ctx, u)) for u in units]
        entry = {"units": [{k: u[k] for k in ("fold", "seed", "epochs", "steps", "steps_per_epoch", "step_budget", "best", "best_steps")} for u in units]}
        for stage, prefix in STAGES:
            folds_sums, folds_records, groups = [], [], []
            for s in plans:
                fold_units = [(u, z) for u, z in arrays if u["fold"] == s.fold]
                seed_sums = [metrics.sums(_record(z, prefix), radius) for _, z in fold_units]
                folds_sums.append(metrics.mean_over_seeds(seed_sums))
                folds_records.extend(_record(z, prefix) for _, z in fold_units)
                groups.extend(groups_all[i] for i in fold_units[0][1]["test_rows"])
            s_all = {k: np.concatenate([f[k] for f in folds_sums]) for k in folds_sums[0]}
            per_stage_sums[stage][a] = s_all
            test_groups = groups
            pooled = metrics.concat(folds_records)
            entry[stage] = {**metrics.statistics(s_all), **metrics.distribution(pooled)}
            if stage == "equal_epochs":
                entry["per_point_error_px"] = [None if not math.isfinite(v) else float(v) for v in metrics.per_point(pooled)]
                per_model = {}
                g = np.asarray(groups)
                for m in sorted(set(groups)):
                    idx = np.flatnonzero(g == m)
                    per_model[m] = metrics.statistics(s_all, idx)
                entry["per_model"] = per_model
        fits = metrics.concat([_record(z, "train_fit") for _, z in arrays])
        entry["train_fit"] = metrics.summary(fits, radius)
        entry["curves"] = _mean_curves(units)
        entry["samples_per_s"] = float(np.mean([h["samples_per_s"] for u in units for h in u["history"]])) if units else None
        best = min(units, key=lambda u: u["best"]["score"])
        shutil.copyfile(unit_folder(out, best["fold"], best["seed"], a) / "best.pt", out / f"best-{a}.pt")
        entry["checkpoint"] = {"file": f"best-{a}.pt", "fold": best["fold"], "seed": best["seed"], "epoch": best["best"]["epoch"]}
        doc["arms"][a] = entry
    base_test, base_fit = [], []
    for s in plans:
        d = ctx.datasets["original"]
        base_test.append(_baseline(ctx, s, np.asarray(s.rows(d, s.test))))
        base_fit.append(_baseline(ctx, s, np.asarray(s.rows(d, s.train))))
    doc["baseline_mean_position"] = {"test": metrics.summary(metrics.concat(base_test), radius), "train_fit": metrics.summary(metrics.concat(base_fit), radius)}
    doc["baseline_mean_position"]["test"]["cls_accuracy"] = None
    doc["baseline_mean_position"]["train_fit"]["cls_accuracy"] = None
    base = doc["baseline_mean_position"]["test"]
    for stage, _ in STAGES:
        cis, diffs = metrics.bootstrap(per_stage_sums[stage], test_groups, cfg["bootstrap"], cfg["split_seed"])
        for a in arms:
            doc["arms"][a][stage]["ci95"] = cis[a]
        for a, d in diffs.items():
            for m, _, better in metrics.METRICS:
                # A difference between arms that do not both beat predicting the mean position is a
                # difference between two failures to learn: no verdict.
                if base.get(m) is not None and not all(_beats(doc["arms"][x][stage][m], base[m], better) for x in (a, "original")):
                    d[m]["verdict"] = NO_VERDICT
        doc["comparisons"][stage] = diffs
    doc["test_models"] = sorted(set(test_groups))
    text = json.dumps(doc, indent=1, ensure_ascii=False, default=_plain)
    (out / "evaluation.json").write_text(text, encoding="utf-8")
    doc = json.loads(text)
    (out / "evaluation.md").write_text(markdown(doc), encoding="utf-8")
    from . import plots

    plots.draw(doc, ctx.table, out)
    return doc


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(type(v))


def _ci(ci, metric):
    if not ci or ci[0] is None:
        return ""
    return f" [{fmt(ci[0], metric)}, {fmt(ci[1], metric)}]"


def markdown(doc):
    cfg = doc["config"]
    arms = list(doc["arms"])
    lines = [
        "# Training-based evaluation",
        "",
        f"AcuSim's example network ({cfg['backbone']}, {doc['initialisation']} initialisation) trained for {cfg['epochs']} epochs at "
        f"{cfg['image_size']}² on {doc['environment']['device']}, {cfg['seeds']} seed(s), {len(doc['splits'])} fold(s); AdamW lr {cfg['learning_rate']:g}, "
        f"weight decay {cfg['weight_decay']:g}, batch {cfg['batch_size']}.",
        f"Test models (original images only): {', '.join(doc['test_models'])}. Intervals are 95 % two-level bootstrap intervals "
        f"({cfg['bootstrap']} resamples of test models, then of their images), paired across arms.",
        f"A point is visible when its label lists it. 5 mm = {doc['radius']['image_widths']:.4f} image widths ({doc['radius']['px_at_512']:.1f} px at 512²).",
        "",
    ]
    if len(doc["test_models"]) < 3:
        lines += [f"With {len(doc['test_models'])} test model(s) the intervals mostly show image-to-image spread, not model-to-model spread; use more models or --folds.", ""]
    for stage, title in (("equal_epochs", "At equal epochs (best validation epoch)"), ("equal_steps", "At equal optimizer steps (best validation epoch within the smallest arm's step budget)")):
        over = sorted({a for a in arms for u in doc["arms"][a]["units"] if stage == "equal_steps" and u["best_steps"].get("over_budget")})
        note = [f"One epoch of {', '.join(over)} already exceeds the common step budget; its first epoch is shown.", ""] if over else []
        lines += [f"## {title}", ""] + note + ["| arm | " + " | ".join(label for _, label, _ in metrics.METRICS) + " | median error (px) | p95 error (px) |", "|---" * (len(metrics.METRICS) + 3) + "|"]
        for a in arms:
            e = doc["arms"][a][stage]
            cells = [fmt(e[m], m) + _ci(e["ci95"].get(m), m) for m, _, _ in metrics.METRICS]
            lines.append(f"| {a} | " + " | ".join(cells) + f" | {fmt(e['coord_error_median_px'], '_px')} | {fmt(e['coord_error_p95_px'], '_px')} |")
        b = doc["baseline_mean_position"]["test"]
        lines.append("| mean position | " + " | ".join(fmt(b.get(m), m) for m, _, _ in metrics.METRICS) + f" | {fmt(b['coord_error_median_px'], '_px')} | {fmt(b['coord_error_p95_px'], '_px')} |")
        lines.append("")
        diffs = doc["comparisons"].get(stage, {})
        if diffs:
            lines += ["| arm − original | " + " | ".join(label for _, label, _ in metrics.METRICS) + " |", "|---" * (len(metrics.METRICS) + 1) + "|"]
            for a, d in diffs.items():
                lines.append(f"| {a} | " + " | ".join(f"{fmt(d[m]['difference'], m)}{_ci(d[m]['ci95'], m)} ({d[m]['verdict']})" for m, _, _ in metrics.METRICS) + " |")
            lines.append("")
    lines += ["## Per test model (coordinate error, mean px, equal epochs)", "", "| model | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for m in doc["test_models"]:
        lines.append(f"| {m} | " + " | ".join(fmt(doc["arms"][a]["per_model"][m]["coord_error_mean_px"], "_px") for a in arms) + " |")
    lines += ["", "## Fit on the training models (original images)", "", "| arm | coordinate error, mean (px) | visibility accuracy | classification accuracy |", "|---|---|---|---|"]
    for a in arms:
        f = doc["arms"][a]["train_fit"]
        lines.append(f"| {a} | {fmt(f['coord_error_mean_px'], '_px')} | {fmt(f['vis_accuracy'], 'a')} | {fmt(f['cls_accuracy'], 'a')} |")
    f = doc["baseline_mean_position"]["train_fit"]
    lines.append(f"| mean position | {fmt(f['coord_error_mean_px'], '_px')} | {fmt(f['vis_accuracy'], 'a')} | – |")
    lines += [
        "",
        "## Losses per epoch",
        "",
        "![losses per epoch](loss_curves.png)",
        "",
        "![losses per optimizer step](loss_curves_steps.png)",
        "",
        "![error per acupoint](per_point_error.png)",
        "",
        "Best checkpoints: " + ", ".join(f"`{doc['arms'][a]['checkpoint']['file']}`" for a in arms) + ".",
        "",
    ]
    return "\n".join(lines)
