"""BLIP's losses as pure functions (no module state).

Only the language-modelling loss lives here so far; it is shared by captioning, pre-training and VQA
(which also uses its per-sequence sum as the answer score in ``rank`` inference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float = 0.1,
    reduction: str = "mean",
) -> torch.Tensor:
    """Next-token cross-entropy as the original ``BertLMHeadModel``: ``logits[:, :-1]`` against ``labels[:, 1:]``.

    Args:
        logits: ``[B, L, V]``.
        labels: ``[B, L]`` token ids, ``-100`` where unsupervised (pads, prompt tokens).
        label_smoothing: 0.1 in every BLIP recipe.
        reduction: ``"mean"`` over supervised tokens, or ``"none"`` for the **sum per sequence** ``[B]``
            (what the original returns for ``reduction='none'``; VQA uses it).
    """
    shifted = logits[:, :-1].float()
    target = labels[:, 1:]
    if reduction == "mean":
        return F.cross_entropy(
            shifted.reshape(-1, shifted.shape[-1]),
            target.reshape(-1),
            ignore_index=-100,
            label_smoothing=label_smoothing,
        )
    if reduction != "none":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    loss = F.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]),
        target.reshape(-1),
        ignore_index=-100,
        label_smoothing=label_smoothing,
        reduction="none",
    )
    return loss.view(logits.shape[0], -1).sum(1)
