"""BLIP's losses and training-batch helpers as pure functions (no module state).

Everything here is a function of its tensor arguments; the stateful parts of training (momentum encoders,
feature queues, the ITC temperature clamp) live in :mod:`openblip.train.objectives`. Formulas follow
salesforce/BLIP (``models/blip_pretrain.py``, ``blip_retrieval.py``, ``blip_vqa.py``, ``blip_nlvr.py``,
``pretrain.py``, ``train_retrieval.py``), spec §1.4-§1.8 and §4:

* **LM** (captioning, pre-training, VQA answers): :func:`lm_loss`, next-token CE with label smoothing 0.1.
* **ITC** with momentum distillation (ALBEF): :func:`itc_targets` + :func:`itc_loss`.
* **ITM** with hard negatives: :func:`sample_hard_negatives` + :func:`build_itm_batch` + :func:`itm_loss`.
* **VQA**: :func:`vqa_loss`, the answer-weighted sum of per-answer LM losses over the batch size.
* **NLVR2**: :func:`nlvr_loss`, plain CE.
* :func:`momentum_alpha`, the linear warm-up of the distillation weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ITM_MODES = ("pretrain", "retrieval")


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


# ------------------------------------------------------------------------------------------------------------
# ITC: image-text contrastive loss with momentum distillation


def itc_targets(
    sim_i2t_m: torch.Tensor,
    sim_t2i_m: torch.Tensor,
    positives: torch.Tensor | None,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft ITC targets ``alpha * softmax(sim_m) + (1 - alpha) * hard`` for both directions.

    The original (computed under ``no_grad``; we detach)::

        sim_i2t_targets = alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * sim_targets
        sim_t2i_targets = alpha * F.softmax(sim_t2i_m, dim=1) + (1 - alpha) * sim_targets

    Args:
        sim_i2t_m, sim_t2i_m: ``[B, B + Q]`` momentum similarities (already divided by the temperature):
            momentum image features against ``[text_feat_m ; text_queue]`` and the converse.
        positives: ``None`` for pre-training, where ``hard`` is the one-hot diagonal (``fill_diagonal_(1)``:
            item ``i`` of the batch is column ``i``). For idx-aware retrieval fine-tuning, the boolean/0-1
            ``[B, B + Q]`` mask ``idx == [idx_batch ; idx_queue]``, and ``hard = pos / pos.sum(1)``, so every
            caption of the same image is an (equally weighted) positive.
        alpha: distillation weight (0.4 in every recipe, ramped from 0, see :func:`momentum_alpha`).

    Returns:
        ``(sim_i2t_targets, sim_t2i_targets)``, each row summing to 1. The same hard targets serve both
        directions: batch and queue hold images and texts with the same idx layout.
    """
    if sim_i2t_m.shape != sim_t2i_m.shape or sim_i2t_m.ndim != 2:
        raise ValueError(
            f"similarities must be two [B, N] matrices, got {tuple(sim_i2t_m.shape)} and {tuple(sim_t2i_m.shape)}"
        )
    sim_i2t_m, sim_t2i_m = sim_i2t_m.detach().float(), sim_t2i_m.detach().float()
    if positives is None:
        hard = torch.zeros_like(sim_i2t_m)
        hard.fill_diagonal_(1)
    else:
        if positives.shape != sim_i2t_m.shape:
            raise ValueError(f"positives {tuple(positives.shape)} must match the similarities {tuple(sim_i2t_m.shape)}")
        pos = positives.to(sim_i2t_m.dtype)
        count = pos.sum(1, keepdim=True)
        if bool((count == 0).any()):
            raise ValueError("every row of `positives` needs at least one positive (the item itself)")
        hard = pos / count
    return (
        alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * hard,
        alpha * F.softmax(sim_t2i_m, dim=1) + (1 - alpha) * hard,
    )


def itc_loss(
    sim_i2t: torch.Tensor,
    sim_t2i: torch.Tensor,
    sim_i2t_targets: torch.Tensor,
    sim_t2i_targets: torch.Tensor,
) -> torch.Tensor:
    """Mean of the two soft cross-entropies (``loss_ita``)::

        loss_i2t = -torch.sum(F.log_softmax(sim_i2t, dim=1) * sim_i2t_targets, dim=1).mean()
        loss_t2i = -torch.sum(F.log_softmax(sim_t2i, dim=1) * sim_t2i_targets, dim=1).mean()
        loss_ita = (loss_i2t + loss_t2i) / 2

    ``sim_i2t`` is the *online* image feature against ``[text_feat_m ; text_queue]`` over the temperature
    (``[B, B + Q]``), ``sim_t2i`` the converse; the targets come from :func:`itc_targets`.
    """
    loss_i2t = -torch.sum(F.log_softmax(sim_i2t.float(), dim=1) * sim_i2t_targets, dim=1).mean()
    loss_t2i = -torch.sum(F.log_softmax(sim_t2i.float(), dim=1) * sim_t2i_targets, dim=1).mean()
    return (loss_i2t + loss_t2i) / 2


