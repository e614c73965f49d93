"""Adaptive Runge-Kutta methods: order, accuracy, the three gradient modes, statistics, errors."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import neuralode

ADAPTIVE = ["bosh3", "dopri5", "tsit5", "dopri8"]
ORDER = {"bosh3": 3, "dopri5": 5, "tsit5": 5, "dopri8": 8}


class TanhMLP(nn.Module):
    """f(t, z) = W2 tanh(W1 [z, t] + b1) + b2: smooth, time-dependent; counts its calls."""

    def __init__(self, dim=2, hidden=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(hidden, dim + 1, generator=g, dtype=torch.float64) * 0.8)
        self.b1 = nn.Parameter(torch.randn(hidden, generator=g, dtype=torch.float64) * 0.1)
        self.w2 = nn.Parameter(torch.randn(dim, hidden, generator=g, dtype=torch.float64) * 0.5)
        self.b2 = nn.Parameter(torch.zeros(dim, dtype=torch.float64))
        self.calls = 0

    def forward(self, t, z):
        self.calls += 1
        tt = t.expand(z.shape[0], 1) if t.dim() == 0 else t
        return torch.tanh(torch.cat([z, tt.to(z.dtype)], 1) @ self.w1.T + self.b1) @ self.w2.T + self.b2


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# ---------------------------------------------------------------- order and accuracy


# Per method: a problem, its end time, its exact end value and steps in the asymptotic
# range (Tsit5's small 5th-order error constants need small steps before its order
# shows; dopri8's error reaches round-off fast, and on the linear oscillator it
# superconverges).
_OSC = (lambda t, y: torch.stack([y[:, 1], -y[:, 0]], 1), [[1.0, 0.0]], 8.0, [[math.cos(8.0), -math.sin(8.0)]])
_EXPSIN = (lambda t, y: y * torch.cos(t), [[1.0]], 10.0, [[math.exp(math.sin(10.0))]])
ORDER_SETUP = {
    "bosh3": (_OSC, [0.2, 0.1, 0.05]),
    "dopri5": (_OSC, [0.2, 0.1, 0.05]),
    "tsit5": (_OSC, [0.2, 0.1, 0.05]),
    "dopri8": (_EXPSIN, [0.5, 0.25, 0.125]),
}


@pytest.mark.parametrize("method", ADAPTIVE)
def test_order_of_each_method(method):
    """Global error against a fixed step (tolerances too loose to reject): slope = order."""
    (f, y0, end, exact), hs = ORDER_SETUP[method]
    y0 = torch.tensor(y0, dtype=torch.float64)
    exact = torch.tensor(exact, dtype=torch.float64)
    t = torch.tensor([0.0, end], dtype=torch.float64)
    errors = []
    for h in hs:
        options = {"first_step": h, "max_step": h, "step_t": [end]}
        stats = neuralode.SolverStats()
        y = neuralode.odeint(f, y0, t, method=method, rtol=1e6, atol=1e6, options=options, stats=stats)
        assert stats.steps_accepted == round(end / h) and stats.steps_rejected == 0
        errors.append((y[-1] - exact).abs().max().item())
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert abs(slope - ORDER[method]) < 0.3, (slope, errors)


def _exp_decay(t):
    return torch.exp(-t)[:, None, None] * torch.tensor([[1.0, -2.0]], dtype=torch.float64)


def _oscillator(t):
    return torch.stack([torch.cos(t), -torch.sin(t)], -1)[:, None, :]


SPIRAL = torch.tensor([[-0.1, -1.0], [1.0, -0.1]], dtype=torch.float64)


def _spiral(t):
    y0 = torch.tensor([[0.6, 0.3]], dtype=torch.float64)
    return torch.stack([y0 @ torch.linalg.matrix_exp(SPIRAL.T * ti) for ti in t])


PROBLEMS = {
    "exp_decay": (lambda t, y: -y, _exp_decay),
    "oscillator": (lambda t, y: torch.stack([y[:, 1], -y[:, 0]], 1), _oscillator),
    "linear_spiral": (lambda t, y: y @ SPIRAL.T, _spiral),
}


@pytest.mark.parametrize("controller", ["I", "PI"])
@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_adaptive_solution_within_tolerance(problem, method, controller):
    f, exact = PROBLEMS[problem]
    t = torch.linspace(0.0, 6.0, 13, dtype=torch.float64)  # most outputs come from dense output
    truth = exact(t)
    options = {"controller": controller}
    if method == "dopri8":
        # dopri8's dense output is 4th order, far below its steps' accuracy: outputs
        # between steps are only accurate when the solver steps to them (step_t).
        options["step_t"] = t
    for tol in (1e-5, 1e-8):
        y = neuralode.odeint(f, truth[0], t, method=method, rtol=tol, atol=tol, options=options)
        assert (y - truth).abs().max().item() < 20 * tol


def test_decreasing_times_and_any_state_shape():
    f = lambda t, y: -y
    y0 = torch.randn(2, 3, 4, dtype=torch.float64)
    t = torch.tensor([1.0, 0.5, -1.0], dtype=torch.float64)
    y = neuralode.odeint(f, y0, t, method="dopri5", rtol=1e-9, atol=1e-9)
    assert y.shape == (3, 2, 3, 4)
    expected = torch.stack([y0 * math.exp(-(ti - 1.0)) for ti in t.tolist()])
    assert (y - expected).abs().max().item() < 1e-7


def test_float32_state_with_float64_time():
    f = lambda t, y: -y
    y0 = torch.ones(3, 2)
    t = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    y = neuralode.odeint(f, y0, t, method="tsit5", rtol=1e-5, atol=1e-6)
    assert y.dtype == torch.float32
    assert (y[:, 0, 0].double() - torch.exp(-t)).abs().max().item() < 1e-4


def test_tensor_tolerances_broadcast():
    f = lambda t, y: -y
    y0 = torch.ones(1, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    loose, tight = neuralode.SolverStats(), neuralode.SolverStats()
    y_loose = neuralode.odeint(f, y0, t, rtol=0.0, atol=torch.tensor([1e-4, 1e-4]), stats=loose)
    y_tight = neuralode.odeint(f, y0, t, rtol=0.0, atol=torch.tensor([1e-4, 1e-10]), stats=tight)
    assert tight.nfe_forward > loose.nfe_forward  # the second component now limits the step
    exact = math.exp(-2.0)
    assert abs(y_tight[-1, 0, 1].item() - exact) < 1e-8 < abs(y_loose[-1, 0, 1].item() - exact)


def _unit_jump_at_one(knot_option: str, tol: float):
    """y' = [t >= 1] from 0 over [0, 2] (exact end 1) with a knot at t = 1: the end's error
    and the solve's counters."""
    f = lambda t, y: torch.ones_like(y) * (t >= 1.0)
    y0 = torch.zeros(1, dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    stats = neuralode.SolverStats()
    y = neuralode.odeint(f, y0, t, method="dopri5", rtol=tol, atol=tol, options={knot_option: [1.0]}, stats=stats)
    return abs(y[-1].item() - 1.0), stats


def test_jump_t_lands_on_discontinuity():
    """f jumps at the jump_t knot: the steps land on it, sample f before it up to the knot
    and after it from there (evaluated again past the jump): exact, and no step rejected."""
    error, stats = _unit_jump_at_one("jump_t", 1e-10)
    assert error < 1e-12
    assert stats.steps_rejected == 0


def test_step_t_reuses_the_stage_before_the_knot():
    """step_t is a knot where f is continuous: the step after it starts from the landing
    step's last stage (sampled just before the knot), not from f at the knot. With f
    jumping there that stale stage costs rejections (the error estimate sees it) that
    jump_t does not, and the result still meets the tolerance."""
    error, stats = _unit_jump_at_one("step_t", 1e-8)
    # 1.1e-6 off (110 x tol), exactly as torchdiffeq's dopri5 on this problem (same 182
    # evaluations): the stale stage's error is estimated and controlled, not removed.
    assert error < 2e-6
    assert stats.steps_rejected > 0


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint"])
@pytest.mark.parametrize("method", ADAPTIVE)
def test_gradcheck_exact_modes(method, gradient):
    func = TanhMLP(hidden=4)
    names = [n for n, _ in func.named_parameters()]
    tol = 1e-8 if method == "bosh3" else 1e-10
    t = torch.tensor([0.0, 0.5, 1.2, 1.5], dtype=torch.float64)
    options = {"step_t": t} if method == "dopri8" else None

    def fn(y0, *ps):
        params = dict(zip(names, ps))
        f = lambda t, z: torch.func.functional_call(func, params, (t, z))
        if gradient == "backprop":
            return neuralode.odeint(f, y0, t, method=method, rtol=tol, atol=tol, options=options)
        return neuralode.odeint(f, y0, t, method=method, rtol=tol, atol=tol, options=options,
                                gradient=gradient, adjoint_params=ps)

    y0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    ps = [p.detach().clone().requires_grad_(True) for p in func.parameters()]
    assert torch.autograd.gradcheck(fn, (y0, *ps), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("method", ADAPTIVE)
def test_adjoint_matches_checkpoint_at_tight_tolerance(method, per_sample):
    func = TanhMLP(hidden=16, seed=1)
    y0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    if per_sample:
        t = torch.sort(torch.rand(4, 5, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2, 0).values
    else:
        t = torch.tensor([0.0, 0.6, 1.1, 2.0], dtype=torch.float64)
    w = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    inputs = [y0] + list(func.parameters())
    grads = {}
    for gradient in ("checkpoint", "adjoint"):
        ys = neuralode.odeint(func, y0, t, method=method, rtol=1e-10, atol=1e-10, gradient=gradient)
        grads[gradient] = torch.autograd.grad((ys * w).sum(), inputs)
    for a, c in zip(grads["adjoint"], grads["checkpoint"]):
        assert _rel(a, c) < 1e-6


def test_checkpoint_equals_backprop_to_round_off():
    func = TanhMLP()
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 1.7], dtype=torch.float64)
    inputs = [y0] + list(func.parameters())
    grads = {}
    for gradient in ("backprop", "checkpoint"):
        ys = neuralode.odeint(func, y0, t, method="dopri5", rtol=1e-6, atol=1e-6, gradient=gradient)
        grads[gradient] = torch.autograd.grad(ys.pow(2).sum(), inputs)
    for a, b in zip(grads["checkpoint"], grads["backprop"]):
        assert _rel(a, b) < 1e-12


@pytest.mark.parametrize("per_sample", [False, True])
def test_adjoint_time_gradients(per_sample):
    func = TanhMLP(seed=5)
    y0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    if per_sample:
        t = torch.tensor([[0.0, 0.1, -0.2], [0.5, 0.9, 0.3], [1.4, 1.0, 0.9]], dtype=torch.float64).unsqueeze(-1)
    else:
        t = torch.tensor([0.0, 0.5, 1.4], dtype=torch.float64)
    t = t.requires_grad_(True)
    w = torch.randn(3, 3, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ys = neuralode.odeint_adjoint(func, y0, t, method="dopri5", rtol=1e-10, atol=1e-10)
    (g,) = torch.autograd.grad((ys * w).sum(), [t])
    ys = neuralode.odeint(func, y0, t, method="rk4_classic", options={"max_step": 1e-3})
    (expected,) = torch.autograd.grad((ys * w).sum(), [t])
    assert _rel(g, expected) < 1e-6


def test_seminorm_lowers_backward_nfe():
    torch.manual_seed(0)
    func = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 2)).double()
    f = lambda t, z: func(z)
    y0 = torch.randn(64, 2, dtype=torch.float64)
    t = torch.linspace(0, 3, 5, dtype=torch.float64)
    results = {}
    for norm in ("full", "seminorm"):
        stats = neuralode.SolverStats()
        ys = neuralode.odeint_adjoint(
            f, y0, t, rtol=1e-6, atol=1e-8, adjoint_params=tuple(func.parameters()),
            adjoint_options={"norm": norm}, stats=stats,
        )
        grads = torch.autograd.grad(ys.pow(2).sum(), list(func.parameters()))
        results[norm] = (stats.nfe_backward, grads)
    assert results["seminorm"][0] < results["full"][0]
    for a, b in zip(results["seminorm"][1], results["full"][1]):
        assert _rel(a, b) < 1e-4


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4_classic"])
def test_reported_nfe_equals_counted_calls(method, gradient):
    func = TanhMLP()
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64)
    stats = neuralode.SolverStats()
    ys = neuralode.odeint(func, y0, t, method=method, rtol=1e-6, atol=1e-6, options={"max_step": 0.1} if method == "rk4_classic" else None, gradient=gradient, stats=stats)
    assert stats.nfe_forward == func.calls > 0
    func.calls = 0
    ys.sum().backward()
    assert stats.nfe_backward == func.calls
    assert (stats.nfe_backward > 0) == (gradient != "backprop")
    assert stats.steps_accepted > 0 and stats.solve_seconds_forward >= stats.f_seconds_forward > 0


