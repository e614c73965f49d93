"""The continuous adjoint's gradient converges to the exact one at the method's order.

Exact gradients: for dz/dt = z W^T the solution is z0 expm(W^T (t - t0)), and autograd
through torch.linalg.matrix_exp gives the exact dL/dz0, dL/dW and dL/dt. For a
time-dependent non-linear MLP the exact gradient is replaced by backprop through
RK4 with a step 50x finer than the finest tested (its error is below 1e-12 here).
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

import neuralode

ORDER = {"euler": 1, "midpoint": 2, "rk4_classic": 4}
STEPS = {"euler": [0.04, 0.02, 0.01], "midpoint": [0.1, 0.05, 0.025], "rk4_classic": [0.1, 0.05, 0.025]}  # in the asymptotic range


class Linear(nn.Module):
    def __init__(self, W):
        super().__init__()
        self.W = nn.Parameter(W.clone())

    def forward(self, t, z):
        return z @ self.W.T


class TimeMLP(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(4)
        self.w1 = nn.Parameter(torch.randn(8, 2, generator=g, dtype=torch.float64))
        self.u = nn.Parameter(torch.randn(8, generator=g, dtype=torch.float64))
        self.w2 = nn.Parameter(torch.randn(2, 8, generator=g, dtype=torch.float64) * 0.5)

    def forward(self, t, z):
        return torch.tanh(z @ self.w1.T + torch.sin(3 * t) * self.u) @ self.w2.T


def _loss_weights(T, batch):
    return torch.randn(T, batch, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)


def _grads(func, y0, t, **kw):
    y0 = y0.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    ys = neuralode.odeint(func, y0, t, **kw)
    loss = (ys * _loss_weights(*ys.shape[:2])).sum()
    return torch.autograd.grad(loss, [y0, t] + list(func.parameters()))


def _exact_linear(W, y0, t):
    W = W.clone().requires_grad_(True)
    y0 = y0.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    ys = torch.stack([y0 @ torch.linalg.matrix_exp(W.T * (ti - t[0])) for ti in t])
    loss = (ys * _loss_weights(*ys.shape[:2])).sum()
    return torch.autograd.grad(loss, [y0, t, W])


def _slope(hs, errs):
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


def _err(grads, exact):
    return max(((g - e).abs().max() / e.abs().max()).item() for g, e in zip(grads, exact))


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4_classic"])
def test_adjoint_gradient_converges_at_order_linear(method):
    W = torch.tensor([[-0.1, -1.0], [1.0, -0.1]], dtype=torch.float64) + 0.2
    y0 = torch.tensor([[0.6, 0.3], [-1.0, 0.5]], dtype=torch.float64)
    t = torch.tensor([0.0, 0.7, 1.3, 2.0], dtype=torch.float64)
    exact = _exact_linear(W, y0, t)
    errs = [
        _err(_grads(Linear(W), y0, t, method=method, options={"max_step": h}, gradient="adjoint"), exact)
        for h in STEPS[method]
    ]
    assert errs[-1] < errs[0]
    assert abs(_slope(STEPS[method], errs) - ORDER[method]) < 0.3, errs


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4_classic"])
def test_adjoint_gradient_converges_at_order_time_dependent(method):
    func = TimeMLP()
    y0 = torch.tensor([[0.6, 0.3], [-1.0, 0.5], [0.1, 0.1]], dtype=torch.float64)
    t = torch.tensor([0.0, 0.6, 1.0, 1.8], dtype=torch.float64)
    exact = _grads(func, y0, t, method="rk4_classic", options={"max_step": STEPS[method][-1] / 50})
    errs = [
        _err(_grads(func, y0, t, method=method, options={"max_step": h}, gradient="adjoint"), exact)
        for h in STEPS[method]
    ]
    assert abs(_slope(STEPS[method], errs) - ORDER[method]) < 0.3, errs


def test_adjoint_per_sample_times_converge():
    """Per-sample times: the adjoint approaches backprop through a fine solve."""
    func = TimeMLP()
    y0 = torch.tensor([[0.6, 0.3], [-1.0, 0.5], [0.1, 0.1]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.2, -0.3], [0.6, 0.5, 0.4], [1.0, 1.4, 0.9]], dtype=torch.float64).unsqueeze(-1)
    exact = _grads(func, y0, t, method="rk4_classic", options={"max_step": 0.001})
    hs = STEPS["rk4_classic"]
    errs = [_err(_grads(func, y0, t, method="rk4_classic", options={"max_step": h}, gradient="adjoint"), exact) for h in hs]
    assert abs(_slope(hs, errs) - 4) < 0.3, errs


def test_adjoint_with_step_size_grid_converges():
    """step_size: the backward pass walks the grid with the observation times as knots."""
    func = TimeMLP()
    y0 = torch.tensor([[0.6, 0.3]], dtype=torch.float64)
    t = torch.tensor([0.0, 0.6, 1.0, 1.8], dtype=torch.float64)
    exact = _grads(func, y0, t, method="rk4_classic", options={"max_step": 0.001})
    errs = [
        _err(_grads(func, y0, t, method="midpoint", options={"step_size": h}, gradient="adjoint"), exact)
        for h in (0.02, 0.01)
    ]
    assert errs[1] < errs[0] / 3 and errs[1] < 1e-3, errs


def test_adjoint_method_and_options_for_the_backward_solve():
    func = TimeMLP()
    y0 = torch.tensor([[0.6, 0.3]], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    exact = _grads(func, y0, t, method="rk4_classic", options={"max_step": 0.001})
    coarse = _grads(func, y0, t, method="euler", options={"max_step": 0.01}, gradient="adjoint")
    fine_back = _grads(
        func, y0, t, method="euler", options={"max_step": 0.01}, gradient="adjoint",
        adjoint_method="rk4_classic", adjoint_options={"max_step": 0.01},
    )
    # The forward state stored at t=1 is Euler's; a better backward solve still helps dL/dtheta.
    assert _err(fine_back[2:], exact[2:]) < _err(coarse[2:], exact[2:])
