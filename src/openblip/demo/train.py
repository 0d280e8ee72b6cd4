"""The demo's training: a compact step-budgeted loop over the library's objectives.

* Supervised ViT stage (:func:`pretrain_vit`, default preset only): the ViT alone names each object's shape, colour
  and size from the patch tokens under it, as BLIP starts from an ImageNet-trained ViT instead of random weights.
* Pre-training: :class:`openblip.train.objectives.PretrainObjective` (ITC with momentum distillation and a
  feature queue, ITM with in-batch hard negatives, LM with label smoothing; ``loss = loss_ita + loss_itm +
  loss_lm``), its ``use_queue``/``use_itm`` switches set per step for the from-scratch phases
  (:attr:`DemoConfig.phases`); :class:`DemoPretrainObjective` adds the optional joint VQA loss.
* VQA: a :class:`openblip.models.blip.BlipVQA` whose ViT, question encoder and answer decoder are initialised from
  the pre-trained ``visual_encoder``, ``text_encoder`` and ``text_decoder`` (as the original initialises VQA from
  the pre-training checkpoint), fine-tuned with :class:`openblip.train.objectives.VQAObjective`.

Optimiser: AdamW (weight decay on every parameter, as the original), learning rate with a linear warm-up then a
cosine decay to ``min_lr`` over the step budget (fine-tuning: cosine, no warm-up, as the original).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from openblip.data.synthetic import COLORS, SHAPES, SIZES
from openblip.demo.data import EpochSampler, TrainData, flip_batch
from openblip.demo.settings import DemoConfig
from openblip.losses import (
    lm_loss,
    momentum_alpha,
    vqa_loss,
)
from openblip.models.blip import BlipBase, BlipPretrain, BlipVQA, create_model
from openblip.tokenizer import get_tokenizer
from openblip.train.init_weights import sincos_pos_embed_
from openblip.train.objectives import PretrainObjective, VQAObjective

Log = Callable[[str], None]


class DemoPretrainObjective(PretrainObjective):
    """:class:`PretrainObjective` (with its ``use_queue``/``use_itm`` switches for the from-scratch phases) plus the
    optional joint VQA loss on the same images."""

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
        vqa: tuple | None = None,
        extra_lm: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """As :meth:`PretrainObjective.forward`; with ``vqa = (vqa_model, question_ids, question_mask, answer_ids,
        answer_mask, n, weights)`` also ``loss_vqa`` (the :class:`VQAObjective` loss on the same images, whose ViT
        tokens are reused) is computed and added to ``loss``."""
        out, image_embeds = self.losses(pixel_values, input_ids, attention_mask, alpha, generator)
        if extra_lm is not None:  # more captions of the same images for the LM: the mean of the two LM losses
            lm = (out["loss_lm"] + self.lm_loss(image_embeds, *extra_lm)) / 2
            out["loss"] = out["loss"] - out["loss_lm"] + lm
            out["loss_lm"] = lm
        if vqa is not None:
            out["loss_vqa"] = joint_vqa_loss(image_embeds, *vqa, label_smoothing=self.label_smoothing)
            out["loss"] = out["loss"] + out["loss_vqa"]
        return out


def joint_vqa_loss(
    image_embeds: torch.Tensor,
    vqa_model: BlipVQA,
    question_ids: torch.Tensor,
    question_mask: torch.Tensor,
    answer_ids: torch.Tensor,
    answer_mask: torch.Tensor,
    n: list[int],
    weights: torch.Tensor,
    label_smoothing: float = 0.1,
) -> torch.Tensor:
    """:class:`openblip.train.objectives.VQAObjective`'s loss given the images' ViT tokens."""
    states = vqa_model.encode_question(image_embeds, question_ids, question_mask, "enc")
    counts = torch.as_tensor(n, dtype=torch.long)
    states = states.repeat_interleave(counts, dim=0)
    states_mask = question_mask.repeat_interleave(counts, dim=0)
    labels = answer_ids.masked_fill(answer_ids == vqa_model.config.text.pad_token_id, -100)
    logits = vqa_model.answer_logits(states, states_mask, answer_ids, answer_mask)
    per_answer = lm_loss(logits, labels, label_smoothing, reduction="none")
    return vqa_loss(per_answer, weights, question_ids.shape[0])


def lr_at(step: int, total: int, lr: float, min_lr: float = 0.0, warmup: int = 0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` to ``min_lr`` at ``total``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr`` times the group's ``lr_scale`` (1 when absent)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def build_pretrain_model(cfg: DemoConfig) -> BlipPretrain:
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.blip_config("pretrain"))
    assert isinstance(model, BlipPretrain)
    if cfg.pos_init == "sincos":
        sincos_pos_embed_(model.visual_encoder, cfg.pos_init_scale)
    elif cfg.pos_init != "timm":
        raise ValueError(f"pos_init must be 'sincos' or 'timm', got {cfg.pos_init!r}")
    return model


class _Progress:
    def __init__(self, name: str, total: int, log: Log, every: int) -> None:
        self.name, self.total, self.log, self.every = name, total, log, max(1, every)
        self.start = time.perf_counter()
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def update(self, step: int, losses: dict[str, float], lr: float) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        done = step + 1
        if done % self.every and done != self.total:
            return
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        parts = " ".join(f"{k} {v / self.counts[k]:.3f}" for k, v in self.sums.items())
        self.log(
            f"[{self.name}] step {done}/{self.total}  {parts}  lr {lr:.2e}  "
            f"{rate:.2f} steps/s  elapsed {elapsed:.0f}s  eta {eta:.0f}s"
        )
        self.sums, self.counts = {}, {}

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def object_pooling(
    objects: list[tuple], grid: int, flipped: bool, core: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object of a scene: mean-pooling weights over ``grid x grid`` patch tokens, ``[K, grid * grid]``, and its
    labels ``[K, 3]`` (shape, colour, size indices). ``flipped``: for the horizontally mirrored image.

    ``core=None``: the patches whose centres lie inside the object's bounding box; ``core=c``: those within ``c`` x
    its radius of its centre (a box's corners are background, and for a circle or a triangle a quarter of the box or
    more). Either way, when no patch centre qualifies, the patch under the object's centre (on a patch border, all
    those it touches, so that the mirrored image pools the mirrored patches)."""
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    weights, labels = [], []
    for x, y, r, shape, colour, size in objects:
        x = 1.0 - x if flipped else x
        dy, dx = (centres - y)[:, None], (centres - x)[None, :]
        dist2 = dy**2 + dx**2
        if core is None:
            inside = (dy.abs() <= r) & (dx.abs() <= r)
        else:
            inside = dist2 <= (core * r) ** 2
        if not bool(inside.any()):
            inside = dist2 <= dist2.min() + 1e-6
        weights.append(inside.flatten().float() / inside.sum())
        labels.append((shape, colour, size))
    return torch.stack(weights), torch.tensor(labels, dtype=torch.long)


