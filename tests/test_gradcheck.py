"""gradcheck (float64) of the fused solve with gradient="backprop": y0, theta and t."""

import pytest
import torch
from torch import nn

import neuralode


class TimeMLP(nn.Module):
    """f(t, z) = W2 tanh(W1 z + u t + c): depends on z, t and its parameters."""

    def __init__(self, dim=2, hidden=5):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.w1 = nn.Parameter(torch.randn(hidden, dim, generator=g, dtype=torch.float64) * 0.7)
        self.u = nn.Parameter(torch.randn(hidden, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(hidden, generator=g, dtype=torch.float64) * 0.1)
        self.w2 = nn.Parameter(torch.randn(dim, hidden, generator=g, dtype=torch.float64) * 0.7)

    def forward(self, t, z):
        return torch.tanh(z @ self.w1.T + t * self.u + self.c) @ self.w2.T


class _Wrapped(nn.Module):
    def __init__(self, func):
        super().__init__()
        self.func = func

    def forward(self, y0, t, method, options):
        return neuralode.odeint(self.func, y0, t, method=method, options=options, gradient="backprop")


OPTION_SETS = [None, {"max_step": 0.3}, {"step_size": 0.25}]


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4_classic"])
@pytest.mark.parametrize("options", OPTION_SETS, ids=["per-interval", "max_step", "step_size"])
def test_gradcheck_backprop_1d_times(method, options):
    func = TimeMLP()
    names = [n for n, _ in func.named_parameters()]
    wrapped = _Wrapped(func)

    def fn(y0, t, *ps):
        params = {f"func.{n}": p for n, p in zip(names, ps)}
        return torch.func.functional_call(wrapped, params, (y0, t, method, options))

    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    # (t[-1] - t[0]) / step_size is not an integer: at integers the uniform grid gains a
    # point and the solve is not differentiable w.r.t. t[0] and t[-1] there.
    t = torch.tensor([0.0, 0.4, 0.55, 1.1], dtype=torch.float64, requires_grad=True)
    ps = [p.detach().clone().requires_grad_(True) for p in func.parameters()]
    assert torch.autograd.gradcheck(fn, (y0, t, *ps), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4_classic"])
def test_gradcheck_backprop_per_sample_times(method):
    func = TimeMLP()
    names = [n for n, _ in func.named_parameters()]
    wrapped = _Wrapped(func)

    def fn(y0, t, *ps):
        params = {f"func.{n}": p for n, p in zip(names, ps)}
        # 0.27 divides no interval length: n = ceil(max|dt| / max_step) is locally constant.
        return torch.func.functional_call(wrapped, params, (y0, t, method, {"max_step": 0.27}))

    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.0, 0.1, -0.2], [0.5, 0.4, 0.3], [1.0, 0.7, 0.9]], dtype=torch.float64)
    t = t.unsqueeze(-1).requires_grad_(True)
    ps = [p.detach().clone().requires_grad_(True) for p in func.parameters()]
    assert torch.autograd.gradcheck(fn, (y0, t, *ps), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_backprop_decreasing_times_any_shape():
    func = TimeMLP(dim=4)
    y0 = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 0.6, -0.1], dtype=torch.float64, requires_grad=True)
    fn = lambda y0, t: neuralode.odeint(func, y0, t, method="rk4_classic", options={"max_step": 0.25})
    assert torch.autograd.gradcheck(fn, (y0, t), eps=1e-6, atol=1e-6, rtol=1e-5)
