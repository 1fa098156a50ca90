"""SD1.5 architectures built from configs in code (there is no model hub to download them from).

Two sizes share one layout: ``FULL`` is SD1.5 itself (UNet 320/640/1280/1280, CLIP ViT-L/14 text
encoder, the SD VAE, a CLIP ViT-H/14 image encoder as IP-Adapter SD1.5 uses), ``TINY`` keeps every
block type, layer count per block and weight name but shrinks the widths so the committed test bundle
stays a few MB. Random weights come from a fixed seed per component, so a component's weights do not
depend on which other components were built before it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

SD15_DOWN_BLOCKS = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD15_UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
VAE_DOWN_BLOCKS = ("DownEncoderBlock2D",) * 4
VAE_UP_BLOCKS = ("UpDecoderBlock2D",) * 4
LATENT_SCALE = 0.18215
LATENT_CHANNELS = 4
TEXT_MAX_LENGTH = 77
IMAGE_ENCODER_SIZE = 224


@dataclass(frozen=True)
class Sizes:
    """The widths that differ between the tiny and the full-size architectures."""

    unet_channels: tuple[int, int, int, int]
    unet_groups: int
    unet_heads: int  # diffusers' ``attention_head_dim`` for SD1.5 (it really is the head count)
    text_hidden: int  # = the UNet's cross_attention_dim (D)
    text_layers: int
    text_heads: int
    text_ffn: int
    vae_channels: tuple[int, int, int, int]
    vae_groups: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_ffn: int
    vision_patch: int
    vision_act: str
    image_embed_dim: int  # E: CLIP projection width fed to image_proj


FULL = Sizes(
    unet_channels=(320, 640, 1280, 1280), unet_groups=32, unet_heads=8,
    text_hidden=768, text_layers=12, text_heads=12, text_ffn=3072,
    vae_channels=(128, 256, 512, 512), vae_groups=32,
    vision_hidden=1280, vision_layers=32, vision_heads=16, vision_ffn=5120, vision_patch=14, vision_act="gelu",
    image_embed_dim=1024,
)  # fmt: skip

TINY = Sizes(
    unet_channels=(16, 32, 32, 32), unet_groups=8, unet_heads=4,
    text_hidden=32, text_layers=2, text_heads=4, text_ffn=64,
    vae_channels=(8, 16, 32, 32), vae_groups=8,
    vision_hidden=32, vision_layers=2, vision_heads=4, vision_ffn=64, vision_patch=32, vision_act="quick_gelu",
    image_embed_dim=48,  # deliberately != text_hidden so a swapped E/D shows up as a shape error
)  # fmt: skip

# Per-component seeds: a component's random weights never depend on the build order.
SEEDS = {"text_encoder": 1, "vae": 2, "image_encoder": 3, "unet": 4, "ip_adapter": 5}


@contextmanager
def seeded(component: str, base_seed: int):
    """Seed torch's global RNG for one component's initialisation, restoring the caller's RNG afterwards."""
    with torch.random.fork_rng():
        torch.manual_seed(base_seed * 100 + SEEDS[component])
        yield


def unet_config(s: Sizes, in_channels: int) -> dict:
    """diffusers ``UNet2DConditionModel`` config with SD1.5's block layout (16 cross-attention sites)."""
    return dict(
        sample_size=64, in_channels=in_channels, out_channels=LATENT_CHANNELS, layers_per_block=2,
        block_out_channels=s.unet_channels, down_block_types=SD15_DOWN_BLOCKS, up_block_types=SD15_UP_BLOCKS,
        norm_num_groups=s.unet_groups, cross_attention_dim=s.text_hidden, attention_head_dim=s.unet_heads,
    )  # fmt: skip


def vae_config(s: Sizes) -> dict:
    """diffusers ``AutoencoderKL`` config with the SD VAE layout (4 blocks, 8x downscale, 4 latent channels)."""
    return dict(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, layers_per_block=2,
        block_out_channels=s.vae_channels, down_block_types=VAE_DOWN_BLOCKS, up_block_types=VAE_UP_BLOCKS,
        norm_num_groups=s.vae_groups, sample_size=512, scaling_factor=LATENT_SCALE,
    )  # fmt: skip


def text_config(s: Sizes):
    """transformers ``CLIPTextConfig`` with CLIP's real vocabulary and 77 positions."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408, max_position_embeddings=TEXT_MAX_LENGTH, hidden_size=s.text_hidden,
        intermediate_size=s.text_ffn, num_hidden_layers=s.text_layers, num_attention_heads=s.text_heads,
        projection_dim=s.text_hidden, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    )  # fmt: skip


def vision_config(s: Sizes):
    """transformers ``CLIPVisionConfig`` for ``CLIPVisionModelWithProjection`` at 224 px."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        image_size=IMAGE_ENCODER_SIZE, patch_size=s.vision_patch, hidden_size=s.vision_hidden,
        intermediate_size=s.vision_ffn, num_hidden_layers=s.vision_layers, num_attention_heads=s.vision_heads,
        projection_dim=s.image_embed_dim, hidden_act=s.vision_act,
    )  # fmt: skip


def build_unet(s: Sizes, in_channels: int, seed: int):
    from diffusers import UNet2DConditionModel

    with seeded("unet", seed):
        return UNet2DConditionModel(**unet_config(s, in_channels)).eval()


def build_vae(s: Sizes, seed: int):
    from diffusers import AutoencoderKL

    with seeded("vae", seed):
        return AutoencoderKL(**vae_config(s)).eval()


def build_text_encoder(s: Sizes, seed: int):
    from transformers import CLIPTextModel

    with seeded("text_encoder", seed):
        return CLIPTextModel(text_config(s)).eval()


def build_image_encoder(s: Sizes, seed: int):
    from transformers import CLIPVisionModelWithProjection

    with seeded("image_encoder", seed):
        return CLIPVisionModelWithProjection(vision_config(s)).eval()
