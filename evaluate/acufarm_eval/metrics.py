"""Metrics of predictions against labels, and paired bootstrap intervals by test model.

Per image: visibility hits and squared error over all points, classification hits over visible
points, and each visible point's error in pixels of the image's own size. Everything below is
built from per-image sums, so a bootstrap resample is a weighted sum, and arms are compared on the
same resampled images (paired).
"""
import numpy as np

# Arms and metrics in report order; `better` is the direction of improvement.
METRICS = (
    ("coord_error_mean_px", "coordinate error, mean (px)", "lower"),
    ("coord_within_radius", "share within 5 mm", "higher"),
    ("vis_accuracy", "visibility accuracy", "higher"),
    ("vis_rmse", "visibility RMSE", "lower"),
    ("cls_accuracy", "classification accuracy", "higher"),
)


def per_image(vis_logits, coord, cls_hits, visible, xy, sizes):
    """numpy per-image record from one batch's outputs (all arrays on CPU)."""
    p = 1.0 / (1.0 + np.exp(-vis_logits))
    vis_hit = ((p > 0.5) == (visible > 0.5)).sum(1).astype(np.float64)
    vis_se = ((p - visible) ** 2).sum(1).astype(np.float64)
    err = np.linalg.norm((coord - xy) * sizes[:, None, :], axis=-1)
    err = np.where(visible > 0.5, err, np.nan)
    return {"vis_hit": vis_hit, "vis_se": vis_se, "cls_hit": cls_hits.astype(np.float64), "err": err.astype(np.float64), "width": sizes[:, 0].astype(np.float64)}


def concat(records):
    return {k: np.concatenate([r[k] for r in records]) for k in records[0]}


def sums(record, radius):
    """Per-image sums every statistic is made of; `radius` is the 5 mm radius in image widths."""
    err = record["err"]
    visible = ~np.isnan(err)
    return {
        "points": np.full(len(err), err.shape[1], dtype=np.float64),
        "vis_hit": record["vis_hit"],
        "vis_se": record["vis_se"],
        "visible": visible.sum(1).astype(np.float64),
        "cls_hit": record["cls_hit"],
        "err_sum": np.nansum(err, axis=1),
        "within": (np.nan_to_num(err, nan=np.inf) <= (radius * record["width"])[:, None]).sum(1).astype(np.float64),
    }


def _ratio(a, b):
    return float(a / b) if b > 0 else float("nan")


def statistics(s, idx=None):
    """The five compared metrics from per-image sums (optionally over a resample `idx`)."""
    pick = (lambda v: v) if idx is None else (lambda v: v[idx])
    visible = pick(s["visible"]).sum()
    return {
        "coord_error_mean_px": _ratio(pick(s["err_sum"]).sum(), visible),
        "coord_within_radius": _ratio(pick(s["within"]).sum(), visible),
        "vis_accuracy": _ratio(pick(s["vis_hit"]).sum(), pick(s["points"]).sum()),
        "vis_rmse": float(np.sqrt(_ratio(pick(s["vis_se"]).sum(), pick(s["points"]).sum()))),
        "cls_accuracy": _ratio(pick(s["cls_hit"]).sum(), visible),
    }


def distribution(record):
    """The pooled error distribution's median and p95, and what it counts."""
    err = record["err"][~np.isnan(record["err"])]
    return {
        "coord_error_median_px": float(np.median(err)) if err.size else float("nan"),
        "coord_error_p95_px": float(np.percentile(err, 95)) if err.size else float("nan"),
        "images": int(len(record["err"])),
        "visible_points": int(err.size),
    }


def summary(record, radius):
    """Point estimates, including the error distribution's median and p95."""
    return {**statistics(sums(record, radius)), **distribution(record)}


def mean_over_seeds(per_seed_sums):
    """Per-image sums averaged over seeds (the same images in each)."""
    return {k: np.mean([s[k] for s in per_seed_sums], axis=0) for k in per_seed_sums[0]}


def resamples(groups, count, seed):
    """`count` two-level bootstrap index arrays: test models with replacement, then each drawn
    model's images with replacement."""
    groups = np.asarray(groups)
    names = sorted(set(groups.tolist()))
    members = [np.flatnonzero(groups == g) for g in names]
    rng = np.random.default_rng(seed)
    for _ in range(count):
        drawn = rng.integers(0, len(names), size=len(names))
        yield np.concatenate([m[rng.integers(0, len(m), size=len(m))] for m in (members[d] for d in drawn)])


def interval(values):
    v = np.asarray([x for x in values if np.isfinite(x)])
    if v.size == 0:
        return [float("nan"), float("nan")]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]


def bootstrap(arms, groups, count, seed):
    """95 % intervals of each arm's metrics and of each arm's difference from `original`, all on
    the same resamples. `arms`: name -> per-image sums over the same test images."""
    boots = {a: {m: [] for m, _, _ in METRICS} for a in arms}
    for idx in resamples(groups, count, seed):
        for a, s in arms.items():
            st = statistics(s, idx)
            for m, _, _ in METRICS:
                boots[a][m].append(st[m])
    cis = {a: {m: interval(boots[a][m]) for m, _, _ in METRICS} for a in arms}
    diffs = {}
    points = {a: statistics(s) for a, s in arms.items()}
    if "original" in arms:
        for a in arms:
            if a == "original":
                continue
            diffs[a] = {}
            for m, _, better in METRICS:
                d = np.asarray(boots[a][m]) - np.asarray(boots["original"][m])
                point = points[a][m] - points["original"][m]
                lo, hi = interval(d)
                if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0.0 <= hi:
                    verdict = "no clear difference"
                else:
                    improved = (lo > 0) == (better == "higher")
                    verdict = f"{a} better" if improved else "original better"
                diffs[a][m] = {"difference": float(point), "ci95": [lo, hi], "verdict": verdict}
    return cis, diffs


def per_point(record):
    """Mean error (px) of each point over the images where it is visible (NaN if never)."""
    err = record["err"]
    with np.errstate(invalid="ignore"):
        count = (~np.isnan(err)).sum(0)
        total = np.nansum(err, axis=0)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
