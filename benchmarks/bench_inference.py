"""openblip vs transformers: inference throughput on the same random weights, measured in one run.

Builds the base-size BLIP (ViT-B/16 at 384, BERT-base text) in transformers with random weights, loads the very
same weights into openblip through the Hugging Face layout (the path a user's download takes), checks that the
outputs agree, then reports medians of ``--repeats`` runs side by side with the ratio openblip / transformers:

* captioning images/s, greedy and beam 3, batch 1 and 8, forced to full length (16 new tokens after the
  4-token prompt), with the fraction of the FLOP roofline at the GEMM peak measured in the same run, and for greedy
  batch 1 the time per decode step: the whole caption's time (ViT included) over its 16 decoder calls;
* image embedding images/s at 384 and 224 px, batch 1 and 8, and its fraction of the GEMM peak;
* ITM re-ranking of k = 16 and 64 texts against one image (openblip reuses the cached image embedding;
  transformers' ``BlipForImageTextRetrieval`` runs a full forward per pair);
* text embedding, batch 64;
* the opt-in bfloat16 captioning paths (the whole model, and ``bfloat16-vision``: the ViT only), each on its own
  copy of the model, so the float32 rows after them still run the exact weights transformers has;
* peak RSS of each implementation (separate processes).

Usage::

    python benchmarks/bench_inference.py              # the full base-size benchmark (tens of minutes on 2 cores)
    python benchmarks/bench_inference.py --smoke      # tiny config, seconds: checks the script works
    python benchmarks/bench_inference.py --only caption_beam3_b8 --repeats 3

No timing is asserted anywhere; this prints and (with ``--json``) writes numbers.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPT = [30522, 1037, 3861, 1997]  # [DEC] a picture of
NEW_TOKENS = 16  # captions are forced to 4 + 16 = 20 tokens: one decoder call per new token


# ----------------------------------------------------------------------------------------------------------- models
def hf_config(smoke: bool):
    from transformers import BlipConfig

    if smoke:
        vision = dict(
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
            layer_norm_eps=1e-6,
        )
        text = dict(
            vocab_size=30524,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            encoder_hidden_size=64,
        )
    else:
        vision = dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=384,
            patch_size=16,
            layer_norm_eps=1e-6,
        )
        text = dict(
            vocab_size=30524,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            encoder_hidden_size=768,
        )
    return BlipConfig(vision_config=vision, text_config=text, image_text_hidden_size=256)


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Seeded random weights, BERT's initialiser scale: every tensor N(0, std), LayerNorm scales 1 + N(0, std).

    transformers' ``BlipVisionConfig`` defaults to ``initializer_range=1e-10``, so a model built from a config has
    near-zero vision weights, on which any two implementations agree trivially (the vision outputs were ~1e-6 and
    their difference 0.0); the agreement check needs weights that make the outputs differ when the computations
    do."""
    g = torch.Generator().manual_seed(seed)
    scales = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    with torch.no_grad():
        for p in model.parameters():
            noise = std * torch.randn(p.shape, generator=g)
            p.copy_(1.0 + noise if id(p) in scales else noise)
    return model


def build(kind: str, smoke: bool, workdir: Path):
    """(transformers model, openblip model) with identical random weights; kind = caption | itm."""
    from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval

    from openblip.checkpoint import load_model

    torch.manual_seed(0)
    cls = BlipForConditionalGeneration if kind == "caption" else BlipForImageTextRetrieval
    hf = randomize_(cls(hf_config(smoke)).eval())
    path = workdir / kind
    if not path.exists():
        hf.save_pretrained(path)
    ours = load_model(path)
    return hf, ours


