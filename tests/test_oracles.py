"""Every method x gradient mode x time layout against a closed form.

dz/dt = z A^T has z(t) = z0 expm((t - t_0) A)^T. The oracle computes the loss
L = sum_i <w_i, z(t_i)> through torch.linalg.matrix_exp, and its gradients w.r.t. z0, A
and the times by autograd: independent of the solver. Layouts: 1-D increasing, 1-D
decreasing, per-sample (T, batch, 1). float64 and float32.

Tolerances (relative, on the outputs and each gradient), stated per solver:
- fixed step h, order p: 5 h^p (the global error constant of this problem, |A| ~ 1 over
  a span of 1.2, is below 1 for the outputs and 3.4 for dL/dt with Euler); float32 adds
  2e-4 for round-off over the steps;
- adaptive, rtol = atol = tol: 200 tol (the global error of a locally controlled solve
  accumulates over the steps; the adjoint's gradient carries its own solve's error too);
  5000 tol for fehlberg2, whose error estimate is ~1/500 of its error.
"""

import pytest
import torch
from torch import nn

import neuralode

A0 = [[-0.3, -1.0], [0.9, -0.2]]
FIXED = {"euler": (1, 2e-3), "midpoint": (2, 2e-2), "rk4": (4, 0.1), "rk4_classic": (4, 0.1), "heun2": (2, 2e-2), "heun3": (3, 0.05)}  # order, step
ADAPTIVE = ["bosh3", "dopri5", "tsit5", "dopri8", "adaptive_heun", "fehlberg2"]
SOLVER_TOL = {torch.float64: 1e-9, torch.float32: 1e-6}
#: Methods whose error estimate is far below their true error: Fehlberg 2(1)'s weights
#: (-1/512, 0, 1/512) estimate ~1/500 of it (torchdiffeq's fehlberg2 errs the same).
WEAK_ESTIMATE = {"fehlberg2": 5000}


def _times(layout, dtype):
    if layout == "increasing":
        return torch.tensor([0.0, 0.3, 1.2], dtype=torch.float64).to(dtype)
    if layout == "decreasing":
        return torch.tensor([0.4, -0.1, -0.8], dtype=torch.float64).to(dtype)
    t = torch.tensor([[0.0, 0.2, -0.5], [0.3, 0.9, 0.1], [1.2, 1.1, 0.6]], dtype=torch.float64)
    return t.unsqueeze(-1).to(dtype)


def _exact(z0, A, t):
    """z(t_i) for every observation (per sample when t is (T, B, 1))."""
    elapsed = t - t[0]
    if t.dim() == 1:
        return torch.stack([z0 @ torch.linalg.matrix_exp(e * A).T for e in elapsed])
    rows = []
    for i in range(t.shape[0]):
        rows.append(torch.stack([z0[b] @ torch.linalg.matrix_exp(elapsed[i, b, 0] * A).T
                                 for b in range(z0.shape[0])]))
    return torch.stack(rows)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


class Linear(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.A = nn.Parameter(torch.tensor(A0, dtype=dtype))

    def forward(self, t, z):
        return z @ self.A.T


def _check(method, gradient, layout, dtype, options=None, tol=None, **kwargs):
    func = Linear(dtype)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(3, 2, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    t = _times(layout, dtype)
    w = torch.randn(3, 3, 2, generator=g, dtype=torch.float64).to(dtype)
    # dL/dt in every mode and layout (adaptive steps on 1-D times outside the adjoint: from
    # the ODE at the observations, as their steps carry no graph to t).
    t = t.clone().requires_grad_(True)
    if method in FIXED:
        order, h = FIXED[method]
        options = {"max_step": h, **(options or {})}
        tol = 5 * h**order + (2e-4 if dtype == torch.float32 else 0.0)
        extra = {}
    else:
        solver_tol = SOLVER_TOL[dtype]
        tol = tol or WEAK_ESTIMATE.get(method, 200) * solver_tol
        extra = {"rtol": solver_tol, "atol": solver_tol}
        if method == "dopri8":  # its dense output is 4th order: land on the observations
            options = {"step_t": t.detach().flatten().tolist(), **(options or {})} if t.dim() == 1 else options
    ys = neuralode.odeint(func, z0, t, method=method, options=options, gradient=gradient, **extra, **kwargs)
    inputs = [z0, func.A, t]
    got = torch.autograd.grad((ys * w).sum(), inputs)

    z0d, A, td = z0.detach().double().requires_grad_(True), func.A.detach().double().requires_grad_(True), \
        t.detach().double().requires_grad_(True)
    exact_ys = _exact(z0d, A, td)
    exact = torch.autograd.grad((exact_ys * w.double()).sum(), [z0d, A, td])
    assert _rel(ys.detach().double(), exact_ys.detach()) < tol, "outputs"
    for name, a, b in zip(("z0", "A", "t"), got, exact):
        assert _rel(a.double(), b) < tol, name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", ["increasing", "decreasing", "per_sample"])
@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method", list(FIXED) + ADAPTIVE)
def test_closed_form(method, gradient, layout, dtype):
    _check(method, gradient, layout, dtype)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("layout", ["increasing", "per_sample"])
def test_pi_controller_gradients(gradient, layout):
    _check("dopri5", gradient, layout, torch.float64, options={"controller": "PI"})


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_step_t_gradients(gradient):
    _check("tsit5", gradient, "increasing", torch.float64, options={"step_t": [0.1, 0.7, 0.95]})


@pytest.mark.parametrize("layout", ["increasing", "decreasing", "per_sample"])
def test_adaptive_adjoint_method_and_tolerances(layout):
    """The backward solve with its own method and tolerances: the test tolerance follows the
    looser of the two solves (200 x 1e-7)."""
    _check("dopri5", "adjoint", layout, torch.float64, tol=200 * 1e-7,
           adjoint_method="bosh3", adjoint_rtol=1e-7, adjoint_atol=1e-7)
