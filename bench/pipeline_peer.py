"""The peer for the worker-pipeline benchmark: diffusers' OnnxStableDiffusionImg2ImgPipeline on the
same ONNX files (a plain bundle), with the same ONNX Runtime session options and thread counts as
acufarm (graph optimisation ALL, one inter-op thread, intra-op threads as given), the same image
size, CFG batch of 2, DPM++ 2M, and strength = 1 − t0 (the same number of UNet calls, ±1).
Prints one JSON line like `pipeline-bench`.
"""
import argparse
import json
import pathlib
import time
import tomllib

import numpy as np
import onnxruntime as ort
from PIL import Image


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", required=True)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--t0", type=float, default=0.4)
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()

    from diffusers import DPMSolverMultistepScheduler, OnnxRuntimeModel, OnnxStableDiffusionImg2ImgPipeline
    from transformers import CLIPTokenizerFast

    bundle = pathlib.Path(a.bundle)
    meta = tomllib.loads((bundle / "bundle.toml").read_text())
    if meta["ip_adapter"] or meta["iclight"] != "none":
        raise SystemExit("the peer runs plain bundles only (diffusers' ONNX pipeline has no IC-Light or IP-Adapter)")

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = a.threads
    calls = {"unet": 0}

    def model(name):
        session = ort.InferenceSession(str(bundle / meta["graphs"][name]["file"]), opts, providers=["CPUExecutionProvider"])
        return OnnxRuntimeModel(model=session)

    tok = CLIPTokenizerFast(tokenizer_file=str(bundle / meta["tokenizer"]["file"]), model_max_length=77)
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1, algorithm_type="dpmsolver++", solver_order=2)
    load_started = time.perf_counter()
    pipe = OnnxStableDiffusionImg2ImgPipeline(
        vae_encoder=model("vae_encoder"), vae_decoder=model("vae_decoder"), text_encoder=model("text_encoder"),
        tokenizer=tok, unet=model("unet"), scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    load_seconds = time.perf_counter() - load_started

    unet = pipe.unet

    class Counting:
        def __init__(self, inner):
            self.inner, self.model = inner, inner.model

        def __call__(self, **kw):
            calls["unet"] += 1
            return self.inner(**kw)

    pipe.unet = Counting(unet)
    yy, xx = np.mgrid[: a.size, : a.size]
    c = a.size / 2

    def subject(i):
        img = np.full((a.size, a.size, 3), 236, np.uint8)
        disc = (xx - c) ** 2 + (yy - 0.8 * c) ** 2 < (0.3 * a.size) ** 2
        img[disc] = (200, 140 + i % 40, 120)
        return Image.fromarray(img)

    run = lambda i: pipe(prompt="photo of a man, warm window light", negative_prompt="blurry", image=subject(i),
                         strength=1 - a.t0, num_inference_steps=a.steps, guidance_scale=a.cfg,
                         generator=np.random.RandomState(i), output_type="np")
    run(0)  # warm-up, as on the acufarm side
    calls["unet"] = 0
    started = time.perf_counter()
    for i in range(a.images):
        run(i)
    wall = time.perf_counter() - started
    print(json.dumps({
        "impl": "diffusers-onnx", "bundle": meta["name"], "images": a.images, "size": a.size,
        "unet_calls_per_image": calls["unet"] / a.images, "load_seconds": load_seconds,
        "wall_seconds": wall, "images_per_second": a.images / wall,
    }))


if __name__ == "__main__":
    main()
