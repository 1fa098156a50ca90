"""Writes schedules.json: reference sigmas and timesteps for `acufarm schedule`.

Written independently of the Rust code from ComfyUI's formulas (comfy/model_sampling.py
ModelSamplingDiscrete, comfy/samplers.py normal_scheduler / KSampler.set_steps, k-diffusion's
get_sigmas_karras), with ComfyUI's float32 arithmetic for sigma() and timestep(). Needs numpy only.

    python tests/reference/make_schedules.py   # rewrites tests/reference/schedules.json
"""
import json
import math
import pathlib

import numpy as np

f32 = np.float32


def sd15_table():
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    return sigmas.astype(f32), np.log(sigmas).astype(f32)


SIGMAS, LOG_SIGMAS = sd15_table()


def sigma(t):
    t = f32(min(max(f32(t), f32(0)), f32(999)))
    lo, hi = int(math.floor(t)), int(math.ceil(t))
    w = f32(t - f32(math.floor(t)))
    return float(np.exp(f32((f32(1) - w) * LOG_SIGMAS[lo] + w * LOG_SIGMAS[hi])))


def timestep_candidates(s):
    """argmin of |log s - log_sigma_i|; both neighbours where s sits (nearly) halfway."""
    d = np.abs(np.float64(np.log(f32(s))) - LOG_SIGMAS.astype(np.float64))
    best = int(np.argmin(d))
    close = [i for i in (best - 1, best + 1) if 0 <= i < 1000 and abs(d[i] - d[best]) < 1e-5]
    return [best] + close


def linspace32(start, end, n):
    return [f32(v) for v in np.linspace(start, end, n, dtype=np.float64)] if n > 1 else [f32(start)][:n]


def full(kind, steps):
    if kind == "sgm_uniform":
        ts = linspace32(999, 0, steps + 1)[:-1]
        sig = [sigma(t) for t in ts]
    elif kind == "normal":
        ts = linspace32(999, 0, steps)
        sig = [sigma(t) for t in ts]
    elif kind == "karras":
        smin, smax, rho = float(SIGMAS[0]), float(SIGMAS[-1]), 7.0
        ramp = np.linspace(0, 1, steps)
        mn, mx = smin ** (1 / rho), smax ** (1 / rho)
        sig = [float(f32((mx + r * (mn - mx)) ** rho)) for r in ramp]
    else:
        raise ValueError(kind)
    return [float(f32(s)) for s in sig] + [0.0]


def case(kind, steps, t0=None, denoise=None):
    if t0 is not None:
        sig = full(kind, steps)[int(math.floor(steps * t0)):]
    elif denoise is not None and denoise <= 0.9999:
        new_steps = int(steps / denoise)
        sig = full(kind, new_steps)[-(steps + 1):]
    else:
        sig = full(kind, steps)
    return {
        "scheduler": kind, "steps": steps, "t0": t0, "denoise": denoise,
        "sigmas": sig,
        "timesteps": [timestep_candidates(s) for s in sig[:-1]],
    }


def main():
    cases = []
    for kind in ("sgm_uniform", "normal", "karras"):
        for steps in (1, 20, 28, 32):
            for t0 in (0.0, 0.3, 0.5):
                cases.append(case(kind, steps, t0=t0))
            for d in (1.0, 0.6):
                cases.append(case(kind, steps, denoise=d))
        cases.append(case(kind, 7, denoise=0.07))
    out = pathlib.Path(__file__).with_name("schedules.json")
    out.write_text(json.dumps({"cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