# ------------------------------------------------------------------------------------------------------------
# ITM: image-text matching with hard negatives


def hard_negative_weights(
    sim: torch.Tensor, mode: str, idx: torch.Tensor | None = None, candidate_idx: torch.Tensor | None = None
) -> torch.Tensor:
    """The (unnormalised) sampling weights of :func:`sample_hard_negatives` for one direction, ``[B, N]``.

    ``"pretrain"``: ``softmax(sim[:, :B]) + 1e-4`` with the diagonal zeroed. ``"retrieval"``: ``softmax(sim)``
    with every ``idx[i] == candidate_idx[j]`` entry zeroed. Computed in float32, without gradient.
    """
    sim = sim.detach()
    row_idx, col_idx = idx, candidate_idx
    if mode == "pretrain":
        b = sim.shape[0]
        if sim.shape[1] < b:
            raise ValueError(f"pre-training mode needs the in-batch [B, B(+Q)] similarities, got {tuple(sim.shape)}")
        weights = F.softmax(sim[:, :b].float(), dim=1) + 1e-4
        weights.fill_diagonal_(0)
        return weights
    if mode == "retrieval":
        if row_idx is None:
            raise ValueError("retrieval mode needs `idx` (the image id of every row) to mask the positives")
        if col_idx is None:
            col_idx = row_idx
        row_idx, col_idx = row_idx.reshape(-1), col_idx.reshape(-1)
        if sim.shape != (row_idx.numel(), col_idx.numel()):
            raise ValueError(
                f"similarities {tuple(sim.shape)} do not match idx ({row_idx.numel()}) x candidate idx "
                f"({col_idx.numel()})"
            )
        weights = F.softmax(sim.float(), dim=1)
        return weights.masked_fill(row_idx[:, None] == col_idx[None, :].to(row_idx.device), 0)
    raise ValueError(f"mode must be one of {ITM_MODES}, got {mode!r}")


