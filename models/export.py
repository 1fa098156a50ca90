#!/usr/bin/env python3
"""Export SD1.5 (+ IC-Light, + IP-Adapter) to an acufarm model bundle (models/BUNDLE.md).

A bundle is ONNX graphs (text_encoder, unet, vae_encoder, vae_decoder, and with IP-Adapter
image_encoder and image_proj), a tokenizer.json and a bundle.toml recording every file's sha256 and
every graph's signature; the Rust worker refuses a bundle that disagrees with it.

Modes:

  --tiny OUT          The committed test bundles (models/tiny): SD1.5 architectures at tiny widths
                      with fixed-seed random weights, as OUT/plain, OUT/fc, OUT/fbc sharing OUT/common.
                      Their outputs are noise; they exist to test the pipeline end to end.

  --sd15 DIR --out OUT
                      A real bundle from a diffusers-format SD1.5 folder (unet/, vae/, text_encoder/,
                      tokenizer/), optionally merged with IC-Light offsets (--iclight FILE
                      --iclight-kind fc|fbc) and with an IP-Adapter (--ip-adapter FILE --image-encoder
                      DIR). Writes OUT/fp32 and/or OUT/fp16 (--precision).

  --random-full OUT   Full-size SD1.5 + IC-Light fc + IP-Adapter with random weights, written like
                      --sd15 output: for speed measurements without downloading weights.

Every graph is checked with onnx.checker and run once in ONNX Runtime (CPU) at batch 2, 64x64 pixels,
against the torch model. See models/README.md for the weights a real bundle needs.

Examples:
  python models/export.py --tiny models/tiny
  python models/export.py --sd15 weights/stable-diffusion-v1-5 \\
      --iclight weights/iclight_sd15_fc.safetensors --iclight-kind fc \\
      --ip-adapter weights/ip-adapter_sd15.bin --image-encoder weights/image_encoder \\
      --precision both --out models/out/sd15-fc-ip
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

PRECISIONS = {"fp32": ("fp32",), "fp16": ("fp16",), "both": ("fp32", "fp16")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--tiny", type=Path, metavar="OUT", help="write the tiny random-weight test bundles to OUT")
    mode.add_argument("--sd15", type=Path, metavar="DIR", help="diffusers-format SD1.5 folder to export")
    mode.add_argument(
        "--random-full", type=Path, metavar="OUT", help="full-size random-weight bundle (fc + IP-Adapter)"
    )
    parser.add_argument("--out", type=Path, help="output directory for --sd15 (gets fp32/ and/or fp16/)")
    parser.add_argument("--name", help="bundle name prefix for --sd15 (default: sd15[-fc|-fbc][-ip])")
    parser.add_argument(
        "--iclight", type=Path, metavar="FILE", help="IC-Light SD1.5 offsets (.safetensors, diffusers UNet keys)"
    )
    parser.add_argument(
        "--iclight-kind", choices=("fc", "fbc"), help="IC-Light variant of --iclight: fc (8 ch) or fbc (12 ch)"
    )
    parser.add_argument(
        "--ip-adapter", type=Path, metavar="FILE", help="IP-Adapter SD1.5 checkpoint (.bin or .safetensors)"
    )
    parser.add_argument(
        "--image-encoder", type=Path, metavar="DIR", help="CLIPVisionModelWithProjection folder for --ip-adapter"
    )
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                        help="weights' precision; fp16 keeps float32 graph inputs/outputs (default fp32)")  # fmt: skip
    args = parser.parse_args(argv)

    if args.sd15 is None:
        real_only = [
            f for f in ("out", "name", "iclight", "iclight_kind", "ip_adapter", "image_encoder") if getattr(args, f)
        ]
        if real_only:
            parser.error(f"--{real_only[0].replace('_', '-')} only applies to --sd15")
    if args.tiny is not None and args.precision != "fp32":
        parser.error("--tiny bundles are fp32 only")
    if args.sd15 is not None:
        if args.out is None:
            parser.error("--sd15 needs --out")
        if (args.iclight is None) != (args.iclight_kind is None):
            parser.error("--iclight and --iclight-kind go together")
        if (args.ip_adapter is None) != (args.image_encoder is None):
            parser.error("--ip-adapter and --image-encoder go together")
    return args


def default_name(args: argparse.Namespace) -> str:
    return "sd15" + (f"-{args.iclight_kind}" if args.iclight_kind else "") + ("-ip" if args.ip_adapter else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only: never reach for the model hub
    from acufarm_export import build  # here, so --help and usage errors do not wait for torch to import

    start = time.monotonic()
    if args.tiny is not None:
        build.export_tiny(args.tiny)
        written = [args.tiny / d / "bundle.toml" for d in build.TINY_DIRS.values()]
    elif args.random_full is not None:
        models = build.random_models()
        written = list(
            build.export_bundle(models, args.random_full, "random-full-fc-ip", PRECISIONS[args.precision]).values()
        )
    else:
        models = build.load_sd15(
            args.sd15, args.iclight, args.iclight_kind or "none", args.ip_adapter, args.image_encoder
        )
        written = list(
            build.export_bundle(models, args.out, args.name or default_name(args), PRECISIONS[args.precision]).values()
        )
    for path in written:
        print(f"wrote {path}")
    print(f"done in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
