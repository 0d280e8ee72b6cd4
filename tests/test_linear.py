"""openblip.layers.linear: the oneDNN float32 linear equals F.linear (values and gradients) and can be switched off."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from openblip.layers import linear as L


@pytest.fixture
def backend():
    before = L._backend
    yield L
    L.set_linear_backend(before)


@pytest.mark.parametrize("shape", [(5, 24), (2, 7, 24), (1, 24)])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_f_linear(shape, bias):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(shape, generator=g), torch.randn(40, 24, generator=g)
    b = torch.randn(40, generator=g) if bias else None
    with torch.inference_mode():
        out = L.linear(x, w, b)
    ref = x.double() @ w.double().t() + (b.double() if bias else 0)
    assert out.shape == (*shape[:-1], 40) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_gradients_match_f_linear():
    g = torch.Generator().manual_seed(1)
    x0, w0, b0 = torch.randn(3, 6, 24, generator=g), torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
    up = torch.randn(3, 6, 40, generator=g)
    grads = []
    for fn in (L.linear, F.linear):
        x, w, b = (t.clone().requires_grad_() for t in (x0, w0, b0))
        (fn(x, w, b) * up).sum().backward()
        grads.append((x.grad, w.grad, b.grad))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_module_keeps_nn_linear_interface():
    m = L.Linear(24, 40)
    assert isinstance(m, torch.nn.Linear) and set(m.state_dict()) == {"weight", "bias"}
    x = torch.randn(4, 24)
    torch.testing.assert_close(m(x), F.linear(x, m.weight, m.bias), rtol=1e-5, atol=1e-5)


def test_other_dtypes_and_aten_backend_are_f_linear_exactly(backend):
    x, w = torch.randn(4, 24), torch.randn(40, 24)
    assert torch.equal(L.linear(x.bfloat16(), w.bfloat16()), F.linear(x.bfloat16(), w.bfloat16()))
    backend.set_linear_backend("aten")
    assert backend.linear_backend() == "aten"
    assert torch.equal(L.linear(x, w), F.linear(x, w))
    with pytest.raises(ValueError, match="onednn"):
        backend.set_linear_backend("mkl")


def test_cpu_autocast_casts_like_f_linear_forward_and_backward(backend):
    # the oneDNN operator has no autocast rule: without the fallback a `--bf16` step ran these in float32
    backend.set_linear_backend("onednn")
    m = L.Linear(24, 40)
    x = torch.randn(4, 24, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = m(x), F.linear(x, m.weight, m.bias)
    assert out.dtype == ref.dtype == torch.bfloat16
    assert torch.equal(out, ref)
    out.float().sum().backward()
    assert m.weight.grad is not None and m.weight.grad.dtype == torch.float32
    assert L.linear(x, m.weight).dtype == torch.float32  # outside autocast: float32 again


def test_onednn_is_used_where_pytorch_has_it(backend):
    backend.set_linear_backend("onednn")
    expected = "onednn" if torch.backends.mkldnn.is_available() else "aten"
    assert backend.linear_backend() == expected


@pytest.mark.skipif(not L._ONEDNN, reason="this torch build has no oneDNN linear")
def test_strided_operands_match_f_linear_and_reach_onednn_contiguous(monkeypatch):
    """Strided inputs and weights give F.linear's values, and oneDNN only ever sees contiguous operands (strided
    ones can fall on a generic kernel ~2000x slower, see ``_mm``), in inference and under autograd."""
    seen = []
    real = torch.ops.mkldnn._linear_pointwise

    def spy(x, w, *rest):
        seen.append(x.is_contiguous() and w.is_contiguous())
        return real(x, w, *rest)

    monkeypatch.setattr(L.torch.ops.mkldnn, "_linear_pointwise", spy)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 5, 24, generator=g).transpose(0, 1)
    w = torch.randn(40, 72, generator=g)[:, ::3]  # row stride 72: a slice of a fused projection
    b = torch.randn(40, generator=g)
    assert not x.is_contiguous() and not w.is_contiguous()
    with torch.inference_mode():
        torch.testing.assert_close(L.linear(x, w, b), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    xg = x.clone().transpose(0, 1).requires_grad_()  # strided leaf under autograd
    L.linear(xg.transpose(0, 1), w, b).sum().backward()
    xr = xg.detach().clone().requires_grad_()
    F.linear(xr.transpose(0, 1), w, b).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-5, atol=1e-5)
    assert len(seen) == 3 and all(seen)  # inference forward, autograd forward, input gradient


@pytest.mark.parametrize(("value", "expected"), [("aten", "aten"), ("bogus", "OPENBLIP_LINEAR='bogus'")])
def test_environment_variable_selects_backend_or_names_the_bad_value(value, expected):
    code = "from openblip.layers.linear import linear_backend; print(linear_backend())"
    env = {**os.environ, "OPENBLIP_LINEAR": value}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if value == "aten":
        assert proc.returncode == 0 and proc.stdout.strip() == "aten", proc.stderr
    else:
        assert proc.returncode != 0 and expected in proc.stderr and "ValueError" in proc.stderr
