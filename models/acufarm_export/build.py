"""Assemble bundles: which modules are built or loaded, where each graph goes, per export mode.

- ``export_tiny``: the committed test bundles (plain / fc / fbc sharing ``common/``), random weights.
- ``load_sd15`` + ``export_bundle``: a real bundle from SD1.5 (+ IC-Light offsets, + IP-Adapter).
- ``random_models`` + ``export_bundle``: full-size SD1.5 + fc + IP-Adapter with random weights, for
  speed measurements only.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import architectures as arch
from .bundle import BundleMeta, write_bundle_toml
from .graphs import (GraphFile, ImageEncoderGraph, ImageProjGraph, TextEncoderGraph, UNetGraph, VaeDecoderGraph,
                     VaeEncoderGraph, convert_fp16, export_graph, graph_specs)  # fmt: skip
from .iclight import ICLIGHT_CHANNELS, load_iclight_offsets, merge_iclight
from .ip_adapter import ImageProjModel, apply_ip_adapter, install_ip_processors, load_ip_adapter_checkpoint
from .tokenizer import build_clip_tokenizer, load_sd15_tokenizer, write_tokenizer_json

IP_TOKENS = 4
TINY_DIRS = {"none": "plain", "fc": "fc", "fbc": "fbc"}
SD15_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer")
# What a bundle directory may hold; anything else makes us refuse to clear it.
BUNDLE_FILE_SUFFIXES = (".onnx", ".onnx.data", "bundle.toml", "tokenizer.json")


@dataclass
class Models:
    """The torch modules of one bundle, ready for export (all float32, eval mode)."""

    text_encoder: nn.Module
    vae: nn.Module
    unet: nn.Module
    tokenizer: object  # transformers CLIPTokenizerFast
    iclight: str
    random_weights: bool
    image_encoder: nn.Module | None = None
    image_proj: ImageProjModel | None = None

    @property
    def ip_adapter(self) -> bool:
        return self.image_proj is not None

    def specs(self):
        proj = self.image_proj
        return graph_specs(
            unet_in_channels=self.unet.config.in_channels,
            dim=self.unet.config.cross_attention_dim,
            image_embed_dim=proj.proj.in_features if proj else 0,
            ip_tokens=proj.num_tokens if proj else IP_TOKENS,
            ip_adapter=self.ip_adapter,
        )

    def graph_modules(self) -> dict[str, nn.Module]:
        modules = {
            "text_encoder": TextEncoderGraph(self.text_encoder),
            "unet": UNetGraph(self.unet),
            "vae_encoder": VaeEncoderGraph(self.vae),
            "vae_decoder": VaeDecoderGraph(self.vae),
        }
        if self.ip_adapter:
            modules |= {
                "image_encoder": ImageEncoderGraph(self.image_encoder),
                "image_proj": ImageProjGraph(self.image_proj),
            }
        return modules

    def meta(self, name: str, precision: str) -> BundleMeta:
        return BundleMeta(
            name=name, iclight=self.iclight, ip_adapter=self.ip_adapter,
            unet_in_channels=self.unet.config.in_channels, cross_attention_dim=self.unet.config.cross_attention_dim,
            ip_tokens=self.image_proj.num_tokens if self.ip_adapter else IP_TOKENS, precision=precision,
            random_weights=self.random_weights,
        )  # fmt: skip


def fresh_dir(path: Path) -> Path:
    """Empty ``path`` for a new bundle, refusing if it holds files a bundle export would not write."""
    if path.exists():
        foreign = [p.name for p in path.iterdir() if not p.name.endswith(BUNDLE_FILE_SUFFIXES)]
        if foreign:
            raise SystemExit(f"{path} holds files that are not bundle output ({foreign[:3]}); not overwriting it")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def export_graphs(modules: dict[str, nn.Module], specs, out_dir: Path) -> dict[str, GraphFile]:
    graphs = {}
    for name, module in modules.items():
        print(f"  exporting {name} -> {out_dir / (name + '.onnx')}", flush=True)
        graphs[name] = export_graph(module, specs[name], out_dir / f"{name}.onnx")
    return graphs


def ip_adapter_modules(unet, s: arch.Sizes, seed: int) -> ImageProjModel:
    """Random IP-Adapter: IP processors in ``unet`` plus a matching image projection."""
    with arch.seeded("ip_adapter", seed):
        install_ip_processors(unet)
        return ImageProjModel(s.image_embed_dim, s.text_hidden, IP_TOKENS).eval()


def export_tiny(out: Path, seed: int = 0) -> None:
    """Write the three tiny bundles (plain, fc, fbc) and their shared ``common/`` graphs under ``out``."""
    s = arch.TINY
    common = fresh_dir(out / "common")
    tokenizer = common / "tokenizer.json"
    write_tokenizer_json(build_clip_tokenizer(), tokenizer)
    vae = arch.build_vae(s, seed)
    shared = {
        "text_encoder": TextEncoderGraph(arch.build_text_encoder(s, seed)),
        "vae_encoder": VaeEncoderGraph(vae),
        "vae_decoder": VaeDecoderGraph(vae),
        "image_encoder": ImageEncoderGraph(arch.build_image_encoder(s, seed)),
    }
    common_specs = graph_specs(4, s.text_hidden, s.image_embed_dim, IP_TOKENS, ip_adapter=True)
    common_graphs = export_graphs(shared, common_specs, common)

    for kind, dirname in TINY_DIRS.items():
        bundle_dir = fresh_dir(out / dirname)
        ip = kind != "none"
        unet = arch.build_unet(s, ICLIGHT_CHANNELS[kind], seed)
        own = {"unet": UNetGraph(unet)}
        if ip:
            own["image_proj"] = ImageProjGraph(ip_adapter_modules(unet, s, seed))
        specs = graph_specs(ICLIGHT_CHANNELS[kind], s.text_hidden, s.image_embed_dim, IP_TOKENS, ip_adapter=ip)
        graphs = export_graphs(own, specs, bundle_dir)
        graphs |= {k: g for k, g in common_graphs.items() if ip or k != "image_encoder"}
        meta = BundleMeta(
            name=f"tiny-{dirname}",
            iclight=kind,
            ip_adapter=ip,
            unet_in_channels=ICLIGHT_CHANNELS[kind],
            cross_attention_dim=s.text_hidden,
            ip_tokens=IP_TOKENS,
            precision="fp32",
            random_weights=True,
        )
        write_bundle_toml(bundle_dir, meta, tokenizer, graphs)


def random_models(s: arch.Sizes = arch.FULL, iclight: str = "fc", seed: int = 0) -> Models:
    """SD1.5-shaped models with random weights (IC-Light ``iclight`` + IP-Adapter), e.g. for timing."""
    unet = arch.build_unet(s, ICLIGHT_CHANNELS[iclight], seed)
    return Models(
        text_encoder=arch.build_text_encoder(s, seed), vae=arch.build_vae(s, seed), unet=unet,
        tokenizer=build_clip_tokenizer(), iclight=iclight, random_weights=True,
        image_encoder=arch.build_image_encoder(s, seed), image_proj=ip_adapter_modules(unet, s, seed),
    )  # fmt: skip


def load_sd15(folder: Path, iclight: Path | None = None, iclight_kind: str = "none",
              ip_adapter: Path | None = None, image_encoder: Path | None = None) -> Models:  # fmt: skip
    """Load a diffusers SD1.5 folder, merge IC-Light offsets and attach an IP-Adapter, all in float32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPVisionModelWithProjection

    inputs = [folder / d for d in SD15_SUBFOLDERS] + [iclight, ip_adapter, image_encoder]
    missing = [p for p in inputs if p is not None and not p.exists()]
    if missing:
        raise SystemExit(
            f"not found: {', '.join(map(str, missing))} (an SD1.5 folder needs {', '.join(SD15_SUBFOLDERS)})"
        )
    f32 = {"torch_dtype": torch.float32}
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", **f32).eval()
    vae = AutoencoderKL.from_pretrained(folder / "vae", **f32).eval()
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", **f32).eval()
    check_sd15(unet, vae, text_encoder)
    models = Models(text_encoder=text_encoder, vae=vae, unet=unet, tokenizer=load_sd15_tokenizer(folder / "tokenizer"),
                    iclight=iclight_kind, random_weights=False)  # fmt: skip
    if iclight is not None:
        merge_iclight(unet, load_iclight_offsets(iclight), iclight_kind)
    if ip_adapter is not None:
        models.image_proj = apply_ip_adapter(unet, *load_ip_adapter_checkpoint(ip_adapter))
        models.image_encoder = CLIPVisionModelWithProjection.from_pretrained(image_encoder, **f32).eval()
        width, want = models.image_encoder.config.projection_dim, models.image_proj.proj.in_features
        if width != want:
            raise SystemExit(f"{image_encoder}: image embeddings are {width} wide, the IP-Adapter expects {want}")
    return models


