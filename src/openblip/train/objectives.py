"""Training objectives: wrappers that own the stateful parts of BLIP training.

The task models in :mod:`openblip.models.blip` are what users load for inference; they hold no momentum
encoders and no queues. The original ``BLIP_Pretrain``/``BLIP_Retrieval`` keep those in the model; here they
live in an ``nn.Module`` wrapped *around* the model:

* :class:`PretrainObjective` (``BLIP_Pretrain.forward``): ITC with momentum distillation + ITM with hard
  negatives + LM, ``loss = loss_ita + loss_itm + loss_lm``.
* :class:`RetrievalObjective` (``BLIP_Retrieval.forward``): idx-aware ITC + ITM, optionally with negatives from
  every rank (``negative_all_rank``).
* :class:`CaptionObjective`, :class:`VQAObjective`, :class:`NLVRObjective`: stateless; they apply the loss
  of ``BLIP_Decoder``, ``BLIP_VQA`` and ``BLIP_NLVR`` to the model's outputs.

The wrapped model is a registered submodule (``objective.model``), so ``objective.to(device)``,
``objective.train()``, ``DistributedDataParallel(objective)`` and ``AdamW(objective.parameters())`` (momentum
parameters have ``requires_grad=False`` and never get a gradient) work as on the original model. **But
``objective.state_dict()`` holds only the training state** — momentum parameters and queues under their
official names (``visual_encoder_m.*``, ``text_encoder_m.*``, ``vision_proj_m.*``, ``text_proj_m.*``,
``image_queue``, ``text_queue``, ``queue_ptr`` / ``idx_queue``, ``ptr_queue``) — and the model's own weights
are saved separately (``model.save_pretrained`` or :func:`openblip.checkpoint.save_official`). The training
state of an official checkpoint (``load_model(..., for_training=True, return_report=True)`` gives it as
``report.training_state``) loads with :meth:`MomentumQueues.load_training_state`.

Typical loop (pre-training)::

    obj = PretrainObjective(model).to(device).train()
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.05)
    for epoch in ...:
        for i, (pixels, ids, mask) in enumerate(loader):
            alpha = momentum_alpha(0.4, epoch, i, len(loader), warmup_epochs=2)
            out = obj(pixels, ids, mask, alpha=alpha)
            opt.zero_grad(); out["loss"].backward(); opt.step()
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openblip.checkpoint import KeyReport, check_position_ids, compare_keys
from openblip.losses import (
    build_itm_batch,
    itc_loss,
    itc_targets,
    itm_loss,
    lm_loss,
    nlvr_loss,
    sample_hard_negatives,
    vqa_loss,
)
from openblip.models.blip import BlipCaption, BlipNLVR, BlipPretrain, BlipRetrieval, BlipVQA, with_first_token
from openblip.train.distributed import all_gather_with_grad, concat_all_gather, world_size

#: (online module, momentum copy) pairs, in the original's ``model_pairs`` order.
MOMENTUM_PAIRS = (
    ("visual_encoder", "visual_encoder_m"),
    ("vision_proj", "vision_proj_m"),
    ("text_encoder", "text_encoder_m"),
    ("text_proj", "text_proj_m"),
)

#: temperature clamp of the original: ``self.temp.clamp_(0.001, 0.5)`` at every forward.
TEMP_MIN, TEMP_MAX = 0.001, 0.5


class TrainingStateError(ValueError):
    """A training state (momentum parameters + queues) does not fit the objective; the message names the keys."""


@dataclass
class TrainingStateReport(KeyReport):
    """What :meth:`MomentumQueues.load_training_state` did; empty lists mean a perfect fit."""

    sides = ("given", "expected")


def _ones_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.device)


class MomentumQueues(nn.Module):
    """Momentum encoders + feature queues around a :class:`BlipRetrieval`/:class:`BlipPretrain` (ALBEF/BLIP).

    Owns deep copies of ``visual_encoder``, ``vision_proj``, ``text_encoder``, ``text_proj`` as
    ``*_m`` (``requires_grad=False``, initialised from the model as the original's ``copy_params``) and the
    buffers ``image_queue``, ``text_queue`` (``[embed_dim, queue_size]``, ``randn`` L2-normalised along dim 0)
    and a pointer. Subclasses choose the pointer's official name and whether an ``idx_queue`` exists.

    The momentum copies follow the wrapper's train/eval mode, as in the original (where they are submodules of
    the model): in ``train()`` their text dropout is active in the momentum forward.
    """

    ptr_name = "queue_ptr"
    has_idx_queue = False
    #: Whether a forward takes its EMA step (the original: every forward, i.e. every optimizer step). The training
    #: loop clears it for the 2nd..kth micro-batch of a gradient-accumulation step: the online weights have not
    #: changed since the first, and k EMA steps would make the momentum encoders move as with momentum m**k.
    update_momentum: bool = True

    def __init__(
        self,
        model: BlipRetrieval,
        queue_size: int = 57600,
        momentum: float = 0.995,
        alpha: float = 0.4,
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, BlipRetrieval):
            raise TypeError(f"{type(self).__name__} wraps a BlipRetrieval or BlipPretrain, got {type(model).__name__}")
        if queue_size <= 0:
            raise ValueError(f"queue_size must be positive, got {queue_size}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        model_dim = model.vision_proj.out_features
        if embed_dim is not None and embed_dim != model_dim:
            raise ValueError(f"embed_dim={embed_dim} but the model projects to {model_dim} dims")
        self.model = model
        self.queue_size = int(queue_size)
        self.momentum = float(momentum)
        self.alpha = float(alpha)
        self.embed_dim = model_dim
        for online, mom in MOMENTUM_PAIRS:
            clone = copy.deepcopy(getattr(model, online))
            for p in clone.parameters():
                p.requires_grad_(False)
                p.grad = None
            setattr(self, mom, clone)
        ref = model.vision_proj.weight
        self.register_buffer(
            "image_queue", F.normalize(torch.randn(model_dim, queue_size, device=ref.device), dim=0).to(ref.dtype)
        )
        self.register_buffer(
            "text_queue", F.normalize(torch.randn(model_dim, queue_size, device=ref.device), dim=0).to(ref.dtype)
        )
        if self.has_idx_queue:
            self.register_buffer("idx_queue", torch.full((1, queue_size), -100, dtype=torch.long, device=ref.device))
        self.register_buffer(self.ptr_name, torch.zeros(1, dtype=torch.long, device=ref.device))

    # ---------------------------------------------------------------------------------------------------------
    # momentum encoders

    def _param_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        online_params, momentum_params = [], []
        for online, mom in MOMENTUM_PAIRS:
            a = dict(getattr(self.model, online).named_parameters())
            b = dict(getattr(self, mom).named_parameters())
            if a.keys() != b.keys():
                raise RuntimeError(f"{online} and {mom} no longer have the same parameters")
            for name, p in a.items():
                online_params.append(p.detach())
                momentum_params.append(b[name])
        return online_params, momentum_params

    @torch.no_grad()
    def copy_params(self) -> None:
        """Set every momentum parameter to its online counterpart (the original's ``copy_params``)."""
        online, mom = self._param_pairs()
        torch._foreach_copy_(mom, online)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA step ``p_m = p_m * m + p * (1 - m)`` (the original's ``_momentum_update``)."""
        online, mom = self._param_pairs()
        torch._foreach_mul_(mom, self.momentum)
        torch._foreach_add_(mom, online, alpha=1.0 - self.momentum)

    @torch.no_grad()
    def momentum_features(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised momentum ITC features ``(image_feat_m, text_feat_m)``, each ``[B, embed_dim]``.

        The text keeps (gets) ``[CLS]`` and runs unimodal (``mode="text"``), as the online ITC text encoder.
        """
        image_embeds_m = self.visual_encoder_m(pixel_values.to(self.model.device))
        image_feat_m = F.normalize(self.vision_proj_m(image_embeds_m[:, 0]), dim=-1)
        out = self.text_encoder_m(with_first_token(input_ids, "cls"), attention_mask=attention_mask, mode="text")
        text_feat_m = F.normalize(self.text_proj_m(out.last_hidden_state[:, 0]), dim=-1)
        return image_feat_m, text_feat_m

    # ---------------------------------------------------------------------------------------------------------
    # queues

    @property
    def ptr(self) -> int:
        """The queue pointer (column of the next write)."""
        return int(getattr(self, self.ptr_name))

    def check_batch_size(self, local_batch: int) -> None:
        """Raise unless the global batch (``local_batch`` x world size) divides ``queue_size``."""
        w = world_size()
        global_batch = local_batch * w
        if global_batch <= 0 or self.queue_size % global_batch:
            raise ValueError(
                f"queue_size {self.queue_size} is not a multiple of the global batch {global_batch} "
                f"(= batch {local_batch} per process x {w} processes): the queue is filled with whole batches "
                f"(the original asserts `queue_size % batch_size == 0`); pick a queue size that the global batch "
                f"divides, and drop the last incomplete batch"
            )

    @torch.no_grad()
    def _enqueue(self, image_feats: torch.Tensor, text_feats: torch.Tensor, idxs: torch.Tensor | None) -> None:
        """Write already-gathered features (and ids) at the pointer and advance it."""
        n = image_feats.shape[0]
        if self.queue_size % n:
            raise ValueError(
                f"queue_size {self.queue_size} is not a multiple of the global batch {n}: the queue is filled "
                f"with whole batches (the original asserts `queue_size % batch_size == 0`)"
            )
        ptr = self.ptr
        # Equal to the original's slice [ptr, ptr + n) whenever ptr is a multiple of n; stays in range otherwise
        # (a pointer restored from a run with another batch size).
        cols = (torch.arange(n, device=self.image_queue.device) + ptr) % self.queue_size
        self.image_queue[:, cols] = image_feats.T.to(self.image_queue.dtype)
        self.text_queue[:, cols] = text_feats.T.to(self.text_queue.dtype)
        if self.has_idx_queue:
            if idxs is None:
                raise ValueError(f"{type(self).__name__} needs the ids of the enqueued features")
            self.idx_queue[:, cols] = idxs.reshape(1, -1).to(self.idx_queue)
        getattr(self, self.ptr_name)[0] = (ptr + n) % self.queue_size

    @torch.no_grad()
    def dequeue_and_enqueue(
        self, image_feat: torch.Tensor, text_feat: torch.Tensor, idx: torch.Tensor | None = None
    ) -> None:
        """Gather this step's momentum features from every rank, overwrite the oldest columns, move the pointer.

        ``queue[:, ptr:ptr + n] = gathered.T; ptr = (ptr + n) % queue_size`` with ``n`` the global batch, which
        must divide ``queue_size`` (``ValueError`` otherwise).
        """
        idxs = None if idx is None else concat_all_gather(idx.reshape(-1, 1))
        self._enqueue(concat_all_gather(image_feat), concat_all_gather(text_feat), idxs)

    # ---------------------------------------------------------------------------------------------------------
    # state

    def _state_module_names(self) -> tuple[str, ...]:
        return tuple(mom for _, mom in MOMENTUM_PAIRS)

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """Only the training state, with official names: momentum parameters and the queue buffers.

        The wrapped model's parameters are **not** included; save them with the model.
        """
        if args:
            raise TypeError("state_dict takes keyword arguments only (destination=, prefix=, keep_vars=)")
        if destination is None:
            destination = OrderedDict()
        for name in self._state_module_names():
            getattr(self, name).state_dict(destination=destination, prefix=f"{prefix}{name}.", keep_vars=keep_vars)
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = buf if keep_vars else buf.detach()
        return destination

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Alias of :meth:`load_training_state` (so ``torch`` conventions work); returns missing/unexpected keys."""
        if assign:
            raise NotImplementedError("assign=True is not supported; tensors are copied into place")
        report = self.load_training_state(state_dict, strict=strict)
        return nn.modules.module._IncompatibleKeys(report.missing, report.unexpected)

    @torch.no_grad()
    def load_training_state(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> TrainingStateReport:
        """Load momentum parameters and queues saved under official names (official ``.pth`` or our ``state_dict``).

        * ``text_encoder_m.embeddings.position_ids`` (stored by official files) must be the identity ``arange``
          and is dropped, as for the model's own weights.
        * ``visual_encoder_m.pos_embed`` of another grid is resized bicubically, as the original
          ``load_checkpoint`` does (e.g. a 224-px pre-training state into a 384-px retrieval run).

        With ``strict`` (default) any missing, unexpected or wrongly shaped key raises :class:`TrainingStateError`
        naming the keys and nothing is loaded. With ``strict=False`` the tensors that fit are loaded and the
        report lists the rest: a pre-training state loaded into a :class:`RetrievalObjective` fills the momentum
        encoders and queues but not ``idx_queue``/``ptr_queue`` (the original fine-tuning start does the same).
        """
        report = TrainingStateReport()
        state = dict(state)
        check_position_ids(state, TrainingStateError, "training state")
        own = self.state_dict(keep_vars=True)
        compare_keys(own, state, report, "visual_encoder_m.pos_embed")
        if strict and not report.ok:
            raise TrainingStateError(
                f"training state does not fit {type(self).__name__} (queue_size={self.queue_size}): {report.problems()}"
            )
        for k, target in own.items():
            if k in state and tuple(state[k].shape) == tuple(target.shape):
                target.copy_(state[k].to(device=target.device, dtype=target.dtype))
        return report

    @classmethod
    def from_training_state(
        cls, model: BlipRetrieval, state: Mapping[str, torch.Tensor], strict: bool = True, **kwargs: Any
    ) -> MomentumQueues:
        """Build the objective with the queue size of ``state`` (``image_queue``'s width) and load it."""
        if "image_queue" not in state:
            raise TrainingStateError("the training state has no image_queue to take the queue size from")
        kwargs.setdefault("queue_size", int(state["image_queue"].shape[1]))
        obj = cls(model, **kwargs)
        obj.load_training_state(state, strict=strict)
        return obj

    def _clamp_temp(self) -> torch.Tensor:
        with torch.no_grad():
            self.model.temp.clamp_(TEMP_MIN, TEMP_MAX)
        return self.model.temp

    def _itc_sims(
        self,
        image_feat: torch.Tensor,
        text_feat: torch.Tensor,
        image_feat_m: torch.Tensor,
        text_feat_m: torch.Tensor,
        temp: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Online and momentum similarities against ``[feat_m ; queue]``, all ``[B, B + Q]``, over ``temp``."""
        with torch.no_grad():
            image_feat_all = torch.cat([image_feat_m.t(), self.image_queue.to(image_feat_m.dtype)], dim=1)
            text_feat_all = torch.cat([text_feat_m.t(), self.text_queue.to(text_feat_m.dtype)], dim=1)
            sim_i2t_m = image_feat_m @ text_feat_all / temp
            sim_t2i_m = text_feat_m @ image_feat_all / temp
        sim_i2t = image_feat @ text_feat_all / temp
        sim_t2i = text_feat @ image_feat_all / temp
        return sim_i2t, sim_t2i, sim_i2t_m, sim_t2i_m


class PretrainObjective(MomentumQueues):
    """``BLIP_Pretrain.forward``: ITC (momentum distillation) + ITM (hard negatives) + LM on a :class:`BlipPretrain`.

    Args:
        model: the pre-training model (its ``text_decoder`` shares all but self-attention with ``text_encoder``).
        queue_size: 57600 in the recipe; the global batch must divide it.
        momentum: EMA coefficient, 0.995.
        alpha: default distillation weight when :meth:`forward` gets none (ramp it with
            :func:`openblip.losses.momentum_alpha`, ``warmup_epochs=2``).
        embed_dim: optional check of the ITC width (taken from the model).
        label_smoothing: of the LM loss, 0.1.
    """

    ptr_name = "queue_ptr"
    has_idx_queue = False
    #: ITC against ``[batch ; queue]`` (True, the original) or the batch only (the queue still fills). The demo
    #: pre-trains from random weights with the batch only (see ``openblip.demo.settings``).
    use_queue: bool = True
    #: ITM on (the original) or off (``loss_itm`` is then 0; the demo's first steps from random weights).
    use_itm: bool = True

    def __init__(
        self,
        model: BlipPretrain,
        queue_size: int = 57600,
        momentum: float = 0.995,
        alpha: float = 0.4,
        embed_dim: int | None = None,
        label_smoothing: float = 0.1,
    ) -> None:
        if not isinstance(model, BlipPretrain):
            raise TypeError(f"PretrainObjective wraps a BlipPretrain, got {type(model).__name__}")
        super().__init__(model, queue_size, momentum, alpha, embed_dim)
        self.label_smoothing = label_smoothing

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """One pre-training step's losses.

        Args:
            pixel_values: ``[B, 3, S, S]`` augmented images.
            input_ids: ``[B, L]`` tokenizer output (``[CLS] ... [SEP] [PAD]...``; the original pads to 30).
                ITC keeps ``[CLS]``, ITM writes ``[ENC]``, LM writes ``[DEC]``.
            attention_mask: ``[B, L]``.
            alpha: distillation weight for this step (default ``self.alpha``).
            generator: for the hard-negative draws.

        Returns:
            ``{"loss_ita", "loss_itm", "loss_lm", "loss"}`` with ``loss`` the unweighted sum.

        Side effects, in the original's order: ``temp`` clamped in place to [0.001, 0.5]; momentum EMA step
        (before the momentum features); queues updated with the gathered momentum features.
        """
        return self.losses(pixel_values, input_ids, attention_mask, alpha, generator)[0]

    def losses(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """:meth:`forward`'s losses and the images' ViT tokens ``[B, N, D]`` (for a caller adding a loss on them)."""
        model = self.model
        alpha = self.alpha if alpha is None else float(alpha)
        device = model.device
        input_ids = input_ids.to(device)
        attention_mask = _ones_mask(input_ids, attention_mask)
        bs = input_ids.shape[0]
        self.check_batch_size(bs)
        temp = self._clamp_temp()

        # ITC
        image_embeds = model.encode_image(pixel_values)
        image_feat = model.image_features(image_embeds)
        text_feat = model.text_features(input_ids, attention_mask)
        with torch.no_grad():
            if self.update_momentum:
                self.momentum_update()
            image_feat_m, text_feat_m = self.momentum_features(pixel_values, input_ids, attention_mask)
        sims = self._itc_sims(image_feat, text_feat, image_feat_m, text_feat_m, temp)
        if not self.use_queue:
            sims = tuple(x[:, :bs] for x in sims)
        sim_i2t, sim_t2i, sim_i2t_m, sim_t2i_m = sims
        targets_i2t, targets_t2i = itc_targets(sim_i2t_m, sim_t2i_m, None, alpha)
        loss_ita = itc_loss(sim_i2t, sim_t2i, targets_i2t, targets_t2i)
        self.dequeue_and_enqueue(image_feat_m, text_feat_m)

        # ITM: in-batch hard negatives from the ITC similarities (this process only, as the original)
        if self.use_itm:
            neg_image, neg_text = sample_hard_negatives(sim_i2t, sim_t2i, "pretrain", generator=generator)
            enc_ids = with_first_token(input_ids, "enc")
            images, ids, mask, labels = build_itm_batch(image_embeds, enc_ids, attention_mask, neg_image, neg_text)
            loss_itm = itm_loss(model.itm_logits(images, ids, mask, first_token="enc"), labels)
        else:
            loss_itm = image_feat.new_zeros(())

        loss_lm = self.lm_loss(image_embeds, input_ids, attention_mask)
        out = {"loss_ita": loss_ita, "loss_itm": loss_itm, "loss_lm": loss_lm, "loss": loss_ita + loss_itm + loss_lm}
        return out, image_embeds

    def lm_loss(
        self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """The LM loss of captions ``input_ids`` (``[CLS]`` first, replaced by ``[DEC]``) of images ``image_embeds``.

        Pads are unsupervised. The loss is a mean over supervised tokens, so the 30,524-way head is applied at those
        positions only (the same loss and gradients as over all positions, less time)."""
        model = self.model
        decoder = model.text_decoder
        input_ids = input_ids.to(image_embeds.device)
        hidden = decoder.bert(
            with_first_token(input_ids, "dec"),
            attention_mask=attention_mask.to(image_embeds.device),
            encoder_hidden_states=image_embeds,
            is_decoder=True,
        ).last_hidden_state
        targets = input_ids[:, 1:]
        keep = targets != model.config.text.pad_token_id
        logits = decoder.cls.predictions(hidden[:, :-1][keep])
        return F.cross_entropy(logits.float(), targets[keep], label_smoothing=self.label_smoothing)


class RetrievalObjective(MomentumQueues):
    """``BLIP_Retrieval.forward``: idx-aware ITC (momentum distillation) + ITM on a :class:`BlipRetrieval`.

    Args:
        model: the retrieval model.
        queue_size: 57600 in both recipes; the global batch must divide it.
        momentum: 0.995.
        alpha: default distillation weight (ramp with :func:`openblip.losses.momentum_alpha`, ``warmup_epochs=1``).
        negative_all_rank: draw ITM negatives from the batches of every rank (COCO recipe) instead of the local
            batch (Flickr recipe). Image tokens are gathered with gradient, texts and ids without.
        embed_dim: optional check of the ITC width.
    """

    ptr_name = "ptr_queue"
    has_idx_queue = True

    def __init__(
        self,
        model: BlipRetrieval,
        queue_size: int = 57600,
        momentum: float = 0.995,
        alpha: float = 0.4,
        negative_all_rank: bool = False,
        embed_dim: int | None = None,
    ) -> None:
        super().__init__(model, queue_size, momentum, alpha, embed_dim)
        self.negative_all_rank = bool(negative_all_rank)

    def itc_positive_mask(self, idx: torch.Tensor) -> torch.Tensor:
        """``[B, B + Q]`` boolean ``idx == [idx_batch ; idx_queue]``: every caption of the same image is positive."""
        idx = idx.reshape(-1, 1).to(self.idx_queue.device)
        idx_all = torch.cat([idx.t(), self.idx_queue], dim=1)
        return torch.eq(idx, idx_all)

    def _gather_texts(
        self, ids: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Local and all-rank texts padded to one length (ranks may pad their batches differently)."""
        if world_size() == 1:
            return ids, mask, ids, mask
        length = concat_all_gather(torch.tensor([ids.shape[1]], device=ids.device))
        pad = int(length.max()) - ids.shape[1]
        if pad:
            ids = F.pad(ids, (0, pad), value=self.model.config.text.pad_token_id)
            mask = F.pad(mask, (0, pad), value=0)
        return ids, mask, concat_all_gather(ids), concat_all_gather(mask)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        idx: torch.Tensor,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """One fine-tuning step's losses ``{"loss_ita", "loss_itm", "loss"}`` (``loss = loss_ita + loss_itm``).

        Args:
            pixel_values: ``[B, 3, S, S]``.
            input_ids, attention_mask: ``[B, L]`` tokenizer output (the original pads to 35).
            idx: ``[B]`` image ids (contiguous index of the image in the annotation file): captions with the same
                id are positives of each other in ITC and never drawn as ITM negatives.
            alpha: distillation weight for this step (default ``self.alpha``).
            generator: for the hard-negative draws.
        """
        model = self.model
        alpha = self.alpha if alpha is None else float(alpha)
        device = model.device
        input_ids = input_ids.to(device)
        attention_mask = _ones_mask(input_ids, attention_mask)
        idx = idx.to(device).reshape(-1, 1).long()
        bs = input_ids.shape[0]
        if idx.shape[0] != bs:
            raise ValueError(f"{idx.shape[0]} ids for {bs} texts")
        self.check_batch_size(bs)
        temp = self._clamp_temp()

        # ITC with idx-aware targets
        image_embeds = model.encode_image(pixel_values)
        image_feat = model.image_features(image_embeds)
        text_feat = model.text_features(input_ids, attention_mask)
        positives = self.itc_positive_mask(idx)
        with torch.no_grad():
            if self.update_momentum:
                self.momentum_update()
            image_feat_m, text_feat_m = self.momentum_features(pixel_values, input_ids, attention_mask)
        sim_i2t, sim_t2i, sim_i2t_m, sim_t2i_m = self._itc_sims(image_feat, text_feat, image_feat_m, text_feat_m, temp)
        targets_i2t, targets_t2i = itc_targets(sim_i2t_m, sim_t2i_m, positives, alpha)
        loss_ita = itc_loss(sim_i2t, sim_t2i, targets_i2t, targets_t2i)
        idxs = concat_all_gather(idx)
        self._enqueue(concat_all_gather(image_feat_m), concat_all_gather(text_feat_m), idxs)

        # ITM with negatives that never share the image id
        enc_ids = with_first_token(input_ids, "enc")
        if self.negative_all_rank:
            with torch.no_grad():
                image_feat_world = concat_all_gather(image_feat)
                text_feat_world = concat_all_gather(text_feat)
                s_i2t = image_feat.detach() @ text_feat_world.t() / temp
                s_t2i = text_feat.detach() @ image_feat_world.t() / temp
            neg_image, neg_text = sample_hard_negatives(
                s_i2t, s_t2i, "retrieval", idx=idx.view(-1), generator=generator, candidate_idx=idxs.view(-1)
            )
            image_pool = all_gather_with_grad(image_embeds)
            enc_ids, attention_mask, ids_pool, mask_pool = self._gather_texts(enc_ids, attention_mask)
            batch = build_itm_batch(
                image_embeds, enc_ids, attention_mask, neg_image, neg_text, image_pool, ids_pool, mask_pool
            )
        else:
            with torch.no_grad():
                s_i2t = image_feat.detach() @ text_feat.detach().t() / temp
                s_t2i = text_feat.detach() @ image_feat.detach().t() / temp
            neg_image, neg_text = sample_hard_negatives(
                s_i2t, s_t2i, "retrieval", idx=idx.view(-1), generator=generator
            )
            batch = build_itm_batch(image_embeds, enc_ids, attention_mask, neg_image, neg_text)
        images, ids, mask, labels = batch
        loss_itm = itm_loss(model.itm_logits(images, ids, mask, first_token="enc"), labels)
        return {"loss_ita": loss_ita, "loss_itm": loss_itm, "loss": loss_ita + loss_itm}


class CaptionObjective(nn.Module):
    """``BLIP_Decoder.forward``: LM loss with the prompt (``[DEC] a picture of``) and pads unsupervised.

    Args:
        model: the captioning model.
        prompt_length: ``len(tokenizer(prompt).input_ids) - 1``: 4 for ``'a picture of '``. Targets at positions
            ``< prompt_length`` are ``-100``. Captions are ``prompt + caption``, tokenized with
            ``padding='longest', truncation=True, max_length=40``.
        label_smoothing: 0.1.
    """

    def __init__(self, model: BlipCaption, prompt_length: int = 4, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if not isinstance(model, BlipCaption):
            raise TypeError(f"CaptionObjective wraps a BlipCaption, got {type(model).__name__}")
        self.model = model
        self.prompt_length = int(prompt_length)
        self.label_smoothing = label_smoothing

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"loss_lm", "loss"}`` (the same tensor) for ``[B, L]`` prompted captions."""
        input_ids = input_ids.to(self.model.device)
        attention_mask = _ones_mask(input_ids, attention_mask)
        labels = input_ids.masked_fill(input_ids == self.model.config.text.pad_token_id, -100)
        labels[:, : self.prompt_length] = -100
        logits = self.model(pixel_values, input_ids, attention_mask)
        loss = lm_loss(logits, labels, self.label_smoothing)
        return {"loss_lm": loss, "loss": loss}


class VQAObjective(nn.Module):
    """``BLIP_VQA.forward(train=True)``: weighted answer-decoder loss over question states.

    The question is encoded with ``[ENC]`` over the image; its states (and mask) are repeated ``n[b]`` times for
    the ``n[b]`` answers of question ``b``; the answer decoder (``[DEC]`` first) cross-attends to them. Each
    answer's loss is the label-smoothed CE *summed* over its tokens (``[SEP]`` included, pads excluded); the
    step loss is ``sum(weight * loss) / B``.
    """

    def __init__(self, model: BlipVQA, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if not isinstance(model, BlipVQA):
            raise TypeError(f"VQAObjective wraps a BlipVQA, got {type(model).__name__}")
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(
        self,
        pixel_values: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor | None,
        answer_ids: torch.Tensor,
        answer_mask: torch.Tensor | None,
        n: Sequence[int] | torch.Tensor,
        weights: torch.Tensor,
        image_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{"loss"}``.

        Args:
            pixel_values: ``[B, 3, S, S]`` (``[I, 3, S, S]`` with ``image_index``).
            question_ids, question_mask: ``[B, Lq]`` (the original: ``padding='longest', max_length=35``).
            answer_ids, answer_mask: ``[A, La]`` answers of all questions in order (``padding='longest'``, no
                truncation), ``A = sum(n)``.
            n: answers per question, ``[B]``.
            weights: ``[A]`` answer weights.
            image_index: ``[B]``, optional: question ``b`` is about image ``image_index[b]`` of ``pixel_values``
                (several questions per image: the ViT runs once per image, not once per question).
        """
        model = self.model
        device = model.device
        question_ids = question_ids.to(device)
        question_mask = _ones_mask(question_ids, question_mask)
        answer_ids = answer_ids.to(device)
        answer_mask = _ones_mask(answer_ids, answer_mask)
        n = torch.as_tensor(n, dtype=torch.long, device=device).reshape(-1)
        b = question_ids.shape[0]
        if n.numel() != b:
            raise ValueError(f"n has {n.numel()} entries for {b} questions")
        if int(n.sum()) != answer_ids.shape[0]:
            raise ValueError(f"sum(n) = {int(n.sum())} answers expected, got {answer_ids.shape[0]}")
        image_embeds = model.encode_image(pixel_values)
        if image_index is not None:
            image_embeds = image_embeds[torch.as_tensor(image_index, dtype=torch.long, device=image_embeds.device)]
        if image_embeds.shape[0] != b:
            raise ValueError(f"{image_embeds.shape[0]} images for {b} questions (pass image_index)")
        question_states = model.encode_question(image_embeds, question_ids, question_mask, "enc")
        states = question_states.repeat_interleave(n, dim=0)
        states_mask = question_mask.repeat_interleave(n, dim=0)
        labels = answer_ids.masked_fill(answer_ids == model.config.text.pad_token_id, -100)
        logits = model.answer_logits(states, states_mask, answer_ids, answer_mask)
        per_answer = lm_loss(logits, labels, self.label_smoothing, reduction="none")
        loss = vqa_loss(per_answer, weights.to(device), b)
        return {"loss": loss}


class NLVRObjective(nn.Module):
    """``BLIP_NLVR.forward(train=True)``: cross-entropy of ``cls_head([ENC] state)``."""

    def __init__(self, model: BlipNLVR) -> None:
        super().__init__()
        if not isinstance(model, BlipNLVR):
            raise TypeError(f"NLVRObjective wraps a BlipNLVR, got {type(model).__name__}")
        self.model = model

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        targets: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """``{"loss", "logits"}`` for ``pixel_values = cat([images0, images1])`` ``[2B, ...]`` and targets ``[B]``."""
        input_ids = input_ids.to(self.model.device)
        logits = self.model(pixel_values, input_ids, _ones_mask(input_ids, attention_mask))
        return {"loss": nlvr_loss(logits, targets.to(logits.device).long()), "logits": logits}
