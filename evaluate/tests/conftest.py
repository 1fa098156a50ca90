"""Shared fixtures: a generated AcuSim-layout dataset (real labels, drawn images) and its index,
as `acufarm evaluate` would write it."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acufarm_eval import synth  # noqa: E402


def config(**changes):
    """Every setting, spelled out (the defaults live in `acufarm evaluate`, not here)."""
    cfg = {
        "arms": ["original"],
        "backbone": "resnet18",
        "weights": None,
        "epochs": 2,
        "image_size": 32,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "weight_decay": 1e-5,
        "seeds": 1,
        "folds": 1,
        "split_seed": 0,
        "test_fraction": 0.2,
        "val_fraction": 0.2,
        "device": "cpu",
        "threads": 2,
        "loader_workers": 2,
        "bootstrap": 200,
        "radius_mm": 5.0,
        "loss_weights": {"visibility": 1.0, "classification": 1.0, "coordinates": 1.0},
        "soft_wing": {"omega": 1.0, "epsilon": 0.01, "theta": 1.0},
    }
    cfg.update(changes)
    return cfg


def write_index(path, written, cfg, original, augmented=None):
    datasets = {"original": {"root": str(original), "samples": written["original"]}}
    if augmented is not None:
        datasets["augmented"] = {"root": str(augmented), "samples": written["augmented"]}
    index = {"format": 1, "map": str(Path(original) / "map.txt"), "datasets": datasets, "config": cfg}
    Path(path).write_text(json.dumps(index), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("acusim")
    written = synth.write(root / "original", root / "augmented", models=6, views=8, size=64, variants=1)
    return root, written
