"""Shared fixtures: the committed tiny bundles and a way to run ONNX graphs on CPU."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

MODELS = Path(__file__).resolve().parents[1]
TINY = MODELS / "tiny"
sys.path.insert(0, str(MODELS))


def load_toml(path: Path) -> dict:
    with path.open("rb") as f:
        return tomllib.load(f)


def ort_session(path: Path, optimize: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run(path: Path, optimize: bool = True, **feeds: np.ndarray) -> np.ndarray:
    return ort_session(path, optimize).run(None, feeds)[0]


@pytest.fixture(scope="session")
def tiny_bundles() -> dict[str, tuple[Path, dict]]:
    """``{"plain"|"fc"|"fbc": (bundle_dir, parsed bundle.toml)}`` of the committed tiny bundles."""
    return {name: (TINY / name, load_toml(TINY / name / "bundle.toml")) for name in ("plain", "fc", "fbc")}
