"""Shared test utilities: tiny models in every official layout, sample images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from openblip.checkpoint import save_hf, save_official
from openblip.config import get_arch_config
from openblip.models.blip import create_model


def tiny_model(task: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    if task == "nlvr":
        overrides.setdefault("nlvr_merge_from_layer", 1)
    model = create_model(get_arch_config("blip-tiny", task, **overrides)).eval()
    # make LayerNorms and biases non-trivial so that mapping mistakes cannot hide
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or "norm" in name:
                p.add_(torch.randn_like(p) * 0.05)
    return model


def save_layout(model, root: Path, layout: str) -> Path:
    """Save ``model`` as ``openblip`` dir, ``hf`` dir or ``official`` .pth under ``root``; return the path."""
    root.mkdir(parents=True, exist_ok=True)
    if layout == "openblip":
        return model.save_pretrained(root / "ob")
    if layout == "hf":
        return save_hf(model, root / "hf")
    return save_official(model, root / "model.pth")


def random_images(n: int, seed: int = 0, size: tuple[int, int] = (40, 52)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((*size, 3)) * 255).astype("uint8") for _ in range(n)]
