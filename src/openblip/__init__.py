"""openblip: a complete, fast, faithful implementation of BLIP (Li et al., ICML 2022, arXiv:2201.12086).

The public names are imported lazily, so ``import openblip`` (and the CLI's ``--help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "openblip.api",
    "create_model": "openblip.api",
    "list_models": "openblip.api",
    "list_pretrained": "openblip.api",
    "BlipConfig": "openblip.config",
    "VisionConfig": "openblip.config",
    "TextConfig": "openblip.config",
    "get_tokenizer": "openblip.tokenizer",
    "BlipTokenizer": "openblip.tokenizer",
    "load_image": "openblip.image",
    "ImageLoadError": "openblip.image",
    "preprocess": "openblip.transforms",
    "eval_transform": "openblip.transforms",
    "CheckpointError": "openblip.checkpoint",
    "Captioner": "openblip.tasks.caption",
    "caption": "openblip.tasks.caption",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'openblip' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
