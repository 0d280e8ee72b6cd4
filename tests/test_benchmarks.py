"""The benchmark script runs (smoke scale) and its two implementations agree. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_inference", ROOT / "benchmarks" / "bench_inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_inference_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_inference.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    agree = res["agreement"]
    assert agree["greedy_tokens_equal"] and agree["vision_max_abs_diff"] < 1e-4
    assert agree["vision_output_std"] > 0.1  # the weights are real random ones, not near-zero
    assert agree["itm_max_abs_diff"] < 1e-3 and agree["text_features_max_abs_diff"] < 1e-4
    rows = res["rows"]
    assert {"caption_beam3_b8", "embed_64_b8", "itm_rerank_k64", "text_embed_b64"} <= set(rows)
    bf16_rows = {"caption_beam3_b8_bf16", "caption_beam3_b8_bf16vision"}
    if res["native_bf16"]:
        assert bf16_rows <= set(rows) and "skipped" not in res
    else:  # emulated bfloat16 would time PyTorch's fallback kernels: skipped, and said so
        assert not bf16_rows & set(rows) and set(res["skipped"]) == bf16_rows
        assert res["gemm_gflops_bf16"] != res["gemm_gflops_bf16"]  # nan
    # the bfloat16 rows ran before the embedding rows and must not have rounded the float32 model's weights
    assert res["fp32_weights_unchanged"] is True
    greedy = rows["caption_greedy_b1"]
    assert greedy["new_tokens"] == 16  # 20 tokens in all after the 4-token prompt: 16 decoder calls
    assert greedy["ms_per_decode_step"] == pytest.approx(1000 * greedy["ours_s"] / 16)
    assert "ms_per_step" not in greedy
    assert set(res["peak_rss_mib"]) == {"ours", "hf"}


@pytest.mark.parametrize("precision", ["bfloat16", "bfloat16-vision"])
def test_low_precision_row_leaves_the_float32_model_unchanged(precision):
    """The bfloat16 rows run before the float32 embedding rows; they must not round the shared model's weights."""
    from openblip.checkpoint import set_precision
    from tests.helpers import tiny_model

    bench = _bench_module()
    model = tiny_model("caption")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    digest = bench.weights_digest(model)
    r = bench.bench_low_precision(model, precision, repeats=1, smoke=True, batch=1, beams=1)
    assert r["ours_s"] > 0 and r["new_tokens"] == 16
    after = model.state_dict()
    assert set(after) == set(before)
    for key, value in after.items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key]), key
    assert bench.weights_digest(model) == digest
    # the digest does see the rounding that converting in place and back leaves behind
    set_precision(set_precision(model, precision), torch.float32)
    assert bench.weights_digest(model) != digest


def test_agreement_ok_checks_every_difference():
    bench = _bench_module()
    good = {
        "vision_max_abs_diff": 5e-6,
        "vision_output_std": 1.0,
        "greedy_tokens_equal": True,
        "itm_max_abs_diff": 7e-7,
        "text_features_max_abs_diff": 1e-7,
    }
    assert bench.agreement_ok(good)
    for key, bad in [
        ("itm_max_abs_diff", 2e-3),
        ("text_features_max_abs_diff", 2e-4),
        ("vision_max_abs_diff", 2e-3),
        ("vision_output_std", 1e-6),
        ("greedy_tokens_equal", False),
    ]:
        assert not bench.agreement_ok({**good, key: bad}), key


def test_bf16_agreement_script_on_a_saved_model(tmp_path):
    """``bf16_agreement.py`` loads a saved captioner, captions a folder in float32, bfloat16 and bfloat16-vision and
    reports each one's agreement, consistent with the captions it lists as differing."""
    from PIL import Image

    from tests.helpers import random_images, tiny_model

    model_dir = tmp_path / "model"
    tiny_model("caption").save_pretrained(model_dir)
    images = tmp_path / "images"
    images.mkdir()
    for i, a in enumerate(random_images(3)):
        Image.fromarray(a).save(images / f"img{i}.png")
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "agree.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bf16_agreement.py"), str(model_dir), str(images)]
    proc = subprocess.run([*cmd, "--json", str(out), "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["images"] == 3 and res["fp32_images_per_s"] > 0
    assert set(res["policies"]) == {"bfloat16", "bfloat16-vision"}
    for policy in res["policies"].values():
        assert policy["identical"] == pytest.approx(1 - len(policy["differing"]) / 3)
        assert policy["images_per_s"] > 0
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([*cmd[:-1], str(empty)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no images" in proc.stderr
