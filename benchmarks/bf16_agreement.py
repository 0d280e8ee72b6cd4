"""Does the bfloat16 captioning path say the same thing as float32 on a *trained* model?

Random weights cannot answer this (their captions are noise, and noise flips with any rounding), so this script
takes a trained captioner, e.g. the demo's::

    openblip demo --quick --out demo_out
    python benchmarks/bf16_agreement.py demo_out/model demo_out/world/images/test

and captions every image (beam 3, max 20 / min 5, the COCO settings) in float32 and under each low-precision
policy of ``--dtypes`` (default: ``bfloat16``, the whole model, and ``bfloat16-vision``, the image encoder only),
printing for each the fraction of images whose captions are identical to float32's, its throughput and the ratio
to float32's (measured in the same run). The issue's target: identical on >= 95% of the images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from openblip.cli.commands import IMAGE_SUFFIXES
from openblip.tasks.caption import Captioner
from openblip.transforms import preprocess


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a trained captioning model (directory, file or registry name)")
    p.add_argument("images", type=Path, help="a folder of images")
    p.add_argument("--limit", type=int, default=0, help="at most this many images (0: all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-beams", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--dtypes", default="bfloat16,bfloat16-vision", help="comma-separated precisions to compare with float32"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    files = sorted(f for f in args.images.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if args.limit:
        files = files[: args.limit]
    if not files:
        print(f"no images in {args.images}", file=sys.stderr)
        return 2

    fp32 = Captioner(args.model)
    pixels = preprocess(files, fp32.model.image_size)
    gen = {"num_beams": args.num_beams, "max_length": 20, "min_length": 5, "batch_size": args.batch_size}

    def run(cap: Captioner) -> tuple[list[str], float]:
        x = pixels.to(cap.model.dtype)
        cap.caption(x[: min(len(files), args.batch_size)], **gen)  # warm-up
        t = time.perf_counter()
        captions = cap.caption(x, **gen)
        return captions, len(files) / (time.perf_counter() - t)

    ref, ref_rate = run(fp32)
    out = {
        "model": str(args.model),
        "images": len(files),
        "threads": torch.get_num_threads(),
        "fp32_images_per_s": ref_rate,
        "policies": {},
    }
    print(f"{len(files)} images; fp32 {ref_rate:.1f} img/s")
    for dtype in args.dtypes.split(","):
        captions, rate = run(Captioner(args.model, dtype=dtype))
        same = sum(a == b for a, b in zip(ref, captions))
        res = out["policies"][dtype] = {
            "identical": same / len(files),
            "images_per_s": rate,
            "speedup": rate / ref_rate,
            "differing": [{"image": f.name, "fp32": a, dtype: b} for f, a, b in zip(files, ref, captions) if a != b][
                :20
            ],
        }
        print(f"{dtype:>16}: identical captions {res['identical']:.3f}; {rate:.1f} img/s ({res['speedup']:.2f}x fp32)")
        for d in res["differing"][:3]:
            print(f"    {d['image']}: fp32 {d['fp32']!r} | {dtype} {d[dtype]!r}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