def check_sd15(unet, vae, text_encoder) -> None:
    """Refuse models whose layout the bundle format does not describe (it would fail later, less clearly)."""
    problems = []
    if tuple(unet.config.down_block_types) != arch.SD15_DOWN_BLOCKS or unet.config.in_channels != 4:
        problems.append(
            f"UNet is not SD1.5's 4-channel layout ({unet.config.down_block_types}, in {unet.config.in_channels})"
        )
    if vae.config.latent_channels != arch.LATENT_CHANNELS or len(vae.config.block_out_channels) != 4:
        problems.append("VAE is not the SD VAE layout (4 latent channels, 8x downscale)")
    if abs(vae.config.scaling_factor - arch.LATENT_SCALE) > 1e-9:
        problems.append(f"VAE scaling_factor {vae.config.scaling_factor} != {arch.LATENT_SCALE}")
    if text_encoder.config.hidden_size != unet.config.cross_attention_dim:
        problems.append(f"text encoder width {text_encoder.config.hidden_size} != UNet cross_attention_dim")
    if problems:
        raise SystemExit("not an SD1.5 model: " + "; ".join(problems))


def export_bundle(models: Models, out: Path, name: str, precisions: tuple[str, ...]) -> dict[str, Path]:
    """Export ``models`` to ``out/<precision>/`` for each precision; fp16 is converted from the fp32 graphs."""
    fp32_dir = fresh_dir(out / ("fp32" if "fp32" in precisions else ".fp32-for-fp16"))
    tokenizer = fp32_dir / "tokenizer.json"
    write_tokenizer_json(models.tokenizer, tokenizer)
    graphs = export_graphs(models.graph_modules(), models.specs(), fp32_dir)
    bundles = {}
    if "fp32" in precisions:
        bundles["fp32"] = write_bundle_toml(fp32_dir, models.meta(f"{name}-fp32", "fp32"), tokenizer, graphs)
    if "fp16" in precisions:
        fp16_dir = fresh_dir(out / "fp16")
        shutil.copyfile(tokenizer, fp16_dir / tokenizer.name)
        half = {k: convert_fp16(g, fp16_dir) for k, g in graphs.items()}
        bundles["fp16"] = write_bundle_toml(
            fp16_dir, models.meta(f"{name}-fp16", "fp16"), fp16_dir / tokenizer.name, half
        )
    if "fp32" not in precisions:
        shutil.rmtree(fp32_dir)
    return bundles
