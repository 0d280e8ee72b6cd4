"""CapFilt settings: one dataclass, saved as ``OUT/capfilt_config.json``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class CapFiltConfig:
    """Everything the CapFilt pipeline does (see :mod:`openblip.capfilt.pipeline`).

    Inputs:
        web: the web annotations, a pre-training list ``[{"image", "caption": str | [str, ...]}]`` (JSON, or JSON
            lines for ``.jsonl``). Records naming the same image are one web image with several web captions.
        clean: the small human-annotated set in the same format (an ``image_id`` per record is kept if present);
            used to fine-tune the captioner and the filter, and copied into the corpus unfiltered.
        init: the pre-trained model both are fine-tuned from (registry name or local checkpoint, any layout;
            a pre-training checkpoint loads as a captioner and as a retrieval model).
        out: the work directory (layout in :mod:`openblip.capfilt.pipeline`).
        image_root: folder that relative web image paths are under (default: as given).
        clean_image_root: the same for the clean set (default: ``image_root``).
        captioner, filter_model: use these already fine-tuned models instead of fine-tuning from ``init``
            (e.g. ``blip-base-caption-coco`` and ``blip-base-retrieval-coco``).

    Filtering: a caption is kept iff its ITM match probability is ``>= threshold`` (the paper drops the texts
    the ITM head judges unmatched; the maintainers describe it as a match score below 0.5). ``filter_web`` /
    ``filter_synthetic`` switch the filter off per source (the paper filters both). ``dedup`` drops a kept caption
    of an image that equals (after ``pre_caption``) one already kept for the same image.

    Captioning: nucleus sampling, ``top_p`` 0.9 (paper), ``top_k`` 50 and repetition penalty 1.1 (what the
    original sampling silently used), prompt ``"a picture of "`` (``max_length``/``min_length`` count the prompt
    tokens, as the original; the defaults allow 26 new tokens and ban ``[SEP]`` until one word is written).

    Work split: ``shard_size`` web images per shard; ``batch_size`` images per forward pass (a shard is cut into
    fixed slices of ``batch_size`` web images; each slice samples with its own seed, derived from ``seed`` and the
    slice's first web id, so reruns give the same captions).

    Fine-tuning (the original recipes' objectives, data loaders and optimizer; a per-step cosine schedule over the
    step budget): ``*_steps`` optimizer steps of ``train_batch_size``; ``queue_size`` (a multiple of
    ``train_batch_size``), ``momentum`` and ``alpha`` for the filter's ITC (momentum distillation, alpha ramped
    over the first epoch as ``train_retrieval.py``); ``min_scale``/``randaug``/``flip`` for BLIP's train
    transform; a resumable training state every ``save_every`` steps. ``itm_warmup_steps`` (not in the original;
    0 by default): the filter's first steps draw ITM negatives uniformly in the batch instead of by ITC similarity,
    for filters starting from a model whose ITM head is still at chance (see
    :func:`openblip.capfilt.finetune.uniform_itm_negatives`).
    """

    web: str | None = None
    clean: str | None = None
    init: str | None = None
    out: Path = Path("capfilt_out")
    image_root: str | None = None
    clean_image_root: str | None = None
    captioner: str | None = None
    filter_model: str | None = None

    # filter
    threshold: float = 0.5
    filter_web: bool = True
    filter_synthetic: bool = True
    dedup: bool = True

    # captioner sampling
    captions_per_image: int = 1
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.1
    max_length: int = 30
    min_length: int = 5
    prompt: str = "a picture of "
    seed: int = 0

    # work split and inference
    shard_size: int = 1000
    batch_size: int = 32
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None

    # fine-tuning
    captioner_steps: int = 1000
    captioner_lr: float = 1e-5
    filter_steps: int = 1000
    filter_lr: float = 1e-5
    train_batch_size: int = 32
    weight_decay: float = 0.05
    queue_size: int = 57600
    momentum: float = 0.995
    alpha: float = 0.4
    min_scale: float = 0.5
    randaug: bool = True
    flip: bool = True
    save_every: int = 200
    num_workers: int = 0
    itm_warmup_steps: int = 0
    check_clean_images: bool = True

    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        problems = []
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"threshold must be in [0, 1], got {self.threshold}")
        if self.captions_per_image < 0:
            problems.append(f"captions_per_image must be >= 0, got {self.captions_per_image}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        for name in ("shard_size", "batch_size", "train_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.captioner_steps < 0 or self.filter_steps < 0:
            problems.append("fine-tuning steps must be >= 0")
        if self.queue_size < 1 or self.queue_size % self.train_batch_size:
            problems.append(
                f"queue_size ({self.queue_size}) must be a positive multiple of train_batch_size "
                f"({self.train_batch_size}), as the original asserts"
            )
        if problems:
            raise ValueError("; ".join(problems))

    def replace(self, **changes: Any) -> CapFiltConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CapFiltConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown CapFilt settings: {unknown}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
