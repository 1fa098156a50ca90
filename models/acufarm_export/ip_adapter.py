"""IP-Adapter (SD1.5 base variant) baked into the UNet graph.

diffusers' own IP-Adapter path keeps the scale as a Python float on each processor, which the exporter
would fold into the graph. Here the 16 cross-attention (``attn2``) sites get ``IPAttnProcessor``, which
takes ``ip_tokens`` and ``ip_scale`` as tensors (handed in through ``cross_attention_kwargs``), so both
stay graph inputs:

    out = to_out( attn(Q, K_txt, V_txt) + ip_scale * attn(Q, to_k_ip(ip_tokens), to_v_ip(ip_tokens)) )

The text part repeats diffusers' ``AttnProcessor2_0`` op for op, so ``ip_scale = 0`` reproduces the
plain UNet bit for bit. Checkpoint layout (IP-Adapter's ``ip-adapter_sd15.bin``):
``image_proj.{proj,norm}.{weight,bias}`` and ``ip_adapter.{N}.to_{k,v}_ip.weight``, where ``N`` numbers
all of ``unet.attn_processors`` in order, so the ``attn2`` sites are ``N = 1, 3, …, 31``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

IP_SITES = 16  # SD1.5: 6 down, 9 up, 1 mid cross-attention layers


class SelfAttnProcessor(AttnProcessor2_0):
    """``attn1`` sites: diffusers' default processor, declaring the IP kwargs it ignores.

    The UNet forwards ``cross_attention_kwargs`` to every attention layer; diffusers warns about (and
    drops) kwargs a processor's signature lacks. Naming them here keeps the self-attention sites silent
    while their computation stays ``AttnProcessor2_0`` itself.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 ip_tokens=None, ip_scale=None):  # fmt: skip
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class IPAttnProcessor(nn.Module):
    """Cross-attention with an extra, scaled attention over the IP-Adapter's image tokens."""

    def __init__(self, cross_attention_dim: int, hidden_size: int):
        super().__init__()
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *,
                 ip_tokens: torch.Tensor, ip_scale: torch.Tensor) -> torch.Tensor:  # fmt: skip
        # Text attention: AttnProcessor2_0.__call__ verbatim up to the output projection. (diffusers
        # defines __call__, not forward, on its nn.Module processors too: Attention inspects its signature.)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        # Image-token attention (as IP-Adapter's IPAttnProcessor2_0): same queries, no mask.
        ip_key = self.to_k_ip(ip_tokens).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        ip_value = self.to_v_ip(ip_tokens).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        ip_hidden = F.scaled_dot_product_attention(query, ip_key, ip_value, dropout_p=0.0, is_causal=False)
        ip_hidden = ip_hidden.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        # ip_scale is [S] with S = 1 or batch: one scale per batch row (e.g. cond vs uncond).
        hidden_states = hidden_states + ip_scale.to(hidden_states.dtype).view(-1, 1, 1) * ip_hidden

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class ImageProjModel(nn.Module):
    """IP-Adapter's image projection: CLIP image embedding [B, E] -> ``num_tokens`` tokens [B, T, D]."""

    def __init__(self, image_embed_dim: int, cross_attention_dim: int, num_tokens: int = 4):
        super().__init__()
        self.num_tokens = num_tokens
        self.cross_attention_dim = cross_attention_dim
        self.proj = nn.Linear(image_embed_dim, num_tokens * cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(image_embeds).reshape(-1, self.num_tokens, self.cross_attention_dim)
        return self.norm(tokens)


def checkpoint_numbering(unet) -> dict[str, int]:
    """``attn2`` processor name -> its ``N`` in ``ip_adapter.{N}.*`` (its index among all processors)."""
    sites = {name: n for n, name in enumerate(unet.attn_processors) if name.endswith("attn2.processor")}
    if len(sites) != IP_SITES:
        raise ValueError(f"expected {IP_SITES} cross-attention sites (SD1.5 layout), found {len(sites)}")
    return sites


def install_ip_processors(unet) -> dict[int, IPAttnProcessor]:
    """Give every attention site of ``unet`` its IP-aware processor (random ``to_k_ip``/``to_v_ip``).

    Returns the cross-attention processors keyed by checkpoint number ``N``.
    """
    numbering = checkpoint_numbering(unet)
    processors, ip_sites = {}, {}
    for name in unet.attn_processors:
        if name in numbering:
            attn = unet.get_submodule(name.removesuffix(".processor"))
            proc = IPAttnProcessor(unet.config.cross_attention_dim, attn.to_k.out_features)
            ip_sites[numbering[name]] = proc
            processors[name] = proc
        else:
            processors[name] = SelfAttnProcessor()
    unet.set_attn_processor(processors)
    return ip_sites


def load_ip_adapter_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Read an IP-Adapter checkpoint (``.bin``: nested dicts; ``.safetensors``: flat prefixed keys).

    Returns ``(image_proj, ip_adapter)`` state dicts with the ``image_proj.`` / ``ip_adapter.`` prefixes removed.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        flat = load_file(str(path))
        parts: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        for key, tensor in flat.items():
            head, _, rest = key.partition(".")
            if head not in parts:
                raise ValueError(f"{path}: unexpected key {key!r} (want image_proj.* and ip_adapter.*)")
            parts[head][rest] = tensor
    else:
        parts = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(parts, dict) or set(parts) != {"image_proj", "ip_adapter"}:
            raise ValueError(f"{path}: expected a dict with 'image_proj' and 'ip_adapter', got {list(parts)[:5]}")
    if set(parts["image_proj"]) != {"proj.weight", "proj.bias", "norm.weight", "norm.bias"}:
        raise ValueError(
            f"{path}: image_proj has keys {sorted(parts['image_proj'])[:6]}…; only the base IP-Adapter "
            "(ImageProjModel: proj + norm) is supported, not the plus / face-id variants"
        )
    return parts["image_proj"], parts["ip_adapter"]


def apply_ip_adapter(unet, image_proj_sd: dict, ip_sd: dict) -> ImageProjModel:
    """Install IP processors in ``unet`` loaded from a checkpoint; return the loaded ``ImageProjModel``."""
    sites = install_ip_processors(unet)
    expected = {f"{n}.{k}.weight" for n in sites for k in ("to_k_ip", "to_v_ip")}
    if set(ip_sd) != expected:
        missing, extra = sorted(expected - set(ip_sd)), sorted(set(ip_sd) - expected)
        raise ValueError(f"IP-Adapter keys do not fit this UNet: missing {missing[:4]}, unexpected {extra[:4]}")
    for n, proc in sites.items():
        proc.load_state_dict({k: ip_sd[f"{n}.{k}"].float() for k in ("to_k_ip.weight", "to_v_ip.weight")})

    dim = unet.config.cross_attention_dim
    out_features, image_embed_dim = image_proj_sd["proj.weight"].shape
    if out_features % dim:
        raise ValueError(
            f"image_proj.proj maps to {out_features} features, not a multiple of cross_attention_dim {dim}"
        )
    proj = ImageProjModel(image_embed_dim, dim, out_features // dim)
    proj.load_state_dict({k: v.float() for k, v in image_proj_sd.items()})
    return proj.eval()
