"""One evaluation: index + config in, evaluation.json / evaluation.md / plots / checkpoints out."""
import hashlib
import json
import os
import sys
from pathlib import Path

from . import report, split
from .data import cached_images, load_index
from .points import LabelError
from .train import Context, Meter, ResumeError, train_unit

ARMS = ("original", "augmented", "both")
KEYS = {
    "arms": list,
    "backbone": str,
    "weights": (str, type(None)),
    "epochs": int,
    "image_size": int,
    "batch_size": int,
    "learning_rate": float,
    "weight_decay": float,
    "seeds": int,
    "folds": int,
    "split_seed": int,
    "test_fraction": float,
    "val_fraction": float,
    "device": str,
    "threads": int,
    "loader_workers": int,
    "bootstrap": int,
    "radius_mm": float,
    "loss_weights": dict,
    "soft_wing": dict,
}
# Settings that change no number (where and how fast it runs) stay out of the resume fingerprint.
NOT_IN_FINGERPRINT = ("device", "threads", "loader_workers", "bootstrap")


def log(message):
    print(message, file=sys.stderr, flush=True)


def check_config(cfg):
    missing = [k for k in KEYS if k not in cfg]
    if missing:
        raise LabelError(f"the evaluation config lacks {', '.join(missing)}; run it through `acufarm evaluate`")
    for k, kind in KEYS.items():
        value = cfg[k]
        if kind is float and isinstance(value, int):
            cfg[k] = value = float(value)
        if not isinstance(value, kind):
            raise LabelError(f"evaluate.{k} = {value!r} has the wrong type; run it through `acufarm evaluate`")
    bad = [a for a in cfg["arms"] if a not in ARMS]
    if bad or not cfg["arms"]:
        raise LabelError(f"evaluate.train names {bad or 'no arm'}; use original, augmented and/or both")


def pick_device(wanted):
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise LabelError("--device cuda, but this PyTorch sees no CUDA GPU; use --device cpu, or run on a GPU node with the CUDA build of torch")
    if wanted not in ("cpu", "cuda"):
        raise LabelError(f"--device {wanted} is not cpu, cuda or auto")
    return wanted


def fingerprint(cfg, table, datasets, cache_keys):
    h = hashlib.sha256(b"acufarm-evaluate 1\n")
    h.update(json.dumps({k: v for k, v in cfg.items() if k not in NOT_IN_FINGERPRINT}, sort_keys=True).encode())
    h.update("\n".join(table.names).encode())
    for name in sorted(datasets):
        d = datasets[name]
        h.update(json.dumps([name, d.ids, d.groups, d.sources]).encode())
        h.update(d.visible.tobytes())
        h.update(d.xy.tobytes())
        h.update(cache_keys[name].encode())
    return h.hexdigest()[:32]


def run(index_path, out):
    import torch

    with open(index_path, encoding="utf-8") as f:
        cfg = json.load(f)["config"]
    check_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table, datasets = load_index(index_path)
    needed = {"original"} | ({"augmented"} if any(a != "original" for a in cfg["arms"]) else set())
    if "augmented" in needed and "augmented" not in datasets:
        raise LabelError(f"arms {', '.join(cfg['arms'])} need --augmented (a run's output root)")
    datasets = {k: v for k, v in datasets.items() if k in needed}
    device = pick_device(cfg["device"])
    cores = os.cpu_count() or 1
    if device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=device == "cuda")
    torch.set_num_threads(cfg["threads"] or cores)
    workers = cfg["loader_workers"] or cores
    pixels, sizes, loading = {}, {}, {}
    for name, d in datasets.items():
        pixels[name], sizes[name], loading[name] = cached_images(d.images, cfg["image_size"], out / "cache", workers, log)
    fp = fingerprint(cfg, table, datasets, {name: stats["key"] for name, stats in loading.items()})
    plans = split.splits(datasets["original"].groups, cfg["split_seed"], cfg["folds"], cfg["test_fraction"], cfg["val_fraction"])
    ctx = Context(cfg, table, datasets, pixels, sizes, device, fp, out, log)
    work, planned = [], 0
    for s in plans:
        arm_pairs = {a: split.arm_rows(a, s, datasets) for a in cfg["arms"]}
        empty = [a for a, p in arm_pairs.items() if not p]
        if empty:
            raise LabelError(f"arm {empty[0]} has no training images in fold {s.fold} (training models {', '.join(s.train)}); check that --augmented holds renders of them")
        budget = min(-(-len(p) // cfg["batch_size"]) for p in arm_pairs.values()) * cfg["epochs"]
        for seed in range(cfg["seeds"]):
            for a in cfg["arms"]:
                work.append((s, a, seed, arm_pairs[a], budget))
                planned += len(arm_pairs[a]) * cfg["epochs"]
    log(
        f"evaluate: {len(work)} trainings ({len(plans)} fold(s) × {cfg['seeds']} seed(s) × {len(cfg['arms'])} arm(s)) of {cfg['backbone']}"
        f" ({'weights ' + cfg['weights'] if cfg['weights'] else 'random init'}) on {device}, {cfg['epochs']} epochs at {cfg['image_size']}²"
    )
    meter = Meter(planned, out / "progress.json")
    results = [train_unit(ctx, s, a, seed, pairs, budget, meter) for s, a, seed, pairs, budget in work]
    doc = report.write(ctx, plans, results, loading)
    log(f"evaluate: wrote {out / 'evaluation.json'} and {out / 'evaluation.md'}")
    return doc


def main(argv):
    import argparse

    p = argparse.ArgumentParser(prog="acufarm_eval", description="Train and compare AcuSim's example network on original and augmented data.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="an evaluation from an index written by `acufarm evaluate`")
    r.add_argument("--index", required=True)
    r.add_argument("--out", required=True)
    g = sub.add_parser("synth", help="draw a small AcuSim-layout dataset from the real labels (from the repository's evaluate/)")
    g.add_argument("--out", required=True)
    g.add_argument("--augmented")
    g.add_argument("--models", type=int, default=6)
    g.add_argument("--views", type=int, default=8)
    g.add_argument("--size", type=int, default=96)
    g.add_argument("--variants", type=int, default=1)
    b = sub.add_parser("bench", help="training samples/s of a backbone (from the repository's evaluate/)")
    b.add_argument("--backbone", default="resnet18")
    b.add_argument("--image-size", type=int, default=256)
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--device", default="cpu")
    b.add_argument("--decode-images", type=int, default=256)
    args = p.parse_args(argv)
    try:
        if args.command == "run":
            run(args.index, args.out)
        elif args.command == "synth":
            from . import synth

            synth.write(Path(args.out), Path(args.augmented) if args.augmented else None, args.models, args.views, args.size, args.variants)
        else:
            from . import bench

            print(json.dumps(bench.measure(args.backbone, args.image_size, args.batch_size, args.steps, args.device, args.decode_images)))
    except (LabelError, ResumeError, split.SplitError, ValueError) as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("evaluate: interrupted; the next run with the same --out resumes from the last finished epoch")
        return 130
    return 0
