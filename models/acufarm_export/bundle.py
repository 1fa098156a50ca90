"""``bundle.toml`` writer (format 1, models/BUNDLE.md).

Written by hand rather than with a TOML library (none is in the pinned requirements) in one fixed
key order, so regenerating a bundle gives the same bytes. Every path is relative to the bundle
directory, every file (graphs, their external data, the tokenizer) carries its sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .architectures import IMAGE_ENCODER_SIZE, LATENT_CHANNELS, LATENT_SCALE, TEXT_MAX_LENGTH
from .graphs import GRAPH_ORDER, GraphFile, TensorSpec

FORMAT = 1
VAE_SCALE_FACTOR = 8


@dataclass(frozen=True)
class BundleMeta:
    name: str
    iclight: str  # none | fc | fbc
    ip_adapter: bool
    unet_in_channels: int
    cross_attention_dim: int
    ip_tokens: int
    precision: str  # fp32 | fp16
    random_weights: bool


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def toml_value(value) -> str:
    """TOML literal for the value types a bundle uses (JSON string escapes are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def tensor_table(t: TensorSpec) -> dict:
    return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}


def relative(path: Path, bundle_dir: Path) -> str:
    return Path(os.path.relpath(path, bundle_dir)).as_posix()


def write_bundle_toml(bundle_dir: Path, meta: BundleMeta, tokenizer: Path, graphs: dict[str, GraphFile]) -> Path:
    """Write ``bundle_dir/bundle.toml`` describing ``graphs`` (which may live in sibling directories)."""
    lines = [
        f"format = {FORMAT}",
        f"name = {toml_value(meta.name)}",
        'family = "sd15"',
        f"iclight = {toml_value(meta.iclight)}",
        f"ip_adapter = {toml_value(meta.ip_adapter)}",
        f"latent_scale = {LATENT_SCALE}",
        f"latent_channels = {LATENT_CHANNELS}",
        f"vae_scale_factor = {VAE_SCALE_FACTOR}",
        f"unet_in_channels = {meta.unet_in_channels}",
        f"text_max_length = {TEXT_MAX_LENGTH}",
        f"cross_attention_dim = {meta.cross_attention_dim}",
        f"ip_tokens = {meta.ip_tokens}",
        f"image_encoder_size = {IMAGE_ENCODER_SIZE}",
        f"precision = {toml_value(meta.precision)}",
        f"random_weights = {toml_value(meta.random_weights)}",
        "",
        "[tokenizer]",
        f"file = {toml_value(relative(tokenizer, bundle_dir))}",
        f"sha256 = {toml_value(sha256(tokenizer))}",
    ]
    for name in sorted(graphs, key=GRAPH_ORDER.index):
        graph = graphs[name]
        lines += [
            "",
            f"[graphs.{name}]",
            f"file = {toml_value(relative(graph.path, bundle_dir))}",
            f"sha256 = {toml_value(sha256(graph.path))}",
        ]
        if graph.data_files:
            data = [{"file": relative(p, bundle_dir), "sha256": sha256(p)} for p in graph.data_files]
            lines.append(f"external_data = {toml_value(data)}")
        for key, tensors in (("inputs", graph.spec.inputs), ("outputs", graph.spec.outputs)):
            lines.append(f"{key} = [")
            lines += [f"  {toml_value(tensor_table(t))}," for t in tensors]
            lines.append("]")
    path = bundle_dir / "bundle.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
