"""IP-Adapter processor: exact reduction to the plain UNet at ip_scale = 0, and checkpoint numbering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from acufarm_export import architectures as arch
from acufarm_export.build import ip_adapter_modules
from acufarm_export.graphs import UNetGraph, export_graph, graph_specs
from acufarm_export.ip_adapter import checkpoint_numbering
from conftest import run


@pytest.fixture(scope="module")
def unet_pair():
    """A tiny fc UNet before and after installing random IP processors (same base weights)."""
    plain = arch.build_unet(arch.TINY, 8, seed=0)
    with_ip = arch.build_unet(arch.TINY, 8, seed=0)
    ip_adapter_modules(with_ip, arch.TINY, seed=0)
    return plain, with_ip


def inputs(batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(
        sample=torch.randn(batch, 8, 8, 16, generator=g), timestep=torch.tensor([421.0]),
        encoder_hidden_states=torch.randn(batch, 77, 32, generator=g), ip_tokens=torch.randn(batch, 4, 32, generator=g),
    )  # fmt: skip


def test_checkpoint_numbering_is_odd_over_all_processors(unet_pair):
    numbering = checkpoint_numbering(unet_pair[0])
    assert list(numbering.values()) == list(range(1, 32, 2))
    blocks = [name.split(".")[0] for name in numbering]
    assert blocks == ["down_blocks"] * 6 + ["up_blocks"] * 9 + ["mid_block"]  # diffusers' attn_processors order


def test_scale_zero_is_plain_unet_in_torch(unet_pair):
    plain, with_ip = unet_pair
    x = inputs()
    with torch.no_grad():
        expected = UNetGraph(plain)(x["sample"], x["timestep"], x["encoder_hidden_states"])
        for scale in (torch.zeros(1), torch.zeros(2)):
            got = UNetGraph(with_ip)(**x, ip_scale=scale)
            assert torch.equal(got, expected)
        assert not torch.equal(UNetGraph(with_ip)(**x, ip_scale=torch.ones(1)), expected)


def test_scale_zero_is_plain_unet_in_onnxruntime(unet_pair, tmp_path):
    """Same weights exported with and without IP processors; at ip_scale = 0 the outputs agree exactly.

    Holds with ORT's default optimisations too: the text-attention subgraph is the same in both graphs
    and the extra ``+ 0 * ip`` leaves every float unchanged.
    """
    plain, with_ip = unet_pair
    specs = {ip: graph_specs(8, 32, 48, 4, ip_adapter=ip)["unet"] for ip in (False, True)}
    plain_path = export_graph(UNetGraph(plain), specs[False], tmp_path / "plain.onnx").path
    ip_path = export_graph(UNetGraph(with_ip), specs[True], tmp_path / "ip.onnx").path
    x = {k: v.numpy() for k, v in inputs(batch=2, seed=1).items()}
    text_only = {k: v for k, v in x.items() if k != "ip_tokens"}
    for optimize in (False, True):
        expected = run(plain_path, optimize, **text_only)
        got = run(ip_path, optimize, **x, ip_scale=np.zeros(1, np.float32))
        assert np.abs(got - expected).max() == 0.0, f"optimize={optimize}"