# ------------------------------------------------------------------------------------------------------- measuring
def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_peak(dtype=torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of a large square matmul (the machine's practical GEMM peak)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t = timed(lambda: a @ b, repeats)
    return 2 * n**3 / t / 1e9


def gemm_peak_onednn(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the same float32 product through openblip's linear on its oneDNN backend (about twice MKL's
    ``torch.matmul`` on AMD CPUs, see ``openblip.layers.linear``); nan where that backend is not in use."""
    from openblip.layers.linear import linear, linear_backend

    if linear_backend() != "onednn":
        return float("nan")
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = timed(lambda: linear(a, b), repeats)
    return 2 * n**3 / t / 1e9


def vit_flops(image_size: int, patch: int, width: int, depth: int, mlp: int) -> float:
    n = (image_size // patch) ** 2 + 1
    per_layer = 2 * n * (4 * width * width + 2 * width * mlp) + 2 * 2 * n * n * width
    return depth * per_layer + 2 * (n - 1) * width * 3 * patch * patch


def decode_flops_per_token(hidden: int, layers: int, inter: int, vocab: int, ctx: int, img_tokens: int) -> float:
    per_layer = 2 * (4 * hidden * hidden + 2 * hidden * hidden + 2 * hidden * inter) + 2 * 2 * hidden * (
        ctx + img_tokens
    )
    head = 2 * (hidden * hidden + hidden * vocab)
    return layers * per_layer + head


# --------------------------------------------------------------------------------------------------------- benches
def bench_caption(hf, ours, batch: int, beams: int, repeats: int, smoke: bool, dtype=torch.float32):
    from openblip.generation import generate

    size = ours.image_size
    pixels = torch.randn(batch, 3, size, size)
    prompt = torch.tensor([PROMPT] * batch)
    new = NEW_TOKENS

    def run_ours():
        with torch.inference_mode():
            emb = ours.encode_image(pixels.to(dtype))
            return generate(ours.text_decoder, prompt, emb, num_beams=beams, max_length=4 + new, min_length=4 + new)

    def run_hf():
        with torch.inference_mode():
            ids = torch.tensor([[101, 1037, 3861, 1997, 102]] * batch)  # HF overwrites [0] with [DEC], drops [SEP]
            return hf.generate(
                pixel_values=pixels,
                input_ids=ids,
                num_beams=beams,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
            )

    t_ours = timed(run_ours, repeats)
    t_hf = timed(run_hf, repeats) if hf is not None else float("nan")
    v, t = ours.config.vision, ours.config.text
    img_tokens = v.num_patches + 1
    flops = batch * vit_flops(size, v.patch_size, v.width, v.depth, int(v.width * v.mlp_ratio))
    flops += batch * t.num_layers * 2 * 2 * img_tokens * v.width * t.hidden_size  # cross-attention K/V, once
    flops += (
        4
        * batch
        * beams
        * decode_flops_per_token(t.hidden_size, t.num_layers, t.intermediate_size, t.vocab_size, 4, img_tokens)
    )  # the prompt
    for step in range(new):
        flops += (
            batch
            * beams
            * decode_flops_per_token(
                t.hidden_size, t.num_layers, t.intermediate_size, t.vocab_size, 4 + step, img_tokens
            )
        )
    return {
        "ours_s": t_ours,
        "hf_s": t_hf,
        "ours_img_s": batch / t_ours,
        "hf_img_s": batch / t_hf,
        "ratio": t_hf / t_ours,
        "flops": flops,
        "new_tokens": new,
    }


def bench_low_precision(ours, precision: str, repeats: int, smoke: bool, batch: int = 8, beams: int = 3):
    """openblip's captioning under ``set_precision(..., precision)``, on a deep copy of ``ours``.

    Converting ``ours`` itself to 16 bits and back would round its weights to bfloat16, and the float32 rows after
    this one would no longer run the weights transformers has."""
    from openblip.checkpoint import set_precision

    low = set_precision(copy.deepcopy(ours), precision)
    return bench_caption(None, low, batch, beams, repeats, smoke, dtype=low.dtype)


def bench_embed(hf, ours, batch: int, size: int, repeats: int):
    pixels = torch.randn(batch, 3, size, size)
    interp = size != ours.image_size

    def run_ours():
        with torch.inference_mode():
            return ours.encode_image(pixels, interpolate_pos_encoding=interp)

    def run_hf():
        with torch.inference_mode():
            return hf.vision_model(pixel_values=pixels, interpolate_pos_encoding=interp).last_hidden_state

    t_ours, t_hf = timed(run_ours, repeats), timed(run_hf, repeats)
    v = ours.config.vision
    flops = batch * vit_flops(size, v.patch_size, v.width, v.depth, int(v.width * v.mlp_ratio))
    return {
        "ours_s": t_ours,
        "hf_s": t_hf,
        "ours_img_s": batch / t_ours,
        "hf_img_s": batch / t_hf,
        "ratio": t_hf / t_ours,
        "flops": flops,
    }


def bench_itm(hf, ours, k: int, repeats: int):
    from openblip.tasks.retrieval import Retriever

    size = ours.image_size
    pixels = torch.randn(1, 3, size, size)
    ids = torch.randint(1000, 5000, (k, 20))
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    r = Retriever(ours)
    with torch.inference_mode():
        cached = ours.encode_image(pixels)[0]  # cached once, as an index or a re-ranking service keeps it

    def run_ours():
        with torch.inference_mode():
            return r.itm_logits_for_image(cached, (ids, mask))

    def run_hf():  # transformers' per-pair forward: the ViT runs again for every pair
        with torch.inference_mode():
            return hf(pixel_values=pixels.expand(k, -1, -1, -1), input_ids=ids, attention_mask=mask).itm_score

    t_ours, t_hf = timed(run_ours, repeats), timed(run_hf, repeats)
    return {"ours_s": t_ours, "hf_s": t_hf, "ratio": t_hf / t_ours}


def bench_text(hf, ours, repeats: int, batch: int = 64):
    ids = torch.randint(1000, 5000, (batch, 24))
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)

    def run_ours():
        with torch.inference_mode():
            return ours.text_features(ids, mask)

    def run_hf():
        with torch.inference_mode():
            h = hf.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            return torch.nn.functional.normalize(hf.text_proj(h[:, 0]), dim=-1)

    t_ours, t_hf = timed(run_ours, repeats), timed(run_hf, repeats)
    return {
        "ours_s": t_ours,
        "hf_s": t_hf,
        "ours_txt_s": batch / t_ours,
        "hf_txt_s": batch / t_hf,
        "ratio": t_hf / t_ours,
    }


def check_agreement(hf_cap, ours_cap, hf_itm, ours_itm) -> dict:
    """The two implementations compute the same thing on these weights."""
    from openblip.generation import generate

    size = ours_cap.image_size
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        ours_v = ours_cap.encode_image(pixels)
        v = (ours_v - hf_cap.vision_model(pixel_values=pixels).last_hidden_state).abs().max()
        ours_ids = generate(
            ours_cap.text_decoder,
            torch.tensor([PROMPT] * 2),
            ours_cap.encode_image(pixels),
            num_beams=1,
            max_length=20,
            min_length=5,
        ).sequences
        hf_ids = hf_cap.generate(
            pixel_values=pixels,
            input_ids=torch.tensor([[101, 1037, 3861, 1997, 102]] * 2),
            max_length=20,
            min_length=5,
            do_sample=False,
            num_beams=1,
        )
        ids = torch.tensor([[101, 2023, 2003, 1037, 3899, 102]])
        itm_o = ours_itm.itm_logits(ours_itm.encode_image(pixels[:1]), ids, first_token="cls")
        itm_h = hf_itm(pixel_values=pixels[:1], input_ids=ids).itm_score
        # the text side on its own, as bench_text runs it: ragged texts (padded, masked) through the unimodal encoder
        text_ids = torch.randint(1000, 5000, (4, 12))
        text_ids[:, 0] = 101
        text_mask = torch.ones_like(text_ids)
        for row, length in enumerate((12, 9, 6, 3)):
            text_ids[row, length - 1] = 102
            text_ids[row, length:] = 0
            text_mask[row, length:] = 0
        txt_o = ours_itm.text_features(text_ids, text_mask)
        h = hf_itm.text_encoder(input_ids=text_ids, attention_mask=text_mask).last_hidden_state
        txt_h = torch.nn.functional.normalize(hf_itm.text_proj(h[:, 0]), dim=-1)
    n = min(ours_ids.shape[1], hf_ids.shape[1])
    return {
        "vision_max_abs_diff": float(v),
        "vision_output_std": float(ours_v.std()),  # ~1 with real random weights; ~1e-6 with degenerate ones
        "greedy_tokens_equal": bool(torch.equal(ours_ids[:, :n], hf_ids[:, :n])),
        "itm_max_abs_diff": float((itm_o - itm_h).abs().max()),
        "text_features_max_abs_diff": float((txt_o - txt_h).abs().max()),
    }


#: Limits of the agreement check (float32 on both sides; the measured differences are ~1e-6).
AGREEMENT_LIMITS = {"vision_max_abs_diff": 1e-3, "itm_max_abs_diff": 1e-3, "text_features_max_abs_diff": 1e-4}


def agreement_ok(agree: dict) -> bool:
    """Greedy tokens equal, every difference under its limit, and weights that are not degenerate."""
    return (
        agree["greedy_tokens_equal"]
        and all(agree[key] < limit for key, limit in AGREEMENT_LIMITS.items())
        and agree["vision_output_std"] > 0.1
    )


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every tensor of ``model.state_dict()`` (name, dtype, shape, bytes): equal digests, equal weights."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------------- peak RSS
def rss_worker(impl: str, smoke: bool, workdir: str) -> None:
    """Load ONE implementation from the saved weights, caption a beam-3 batch of 8, print peak RSS (MiB)."""
    path = Path(workdir) / "caption"
    if impl == "ours":
        from openblip.checkpoint import load_model

        bench_caption(None, load_model(path), 8, 3, 1, smoke)
    else:
        from transformers import BlipForConditionalGeneration

        model = BlipForConditionalGeneration.from_pretrained(path).eval()
        size = model.config.vision_config.image_size
        with torch.inference_mode():
            model.generate(
                pixel_values=torch.randn(8, 3, size, size),
                input_ids=torch.tensor([[101, 1037, 3861, 1997, 102]] * 8),
                num_beams=3,
                max_new_tokens=16,
                min_new_tokens=16,
            )
    print(peak_rss_self_mib())


def peak_rss_self_mib() -> float:
    """This process's peak resident set (VmHWM). ``ru_maxrss`` is not used: on Linux it keeps the parent's
    high-water mark across fork + exec, which would charge the benchmark driver to each worker."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(impl: str, smoke: bool, workdir: Path) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-worker", impl, "--workdir", str(workdir)] + (["--smoke"] if smoke else []),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny config, one repeat: checks the script runs")
    ap.add_argument(
        "--force-bf16",
        action="store_true",
        help="run the bfloat16 rows even on a CPU without native bfloat16 (they then time PyTorch's emulation)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these rows (names as printed)")
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--rss-worker", choices=["ours", "hf"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_worker:
        rss_worker(args.rss_worker, args.smoke, args.workdir)
        return
    repeats = 1 if args.smoke else args.repeats
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="openblip-bench-"))
    hf_cap, ours_cap = build("caption", args.smoke, workdir)
    hf_itm, ours_itm = build("itm", args.smoke, workdir)
    results: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__, "smoke": args.smoke}
    results["agreement"] = check_agreement(hf_cap, ours_cap, hf_itm, ours_itm)
    print("agreement:", json.dumps(results["agreement"]))
    digest = weights_digest(ours_cap)  # the rows must leave the float32 weights exactly as transformers has them
    from openblip.checkpoint import cpu_supports

    # without AVX-512 BF16 / AMX, PyTorch emulates bfloat16 products (~100x slower than float32 on an AVX2 machine):
    # a 2048^3 product alone would take minutes and the bfloat16 rows would measure the emulation, not openblip
    results["native_bf16"] = cpu_supports(torch.bfloat16)
    run_bf16 = results["native_bf16"] or args.force_bf16
    results["gemm_gflops_fp32"] = gemm_peak(torch.float32)
    results["gemm_gflops_bf16"] = gemm_peak(torch.bfloat16) if run_bf16 else float("nan")
    results["gemm_gflops_fp32_onednn"] = gemm_peak_onednn()
    peak = results["gemm_gflops_fp32"] * 1e9
    # the best float32 GEMM of the machine: the larger of torch.matmul (MKL) and oneDNN
    best = max(results["gemm_gflops_fp32"], results["gemm_gflops_fp32_onednn"]) * 1e9
    print(
        f"GEMM peak: fp32 torch.matmul {results['gemm_gflops_fp32']:.1f} GFLOP/s, fp32 oneDNN "
        f"{results['gemm_gflops_fp32_onednn']:.1f} GFLOP/s, bf16 {results['gemm_gflops_bf16']:.1f} GFLOP/s"
    )

    def want(name: str) -> bool:
        return args.only is None or name in args.only

    rows = []
    for beams in (1, 3):
        for batch in (1, 8):
            name = f"caption_{'greedy' if beams == 1 else 'beam3'}_b{batch}"
            if want(name):
                r = bench_caption(hf_cap, ours_cap, batch, beams, repeats, args.smoke)
                r["roofline"] = r["flops"] / r["ours_s"] / peak
                r["hf_roofline"] = r["flops"] / r["hf_s"] / peak
                r["roofline_best"] = r["flops"] / r["ours_s"] / best
                if beams == 1 and batch == 1:
                    # one decoder call per new token (the first also reads the 4-token prompt); the ViT is included
                    r["ms_per_decode_step"] = 1000 * r["ours_s"] / r["new_tokens"]
                rows.append((name, r))
    for name, precision in (("caption_beam3_b8_bf16", "bfloat16"), ("caption_beam3_b8_bf16vision", "bfloat16-vision")):
        if want(name) and not run_bf16:
            print(f"{name}: skipped, this CPU has no native bfloat16 matmul (--force-bf16 runs it emulated)")
            results.setdefault("skipped", {})[name] = "no native bfloat16 matmul on this CPU"
        elif want(name):
            r = bench_low_precision(ours_cap, precision, repeats, args.smoke)
            fp32 = next((x for n, x in rows if n == "caption_beam3_b8"), None)
            if fp32:
                r["vs_fp32"] = fp32["ours_s"] / r["ours_s"]
            rows.append((name, r))
    for size in (384, 224) if not args.smoke else (64, 32):
        for batch in (1, 8):
            name = f"embed_{size}_b{batch}"
            if want(name):
                r = bench_embed(hf_cap, ours_cap, batch, size, repeats)
                r["gemm_fraction"] = r["flops"] / r["ours_s"] / peak
                r["gemm_fraction_best"] = r["flops"] / r["ours_s"] / best
                rows.append((name, r))
    for k in (16, 64):
        name = f"itm_rerank_k{k}"
        if want(name):
            rows.append((name, bench_itm(hf_itm, ours_itm, k, repeats)))
    if want("text_embed_b64"):
        rows.append(("text_embed_b64", bench_text(hf_itm, ours_itm, repeats)))
    results["rows"] = dict(rows)
    results["fp32_weights_unchanged"] = weights_digest(ours_cap) == digest
    if not args.no_rss and args.only is None:
        results["peak_rss_mib"] = {impl: peak_rss(impl, args.smoke, workdir) for impl in ("ours", "hf")}

    print(f"\n{'benchmark':24} {'openblip':>12} {'transformers':>13} {'ratio':>7}  notes")
    for name, r in rows:
        unit = "img/s" if "ours_img_s" in r else ("txt/s" if "ours_txt_s" in r else "s")
        o = r.get("ours_img_s", r.get("ours_txt_s", r["ours_s"]))
        h = r.get("hf_img_s", r.get("hf_txt_s", r.get("hf_s", float("nan"))))
        notes = []
        if "roofline" in r:
            notes.append(
                f"roofline {r['roofline']:.2f} (transformers {r['hf_roofline']:.2f}; "
                f"best GEMM {r['roofline_best']:.2f})"
            )
        if "gemm_fraction" in r:
            notes.append(f"GEMM fraction {r['gemm_fraction']:.2f} (best GEMM {r['gemm_fraction_best']:.2f})")
        if "ms_per_decode_step" in r:
            notes.append(f"{r['ms_per_decode_step']:.1f} ms per decode step ({r['new_tokens']} steps, ViT included)")
        if "vs_fp32" in r:
            notes.append(f"{r['vs_fp32']:.2f}x fp32")
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") == r.get("ratio") and "ratio" in r else "-"
        print(f"{name:24} {o:9.3f} {unit:>5} {h:9.3f} {unit:>5} {ratio:>7}  {'; '.join(notes)}")
    if "peak_rss_mib" in results:
        p = results["peak_rss_mib"]
        print(f"peak RSS (beam 3, batch 8): openblip {p['ours']:.0f} MiB, transformers {p['hf']:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    agree = results["agreement"]
    print(
        f"agreement: ViT outputs max |diff| {agree['vision_max_abs_diff']:.2g} (limit 1e-3), greedy tokens "
        f"{'equal' if agree['greedy_tokens_equal'] else 'DIFFER'}, ITM logits max |diff| "
        f"{agree['itm_max_abs_diff']:.2g} (limit 1e-3), text features max |diff| "
        f"{agree['text_features_max_abs_diff']:.2g} (limit 1e-4); float32 weights unchanged by the rows: "
        f"{results['fp32_weights_unchanged']}"
    )
    if not agreement_ok(agree):
        print("WARNING: outputs disagree", file=sys.stderr)
        sys.exit(1)
    if not results["fp32_weights_unchanged"]:
        print("WARNING: a benchmark row changed openblip's float32 weights", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
