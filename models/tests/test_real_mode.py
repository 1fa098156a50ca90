"""Real-mode export (--sd15 + IC-Light + IP-Adapter, fp32 and fp16) on fabricated tiny checkpoints.

The checkpoints are written in the real key layouts: a diffusers SD1.5 folder (save_pretrained), IC-Light
offsets with diffusers UNet keys, an IP-Adapter ``.bin`` (``image_proj.*``, ``ip_adapter.N.to_{k,v}_ip``)
and a CLIPVisionModelWithProjection folder. The reference for the exported UNet is diffusers' own
IP-Adapter loader, so a wrong merge or a wrong ``N`` mapping in the exporter shows up as a mismatch.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch
from acufarm_export import architectures as arch
from acufarm_export import build
from acufarm_export.ip_adapter import load_ip_adapter_checkpoint
from acufarm_export.tokenizer import clip_vocab_and_merges, open_clip_bpe_path
from conftest import load_toml, run
from onnx import numpy_helper
from safetensors.torch import save_file

import export


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Fabricated SD1.5 folder, IC-Light fc/fbc offsets, IP-Adapter .bin/.safetensors and image encoder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("weights")
    sd = root / "sd15"
    torch.manual_seed(1234)  # not the exporter's seeds: loaded weights must not coincide with a fresh init
    unet = UNet2DConditionModel(**arch.unet_config(arch.TINY, 4))
    unet.save_pretrained(sd / "unet")
    AutoencoderKL(**arch.vae_config(arch.TINY)).save_pretrained(sd / "vae")
    CLIPTextModel(arch.text_config(arch.TINY)).save_pretrained(sd / "text_encoder")
    CLIPVisionModelWithProjection(arch.vision_config(arch.TINY)).save_pretrained(root / "image_encoder")
    vocab, merges = clip_vocab_and_merges(open_clip_bpe_path())
    (sd / "tokenizer").mkdir()
    (sd / "tokenizer" / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (sd / "tokenizer" / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )

    for kind, channels in (("fc", 8), ("fbc", 12)):
        offsets = {k: 0.01 * torch.randn(v.shape) for k, v in unet.state_dict().items()}
        offsets["conv_in.weight"] = 0.01 * torch.randn(unet.conv_in.out_channels, channels, 3, 3)
        save_file({k: v.half() for k, v in offsets.items()}, str(root / f"iclight_{kind}.safetensors"))

    dim, embed = arch.TINY.text_hidden, arch.TINY.image_embed_dim
    ip_adapter = {}
    for n, name in enumerate(unet.attn_processors):  # IP-Adapter numbers every processor; attn2 ones get weights
        if name.endswith("attn2.processor"):
            inner = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
            ip_adapter |= {
                f"{n}.to_k_ip.weight": torch.randn(inner, dim) / 4,
                f"{n}.to_v_ip.weight": torch.randn(inner, dim) / 4,
            }
    image_proj = {"proj.weight": torch.randn(4 * dim, embed) / 7, "proj.bias": torch.randn(4 * dim),
                  "norm.weight": 1 + 0.1 * torch.randn(dim), "norm.bias": 0.1 * torch.randn(dim)}  # fmt: skip
    ckpt = {
        "image_proj": {k: v.half() for k, v in image_proj.items()},
        "ip_adapter": {k: v.half() for k, v in ip_adapter.items()},
    }
    torch.save(ckpt, root / "ip-adapter_sd15.bin")
    flat = {f"{part}.{k}": v for part, weights in ckpt.items() for k, v in weights.items()}
    save_file(flat, str(root / "ip-adapter_sd15.safetensors"))
    return root


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    code = export.main([
        "--sd15", str(checkpoints / "sd15"), "--iclight", str(checkpoints / "iclight_fc.safetensors"),
        "--iclight-kind", "fc", "--ip-adapter", str(checkpoints / "ip-adapter_sd15.bin"),
        "--image-encoder", str(checkpoints / "image_encoder"), "--precision", "both", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    return out


def reference_unet(checkpoints, ip_scale: float):
    """diffusers' own path: IC-Light merge as in IC-Light's demo, then ``_load_ip_adapter_weights``."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from safetensors.torch import load_file

    unet = UNet2DConditionModel.from_pretrained(checkpoints / "sd15" / "unet").eval()
    base, offsets = unet.state_dict(), load_file(str(checkpoints / "iclight_fc.safetensors"))
    wide = torch.zeros(offsets["conv_in.weight"].shape)
    wide[:, :4] = base["conv_in.weight"]
    base["conv_in.weight"] = wide
    unet.conv_in = torch.nn.Conv2d(8, unet.conv_in.out_channels, 3, padding=1)
    unet.load_state_dict({k: base[k] + offsets[k].float() for k in base})
    ckpt = torch.load(checkpoints / "ip-adapter_sd15.bin", weights_only=True)
    unet._load_ip_adapter_weights(
        [{part: {k: v.float() for k, v in sd.items()} for part, sd in ckpt.items()}], low_cpu_mem_usage=False
    )
    for proc in unet.attn_processors.values():
        if isinstance(proc, IPAdapterAttnProcessor2_0):
            proc.scale = [ip_scale]
    return unet


