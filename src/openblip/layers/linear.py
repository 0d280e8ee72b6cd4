"""``nn.Linear`` whose float32 CPU matrix products run on oneDNN instead of the BLAS that ``F.linear`` calls.

Why: PyTorch's CPU wheels multiply float32 matrices with MKL's ``sgemm``; on AMD CPUs MKL does not use its fastest
kernels. On this project's 2-core AMD EPYC (AVX-512) MKL reaches ~210 GFLOP/s on every shape we measured, while
oneDNN, which PyTorch also ships (it already runs bfloat16 ``F.linear``), reaches ~470-500 GFLOP/s in float32 on the
same shapes (ViT-B: 197 x 768 x 3072; decoding: 3 rows x 768 x 3072 takes 78 us instead of 348 us). The results are
float32 products with float32 accumulation; only the summation order differs (~1e-6 relative).
``benchmarks/bench_inference.py`` measures both GEMMs in the same run.

The oneDNN call is ``torch.ops.mkldnn._linear_pointwise`` (the operator ``torch.compile`` lowers CPU linears to).
It is used only for float32 tensors on the CPU when PyTorch was built with oneDNN; everything else (CUDA,
bfloat16, float16, and anything under ``torch.autocast`` on the CPU, whose casting policy only ``F.linear`` carries)
goes through ``F.linear`` unchanged. Under autograd the forward and the input gradient run on
oneDNN; the weight gradient (``grad_out^T @ x``, which oneDNN would need transposed copies for) stays on
``torch.matmul``. ``set_linear_backend("aten")`` or the environment variable ``OPENBLIP_LINEAR=aten`` switches
every ``Linear`` back to ``F.linear``.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Linear", "linear", "linear_backend", "set_linear_backend"]

_BACKENDS = ("onednn", "aten")


def _default_backend() -> str:
    name = os.environ.get("OPENBLIP_LINEAR", "onednn").strip().lower() or "onednn"
    if name not in _BACKENDS:
        raise ValueError(f"OPENBLIP_LINEAR={name!r}: expected one of {_BACKENDS}")
    return name


_backend = _default_backend()


def _onednn_available() -> bool:
    """oneDNN is built in and its linear operator runs and agrees with ``F.linear`` on a small product (builds
    where the operator is missing or unsupported, e.g. some ARM ones, fall back to ``F.linear``)."""
    try:
        if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
            return False
        x, w, b = torch.linspace(-1, 1, 12).reshape(3, 4), torch.linspace(-2, 1, 20).reshape(5, 4), torch.ones(5)
        with torch.no_grad():
            out = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
        return bool(torch.allclose(out, F.linear(x, w, b), atol=1e-5))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


_ONEDNN = _onednn_available()


def set_linear_backend(name: str) -> None:
    """``"onednn"`` (default where available) or ``"aten"`` (plain ``F.linear``) for every :class:`Linear`."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"unknown linear backend {name!r}: expected one of {_BACKENDS}")
    _backend = name


def linear_backend() -> str:
    """The backend float32 CPU linears use now (``"aten"`` where oneDNN is not available)."""
    return _backend if _ONEDNN else "aten"


def _mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # oneDNN accepts strided operands but multiplies some of them on a generic kernel. Measured (2 cores, 577 x 768
    # by 768 x 768): a weight with row stride 3 x 768 took 3.5 s instead of 1.8 ms; an input with that row stride
    # 15.6 ms instead of 12.5 ms including the copy. Contiguous operands (a no-op for parameters and most
    # activations) keep every call on the fast kernel.
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight.contiguous(), bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _mm(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _mm(grad, weight.t(), None)
        g2 = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_w = g2.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 has no device-type argument
        return torch.is_autocast_cpu_enabled()


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        _ONEDNN
        and _backend == "onednn"
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() >= 2
        and x.numel() > 0
        # autocast casts F.linear's operands to its dtype; the oneDNN operator has no autocast rule and would
        # silently run a `--bf16` training step's linears in float32
        and not _cpu_autocast()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, on oneDNN for float32 CPU tensors (see the module docstring)."""
    if not _use_onednn(x, weight):
        return F.linear(x, weight, bias)
    needs_grad = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and needs_grad:
        return _OneDNNLinear.apply(x, weight, bias)
    return _mm(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state-dict keys and initialisation) whose forward is :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