# ---------------------------------------------------------------- bad input


def test_nan_mid_solve_names_time_and_step():
    f = lambda t, y: y * torch.nan if t > 0.5 else -y
    with pytest.raises(ValueError, match=r"became NaN or Inf in the step from t=0\.\d+ with dt="):
        neuralode.odeint(f, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_step_size_underflow():
    f = lambda t, y: 1.0 / (1.0 - t) ** 2 * torch.ones_like(y)  # blows up at t = 1
    with pytest.raises(ValueError, match="step size underflow at t=.*set options\\['min_step'\\]"):
        neuralode.odeint(f, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64))


def test_min_step_accepts_instead_of_raising():
    """torchdiffeq's min_step: the steps shrink to it near the pole of f and are accepted
    there whatever their error, so the solve goes on past it instead of raising."""
    f = lambda t, y: 1.0 / (1.0 - t) ** 2 * torch.ones_like(y)  # blows up at t = 1
    stats = neuralode.SolverStats()
    ys = neuralode.odeint(f, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64),
                          options={"min_step": 1e-6}, stats=stats)
    assert ys.shape == (2, 1) and stats.steps_rejected > 0


def test_max_num_steps_exceeded():
    f = lambda t, y: torch.stack([y[:, 1], -y[:, 0]], 1)
    with pytest.raises(ValueError, match="max_num_steps=5 exceeded at t="):
        neuralode.odeint(f, torch.ones(1, 2, dtype=torch.float64), torch.tensor([0.0, 10.0], dtype=torch.float64),
                         rtol=1e-10, atol=1e-10, options={"max_num_steps": 5})