def sample_hard_negatives(
    sim_i2t: torch.Tensor,
    sim_t2i: torch.Tensor,
    mode: str,
    idx: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    candidate_idx: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one hard negative image per text and one hard negative text per image (``torch.multinomial``).

    ``mode="pretrain"`` (``BLIP_Pretrain``): in-batch only, from the first ``B`` columns of the ITC
    similarities (online features against the momentum features)::

        weights_t2i = F.softmax(sim_t2i[:, :bs], dim=1) + 1e-4
        weights_t2i.fill_diagonal_(0)          # and the same for i2t

    ``mode="retrieval"`` (``BLIP_Retrieval``): every pair with the same image id is masked, no ``+1e-4``::

        weights_i2t = F.softmax(sim_i2t, dim=1)
        weights_i2t.masked_fill_(torch.eq(idx, idx_candidates.t()), 0)

    Here the similarities are ``[B, N]`` over ``N`` candidates: the local batch (``N = B``), or the batch
    gathered from every rank for ``negative_all_rank`` (pass ``candidate_idx``, the ``N`` gathered ids).

    Args:
        sim_i2t: ``[B, N]`` image-to-text similarities (detached or not; no gradient flows through sampling).
        sim_t2i: ``[B, N]`` text-to-image similarities.
        mode: ``"pretrain"`` or ``"retrieval"``.
        idx: retrieval mode: ``[B]`` image ids of the rows.
        generator: a :class:`torch.Generator` on the similarities' device, for reproducible draws.
        candidate_idx: retrieval mode: ``[N]`` image ids of the columns (default ``idx``).

    Returns:
        ``(neg_image_idx, neg_text_idx)``, two ``[B]`` long tensors of column indices: the negative image
        for each text (drawn from ``sim_t2i``'s row) and the negative text for each image (from ``sim_i2t``).
        A positive (the diagonal in pre-training, any same-id pair in retrieval) has weight 0 and is never drawn.

    Raises:
        ValueError: a row has no negative candidate at all (batch of 1; or, in retrieval mode, every candidate
            shares the row's image id). The original crashes inside ``torch.multinomial`` there; we refuse with
            a clear message rather than fall back to a positive.
    """
    with torch.no_grad():
        for name, sim in (("image-to-text", sim_i2t), ("text-to-image", sim_t2i)):
            if not bool(torch.isfinite(sim).all()):
                raise FloatingPointError(
                    f"non-finite {name} similarities before hard-negative sampling "
                    "(the features overflowed or the inputs contain NaN/inf)"
                )
        w_i2t = hard_negative_weights(sim_i2t, mode, idx, candidate_idx)
        w_t2i = hard_negative_weights(sim_t2i, mode, idx, candidate_idx)
        for name, w in (("text-to-image", w_t2i), ("image-to-text", w_i2t)):
            bad = ~(w.sum(1) > 0)  # also catches NaN
            if bool(bad.any()):
                rows = bad.nonzero().flatten().tolist()
                raise ValueError(
                    f"no hard-negative candidate for rows {rows[:10]} ({name}): every candidate is a positive "
                    f"(batch of size 1, or all candidates share the row's image id); a batch needs items of at "
                    f"least two different images"
                )
        neg_image = torch.multinomial(w_t2i, 1, generator=generator).squeeze(1)
        neg_text = torch.multinomial(w_i2t, 1, generator=generator).squeeze(1)
    return neg_image, neg_text


def build_itm_batch(
    image_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    neg_image_idx: torch.Tensor,
    neg_text_idx: torch.Tensor,
    image_pool: torch.Tensor | None = None,
    ids_pool: torch.Tensor | None = None,
    mask_pool: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``3B`` ITM pairs of the original: ``B`` positives, then ``2B`` negatives.

    Rows, in the original's order (``output_pos`` then ``output_neg``)::

        [0, B):   (text_i,                 image_i)                  label 1
        [B, 2B):  (text_i,                 image_pool[neg_image[i]]) label 0
        [2B, 3B): (ids_pool[neg_text[i]],  image_i)                  label 0

    Args:
        image_embeds: ``[B, N, D]`` ViT tokens of the local batch.
        input_ids, attention_mask: ``[B, L]`` texts of the local batch (the ITM encoder writes ``[ENC]``).
        neg_image_idx, neg_text_idx: ``[B]`` indices from :func:`sample_hard_negatives`.
        image_pool, ids_pool, mask_pool: where the indices point (default: the local batch). For
            ``negative_all_rank`` the tensors gathered from every rank (images gathered *with* gradient).

    Returns:
        ``(image_embeds [3B, N, D], input_ids [3B, L], attention_mask [3B, L], labels [3B])``; labels are
        ``[1] * B + [0] * 2B``.
    """
    image_pool = image_embeds if image_pool is None else image_pool
    ids_pool = input_ids if ids_pool is None else ids_pool
    mask_pool = attention_mask if mask_pool is None else mask_pool
    b = input_ids.shape[0]
    neg_image_idx = neg_image_idx.to(image_pool.device)
    neg_text_idx = neg_text_idx.to(ids_pool.device)
    images = torch.cat([image_embeds, image_pool[neg_image_idx], image_embeds], dim=0)
    ids = torch.cat([input_ids, input_ids, ids_pool[neg_text_idx]], dim=0)
    mask = torch.cat([attention_mask, attention_mask, mask_pool[neg_text_idx]], dim=0)
    labels = torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(2 * b, dtype=torch.long)]).to(ids.device)
    return images, ids, mask, labels


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(itm_head(h_[ENC]), itm_labels)`` on ``[3B, 2]`` logits (index 1 = match)."""
    return F.cross_entropy(logits.float(), labels)


# ------------------------------------------------------------------------------------------------------------
# VQA, NLVR2


def vqa_loss(per_answer_loss: torch.Tensor, weights: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(weights * answer_loss).sum() / batch_size`` (``BLIP_VQA.forward(train=True)``).

    Args:
        per_answer_loss: ``[A]`` label-smoothed CE summed over each answer's tokens
            (:func:`lm_loss` with ``reduction="none"``), ``A = sum(n)`` answers in all.
        weights: ``[A]`` answer weights (VQA: count / number of answers; Visual Genome: 0.2).
        batch_size: the number of *questions* (``image.size(0)``), not of answers.
    """
    if per_answer_loss.shape != weights.shape:
        raise ValueError(f"{tuple(weights.shape)} weights for {tuple(per_answer_loss.shape)} answer losses")
    return (weights.to(per_answer_loss.dtype) * per_answer_loss).sum() / batch_size


def nlvr_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(cls_head(h_[ENC]), targets)`` on ``[B, 2]`` logits (index 1 = "True")."""
    return F.cross_entropy(logits.float(), targets)


# ------------------------------------------------------------------------------------------------------------
# schedules


def momentum_alpha(alpha: float, epoch: int, step: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """The distillation weight, ramped linearly from 0 to ``alpha`` over the first ``warmup_epochs``.

    ``alpha * min(1, (epoch * steps_per_epoch + step) / (warmup_epochs * steps_per_epoch))``.

    * pre-training (``pretrain.py``): ``warmup_epochs=2``,
      ``alpha = config['alpha'] * min(1, (epoch * len(data_loader) + i) / (2 * len(data_loader)))``;
    * retrieval (``train_retrieval.py``): ``warmup_epochs=1``; the original writes
      ``config['alpha'] if epoch > 0 else config['alpha'] * min(1, i / len(data_loader))``, the same values.

    ``step`` is the 0-based iteration within the epoch; ``warmup_epochs=0`` gives ``alpha`` at once.
    """
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    if warmup_epochs <= 0:
        return float(alpha)
    return float(alpha) * min(1.0, (epoch * steps_per_epoch + step) / (warmup_epochs * steps_per_epoch))
