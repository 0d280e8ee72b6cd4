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


def read_text_file(source: str | Path, what: str) -> str:
    """The UTF-8 text of a list file; errors name it as ``what`` (e.g. ``"label file"``).

    Raises:
        FileNotFoundError: the file does not exist.
        IsADirectoryError: it is a folder.
        ValueError: it is not UTF-8 text.
    """
    path = Path(source)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start})") from e


def json_string_list(text: str, source: str | Path, what: str) -> list[str]:
    """A JSON list of strings parsed from ``text``; a :class:`ValueError` naming ``source`` otherwise."""
    import json

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {source}: invalid JSON: {e}") from e
    if not isinstance(data, list):
        raise ValueError(f"{what} {source} must hold a JSON list of strings, not {json_kind(data)}")
    bad = [i for i, x in enumerate(data) if not isinstance(x, str)]
    if bad:
        raise ValueError(
            f"{what} {source} must hold a JSON list of strings; item {bad[0]} is {json_kind(data[bad[0]])}"
        )
    return data


def json_kind(value: Any) -> str:
    """How a JSON value reads in an error message: 'a number', 'an object', 'null', ..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    kinds = {dict: "an object", list: "a list", str: "a string"}
    return kinds.get(type(value), "null" if value is None else type(value).__name__)


class TaskBase:
    """Holds a loaded model, its tokenizer and its preprocessing.

    ``model`` is a model instance or anything :func:`openblip.load` reads (a registry name or a local checkpoint
    in any layout). A checkpoint is first loaded as what it holds (task detected from the file); when that is not
    a model this task runs on (see :attr:`model_types`), it is loaded again as the task's own model, so a
    mismatch is reported as the keys that do not fit. A pre-training checkpoint thus runs captioning, retrieval
    and tagging as it is.

    ``device``: ``None`` leaves a passed model where it is (a loaded one goes to the CPU); a given device moves
    the model there. ``dtype``: ``None`` keeps the model's dtype (float32 for a loaded one).
    """

    task: str = ""
    #: the model classes this task runs on (empty: any)
    model_types: tuple[type[BlipBase], ...] = ()

    def __init__(
        self,
        model: BlipBase | str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        tokenizer: BlipTokenizer | None = None,
        batch_size: int = 8,
    ) -> None:
        if not isinstance(model, BlipBase):
            model = self._load(model, device="cpu" if device is None else device, dtype=dtype)
        elif dtype is not None or device is not None:
            from openblip.checkpoint import set_precision

            model = set_precision(model, dtype, device)
        self.model = model.eval()
        self.tokenizer = tokenizer or get_tokenizer()
        self.batch_size = batch_size

    def _load(self, source: str | Path, *, device: str | torch.device, dtype: torch.dtype | str | None) -> BlipBase:
        """The checkpoint as what it holds when this task runs on that; otherwise forced to :attr:`task`."""
        from openblip.api import load
        from openblip.checkpoint import CheckpointError

        if not self.task:
            return load(source, device=device, dtype=dtype)
        try:
            model = load(source, device=device, dtype=dtype)
        except CheckpointError:
            model = None  # e.g. a checkpoint whose task cannot be detected: the task decides below
        if model is not None and (not self.model_types or isinstance(model, self.model_types)):
            return model
        del model
        return load(source, task=self.task, device=device, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def empty_image_tokens(self) -> torch.Tensor:
        """``[0, 1 + P, D]``: the ViT tokens of no images (what an empty image list encodes to)."""
        v = self.model.config.vision
        return torch.empty(0, 1 + v.num_patches, v.width, dtype=self.model.text_dtype, device=self.device)

    def pixels(self, images: list) -> torch.Tensor:
        """``[B, 3, S, S]`` at the model's own image size, dtype and device."""
        return preprocess(images, self.model.image_size, device=self.device, dtype=self.model.dtype)

    def tokenize(self, texts: list[str], max_length: int | None = 35, truncation: bool = True) -> tuple:
        enc = self.tokenizer(texts, padding="longest", truncation=truncation, max_length=max_length)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
