"""Package-level properties: import direction, lazy CLI imports, bundled data."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from importlib import resources

CORE_MODULES = [
    "openblip",
    "openblip.api",
    "openblip.config",
    "openblip.checkpoint",
    "openblip.convert.hf",
    "openblip.models.blip",
    "openblip.models.text",
    "openblip.models.vision",
    "openblip.tokenizer",
    "openblip.text",
    "openblip.image",
    "openblip.transforms",
    "openblip.pretrained",
    "openblip.generation",
    "openblip.losses",
    "openblip.tasks.caption",
]
FORBIDDEN = ["transformers", "torchvision", "timm", "fastapi", "webdataset", "click", "openblip.cli", "openblip.train"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_core_imports_no_training_serving_cli_or_transformers():
    loaded = _modules_after("\n".join(f"import {m}" for m in CORE_MODULES))
    bad = sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert bad == [], f"core modules pulled in {bad}"


def test_cli_help_imports_no_torch():
    loaded = _modules_after("import openblip.cli")
    assert "torch" not in loaded
    out = subprocess.run([sys.executable, "-m", "openblip", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "caption" in out.stdout


def test_bundled_vocab_is_bert_base_uncased():
    data = resources.files("openblip").joinpath("resources", "bert-base-uncased-vocab.txt").read_bytes()
    assert hashlib.md5(data).hexdigest() == "64800d5d8528ce344256daf115d4965e"
    assert len(data.decode().splitlines()) == 30522


def test_named_architectures():
    import openblip

    assert {"blip-base", "blip-large", "blip-tiny"} <= set(openblip.list_models())
    cfg = openblip.config.get_arch_config("blip-large", "retrieval")
    assert (cfg.vision.width, cfg.vision.depth, cfg.vision.num_heads, cfg.vision.drop_path_rate) == (1024, 24, 16, 0.1)
    assert cfg.vision.layer_norm_eps == 1e-6 and cfg.text.layer_norm_eps == 1e-12
    assert len(openblip.list_pretrained()) == 21
