"""The six bundle graphs: their signatures (models/BUNDLE.md), torch wrappers, export and checks.

Export uses torch's TorchScript-based exporter (``dynamo=False``) at opset 17: it still exists in
torch 2.15 and handles the diffusers / transformers modules at opset 17, where the dynamo exporter
writes broken graphs. Each graph is traced at one shape and checked at another (batch 2, 64x64
pixels) in ONNX Runtime against eager torch, which catches any size the trace baked in.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .architectures import IMAGE_ENCODER_SIZE, LATENT_CHANNELS, TEXT_MAX_LENGTH

OPSET = 17
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26  # leave 64 MiB headroom for the graph structure
ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT32: "int32", onnx.TensorProto.FLOAT16: "float16"}
GRAPH_ORDER = ("text_encoder", "unet", "vae_encoder", "vae_decoder", "image_encoder", "image_proj")

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[Dim, ...]


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs + self.outputs}


def f32(name: str, *shape: Dim) -> TensorSpec:
    return TensorSpec(name, "float32", shape)


def graph_specs(
    unet_in_channels: int, dim: int, image_embed_dim: int, ip_tokens: int, ip_adapter: bool
) -> dict[str, GraphSpec]:
    """BUNDLE.md's signature table. Symbolic dims: batch, pixel height/width, latent_height/width
    (the UNet calls its latent dims height/width, as in BUNDLE.md), timesteps (T), scales (S)."""
    lat = ("latent_height", "latent_width")
    unet_inputs = (
        f32("sample", "batch", unet_in_channels, "height", "width"),
        f32("timestep", "timesteps"),
        f32("encoder_hidden_states", "batch", TEXT_MAX_LENGTH, dim),
    )
    if ip_adapter:
        unet_inputs += (f32("ip_tokens", "batch", ip_tokens, dim), f32("ip_scale", "scales"))
    specs = [
        GraphSpec("text_encoder", (TensorSpec("input_ids", "int32", ("batch", TEXT_MAX_LENGTH)),),
                  (f32("last_hidden_state", "batch", TEXT_MAX_LENGTH, dim),)),
        GraphSpec("unet", unet_inputs, (f32("out_sample", "batch", LATENT_CHANNELS, "height", "width"),)),
        GraphSpec("vae_encoder", (f32("sample", "batch", 3, "height", "width"),),
                  (f32("latent_mean", "batch", LATENT_CHANNELS, *lat),)),
        GraphSpec("vae_decoder", (f32("latent_sample", "batch", LATENT_CHANNELS, *lat),),
                  (f32("sample", "batch", 3, "height", "width"),)),
    ]  # fmt: skip
    if ip_adapter:
        specs += [
            GraphSpec("image_encoder", (f32("pixel_values", "batch", 3, IMAGE_ENCODER_SIZE, IMAGE_ENCODER_SIZE),),
                      (f32("image_embeds", "batch", image_embed_dim),)),
            GraphSpec("image_proj", (f32("image_embeds", "batch", image_embed_dim),),
                      (f32("ip_tokens", "batch", ip_tokens, dim),)),
        ]  # fmt: skip
    return {s.name: s for s in specs}


# Concrete sizes for the symbolic dims: traced at TRACE_DIMS, checked at CHECK_DIMS (batch 2, 64x64 px).
TRACE_DIMS = {
    "batch": 1,
    "height": 128,
    "width": 64,
    "latent_height": 16,
    "latent_width": 8,
    "timesteps": 1,
    "scales": 1,
}
CHECK_DIMS = {"batch": 2, "height": 64, "width": 64, "latent_height": 8, "latent_width": 8, "timesteps": 2, "scales": 1}
UNET_LATENT = {"height": "latent_height", "width": "latent_width"}  # the UNet's height/width are latent sizes


def concrete_shape(spec: GraphSpec, t: TensorSpec, dims: dict[str, int]) -> tuple[int, ...]:
    if spec.name == "unet":
        dims = dims | {k: dims[v] for k, v in UNET_LATENT.items()}
    return tuple(d if isinstance(d, int) else dims[d] for d in t.shape)


def example_inputs(spec: GraphSpec, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible inputs for ``spec`` at ``dims``: token ids in CLIP's vocab, integer-valued timesteps."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in spec.inputs:
        shape = concrete_shape(spec, t, dims)
        if t.name == "input_ids":
            ids = rng.integers(0, 49406, size=shape)
            ids[:, 0], ids[:, 10:] = 49406, 49407
            feeds[t.name] = ids.astype(np.int32)
        elif t.name == "timestep":
            feeds[t.name] = np.array([999.0, 421.0, 1.0][: shape[0]], dtype=np.float32)
        elif t.name == "ip_scale":
            feeds[t.name] = np.full(shape, 0.7, dtype=np.float32)
        elif t.name == "pixel_values" or spec.name == "vae_encoder":
            feeds[t.name] = rng.uniform(-1, 1, size=shape).astype(np.float32)
        else:
            feeds[t.name] = rng.standard_normal(size=shape).astype(np.float32)
    return feeds


class TextEncoderGraph(nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids=input_ids).last_hidden_state


class VaeEncoderGraph(nn.Module):
    """Posterior mean (unscaled): deterministic, and what the parity tests compare against."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        return self.vae.encode(sample).latent_dist.mean


