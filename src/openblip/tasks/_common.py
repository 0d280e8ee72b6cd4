"""Helpers shared by the task pipelines: resolving models, batching inputs, preprocessing."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from openblip.models.blip import BlipBase
from openblip.tokenizer import BlipTokenizer, get_tokenizer
from openblip.transforms import preprocess


def as_list(x: Any) -> list:
    """A single input (string, path, image, bytes) becomes a one-element list; sequences are listed."""
    if isinstance(x, (str, bytes, bytearray, memoryview, Path)) or not isinstance(x, Sequence):
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            return list(x)
        return [x]
    return list(x)


def chunks(items: list, size: int) -> Iterator[list]:
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    for i in range(0, len(items), size):
        yield items[i : i + size]


class TaskBase:
    """Holds a loaded model, its tokenizer and its preprocessing."""

    task: str = ""

    def __init__(
        self,
        model: BlipBase | str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        tokenizer: BlipTokenizer | None = None,
        batch_size: int = 8,
    ) -> None:
        if not isinstance(model, BlipBase):
            from openblip.api import load

            model = load(model, task=self.task or None, device=device, dtype=dtype)
        elif dtype is not None or str(device) != "cpu":
            from openblip.checkpoint import set_precision

            model = set_precision(model, dtype, device)
        self.model = model.eval()
        self.tokenizer = tokenizer or get_tokenizer()
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    def pixels(self, images: list) -> torch.Tensor:
        """``[B, 3, S, S]`` at the model's own image size, dtype and device."""
        return preprocess(images, self.model.image_size, device=self.device, dtype=self.model.dtype)

    def tokenize(self, texts: list[str], max_length: int | None = 35, truncation: bool = True) -> tuple:
        enc = self.tokenizer(texts, padding="longest", truncation=truncation, max_length=max_length)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
