"""The fused path equals the paper-tutorial oracle (neuralode.reference).

NeuralODE with its defaults (Euler, the reference's subdivision, adjoint
gradients) on the paper's dynamics: outputs and gradients w.r.t. z0, t and
theta, for 1-D and per-sample times, to 1e-10 relative in float64 and 1e-5 in
float32.
"""

import pytest
import torch

import neuralode
from neuralode import reference
from neuralode.dynamics import LinearODEF, NNODEF
from neuralode.dynamics import TestODEF as PaperTestODEF  # aliased: pytest would collect "Test*"

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _dynamics(name):
    g = torch.Generator().manual_seed(7)
    if name == "linear":
        return LinearODEF(torch.randn(2, 2, generator=g) / 2)
    if name == "testodef":
        return PaperTestODEF(torch.randn(2, 2, generator=g), torch.randn(2, 2, generator=g), torch.randn(2, generator=g))
    if name == "mlp":
        torch.manual_seed(3)
        return NNODEF(2, 16, time_invariant=True)
    if name == "mlp_time":
        torch.manual_seed(3)
        return NNODEF(2, 16, time_invariant=False)
    raise KeyError(name)


def _times(kind, batch, dtype):
    if kind == "1d":
        return torch.tensor([0.0, 0.33, 1.0, 1.72], dtype=dtype)
    if kind == "1d_decreasing":
        return torch.tensor([1.5, 0.9, 0.2], dtype=dtype)
    g = torch.Generator().manual_seed(11)
    t = torch.sort(torch.rand(4, batch, 1, generator=g, dtype=torch.float64) * 2.0, dim=0).values
    return t.to(dtype)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


CASES = [
    ("linear", "1d"),
    ("linear", "1d_decreasing"),
    ("linear", "per_sample"),
    ("testodef", "1d"),
    ("testodef", "per_sample"),
    ("mlp", "1d"),
    ("mlp_time", "per_sample"),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dyn,times", CASES)
def test_fused_neuralode_matches_reference(dyn, times, dtype):
    batch = 5
    func = _dynamics(dyn).to(dtype)
    z0 = torch.randn(batch, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    z0.requires_grad_(True)
    t = _times(times, batch, dtype).requires_grad_(True)

    z_ref = reference.NeuralODE(func)(z0, t, return_whole_sequence=True)
    z_fused = neuralode.NeuralODE(func)(z0, t, return_whole_sequence=True)
    assert z_fused.shape == z_ref.shape == (t.shape[0], batch, 2)
    assert _rel(z_fused, z_ref) <= TOL[dtype]

    weights = torch.randn(z_ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
    inputs = [z0, t] + list(func.parameters())
    g_ref = torch.autograd.grad((z_ref * weights).sum(), inputs)
    g_fused = torch.autograd.grad((z_fused * weights).sum(), inputs)
    names = ["z0", "t"] + [n for n, _ in func.named_parameters()]
    for name, a, b in zip(names, g_fused, g_ref):
        assert a.shape == b.shape, name
        assert b.abs().max() > 0, f"reference gradient of {name} is zero: the case tests nothing"
        assert _rel(a, b) <= TOL[dtype], f"dL/d{name}: relative error {_rel(a, b):.3g}"


def test_time_gradients_follow_algorithm_1():
    """dL/dt_i = dL/dz(t_i) . f(z(t_i), t_i) for i >= 1, checked directly on the oracle."""
    func = _dynamics("testodef").double()
    z0 = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.1], dtype=torch.float64, requires_grad=True)
    z = reference.NeuralODE(func)(z0, t, return_whole_sequence=True)
    w = torch.randn_like(z)
    (grad_t,) = torch.autograd.grad((z * w).sum(), [t])
    with torch.no_grad():
        for i in (1, 2):
            expected = (w[i] * func(z[i], t[i])).sum()
            assert torch.allclose(grad_t[i], expected, rtol=1e-12, atol=1e-12)
