"""The benchmark script runs (smoke scale) and its two implementations agree. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    assert res["agreement"]["greedy_tokens_equal"] and res["agreement"]["vision_max_abs_diff"] < 1e-4
    assert res["agreement"]["vision_output_std"] > 0.1  # the weights are real random ones, not near-zero
    assert {"caption_beam3_b8", "embed_64_b8", "itm_rerank_k64", "text_embed_b64"} <= set(res["rows"])
    assert set(res["peak_rss_mib"]) == {"ours", "hf"}


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