@pytest.mark.parametrize("kw,match", [
    ({"rtol": -1e-3}, "rtol must be a finite non-negative"),
    ({"atol": torch.tensor([1e-3, -1.0])}, "atol must be finite and non-negative"),
    ({"atol": torch.ones(3)}, "does not broadcast to y0's shape"),
    ({"options": {"norm": "seminorm"}}, "'norm' must be a callable of the scaled error, got 'seminorm'"),
    ({"options": {"controller": "PID"}}, "'controller' must be one of \\('I', 'PI', 'predictive'\\)"),
    ({"options": {"safety": 2.0}}, "need safety <= 1"),
    ({"options": {"step_t": [float("nan")]}}, "'step_t' must hold finite times"),
    ({"adjoint_options": {"norm": "l2"}, "gradient": "adjoint"}, "or 'full' or 'seminorm', got 'l2'"),
])
def test_bad_adaptive_arguments(kw, match):
    f = lambda t, y: -y
    with pytest.raises(ValueError, match=match):
        neuralode.odeint(f, torch.ones(1, 2), torch.tensor([0.0, 1.0]), **kw)


@pytest.mark.parametrize("t0", [0.0, 3.0])
def test_always_rejected_step_underflows_instead_of_hanging(t0):
    """A step that is never accepted shrinks until the clock cannot resolve it; at t = 0 a
    subnormal step never rounds to 0 (0.78 x 5e-324 is 5e-324 again), so the test is
    relative to the solve's span there: an error naming the underflow, not a hang."""
    t = torch.tensor([t0, t0 + 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=f"step size underflow at t={t0:g}"):
        neuralode.odeint(lambda t, y: -y, torch.ones(2, dtype=torch.float64), t, options={"norm": lambda q: 2.0})
