"""IC-Light (SD1.5) merge, done the way IC-Light's own ``gradio_demo*.py`` does it.

IC-Light ships *offsets* for every UNet weight. Its demo widens ``conv_in`` to 8 (``fc``: latent +
foreground) or 12 (``fbc``: + background) input channels, zeroing the new input channels and keeping
the base weights in the first 4, then loads ``base + offset`` for every key (strictly: the offset file
must cover exactly the UNet's keys).
"""

from __future__ import annotations

from pathlib import Path

import torch

ICLIGHT_CHANNELS = {"none": 4, "fc": 8, "fbc": 12}


def widen_conv_in(unet, in_channels: int) -> None:
    """Replace ``unet.conv_in`` by one with ``in_channels`` inputs: base weights first, zeros after."""
    old = unet.conv_in
    if old.in_channels == in_channels:
        return
    new = torch.nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)


def merge_iclight(unet, offsets: dict[str, torch.Tensor], kind: str) -> None:
    """Widen ``conv_in`` for ``kind`` and add IC-Light's offsets to every UNet weight, in float32."""
    widen_conv_in(unet, ICLIGHT_CHANNELS[kind])
    base = unet.state_dict()
    missing, extra = sorted(set(base) - set(offsets)), sorted(set(offsets) - set(base))
    if missing or extra:
        raise ValueError(
            f"IC-Light offsets do not match the UNet's keys (diffusers layout expected): "
            f"missing {missing[:4]}{'…' if len(missing) > 4 else ''}, unexpected {extra[:4]}{'…' if len(extra) > 4 else ''}"
        )
    bad = [k for k in base if offsets[k].shape != base[k].shape]
    if bad:
        k = bad[0]
        raise ValueError(
            f"IC-Light offset {k} has shape {tuple(offsets[k].shape)}, UNet has {tuple(base[k].shape)}"
            + (" (wrong --iclight-kind?)" if k == "conv_in.weight" else "")
        )
    unet.load_state_dict({k: base[k].float() + offsets[k].float() for k in base}, strict=True)


def load_iclight_offsets(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
