"""Per-task training data and forward steps, as the original ``train_*.py`` scripts feed their models.

==============  ==========================================  ================================================
task            dataset (item)                              text handling (tokenizer call of the original)
==============  ==========================================  ================================================
``pretrain``    :class:`PretrainDataset` (image, caption)   ``padding='max_length', truncation, max_length=30``
``caption``     :class:`CaptionTrainDataset` (prompt +      ``padding='longest', truncation, max_length=40``
                caption)
``retrieval``   :class:`CaptionTrainDataset` (no prompt,    ``padding='max_length', truncation, max_length=35``
                image idx)
``vqa``         :class:`VQADataset` + ``vqa_collate_fn``    questions ``longest, truncation, max_length=35``;
                                                            answers ``longest``, no truncation
``nlvr``        :class:`NLVRDataset` (two images)           ``padding='longest'``, no truncation
==============  ==========================================  ================================================

Captioning in several processes normalises the LM loss by the number of supervised tokens of the **global**
batch (each rank's mean is rescaled by ``local_tokens * world / global_tokens`` before DDP averages gradients),
so ``W`` processes compute exactly the loss and gradient of one process holding the whole batch. The original
averages the per-GPU token means, which weights a token by ``1 / (W * tokens on its GPU)``; both agree on one
process and whenever the ranks hold equally many tokens. ``caption_loss_reduction: "rank_mean"`` restores the
original behaviour.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from openblip.data.datasets import (
    CaptionTrainDataset,
    NLVRDataset,
    PretrainDataset,
    VQADataset,
    vqa_collate_fn,
)
from openblip.train.data import default_collate_list
from openblip.train.distributed import is_dist, world_size


@dataclass
class StepContext:
    """What a step needs besides the batch."""

    tokenizer: Any
    device: torch.device
    config: Mapping[str, Any]
    alpha: float | None = None
    generator: torch.Generator | None = None


def build_dataset(
    config: Mapping[str, Any],
    transform: Callable[..., Any],
    strict: bool = False,
    failure_log: str | os.PathLike | None = None,
) -> torch.utils.data.Dataset:
    """The training dataset of ``config["task"]`` over the resolved ``train_files``."""
    task = config["task"]
    files = list(config["train_files"])
    kw = {"strict": strict, "failure_log": failure_log}
    if task == "pretrain":
        return PretrainDataset(
            files,
            config.get("image_root"),
            transform,
            config.get("max_words", 30),
            laion_path=config.get("laion_path") or None,
            **kw,
        )
    if task == "caption":
        return CaptionTrainDataset(
            files, config.get("image_root"), transform, config.get("max_words", 30), config["prompt"], **kw
        )
    if task == "retrieval":
        return CaptionTrainDataset(files, config.get("image_root"), transform, config.get("max_words", 30), "", **kw)
    if task == "vqa":
        roots = {
            "vqa": config.get("vqa_root") or config.get("image_root"),
            "vg": config.get("vg_root") or config.get("image_root"),
        }
        return VQADataset(files, roots, transform, split="train", **kw)
    if task == "nlvr":
        return NLVRDataset(
            files, config.get("image_root"), transform, train=True, max_words=config.get("max_words", 40), **kw
        )
    raise ValueError(f"no training recipe for task {task!r}")


def collate_fn(task: str) -> Callable[[Any], Any]:
    return vqa_collate_fn if task == "vqa" else default_collate_list


def batch_samples(task: str, batch: tuple[Any, ...]) -> int:
    """Training examples in a batch (image-text pairs; NLVR2 sentences; VQA questions)."""
    return int(batch[0].shape[0])


def _pixels(x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
    return x.to(ctx.device, non_blocking=True)


def poison(task: str, batch: tuple[Any, ...]) -> tuple[Any, ...]:
    """Fault injection: the batch with NaN images."""
    n = 2 if task == "nlvr" else 1
    return tuple(x * float("nan") if i < n else x for i, x in enumerate(batch))


def images_finite(task: str, batch: tuple[Any, ...]) -> bool:
    n = 2 if task == "nlvr" else 1
    return all(bool(torch.isfinite(batch[i]).all()) for i in range(n))


def _tok(ctx: StepContext, texts: list[str], padding: str, max_length: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    enc = ctx.tokenizer(texts, padding=padding, truncation=max_length is not None, max_length=max_length)
    return enc["input_ids"].to(ctx.device), enc["attention_mask"].to(ctx.device)


def forward(
    objective: Callable[..., dict], task: str, batch: tuple[Any, ...], ctx: StepContext
) -> dict[str, torch.Tensor]:
    """One micro-batch's loss dictionary (``"loss"`` plus components) through ``objective`` (possibly DDP)."""
    cfg = ctx.config
    if task == "pretrain":
        images, captions = batch[0], batch[1]
        ids, mask = _tok(ctx, captions, "max_length", cfg.get("max_text_length", 30))
        return objective(_pixels(images, ctx), ids, mask, alpha=ctx.alpha, generator=ctx.generator)
    if task == "retrieval":
        images, captions, idx = batch
        ids, mask = _tok(ctx, captions, "max_length", cfg.get("max_text_length", 35))
        return objective(_pixels(images, ctx), ids, mask, idx.to(ctx.device), alpha=ctx.alpha, generator=ctx.generator)
    if task == "caption":
        images, captions = batch[0], batch[1]
        ids, mask = _tok(ctx, captions, "longest", cfg.get("max_text_length", 40))
        out = objective(_pixels(images, ctx), ids, mask)
        if world_size() > 1 and cfg.get("caption_loss_reduction", "global_tokens") == "global_tokens":
            out = _global_token_mean(out, ids, mask, int(cfg.get("prompt_length", 4)))
        return out
    if task == "vqa":
        images, questions, answers, weights, n = batch
        q_ids, q_mask = _tok(ctx, questions, "longest", cfg.get("max_text_length", 35))
        a_ids, a_mask = _tok(ctx, answers, "longest", None)
        return objective(_pixels(images, ctx), q_ids, q_mask, a_ids, a_mask, n, weights.to(ctx.device))
    if task == "nlvr":
        image0, image1, sentences, labels = batch
        ids, mask = _tok(ctx, sentences, "longest", None)
        pixels = _pixels(torch.cat([image0, image1], dim=0), ctx)
        out = objective(pixels, ids, mask, labels.to(ctx.device))
        return {k: v for k, v in out.items() if k != "logits"}
    raise ValueError(f"no training step for task {task!r}")


def _global_token_mean(
    out: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor, prompt_length: int
) -> dict[str, torch.Tensor]:
    """Rescale this rank's token-mean LM loss so that DDP's gradient average equals the global token mean."""
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :prompt_length] = -100
    local = (labels[:, 1:] != -100).sum().to(torch.float64)
    total = local.clone()
    if is_dist():
        dist.all_reduce(total)
    scale = (local * world_size() / total.clamp(min=1)).to(out["loss"].dtype)
    return {k: v * scale for k, v in out.items()}