def test_bundle_files(exported):
    for precision in ("fp32", "fp16"):
        bundle_dir = exported / precision
        toml = load_toml(bundle_dir / "bundle.toml")
        assert toml["name"] == f"sd15-fc-ip-{precision}" and toml["precision"] == precision
        assert (toml["iclight"], toml["unet_in_channels"], toml["ip_adapter"], toml["random_weights"]) == (
            "fc",
            8,
            True,
            False,
        )
        assert toml["tokenizer"]["file"] == "tokenizer.json"
        for entry in [toml["tokenizer"], *toml["graphs"].values()]:
            assert hashlib.sha256((bundle_dir / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
        assert list(toml["graphs"]) == [
            "text_encoder",
            "unet",
            "vae_encoder",
            "vae_decoder",
            "image_encoder",
            "image_proj",
        ]
    assert not (exported / ".fp32-for-fp16").exists()


def test_iclight_merge_landed(exported, checkpoints):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    base = UNet2DConditionModel.from_pretrained(checkpoints / "sd15" / "unet").state_dict()
    offsets = load_file(str(checkpoints / "iclight_fc.safetensors"))
    weights = {
        t.name: numpy_helper.to_array(t) for t in onnx.load(str(exported / "fp32" / "unet.onnx")).graph.initializer
    }
    conv_in = weights["unet.conv_in.weight"]
    assert conv_in.shape[1] == 8
    np.testing.assert_array_equal(
        conv_in[:, :4], (base["conv_in.weight"] + offsets["conv_in.weight"][:, :4].float()).numpy()
    )
    np.testing.assert_array_equal(conv_in[:, 4:], offsets["conv_in.weight"][:, 4:].float().numpy())
    for key in ("conv_out.weight", "down_blocks.1.resnets.0.conv1.weight"):
        np.testing.assert_array_equal(weights[f"unet.{key}"], (base[key] + offsets[key].float()).numpy())


def test_unet_matches_diffusers_ip_adapter(exported, checkpoints):
    """Exported image_encoder -> image_proj -> unet equals diffusers' IC-Light + IP-Adapter UNet."""
    from transformers import CLIPVisionModelWithProjection

    rng = np.random.default_rng(3)
    pixels = rng.standard_normal((2, 3, 224, 224), dtype=np.float32)
    x = dict(sample=rng.standard_normal((2, 8, 8, 8), dtype=np.float32), timestep=np.array([601.0], np.float32),
             encoder_hidden_states=rng.standard_normal((2, 77, 32), dtype=np.float32))  # fmt: skip
    fp32 = exported / "fp32"
    embeds = run(fp32 / "image_encoder.onnx", pixel_values=pixels)
    tokens = run(fp32 / "image_proj.onnx", image_embeds=embeds)
    encoder = CLIPVisionModelWithProjection.from_pretrained(checkpoints / "image_encoder").eval()
    for scale in (0.0, 0.6, 1.0):
        got = run(fp32 / "unet.onnx", **x, ip_tokens=tokens, ip_scale=np.array([scale], np.float32))
        with torch.no_grad():
            ref_embeds = encoder(pixel_values=torch.from_numpy(pixels)).image_embeds
            expected = reference_unet(checkpoints, scale)(
                torch.from_numpy(x["sample"]),
                torch.from_numpy(x["timestep"]),
                torch.from_numpy(x["encoder_hidden_states"]),
                added_cond_kwargs={"image_embeds": [ref_embeds[:, None]]},
            ).sample.numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_other_graphs_carry_loaded_weights(exported, checkpoints):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    ids = np.full((2, 77), 49407, np.int32)
    ids[:, :5] = [49406, 320, 1125, 539, 49407]
    with torch.no_grad():
        text = CLIPTextModel.from_pretrained(checkpoints / "sd15" / "text_encoder")(torch.from_numpy(ids).long())
        image = torch.rand(1, 3, 64, 64) * 2 - 1
        mean = AutoencoderKL.from_pretrained(checkpoints / "sd15" / "vae").encode(image).latent_dist.mean
    np.testing.assert_allclose(
        run(exported / "fp32" / "text_encoder.onnx", input_ids=ids), text.last_hidden_state.numpy(), atol=1e-4
    )
    np.testing.assert_allclose(
        run(exported / "fp32" / "vae_encoder.onnx", sample=image.numpy()), mean.numpy(), atol=1e-4
    )


def test_fp16_bundle(exported):
    """fp16 weights, float32 inputs/outputs, outputs close to the fp32 graph."""
    model = onnx.load(str(exported / "fp16" / "unet.onnx"))
    dtypes = [t.data_type for t in model.graph.initializer if t.name.startswith("unet.") and t.name.endswith("weight")]
    assert dtypes and set(dtypes) == {onnx.TensorProto.FLOAT16}
    assert {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]} == {onnx.TensorProto.FLOAT}
    rng = np.random.default_rng(5)
    x = dict(
        sample=rng.standard_normal((2, 8, 8, 8), dtype=np.float32),
        timestep=np.array([50.0, 900.0], np.float32),
        encoder_hidden_states=rng.standard_normal((2, 77, 32), dtype=np.float32),
        ip_tokens=rng.standard_normal((2, 4, 32), dtype=np.float32),
        ip_scale=np.array([1.0, 0.3], np.float32),
    )
    full, half = run(exported / "fp32" / "unet.onnx", **x), run(exported / "fp16" / "unet.onnx", **x)
    assert np.abs(full - half).max() < 1e-2 * np.abs(full).max()


def test_ip_checkpoint_formats_agree(checkpoints):
    bin_proj, bin_ip = load_ip_adapter_checkpoint(checkpoints / "ip-adapter_sd15.bin")
    st_proj, st_ip = load_ip_adapter_checkpoint(checkpoints / "ip-adapter_sd15.safetensors")
    assert bin_proj.keys() == st_proj.keys() and bin_ip.keys() == st_ip.keys()
    assert all(torch.equal(bin_ip[k], st_ip[k]) for k in bin_ip) and all(
        torch.equal(bin_proj[k], st_proj[k]) for k in bin_proj
    )


def test_mismatched_checkpoints_are_refused(checkpoints, tmp_path):
    sd15 = checkpoints / "sd15"
    with pytest.raises(ValueError, match="wrong --iclight-kind"):
        build.load_sd15(sd15, checkpoints / "iclight_fbc.safetensors", "fc")
    proj, ip = load_ip_adapter_checkpoint(checkpoints / "ip-adapter_sd15.bin")
    del ip["31.to_v_ip.weight"]
    torch.save({"image_proj": proj, "ip_adapter": ip}, tmp_path / "broken.bin")
    with pytest.raises(ValueError, match="missing"):
        build.load_sd15(sd15, ip_adapter=tmp_path / "broken.bin", image_encoder=checkpoints / "image_encoder")


def test_random_full_path_at_tiny_size(tmp_path):
    """--random-full's code path (random fc + IP-Adapter models, fp16-only output) at tiny widths."""
    bundles = build.export_bundle(build.random_models(arch.TINY), tmp_path, "random-tiny", ("fp16",))
    toml = load_toml(bundles["fp16"])
    assert (toml["random_weights"], toml["precision"], toml["unet_in_channels"]) == (True, "fp16", 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp16"]
