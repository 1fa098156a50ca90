"""The committed tiny bundles against models/BUNDLE.md: files, hashes, signatures, IP sites, runtime."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import onnx
import pytest
from conftest import TINY, run

CHANNELS = {"plain": 4, "fc": 8, "fbc": 12}
ICLIGHT = {"plain": "none", "fc": "fc", "fbc": "fbc"}
TOP_KEYS = ["format", "name", "family", "iclight", "ip_adapter", "latent_scale", "latent_channels", "vae_scale_factor",
            "unet_in_channels", "text_max_length", "cross_attention_dim", "ip_tokens", "image_encoder_size", "precision",
            "random_weights", "tokenizer", "graphs"]  # fmt: skip
D, E = 32, 48  # tiny cross_attention_dim and image-embedding width


def contract(bundle: str) -> dict[str, tuple[list, list]]:
    """BUNDLE.md's signature table, written out independently of the exporter's own copy."""
    ip = bundle != "plain"
    unet_in = [("sample", "float32", ["batch", CHANNELS[bundle], "height", "width"]),
               ("timestep", "float32", ["timesteps"]),
               ("encoder_hidden_states", "float32", ["batch", 77, D])]  # fmt: skip
    if ip:
        unet_in += [("ip_tokens", "float32", ["batch", 4, D]), ("ip_scale", "float32", ["scales"])]
    graphs = {
        "text_encoder": ([("input_ids", "int32", ["batch", 77])], [("last_hidden_state", "float32", ["batch", 77, D])]),
        "unet": (unet_in, [("out_sample", "float32", ["batch", 4, "height", "width"])]),
        "vae_encoder": ([("sample", "float32", ["batch", 3, "height", "width"])],
                        [("latent_mean", "float32", ["batch", 4, "latent_height", "latent_width"])]),
        "vae_decoder": ([("latent_sample", "float32", ["batch", 4, "latent_height", "latent_width"])],
                        [("sample", "float32", ["batch", 3, "height", "width"])]),
    }  # fmt: skip
    if ip:
        graphs["image_encoder"] = (
            [("pixel_values", "float32", ["batch", 3, 224, 224])],
            [("image_embeds", "float32", ["batch", E])],
        )
        graphs["image_proj"] = (
            [("image_embeds", "float32", ["batch", E])],
            [("ip_tokens", "float32", ["batch", 4, D])],
        )
    return graphs


def as_tuples(tensors: list[dict]) -> list[tuple]:
    return [(t["name"], t["dtype"], t["shape"]) for t in tensors]


def onnx_io(path) -> tuple[list, list]:
    model = onnx.load(str(path), load_external_data=False)
    names = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT32: "int32"}

    def io(values):
        return [(v.name, names[v.type.tensor_type.elem_type],
                 [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]  # fmt: skip

    return io(model.graph.input), io(model.graph.output)


@pytest.mark.parametrize("bundle", ["plain", "fc", "fbc"])
def test_bundle_toml_keys_and_values(tiny_bundles, bundle):
    _, toml = tiny_bundles[bundle]
    assert list(toml) == TOP_KEYS
    assert toml["format"] == 1 and toml["family"] == "sd15" and toml["name"] == f"tiny-{bundle}"
    assert toml["iclight"] == ICLIGHT[bundle] and toml["unet_in_channels"] == CHANNELS[bundle]
    assert toml["ip_adapter"] is (bundle != "plain")
    assert (toml["latent_scale"], toml["latent_channels"], toml["vae_scale_factor"]) == (0.18215, 4, 8)
    assert (toml["text_max_length"], toml["cross_attention_dim"], toml["ip_tokens"], toml["image_encoder_size"]) == (
        77,
        D,
        4,
        224,
    )
    assert toml["precision"] == "fp32" and toml["random_weights"] is True
    assert toml["tokenizer"]["file"] == "../common/tokenizer.json"
    assert list(toml["graphs"]) == list(contract(bundle))


@pytest.mark.parametrize("bundle", ["plain", "fc", "fbc"])
def test_hashes_and_signatures(tiny_bundles, bundle):
    bundle_dir, toml = tiny_bundles[bundle]
    entries = [toml["tokenizer"]] + list(toml["graphs"].values())
    for entry in entries:
        path = bundle_dir / entry["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], path
        assert "external_data" not in entry  # tiny graphs are far below 2 GB
    for name, (inputs, outputs) in contract(bundle).items():
        graph = toml["graphs"][name]
        assert (as_tuples(graph["inputs"]), as_tuples(graph["outputs"])) == (inputs, outputs), name
        assert onnx_io(bundle_dir / graph["file"]) == (inputs, outputs), name
        onnx.checker.check_model(str(bundle_dir / graph["file"]))


def test_no_stray_files():
    listed = set()
    for bundle in ("plain", "fc", "fbc"):
        toml = (TINY / bundle / "bundle.toml").read_text()
        listed |= {(TINY / bundle / f).resolve() for f in re.findall(r'^file = "(.+)"$', toml, flags=re.M)}
        listed.add((TINY / bundle / "bundle.toml").resolve())
    on_disk = {p.resolve() for p in TINY.rglob("*") if p.is_file() and p.name != "README.md"}
    assert on_disk == listed


@pytest.mark.parametrize("bundle", ["plain", "fc", "fbc"])
def test_conv_in_width_and_ip_sites(tiny_bundles, bundle):
    model = onnx.load(str(TINY / bundle / "unet.onnx"))
    conv_in = next(t for t in model.graph.initializer if t.name == "unet.conv_in.weight")
    assert conv_in.dims[1] == CHANNELS[bundle]
    for proj in ("to_k_ip", "to_v_ip"):
        sites = [n.name for n in model.graph.node if n.op_type == "MatMul" and f"/attn2/{proj}/" in n.name]
        assert len(sites) == (0 if bundle == "plain" else 16)
        if sites:
            blocks = [re.match(r"/unet/(\w+)", s).group(1) for s in sites]
            assert (blocks.count("down_blocks"), blocks.count("mid_block"), blocks.count("up_blocks")) == (6, 1, 9)
    # Nothing IP-related may sit on a self-attention (attn1) site.
    assert not [n.name for n in model.graph.node if "/attn1/" in n.name and "_ip" in n.name]


@pytest.mark.parametrize("bundle", ["plain", "fc", "fbc"])
def test_graphs_run_at_batch2_64px(tiny_bundles, bundle):
    bundle_dir, toml = tiny_bundles[bundle]
    g = {k: bundle_dir / v["file"] for k, v in toml["graphs"].items()}
    rng = np.random.default_rng(0)
    ids = np.full((2, 77), 49407, np.int32)
    ids[:, :7] = [49406, 320, 1125, 539, 320, 2368, 49407]
    text = run(g["text_encoder"], input_ids=ids)
    assert text.shape == (2, 77, D)
    latent = run(g["vae_encoder"], sample=rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32))
    assert latent.shape == (2, 4, 8, 8)
    feeds = dict(sample=rng.standard_normal((2, CHANNELS[bundle], 8, 8), dtype=np.float32),
                 timestep=np.array([999.0], np.float32), encoder_hidden_states=text)  # fmt: skip
    if bundle != "plain":
        embeds = run(g["image_encoder"], pixel_values=rng.standard_normal((2, 3, 224, 224), dtype=np.float32))
        assert embeds.shape == (2, E)
        feeds |= dict(ip_tokens=run(g["image_proj"], image_embeds=embeds), ip_scale=np.array([0.8], np.float32))
    eps = run(g["unet"], **feeds)
    assert eps.shape == (2, 4, 8, 8)
    image = run(g["vae_decoder"], latent_sample=latent / 0.18215)
    assert image.shape == (2, 3, 64, 64)
    assert all(np.isfinite(x).all() for x in (text, latent, eps, image))


@pytest.mark.parametrize("bundle", ["fc", "fbc"])
def test_ip_scale_and_timestep_broadcast(bundle):
    """ip_scale [S] and timestep [T] with S, T in {1, B}: one value per batch row, at any latent size."""
    unet = TINY / bundle / "unet.onnx"
    rng = np.random.default_rng(1)
    b, h, w = 3, 8, 16
    feeds = dict(sample=rng.standard_normal((b, CHANNELS[bundle], h, w), dtype=np.float32),
                 encoder_hidden_states=rng.standard_normal((b, 77, D), dtype=np.float32),
                 ip_tokens=rng.standard_normal((b, 4, D), dtype=np.float32))  # fmt: skip
    t = np.array([500.0, 20.0, 999.0], np.float32)
    scales = np.array([0.0, 0.5, 1.0], np.float32)
    batched = run(unet, **feeds, timestep=t, ip_scale=scales)
    assert batched.shape == (b, 4, h, w)
    for i in range(b):
        row = {k: v[i : i + 1] for k, v in feeds.items()}
        alone = run(unet, **row, timestep=t[i : i + 1], ip_scale=scales[i : i + 1])
        np.testing.assert_allclose(batched[i : i + 1], alone, rtol=1e-5, atol=1e-5)
    shared = run(unet, **feeds, timestep=t[:1], ip_scale=scales[2:])
    np.testing.assert_allclose(
        shared, run(unet, **feeds, timestep=np.repeat(t[:1], b), ip_scale=np.repeat(scales[2:], b)), atol=1e-6
    )
    # ip_scale is live (not folded into the graph): a different scale gives a different output.
    assert np.abs(shared - run(unet, **feeds, timestep=t[:1], ip_scale=scales[:1])).max() > 1e-3
