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
    assert {"caption_beam3_b8", "embed_64_b8", "itm_rerank_k64", "text_embed_b64"} <= set(res["rows"])
    assert set(res["peak_rss_mib"]) == {"ours", "hf"}
