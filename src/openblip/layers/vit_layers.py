"""Small building blocks of the ViT: drop-path, MLP, position-embedding resizing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from openblip.layers.linear import Linear


class DropPath(nn.Module):
    """Stochastic depth per sample (timm ``DropPath``): zero a residual branch with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """``fc1 -> GELU (exact erf) -> fc2`` (timm names; dropout is 0 in BLIP)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def resize_pos_embed(pos_embed: torch.Tensor, num_patches: int, num_extra_tokens: int = 1) -> torch.Tensor:
    """Resize a ``[1, extra + g*g, D]`` ViT position embedding to ``num_patches`` patch positions.

    Same rule as the original ``interpolate_pos_embed``: the extra (CLS) rows are kept, the patch grid is
    reshaped to a square and resized with bicubic interpolation, ``align_corners=False``.
    Returns the input unchanged when the grid already matches.
    """
    old_patches = pos_embed.shape[-2] - num_extra_tokens
    old_size, new_size = math.isqrt(old_patches), math.isqrt(num_patches)
    if old_size * old_size != old_patches or new_size * new_size != num_patches:
        raise ValueError(f"position embedding grids must be square: {old_patches} -> {num_patches} patches")
    if old_size == new_size:
        return pos_embed
    dim = pos_embed.shape[-1]
    extra, grid = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    grid = grid.reshape(1, old_size, old_size, dim).permute(0, 3, 1, 2)
    orig_dtype = grid.dtype
    grid = F.interpolate(grid.float(), size=(new_size, new_size), mode="bicubic", align_corners=False)
    grid = grid.to(orig_dtype).permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat([extra, grid], dim=1)
