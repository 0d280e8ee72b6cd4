"""Scaled dot-product attention shared by the ViT and the MED text transformer.

Two numerically equivalent paths:

* ``"sdpa"`` (default): :func:`torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel;
* ``"math"``: the explicit ``softmax(q k^T / sqrt(d) + mask) v`` that the original code writes out (timm ViT,
  HF-BERT 4.15 ``BertSelfAttention``). Kept as the reference; tests check both agree.

Select the path globally with :func:`set_attention_backend` or temporarily with :func:`attention_backend`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

_BACKEND = "sdpa"
_BACKENDS = ("sdpa", "math")


def set_attention_backend(name: str) -> None:
    """Use ``"sdpa"`` (fused) or ``"math"`` (explicit reference) attention everywhere."""
    global _BACKEND
    if name not in _BACKENDS:
        raise ValueError(f"attention backend must be one of {_BACKENDS}, got {name!r}")
    _BACKEND = name


def get_attention_backend() -> str:
    return _BACKEND


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Context manager that switches the attention backend and restores the previous one."""
    previous = _BACKEND
    set_attention_backend(name)
    try:
        yield
    finally:
        set_attention_backend(previous)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Multi-head attention on ``[B, H, Lq, Dh]`` queries and ``[B, H, Lk, Dh]`` keys/values.

    ``mask`` is *additive* (0 for kept positions, a large negative number for masked ones) and broadcasts
    to ``[B, H, Lq, Lk]``, exactly like the original's ``attention_scores + attention_mask``.
    """
    if _BACKEND == "sdpa":
        if mask is not None and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    probs = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs, v)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, L, H*Dh]`` -> ``[B, H, L, Dh]``."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, L, Dh]`` -> ``[B, L, H*Dh]``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)
