"""Sampler parity: `acufarm augment` against k-diffusion's own samplers.

The reference side is written from DESIGN §4 with ComfyUI's semantics and shares nothing with the
Rust code but the ONNX graphs: it tokenizes with transformers' CLIPTokenizerFast, runs the bundle's
graphs through onnxruntime's Python API, builds the IC-Light concat and IP-Adapter tokens itself,
wraps the UNet in ComfyUI's EPS scaling + CFG, and lets k-diffusion 0.1.1's `sample_dpmpp_2m` /
`sample_euler` drive it from the same injected noise. Final latents must agree within 1e-4
relative L2. Sigmas come from `acufarm schedule` (checked separately against reference vectors).

Run: ACUFARM_BIN=target/debug/acufarm python -m pytest tests/reference -q
"""
import importlib
import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = pathlib.Path(os.environ.get("ACUFARM_TINY", REPO / "models" / "tiny"))
BIN = os.environ.get("ACUFARM_BIN", str(REPO / "target" / "debug" / "acufarm"))
LATENT_SCALE = 0.18215
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
PROMPT, NEGATIVE = "a photo of a man, warm window light", "blurry, lowres"


def k_sampling():
    """k_diffusion.sampling without the package __init__ (which pulls optional heavy modules)."""
    if "k_diffusion.sampling" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = pkg
    return importlib.import_module("k_diffusion.sampling")