def pretrain_vit(model: BlipPretrain, cfg: DemoConfig, data: TrainData, log: Log) -> dict[str, float]:
    """The supervised ViT stage: ``cfg.vit_steps`` steps of naming each object's shape, colour and size from the
    mean of the patch tokens under it (``cfg.vit_pool``: its bounding box, or its core, see :func:`object_pooling`;
    three linear heads, discarded afterwards; cross-entropy,
    AdamW at ``cfg.lr`` with a 5% warm-up and a cosine decay; flips as pre-training). BLIP starts from an
    ImageNet-trained ViT, never from random weights; this is the demo's stand-in for that starting point, on the
    train scenes' own annotations. Returns ``{"steps", "seconds", "final_loss_vit", "final_shape_acc"}``."""
    steps = int(cfg.vit_steps)
    if steps <= 0:
        return {"steps": 0, "seconds": 0.0}
    if cfg.vit_pool not in ("box", "core"):
        raise ValueError(f"vit_pool must be 'box' or 'core', got {cfg.vit_pool!r}")
    core = None if cfg.vit_pool == "box" else 0.75
    if len(data.objects) != len(data.pixels):
        raise ValueError("the train data has no object annotations (TrainData.objects)")
    vit = model.visual_encoder
    grid = vit.image_size // vit.patch_size
    width = vit.cfg.width
    heads = torch.nn.ModuleList(
        [torch.nn.Linear(width, len(SHAPES)), torch.nn.Linear(width, len(COLORS)), torch.nn.Linear(width, len(SIZES))]
    )
    params = [*vit.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    cache: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]] = {}
    warmup = int(round(0.05 * steps))
    progress = _Progress("vit", steps, log, cfg.log_every)
    vit.train()
    last: dict[str, list[float]] = {}
    for step in range(steps):
        idx = torch.randint(len(data.objects), (cfg.batch_size,), generator=gen).tolist()
        flips = (torch.rand(len(idx), generator=gen) < 0.5).tolist()
        pixels = data.pixels[idx]
        pixels = torch.where(torch.tensor(flips)[:, None, None, None], pixels.flip(-1), pixels)
        pooled = []
        for i, f in zip(idx, flips):
            if (i, f) not in cache:
                cache[(i, f)] = object_pooling(data.objects[i], grid, f, core)
            pooled.append(cache[(i, f)])
        owner = torch.cat([torch.full((len(p[1]),), b) for b, p in enumerate(pooled)])
        weights = torch.cat([p[0] for p in pooled])
        labels = torch.cat([p[1] for p in pooled])
        lr = lr_at(step, steps, cfg.lr, cfg.min_lr, warmup)
        _set_lr(opt, lr)
        tokens = vit(pixels)[:, 1:]  # [B, grid * grid, D]
        feats = torch.bmm(weights[:, None, :], tokens[owner]).squeeze(1)
        logits = [h(feats) for h in heads]
        loss = sum(torch.nn.functional.cross_entropy(z, labels[:, j]) for j, z in enumerate(logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        shape_acc = float((logits[0].argmax(-1) == labels[:, 0]).float().mean())
        losses = {"loss_vit": float(loss.detach()), "shape_acc": shape_acc}
        for k, v in losses.items():
            last.setdefault(k, []).append(v)
            last[k] = last[k][-max(1, cfg.log_every) :]
        progress.update(step, losses, lr)
    stats: dict[str, float] = {"steps": steps, "seconds": progress.seconds}
    stats.update({f"final_{k}": sum(v) / len(v) for k, v in last.items()})
    return stats


def pretrain(model: BlipPretrain, cfg: DemoConfig, data: TrainData, log: Log) -> dict[str, float]:
    """``cfg.steps`` pre-training steps. Returns ``{"steps", "seconds", "final_*"}`` (final losses are means over
    the last ``log_every`` steps)."""
    tok = get_tokenizer()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    queue_size = cfg.queue_size
    if queue_size % cfg.batch_size:
        queue_size = max(1, round(queue_size / cfg.batch_size)) * cfg.batch_size
    obj = DemoPretrainObjective(model, queue_size=queue_size, momentum=cfg.ema_momentum, alpha=cfg.alpha).train()
    params = [p for p in obj.parameters() if p.requires_grad]
    vqa_head = None
    if cfg.joint_vqa and cfg.lm_all_captions:
        raise ValueError("joint_vqa and lm_all_captions cannot be combined")
    if cfg.joint_vqa:
        # a BlipVQA sharing the ViT and the text encoder (its question encoder); its own answer decoder
        vqa_head = create_model(cfg.blip_config("vqa"))
        vqa_head.visual_encoder = model.visual_encoder
        vqa_head.text_encoder = model.text_encoder
        vqa_head.train()
        params += list(vqa_head.text_decoder.parameters())
        questions_of: dict[int, list[int]] = {}
        for q, i in enumerate(data.vqa_image):
            questions_of.setdefault(i, []).append(q)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = EpochSampler(len(data.captions), gen)
    warmup = int(round(cfg.warmup_frac * cfg.steps))
    warm, warm_itm = cfg.phases
    ramp = max(1.0, cfg.alpha_ramp_frac * cfg.steps)
    progress = _Progress("pretrain", cfg.steps, log, cfg.log_every)
    last: dict[str, list[float]] = {}
    for step in range(cfg.steps):
        idx = sampler.take(cfg.batch_size)
        # one caption per scene and batch (scenes, not caption entries, are sampled): no scene appears twice
        picks = [int(torch.randint(len(data.captions[i]), (1,), generator=gen)) for i in idx]
        texts = [data.captions[i][c] for i, c in zip(idx, picks)]
        if cfg.lm_all_captions:  # the scene's other reference joins the LM (flipped with the image)
            texts = [[t, data.captions[i][(c + 1) % len(data.captions[i])]] for t, i, c in zip(texts, idx, picks)]
        use_vqa = vqa_head is not None and step >= warm_itm
        if use_vqa:
            qs = [questions_of[i][int(torch.randint(len(questions_of[i]), (1,), generator=gen))] for i in idx]
            texts = [[t, data.vqa_question[q], *data.vqa_answers[q]] for t, q in zip(texts, qs)]
        pixels = data.pixels[idx]
        if cfg.flip:
            pixels, texts = flip_batch(pixels, texts, gen)
        vqa_inputs = None
        if use_vqa:
            if step == warm_itm:  # the answer decoder starts from the (warmed-up) pre-trained decoder, as the original
                vqa_head.text_decoder.load_state_dict(model.text_decoder.state_dict())
            qe = tok([t[1] for t in texts], padding="longest", truncation=True, max_length=35)
            ae = tok([a for t in texts for a in t[2:]], padding="longest")
            n = [len(t) - 2 for t in texts]
            weights = torch.tensor([w for q in qs for w in data.vqa_weights[q]], dtype=torch.float32)
            vqa_inputs = (vqa_head, qe["input_ids"], qe["attention_mask"], ae["input_ids"], ae["attention_mask"], n)
            vqa_inputs = (*vqa_inputs, weights)
            texts = [t[0] for t in texts]
        extra_lm = None
        if cfg.lm_all_captions:
            extra = tok([t[1] for t in texts], padding="longest", truncation=True, max_length=30)
            extra_lm = (extra["input_ids"], extra["attention_mask"])
            texts = [t[0] for t in texts]
        enc = tok(texts, padding="longest", truncation=True, max_length=30)
        lr = lr_at(step, cfg.steps, cfg.lr, cfg.min_lr, warmup)
        _set_lr(opt, lr)
        # from-scratch warm-up: momentum encoders = online encoders, no queue, no distillation; then the original
        if step < warm:
            obj.momentum, obj.use_queue, alpha = 0.0, False, 0.0
        else:
            obj.momentum, obj.use_queue = cfg.ema_momentum, True
            alpha = momentum_alpha(cfg.alpha, 0, step - warm, cfg.steps, ramp / cfg.steps)
        obj.use_itm = step >= warm_itm
        out = obj(
            pixels,
            enc["input_ids"],
            enc["attention_mask"],
            alpha=alpha,
            generator=gen,
            vqa=vqa_inputs,
            extra_lm=extra_lm,
        )
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        losses = {k: float(out[k].detach()) for k in ("loss_ita", "loss_itm", "loss_lm", "loss_vqa") if k in out}
        if not obj.use_itm:
            losses.pop("loss_itm")
        for k, v in losses.items():
            last.setdefault(k, []).append(v)
            last[k] = last[k][-max(1, cfg.log_every) :]
        progress.update(step, losses, lr)
    model.eval()
    stats: dict[str, Any] = {"steps": cfg.steps, "seconds": progress.seconds, "temp": float(model.temp.detach())}
    stats.update({f"final_{k}": sum(v) / len(v) for k, v in last.items()})
    if vqa_head is not None:
        # a stand-alone copy (the joint head shares the pre-trained model's encoders)
        vqa = create_model(cfg.blip_config("vqa"))
        vqa.load_state_dict(vqa_head.state_dict(), strict=True)
        stats["vqa_model"] = vqa.eval()
    return stats


def task_model(model: BlipPretrain, cfg: DemoConfig, task: str) -> BlipBase:
    """A ``task`` model (``caption``, ``retrieval``, ``vqa``) whose every tensor is copied from the pre-trained model
    under the same name, as the original initialises its fine-tuning models from the pre-training checkpoint.

    * ``caption``: ``visual_encoder`` + ``text_decoder`` (the pre-trained LM, no prompt);
    * ``retrieval``: ``visual_encoder``, ``text_encoder``, projections, ``itm_head``, ``temp``;
    * ``vqa``: ``visual_encoder``, ``text_encoder`` (question encoder) and ``text_decoder`` (answer decoder, whose
      cross-attention starts from the pre-trained image cross-attention; text and vision widths are equal, so the
      shapes fit).
    """
    target = create_model(cfg.blip_config(task))
    src = model.state_dict()  # shared encoder/decoder tensors appear under both prefixes
    own = target.state_dict()
    missing = [k for k in own if k not in src]
    if missing:
        raise RuntimeError(f"the pre-trained model lacks {task} keys: {missing[:5]}")
    target.load_state_dict({k: src[k] for k in own}, strict=True)
    return target.eval()


def finetune_vqa(vqa: BlipVQA, cfg: DemoConfig, data: TrainData, log: Log) -> dict[str, float]:
    """``cfg.vqa_steps`` VQA fine-tuning steps (answer-weighted, label-smoothed answer LM loss)."""
    if cfg.vqa_steps <= 0:
        vqa.eval()
        return {"steps": 0, "seconds": 0.0}
    tok = get_tokenizer()
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    obj = VQAObjective(vqa).train()
    scale = float(cfg.vqa_vit_lr_scale)
    if not scale >= 0.0:
        raise ValueError(f"vqa_vit_lr_scale must be >= 0 (0 freezes the ViT), got {cfg.vqa_vit_lr_scale!r}")
    vit = {id(p) for p in vqa.visual_encoder.parameters()}
    # frozen (scale 0): no gradient, no update, and no backward pass through the ViT, for this fine-tuning only
    frozen = [p for p in vqa.visual_encoder.parameters() if p.requires_grad] if scale == 0.0 else []
    for p in frozen:
        p.requires_grad_(False)
    groups = [{"params": [p for p in vqa.parameters() if p.requires_grad and id(p) not in vit]}]
    if scale > 0.0:
        groups.append({"params": list(vqa.visual_encoder.parameters()), "lr_scale": scale})
    opt = torch.optim.AdamW(groups, lr=cfg.vqa_lr, weight_decay=cfg.weight_decay)
    per_image = max(1, int(cfg.vqa_questions_per_image))
    questions_of: dict[int, list[int]] = {}
    for q, i in enumerate(data.vqa_image):
        questions_of.setdefault(i, []).append(q)
    scenes = sorted(questions_of)
    sampler = EpochSampler(len(data.vqa_question) if per_image == 1 else len(scenes), gen)
    progress = _Progress("vqa", cfg.vqa_steps, log, cfg.log_every)
    last: list[float] = []
    for step in range(cfg.vqa_steps):
        if per_image == 1:  # the original: independent questions
            groups = [[i] for i in sampler.take(cfg.vqa_batch_size)]
            images = [data.vqa_image[g[0]] for g in groups]
        else:  # `per_image` questions of each of batch / per_image scenes, one ViT pass per scene
            images = [scenes[j] for j in sampler.take(max(1, cfg.vqa_batch_size // per_image))]
            groups = []
            for i in images:
                qs = questions_of[i]
                pick = torch.randperm(len(qs), generator=gen)[:per_image].tolist()
                groups.append([qs[k] for k in pick])
        idx = [q for g in groups for q in g]
        # per image: its questions and answers in one list of strings, so a flip swaps left/right in all of them
        texts = [[t for q in g for t in (data.vqa_question[q], *data.vqa_answers[q])] for g in groups]
        pixels = data.pixels[images]
        if cfg.flip:
            pixels, texts = flip_batch(pixels, texts, gen)
        questions, answers, n, image_index = [], [], [], []
        for k, (g, flat) in enumerate(zip(groups, texts)):
            pos = 0
            for q in g:
                m = len(data.vqa_answers[q])
                questions.append(flat[pos])
                answers.extend(flat[pos + 1 : pos + 1 + m])
                n.append(m)
                image_index.append(k)
                pos += 1 + m
        weights = torch.tensor([w for i in idx for w in data.vqa_weights[i]], dtype=torch.float32)
        q = tok(questions, padding="longest", truncation=True, max_length=35)
        a = tok(answers, padding="longest")
        lr = lr_at(step, cfg.vqa_steps, cfg.vqa_lr, cfg.min_lr, int(round(cfg.vqa_warmup_frac * cfg.vqa_steps)))
        _set_lr(opt, lr)
        out = obj(
            pixels,
            q["input_ids"],
            q["attention_mask"],
            a["input_ids"],
            a["attention_mask"],
            n,
            weights,
            image_index=torch.tensor(image_index),
        )
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        loss = float(out["loss"].detach())
        last = (last + [loss])[-max(1, cfg.log_every) :]
        progress.update(step, {"loss_vqa": loss}, lr)
    for p in frozen:  # only the parameters this fine-tuning froze
        p.requires_grad_(True)
    vqa.eval()
    return {"steps": cfg.vqa_steps, "seconds": progress.seconds, "final_loss_vqa": sum(last) / len(last)}
