"""Distributed helpers that degrade to the identity in a single process.

The original (``models/blip_pretrain.py``, ``blip_retrieval.py``) calls ``torch.distributed`` unconditionally,
so its training code needs an initialised process group even on one GPU. Here every helper checks
:func:`is_dist` and, without a process group (or with a world of one), returns its input.

All gathers concatenate along dim 0 and need the same shape on every rank (as ``torch.distributed.all_gather``
does): pad texts to a common length and drop the last incomplete batch (the original loaders use
``drop_last=True`` for training).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_dist() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_dist() else 1


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """``cat([tensor of rank 0, rank 1, ...], dim=0)``, **without gradient** (the original's ``concat_all_gather``).

    Single process: ``tensor.detach()``.
    """
    if world_size() == 1:
        return tensor.detach()
    tensor = tensor.detach().contiguous()
    gathered = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(gathered, tensor)
    return torch.cat(gathered, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient for this rank's shard (the original's ``GatherLayer``).

    Each rank's loss may use every rank's shard; the gradient of the *sum* of the ranks' losses with respect
    to the local shard is the all-reduced (summed) gradient slice of this rank. DDP then averages over ranks
    as it does for any parameter.
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return tuple(gathered)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack([g.contiguous() for g in grads])
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 keeping the autograd graph: gradients flow back to each rank's own shard.

    Single process: ``tensor`` itself (graph unchanged).
    """
    if world_size() == 1:
        return tensor
    return torch.cat(_GatherWithGrad.apply(tensor), dim=0)