def session(path):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class Bundle:
    def __init__(self, variant):
        import tomllib
        from transformers import CLIPTokenizerFast

        self.dir = TINY / variant
        self.meta = tomllib.loads((self.dir / "bundle.toml").read_text())
        self.s = {name: session(self.dir / g["file"]) for name, g in self.meta["graphs"].items()}
        self.tok = CLIPTokenizerFast(tokenizer_file=str(self.dir / self.meta["tokenizer"]["file"]))

    def run(self, name, feeds, output):
        return self.s[name].run([output], feeds)[0]

    def text(self, prompt):
        ids = self.tok(prompt, padding="max_length", max_length=77, truncation=True)["input_ids"]
        # SD1.5 pads with <|endoftext|>.
        ids = [i if i != self.tok.pad_token_id else self.tok.eos_token_id for i in ids]
        return self.run("text_encoder", {"input_ids": np.array([ids], np.int32)}, "last_hidden_state")

    def vae_mean(self, rgb):
        x = (np.asarray(rgb, np.float32) / 255.0 * 2 - 1).transpose(2, 0, 1)[None]
        return self.run("vae_encoder", {"sample": x}, "latent_mean")

    def ip_tokens(self, rgb224):
        x = ((np.asarray(rgb224, np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)[None]
        embeds = self.run("image_encoder", {"pixel_values": x.astype(np.float32)}, "image_embeds")
        return self.run("image_proj", {"image_embeds": embeds}, "ip_tokens")

    def zero_tokens(self):
        width = self.meta["graphs"]["image_proj"]["inputs"][0]["shape"][1]
        return self.run("image_proj", {"image_embeds": np.zeros((1, width), np.float32)}, "ip_tokens")


def subject():
    """64×64 figure on a perfectly plain background, so the colour key is unambiguous."""
    yy, xx = np.mgrid[:64, :64]
    img = np.full((64, 64, 3), 236, np.uint8)
    disc = (xx - 32) ** 2 + (yy - 30) ** 2 < 300
    img[disc] = (200, 150, 120)
    img[50:, 10:54] = (180, 130, 100)
    return img


def scene224():
    yy, xx = np.mgrid[:224, :224]
    return np.stack([xx, yy, np.full_like(xx, 90)], -1).astype(np.uint8)


def background64():
    yy, xx = np.mgrid[:64, :64]
    return np.stack([200 - xx, 120 + yy, np.full_like(xx, 60)], -1).astype(np.uint8)


def schedule(steps, t0):
    out = subprocess.run([BIN, "schedule", "--scheduler", "sgm_uniform", "--steps", str(steps), "--t0", str(t0), "--json"],
                         check=True, capture_output=True, text=True)
    data = json.loads(out.stdout)
    return np.array(data["sigmas"], np.float32), data["timesteps"]


@pytest.mark.parametrize("variant,sampler,t0", [
    ("fc", "dpmpp_2m", 0.3), ("fbc", "dpmpp_2m", 0.3), ("fc", "euler", 0.3), ("fbc", "euler", 0.3),
    ("fc", "dpmpp_2m", 0.0),  # starts at σ_max: ComfyUI scales the noise by √(1+σ²)
])
def test_sampler_matches_k_diffusion(tmp_path, variant, sampler, t0):
    steps, cfg, ipa, mult, seed = 12, 2.5, 0.8, 0.3, 0
    b = Bundle(variant)
    src, scene, bg = subject(), scene224(), background64()
    for name, arr in [("M_Test_N_HD_0001.png", src), ("scene.png", scene), ("bg.png", bg)]:
        Image.fromarray(arr).save(tmp_path / name)
    noise = np.random.default_rng(1234).standard_normal((1, 4, 8, 8)).astype(np.float32)
    np.save(tmp_path / "noise.npy", noise)

    cmd = [BIN, "augment", "--bundle", str(b.dir), "--input", str(tmp_path / "M_Test_N_HD_0001.png"),
           "--output", str(tmp_path / "out.png"), "--scene", str(tmp_path / "scene.png"),
           "--prompt", PROMPT, "--negative", NEGATIVE, "--steps", str(steps), "--t0", str(t0),
           "--cfg", str(cfg), "--ipa-weight", str(ipa), "--ic-multiplier", str(mult),
           "--sampler", sampler, "--scheduler", "sgm_uniform", "--seed", str(seed),
           "--noise-in", str(tmp_path / "noise.npy"), "--latents-out", str(tmp_path / "latents.npy")]
    if variant == "fbc":
        cmd += ["--background", str(tmp_path / "bg.png")]
    subprocess.run(cmd, check=True, capture_output=True)
    rust = np.load(tmp_path / "latents.npy")

    # Conditioning, built independently.
    key = np.median(np.concatenate([src[0], src[-1], src[:, 0], src[:, -1]]), axis=0)
    mask = (np.abs(src.astype(int) - key).max(-1) > 12)
    fg = np.where(mask[..., None], src, 127).astype(np.uint8)
    parts = [b.vae_mean(fg)] + ([b.vae_mean(bg)] if variant == "fbc" else [])
    c_concat = torch.from_numpy(mult * np.concatenate(parts, 1))
    latent_ref = torch.from_numpy(b.vae_mean(src) * LATENT_SCALE)
    hidden = np.concatenate([b.text(PROMPT), b.text(NEGATIVE)])
    tokens = np.concatenate([b.ip_tokens(scene), b.zero_tokens()])
    scales = np.array([ipa, ipa], np.float32)

    sigmas, timesteps = schedule(steps, t0)
    timestep_of = {float(s): t for s, t in zip(sigmas[:-1], timesteps)}

    def model(x, sigma):
        s = float(sigma[0])
        xc = x / (s ** 2 + 1) ** 0.5
        xin = torch.cat([xc, c_concat], 1).repeat(2, 1, 1, 1).numpy()
        eps = torch.from_numpy(b.run("unet", {
            "sample": xin, "timestep": np.array([timestep_of[s]], np.float32),
            "encoder_hidden_states": hidden, "ip_tokens": tokens, "ip_scale": scales}, "out_sample"))
        cond, uncond = x - s * eps[:1], x - s * eps[1:]
        return uncond + cfg * (cond - uncond)

    kd = k_sampling()
    sigmas_t = torch.from_numpy(sigmas)
    s0, s_max = float(sigmas[0]), 14.614641
    scale = (1 + s0 ** 2) ** 0.5 if s0 >= s_max * (1 - 1e-5) else s0
    x = latent_ref + scale * torch.from_numpy(noise)
    fn = kd.sample_dpmpp_2m if sampler == "dpmpp_2m" else kd.sample_euler
    ref = fn(model, x, sigmas_t, disable=True).numpy()

    rel = np.linalg.norm(rust - ref) / np.linalg.norm(ref)
    assert rel <= 1e-4, f"{variant}/{sampler}: relative L2 {rel:.3e}"
