"""Optimizer and learning-rate schedules of the original BLIP training scripts.

**Optimizer** (every recipe, spec §4): ``torch.optim.AdamW(model.parameters(), lr, weight_decay=0.05)`` with
torch's default betas (0.9, 0.999) and eps 1e-8. There are no parameter groups: weight decay applies to
**every** parameter, biases, LayerNorm weights, ``pos_embed``, ``cls_token`` and the ITC temperature ``temp``
included. Modern recipes usually exempt those; BLIP does not, and :func:`build_optimizer` reproduces that.
Parameters that never receive a gradient (the momentum encoders, ``requires_grad=False``) are skipped by AdamW,
so decay never touches them either; :func:`build_optimizer` leaves them out of the optimizer altogether.

**Schedules** (``utils.py``), each a pure function of its arguments:

* :func:`cosine_lr` -- ``cosine_lr_schedule``: fine-tuning sets it **once per epoch** (epoch 0 uses ``init_lr``,
  the last epoch ``min_lr + (init - min) * 0.5 * (1 + cos(pi * (E - 1) / E))``); no warm-up.
* :func:`warmup_lr` -- ``warmup_lr_schedule``: pre-training epoch 0, set before every iteration ``i``,
  ``min(max_lr, init_lr + (max_lr - init_lr) * i / max_step)`` (1e-6 -> 3e-4 over 3000 steps, then flat).
* :func:`step_lr` -- ``step_lr_schedule``: pre-training from epoch 1 on, ``max(min_lr, init_lr * rate**epoch)``.
  The paper says the rate "decayed linearly with rate 0.85"; the released code (and this function) decays
  exponentially with 0.9.
* :func:`cosine_step_lr` -- not in the original: a per-step cosine (optionally after a linear warm-up) for short
  runs (demos, smoke tests), where a per-epoch schedule would barely move.

:class:`Schedule` bundles one of these with its parameters; it is stateless apart from the last value it set
(``lr`` is a function of ``(epoch, step_in_epoch, global_step)``), and its :meth:`Schedule.state_dict` is saved in
training checkpoints so that a resumed run can check that it continues with the same schedule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

SCHEDULES = ("cosine_epoch", "pretrain", "cosine_step", "constant")


def build_optimizer(
    params: nn.Module | Iterable[torch.Tensor],
    lr: float,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW with weight decay on every trainable parameter, as every BLIP recipe.

    Args:
        params: a module (its parameters with ``requires_grad``; tied parameters appear once) or an iterable of
            parameters.
        lr: initial learning rate (the schedule overwrites it before the first step).
        weight_decay: 0.05 in every recipe; applied to biases, norms, ``pos_embed`` and ``temp`` alike (the
            original passes ``model.parameters()`` as one group).
    """
    if isinstance(params, nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    else:
        params = list(params)
    if not params:
        raise ValueError("no trainable parameters to optimize")
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def cosine_lr(epoch: int, max_epoch: int, init_lr: float, min_lr: float = 0.0) -> float:
    """``cosine_lr_schedule``: ``min_lr + (init_lr - min_lr) * 0.5 * (1 + cos(pi * epoch / max_epoch))``."""
    if max_epoch <= 0:
        raise ValueError(f"max_epoch must be positive, got {max_epoch}")
    return (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / max_epoch)) + min_lr


def warmup_lr(step: int, max_step: int, init_lr: float, max_lr: float) -> float:
    """``warmup_lr_schedule``: ``min(max_lr, init_lr + (max_lr - init_lr) * step / max_step)``."""
    if max_step <= 0:
        return max_lr
    return min(max_lr, init_lr + (max_lr - init_lr) * step / max_step)


def step_lr(epoch: int, init_lr: float, min_lr: float = 1e-6, rate: float = 0.9) -> float:
    """``step_lr_schedule``: ``max(min_lr, init_lr * rate ** epoch)`` (the code's exponential 0.9 decay)."""
    return max(min_lr, init_lr * (rate**epoch))


def cosine_step_lr(
    step: int, total_steps: int, init_lr: float, min_lr: float = 0.0, warmup_steps: int = 0, warmup_lr: float = 0.0
) -> float:
    """Per-step cosine: linear ``warmup_lr -> init_lr`` over ``warmup_steps``, then cosine down to ``min_lr`` at
    ``total_steps`` (``step`` is 0-based: the value used for the ``step + 1``-th optimizer step)."""
    if step < warmup_steps:
        return warmup_lr + (init_lr - warmup_lr) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Schedule:
    """A learning-rate schedule: ``kind`` plus its parameters; :meth:`lr` is a pure function.

    Kinds:
        ``"cosine_epoch"``: :func:`cosine_lr` of the epoch (fine-tuning recipes).
        ``"pretrain"``: epoch 0 :func:`warmup_lr` of the step in the epoch, later epochs :func:`step_lr`.
        ``"cosine_step"``: :func:`cosine_step_lr` of the global step over ``total_steps``.
        ``"constant"``: ``init_lr``.
    """

    kind: str = "cosine_epoch"
    init_lr: float = 1e-5
    min_lr: float = 0.0
    max_epoch: int = 1
    warmup_steps: int = 0
    warmup_lr: float = 1e-6
    decay_rate: float = 0.9
    total_steps: int = 0
    last_lr: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; use one of {SCHEDULES}")

    def lr(self, epoch: int, step_in_epoch: int, global_step: int) -> float:
        """The learning rate for the optimizer step number ``global_step + 1`` (``step_in_epoch`` 0-based)."""
        if self.kind == "cosine_epoch":
            return cosine_lr(epoch, self.max_epoch, self.init_lr, self.min_lr)
        if self.kind == "pretrain":
            if epoch == 0:
                return warmup_lr(step_in_epoch, self.warmup_steps, self.warmup_lr, self.init_lr)
            return step_lr(epoch, self.init_lr, self.min_lr, self.decay_rate)
        if self.kind == "cosine_step":
            return cosine_step_lr(
                global_step, self.total_steps, self.init_lr, self.min_lr, self.warmup_steps, self.warmup_lr
            )
        return self.init_lr

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, step_in_epoch: int, global_step: int) -> float:
        """Set every parameter group's ``lr`` (as the original's schedule functions do) and return it."""
        value = self.lr(epoch, step_in_epoch, global_step)
        for group in optimizer.param_groups:
            group["lr"] = value
        self.last_lr = value
        return value

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for key, value in state.items():
            if key in names:
                setattr(self, key, value)

    def differences(self, state: Mapping[str, Any]) -> list[str]:
        """Parameters that differ from a saved state (``last_lr`` excluded)."""
        out = []
        for f in fields(self):
            if f.name == "last_lr" or f.name not in state:
                continue
            if state[f.name] != getattr(self, f.name):
                out.append(f"{f.name}: saved {state[f.name]!r}, now {getattr(self, f.name)!r}")
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any], max_epoch: int, total_steps: int) -> Schedule:
        """The schedule a recipe config asks for (keys ``schedule``, ``lr``, ``min_lr``, ``warmup_steps``,
        ``warmup_lr``, ``lr_decay_rate``)."""
        return cls(
            kind=config.get("schedule", "cosine_epoch"),
            init_lr=float(config["lr"]),
            min_lr=float(config.get("min_lr", 0.0)),
            max_epoch=int(max_epoch),
            warmup_steps=int(config.get("warmup_steps", 0) or 0),
            warmup_lr=float(config.get("warmup_lr", 1e-6)),
            decay_rate=float(config.get("lr_decay_rate", 0.9)),
            total_steps=int(total_steps),
        )
