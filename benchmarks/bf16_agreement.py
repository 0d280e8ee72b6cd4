"""Does the bfloat16 captioning path say the same thing as float32 on a *trained* model?

Random weights cannot answer this (their captions are noise, and noise flips with any rounding), so this script
takes a trained captioner, e.g. the demo's::

    openblip demo --quick --out demo_out
    python benchmarks/bf16_agreement.py demo_out/model demo_out/world/images/test

and captions every image twice (beam 3, max 20 / min 5, the COCO settings), once in float32 and once in
bfloat16, printing the fraction of images whose captions are identical, the throughput of both and their ratio
(measured in the same run). The issue's target: identical on >= 95% of the images.
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
    bf16 = Captioner(args.model, dtype="bfloat16")
    pixels = preprocess(files, fp32.model.image_size)
    gen = {"num_beams": args.num_beams, "max_length": 20, "min_length": 5, "batch_size": args.batch_size}

    results = {}
    for name, cap in (("fp32", fp32), ("bf16", bf16)):
        x = pixels.to(cap.model.dtype)
        cap.caption(x[: min(len(files), args.batch_size)], **gen)  # warm-up
        t = time.perf_counter()
        results[name] = cap.caption(x, **gen)
        results[f"{name}_images_per_s"] = len(files) / (time.perf_counter() - t)
    same = sum(a == b for a, b in zip(results["fp32"], results["bf16"]))
    out = {
        "model": str(args.model),
        "images": len(files),
        "identical": same / len(files),
        "fp32_images_per_s": results["fp32_images_per_s"],
        "bf16_images_per_s": results["bf16_images_per_s"],
        "bf16_speedup": results["bf16_images_per_s"] / results["fp32_images_per_s"],
        "threads": torch.get_num_threads(),
        "differing": [
            {"image": f.name, "fp32": a, "bf16": b}
            for f, a, b in zip(files, results["fp32"], results["bf16"])
            if a != b
        ][:20],
    }
    print(
        f"{len(files)} images: identical captions {out['identical']:.3f}; fp32 {out['fp32_images_per_s']:.1f} img/s, "
        f"bf16 {out['bf16_images_per_s']:.1f} img/s ({out['bf16_speedup']:.2f}x)"
    )
    for d in out["differing"][:5]:
        print(f"  {d['image']}: fp32 {d['fp32']!r} | bf16 {d['bf16']!r}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