class VaeDecoderGraph(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return self.vae.decode(latent_sample).sample


class UNetGraph(nn.Module):
    """ε prediction; with IP-Adapter, ``ip_tokens`` / ``ip_scale`` reach the IP processors as tensors."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, ip_tokens=None, ip_scale=None):
        kwargs = None if ip_tokens is None else {"ip_tokens": ip_tokens, "ip_scale": ip_scale}
        return self.unet(sample, timestep, encoder_hidden_states, cross_attention_kwargs=kwargs, return_dict=False)[0]


class ImageEncoderGraph(nn.Module):
    def __init__(self, image_encoder):
        super().__init__()
        self.image_encoder = image_encoder

    def forward(self, pixel_values):
        return self.image_encoder(pixel_values=pixel_values).image_embeds


class ImageProjGraph(nn.Module):
    def __init__(self, image_proj):
        super().__init__()
        self.image_proj = image_proj

    def forward(self, image_embeds):
        return self.image_proj(image_embeds)


@dataclass
class GraphFile:
    """An exported graph on disk: the .onnx file, its external data files (if any) and its signature."""

    path: Path
    spec: GraphSpec
    data_files: tuple[Path, ...] = ()


def save_onnx(model: onnx.ModelProto, path: Path) -> tuple[Path, ...]:
    """Save ``model``; weights go to one ``<name>.data`` file when they would break the 2 GB protobuf limit."""
    weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    if weight_bytes < EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(path))
        return ()
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)  # fmt: skip
    data.chmod(path.stat().st_mode & 0o777)  # onnx creates it 0600; readers of the .onnx need it too
    return (data,)


def onnx_signature(model: onnx.ModelProto) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        shape = tuple(d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim)
        return TensorSpec(v.name, ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), shape)

    return tuple(map(spec, model.graph.input)), tuple(map(spec, model.graph.output))


def stamp_signature(model: onnx.ModelProto, spec: GraphSpec) -> None:
    """Write the contract's dims onto the graph's inputs/outputs.

    The exporter names output dims it cannot relate to an input (e.g. the text encoder's sequence
    length comes out as ``LayerNormalizationlast_hidden_state_dim_1``); the check run after export
    confirms the real output sizes match what is stamped here.
    """
    for values, specs in ((model.graph.input, spec.inputs), (model.graph.output, spec.outputs)):
        if [v.name for v in values] != [t.name for t in specs]:
            raise RuntimeError(f"{spec.name}: graph has {[v.name for v in values]}, contract {[t.name for t in specs]}")
        for value, t in zip(values, specs):
            dims = value.type.tensor_type.shape.dim
            if len(dims) != len(t.shape):
                raise RuntimeError(f"{spec.name}: {t.name} has rank {len(dims)}, contract {t.shape}")
            for d, want in zip(dims, t.shape):
                if isinstance(want, str):
                    d.dim_param = want
                else:
                    d.dim_value = want


def check_signature(path: Path, spec: GraphSpec) -> None:
    """``onnx.checker`` plus an exact comparison of the graph's inputs/outputs with ``spec``."""
    onnx.checker.check_model(str(path))
    got = onnx_signature(onnx.load(str(path), load_external_data=False))
    if got != (spec.inputs, spec.outputs):
        raise RuntimeError(f"{path}: signature {got} differs from the bundle contract {spec}")


def ort_run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def export_graph(module: nn.Module, spec: GraphSpec, path: Path) -> GraphFile:
    """Trace ``module`` to ``path``, check it, and compare ONNX Runtime with torch at CHECK_DIMS."""
    module = module.eval()
    trace_inputs = tuple(torch.from_numpy(a) for a in example_inputs(spec, TRACE_DIMS).values())
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings flag Python-level shape checks in diffusers (e.g. "is the latent a multiple of
        # 8"); they hold for every valid input, and the check below runs at other shapes to prove it.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # ORT folds it at load
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.onnx")  # torch-internal
        raw = Path(tmp) / path.name
        torch.onnx.export(
            module, trace_inputs, str(raw), dynamo=False, opset_version=OPSET, do_constant_folding=True,
            input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
            dynamic_axes=spec.dynamic_axes(),
        )  # fmt: skip
        model = onnx.load(str(raw))  # pulls in per-tensor external files the exporter writes for >2 GB
    model.graph.name = spec.name
    stamp_signature(model, spec)
    graph = GraphFile(path, spec, save_onnx(model, path))
    del model
    check_signature(path, spec)

    feeds = example_inputs(spec, CHECK_DIMS, seed=1)
    with torch.no_grad():
        expected = module(*(torch.from_numpy(a) for a in feeds.values())).numpy()
    got = ort_run(path, feeds)
    if got.shape != concrete_shape(spec, spec.outputs[0], CHECK_DIMS):
        raise RuntimeError(f"{path}: output shape {got.shape} breaks the contract {spec.outputs[0].shape}")
    compare(path, got, expected, rel_tol=1e-3)
    return graph


def compare(path: Path, got: np.ndarray, expected: np.ndarray, rel_tol: float) -> float:
    """Max abs difference relative to the reference's magnitude; raise above ``rel_tol``."""
    if not np.isfinite(got).all():
        raise RuntimeError(f"{path}: ONNX Runtime output has non-finite values")
    err = float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-6))
    if got.shape != expected.shape or err > rel_tol:
        raise RuntimeError(
            f"{path}: ONNX Runtime output {got.shape} differs from torch {expected.shape} by {err:.2e} (relative)"
        )
    return err


def convert_fp16(src: GraphFile, dst_dir: Path) -> GraphFile:
    """fp16 weights, float32 graph inputs/outputs; checked against the fp32 graph in ONNX Runtime.

    Uses onnxruntime.transformers' converter (the one ORT's SD pipeline optimiser uses): it retargets
    ``Cast(to=float)`` nodes, where onnxconverter_common 1.16 leaves them and yields graphs ORT refuses
    to load, and it reads >2 GB models by path.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = convert_float_to_float16(str(src.path), keep_io_types=True)
    OnnxModel.graph_topological_sort(model.graph, is_deterministic=True)  # the input casts come last otherwise
    path = dst_dir / src.path.name
    graph = GraphFile(path, src.spec, save_onnx(model, path))
    del model
    check_signature(path, src.spec)
    feeds = example_inputs(src.spec, CHECK_DIMS, seed=1)
    err = compare(path, ort_run(path, feeds), ort_run(src.path, feeds), rel_tol=0.05)
    print(f"  {path.name}: fp16 vs fp32 max relative difference {err:.1e}")
    return graph
