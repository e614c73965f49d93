"""The Adams solvers of neuralode.multistep.

Closed forms first (coefficients, convergence orders, accuracy, where func is
evaluated, option errors); then side by side with torchdiffeq 0.2.5, when it is
installed: outputs, gradients, evaluation counts and the exact sequence of
evaluation times must agree.
"""

import math
import warnings
from fractions import Fraction

import pytest
import torch
from torch import nn

from neuralode.multistep import (
    MAX_ORDER,
    MULTISTEP_METHODS,
    MULTISTEP_OPTIONS,
    adams_bashforth_coefficients,
    adams_moulton_coefficients,
    solve_multistep,
)

F64 = torch.float64


def _decay(t, y):
    return -y


def _solve(method, func, y0, t, options, rtol=1e-7, atol=1e-9):
    return solve_multistep(method, func, y0, t, rtol=rtol, atol=atol, options=options)


class _Recorder:
    """func wrapper that records (dtype, time) of every call."""

    def __init__(self, func):
        self.func = func
        self.calls = []

    def __call__(self, t, y):
        self.calls.append((t.dtype, t.item()))
        return self.func(t, y)


# ---------------------------------------------------------------------------
# Coefficients
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("q", range(1, MAX_ORDER + 1))
def test_adams_coefficients_integrate_polynomials_exactly(q):
    # AB: nodes u = 0, -1, ..., -(q-1); AM: u = 1, 0, ..., -(q-2); both exact on degree < q.
    beta = adams_bashforth_coefficients(q)
    alpha = adams_moulton_coefficients(q)
    for m in range(q):
        assert sum(b * Fraction(-j) ** m for j, b in enumerate(beta)) == Fraction(1, m + 1)
        assert sum(a * Fraction(1 - j) ** m for j, a in enumerate(alpha)) == Fraction(1, m + 1)
    # ...and not on degree q (so the order is exactly q).
    assert sum(b * Fraction(-j) ** q for j, b in enumerate(beta)) != Fraction(1, q + 1)


def test_adams_coefficients_known_values():
    assert adams_bashforth_coefficients(1) == (1,)
    assert adams_bashforth_coefficients(2) == (Fraction(3, 2), Fraction(-1, 2))
    assert adams_bashforth_coefficients(4) == tuple(Fraction(c, 24) for c in (55, -59, 37, -9))
    assert adams_moulton_coefficients(2) == (Fraction(1, 2), Fraction(1, 2))
    assert adams_moulton_coefficients(3) == tuple(Fraction(c, 12) for c in (5, 8, -1))
    assert adams_moulton_coefficients(4) == tuple(Fraction(c, 24) for c in (9, 19, -5, 1))


# ---------------------------------------------------------------------------
# Convergence and accuracy (closed forms)
# ---------------------------------------------------------------------------

def _observed_orders(method, max_order):
    y0 = torch.ones(1, dtype=F64)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    errors = []
    for k in (4, 5, 6, 7):
        # Tight tolerances and enough iterations: the corrector's stopping error stays
        # below the truncation error.
        ys, _ = _solve(method, _decay, y0, t, {"step_size": 2.0 ** -k, "max_order": max_order, "max_iters": 10},
                       rtol=1e-14, atol=1e-16)
        errors.append(abs(ys[-1].item() - math.exp(-2.0)))
    return [math.log2(a / b) for a, b in zip(errors, errors[1:])]


@pytest.mark.parametrize("method,max_order,order", [
    # explicit: the history holds max_order - 1 derivatives, so AB of order max_order - 1.
    ("explicit_adams", 4, 3),
    ("explicit_adams", 5, 4),
    # implicit: the corrector uses one more point, order max_order.
    ("implicit_adams", 4, 4),
])
def test_convergence_order_on_decay(method, max_order, order):
    # Error at t = 2 for y' = -y, halving h (1/16 ... 1/128): ratio 2^order.
    for observed in _observed_orders(method, max_order):
        assert abs(observed - order) < 0.25, (observed, order)


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_accuracy_against_closed_form(method):
    # y' = -y + sin t, y(0) = 1: y = 1.5 e^{-t} + (sin t - cos t) / 2.
    t = torch.linspace(0, 3, 7, dtype=F64)
    y0 = torch.ones((), dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the corrector must converge at these tolerances
        ys, _ = _solve(method, lambda t, y: -y + torch.sin(t), y0, t,
                       {"step_size": 0.05, "max_order": 5}, rtol=1e-6, atol=1e-8)
    exact = 1.5 * torch.exp(-t) + (torch.sin(t) - torch.cos(t)) / 2
    tolerance = {"explicit_adams": 2e-6, "implicit_adams": 1e-8}[method]
    assert (ys - exact).abs().max().item() < tolerance


@pytest.mark.parametrize("method", MULTISTEP_METHODS)
def test_decreasing_times_closed_form(method):
    # Backwards from t = 2 to 0 on y' = -y: y(t) = y(2) e^{2 - t}.
    t = torch.tensor([2.0, 1.5, 0.25, 0.0], dtype=F64)
    y0 = torch.tensor([1.0, -2.0], dtype=F64)
    ys, _ = _solve(method, _decay, y0, t, {"step_size": 1 / 64, "max_order": 4})
    exact = y0 * torch.exp(2 - t)[:, None]
    assert ((ys - exact).abs() / exact.abs()).max().item() < 1e-5


# ---------------------------------------------------------------------------
# How func is called, counted and differentiated
# ---------------------------------------------------------------------------

def test_func_sees_state_shape_and_time_in_state_dtype():
    seen = []

    def f(t, y):
        seen.append((t.dim(), t.dtype, tuple(y.shape), y.dtype))
        return -y

    y0 = torch.ones(2, 3, dtype=torch.float32)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    ys, nfe = _solve("implicit_adams", f, y0, t, {"step_size": 0.1, "interp": "cubic"})
    assert ys.shape == (3, 2, 3) and ys.dtype == torch.float32
    assert set(seen) == {(0, torch.float32, (2, 3), torch.float32)}
    assert nfe == len(seen)
    assert torch.allclose(ys[-1], torch.full((2, 3), math.exp(-1.0)), rtol=1e-5)


def test_explicit_evaluation_count():
    # Two RK4 warm-up steps (4 evaluations each, the first reused as f_n), then one per step.
    t = torch.linspace(0, 1, 21, dtype=F64)
    recorder = _Recorder(_decay)
    _, nfe = _solve("explicit_adams", recorder, torch.ones(1, dtype=F64), t, {})
    assert nfe == len(recorder.calls) == 2 * 4 + 18
    # Cubic output: one more evaluation, f(t1, y1), per step with outputs.
    _, nfe_cubic = _solve("explicit_adams", _decay, torch.ones(1, dtype=F64), t, {"interp": "cubic"})
    assert nfe_cubic == nfe + 20


def test_cubic_end_derivative_evaluated_once_per_step():
    # Three outputs inside the one step [0, 1] share one evaluation of f(1, y1).
    t = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0], dtype=F64)
    _, nfe = _solve("explicit_adams", _decay, torch.ones(1, dtype=F64), t, {"step_size": 1.0, "interp": "cubic"})
    assert nfe == 4 + 1


@pytest.mark.parametrize("decreasing", [False, True])
def test_perturb_moves_step_ends_inside_the_step(decreasing):
    times = [0.0, 0.25, 0.5, 0.75, 1.0]
    if decreasing:
        times = times[::-1]
    t = torch.tensor(times, dtype=F64)
    inward = torch.tensor(-math.inf if decreasing else math.inf, dtype=F64)

    def after(a):  # the float next to a, inside the step that starts at a
        return torch.nextafter(torch.tensor(a, dtype=F64), inward).item()

    def before(b):  # the float next to b, inside the step that ends at b
        return torch.nextafter(torch.tensor(b, dtype=F64), -inward).item()

    recorder = _Recorder(_decay)
    _solve("explicit_adams", recorder, torch.ones(1, dtype=F64), t, {"perturb": True, "max_order": 4})
    called = [value for _, value in recorder.calls]
    warm_up = called[:8]
    assert len(called) == 2 * 4 + 2
    # Two RK4 warm-up steps: first stage just after the start, last just before the end,
    # the middle stages where they are...
    for step in range(2):
        a, b = times[step], times[step + 1]
        assert called[4 * step] == after(a) != a
        assert called[4 * step + 3] == before(b) != b
        assert called[4 * step + 1] == pytest.approx(a + (b - a) / 3, abs=1e-15)
    # ...then Adams-Bashforth steps: one evaluation, just after the step's start.
    assert called[8:] == [after(times[2]), after(times[3])]

    # The corrector evaluates just before the step's end.
    recorder = _Recorder(_decay)
    _solve("implicit_adams", recorder, torch.ones(1, dtype=F64), t, {"perturb": True, "max_order": 4},
           rtol=1e-3, atol=1e-6)
    called = [value for _, value in recorder.calls]
    assert called[:8] == warm_up  # the same RK4 warm-up
    assert called[8] == after(times[2])
    assert set(called[8:]) == {after(times[2]), after(times[3]), before(times[3]), before(times[4])}


def test_perturb_selects_one_sided_values_at_a_jump():
    # f jumps from 0 to 1 at t = 0.5, a grid point: perturbed, the step that ends there
    # never sees the value 1, so y(0.5) = 0 exactly; unperturbed its last stage does.
    def jump(t, y):
        return (t >= 0.5).to(y.dtype) * torch.ones_like(y)

    t = torch.tensor([0.0, 0.5], dtype=F64)
    y0 = torch.zeros(1, dtype=F64)
    perturbed, _ = _solve("explicit_adams", jump, y0, t, {"perturb": True})
    plain, _ = _solve("explicit_adams", jump, y0, t, {"perturb": False})
    assert perturbed[-1].item() == 0.0
    assert plain[-1].item() == pytest.approx(0.5 / 8)


def test_single_time_returns_initial_state():
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    ys, nfe = _solve("implicit_adams", _decay, y0, torch.tensor([0.3], dtype=F64), {"step_size": 0.1})
    assert nfe == 0 and ys.shape == (1, 2) and torch.equal(ys[0], y0.detach())
    ys.sum().backward()
    assert torch.equal(y0.grad, torch.ones(2, dtype=F64))


def test_unknown_options_are_ignored():
    t = torch.linspace(0, 1, 5, dtype=F64)
    y0 = torch.ones(1, dtype=F64)
    plain, _ = _solve("explicit_adams", _decay, y0, t, {"step_size": 0.1})
    extra, _ = _solve("explicit_adams", _decay, y0, t, {"step_size": 0.1, "norm": None, "first_step": 3})
    assert torch.equal(plain, extra)
    assert set(MULTISTEP_OPTIONS) == {"step_size", "grid_constructor", "interp", "perturb", "max_order", "max_iters"}


@pytest.mark.parametrize("decreasing", [False, True])
def test_grid_constructor_receives_func_y0_and_t(decreasing):
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    if decreasing:
        t = t.flip(0)
    y0 = torch.ones(1, dtype=F64)
    received = {}

    def constructor(func, y, times):
        received.update(f=func(times[0], y), y=y, t=times)
        return torch.cat([times[:1], times[0] + (times[-1] - times[0]) * torch.tensor([0.3, 0.6], dtype=F64),
                          times[-1:]])

    recorder = _Recorder(_decay)
    _, nfe = _solve("explicit_adams", recorder, y0, t, {"grid_constructor": constructor})
    assert torch.equal(received["t"], t) and received["y"] is y0
    assert torch.equal(received["f"], -y0)  # the caller's func, in the caller's time
    # Its evaluation counts too; then two RK4 warm-up steps and one Adams-Bashforth step.
    assert nfe == len(recorder.calls) == 1 + 4 + 4 + 1


def test_gradcheck_explicit_wrt_y0_and_t():
    def f(t, y):
        return torch.sin(t) * y - y ** 3

    def run(y0, t):
        return solve_multistep("explicit_adams", f, y0, t, rtol=1e-7, atol=1e-9,
                               options={"step_size": 0.125, "max_order": 5, "interp": "cubic"})[0]

    # (t[-1] - t[0]) / step_size is far from an integer: the number of grid points is the
    # same for every perturbed t of the finite differences.
    y0 = torch.tensor([0.5, -0.3], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.35, 0.8], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (y0, t))


def test_gradcheck_implicit_wrt_y0_and_t():
    # rtol = atol = 0: the corrector always runs max_iters times, so the solve is smooth in its inputs.
    def f(t, y):
        return torch.cos(t) * y - 0.5 * y ** 2

    def run(y0, t):
        return solve_multistep("implicit_adams", f, y0, t, rtol=0.0, atol=0.0,
                               options={"max_iters": 3, "max_order": 5})[0]

    y0 = torch.tensor([0.5, -0.3], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.1, 0.25, 0.4, 0.5, 0.65], dtype=F64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.autograd.gradcheck(run, (y0, t))


def test_output_on_inner_grid_point_has_left_slope_time_gradient():
    # t[1] = 0.5 is an inner point of the step_size grid: the output is y(0.5) itself and its
    # dL/dt is the linear interpolant's, (y(0.5) - y(0.25)) / 0.25, not 0.
    def f(t, y):
        return torch.sin(3 * t) - y

    y0 = torch.tensor([0.2], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64, requires_grad=True)
    ys, _ = _solve("explicit_adams", f, y0, t, {"step_size": 0.25})
    fine, _ = _solve("explicit_adams", f, y0, torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64), {"step_size": 0.25})
    assert torch.equal(ys[1], fine[2])
    (dt,) = torch.autograd.grad(ys[1].sum(), t)
    slope = ((fine[2] - fine[1]) / 0.25).sum()
    assert dt[1].item() == pytest.approx(slope.item(), rel=1e-12)
    # The one-sided difference quotient from the left agrees (inside a step the output is linear in t).
    eps = 1e-7
    left, _ = _solve("explicit_adams", f, y0, torch.tensor([0.0, 0.5 - eps, 1.0], dtype=F64), {"step_size": 0.25})
    assert ((ys[1] - left[1]) / eps).sum().item() == pytest.approx(slope.item(), rel=1e-6)


def test_max_order_below_four_warns_and_takes_rk4_steps():
    t = torch.linspace(0, 1, 11, dtype=F64)
    with pytest.warns(UserWarning, match="rk4"):
        _, nfe = _solve("explicit_adams", _decay, torch.ones(1, dtype=F64), t, {"max_order": 3})
    assert nfe == 10 * 4


def test_corrector_that_does_not_converge_warns():
    t = torch.linspace(0, 1, 11, dtype=F64)
    with pytest.warns(UserWarning, match="max_iters=1"):
        _solve("implicit_adams", _decay, torch.ones(1, dtype=F64), t, {"max_iters": 1}, rtol=1e-14, atol=1e-16)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

def _grid_of(points):
    return lambda func, y0, t: torch.tensor(points, dtype=F64)


_BAD_OPTIONS = [
    ({"step_size": 0}, "step_size"),
    ({"step_size": -0.1}, "step_size"),
    ({"step_size": float("nan")}, "step_size"),
    ({"step_size": float("inf")}, "step_size"),
    ({"step_size": "0.1"}, "step_size"),
    ({"step_size": torch.tensor([0.1, 0.2])}, "step_size"),
    ({"step_size": 0.1, "grid_constructor": _grid_of([0.0, 1.0])}, "grid_constructor"),
    ({"grid_constructor": 3}, "grid_constructor"),
    ({"grid_constructor": lambda f, y0, t: [0.0, 1.0]}, "grid_constructor"),
    ({"grid_constructor": lambda f, y0, t: torch.zeros(2, 2, dtype=F64)}, "grid_constructor"),
    ({"grid_constructor": lambda f, y0, t: torch.tensor([0, 1])}, "grid_constructor"),
    ({"grid_constructor": _grid_of([0.0])}, "grid_constructor"),
    ({"grid_constructor": _grid_of([0.1, 0.5, 1.0])}, "grid_constructor"),
    ({"grid_constructor": _grid_of([0.0, 0.5, 0.9])}, "grid_constructor"),
    ({"grid_constructor": _grid_of([0.0, 0.6, 0.4, 1.0])}, "grid_constructor"),
    ({"grid_constructor": _grid_of([0.0, 0.5, 0.5, 1.0])}, "grid_constructor"),
    ({"interp": "quadratic"}, "interp"),
    ({"perturb": "yes"}, "perturb"),
    ({"perturb": 1}, "perturb"),
    ({"max_order": 1}, "max_order"),
    ({"max_order": MAX_ORDER + 1}, "max_order"),
    ({"max_order": 4.5}, "max_order"),
    ({"max_order": True}, "max_order"),
    ({"max_iters": 0}, "max_iters"),
    ({"max_iters": 2.5}, "max_iters"),
]


@pytest.mark.parametrize("options,name", _BAD_OPTIONS)
def test_bad_option_raises_value_error_naming_it(options, name):
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    with pytest.raises(ValueError, match=name):
        _solve("implicit_adams", _decay, torch.ones(1, dtype=F64), t, options)


def test_grid_in_the_wrong_direction_raises():
    t = torch.tensor([1.0, 0.0], dtype=F64)
    with pytest.raises(ValueError, match="grid_constructor"):
        _solve("explicit_adams", _decay, torch.ones(1, dtype=F64), t, {"grid_constructor": _grid_of([0.0, 1.0])})


@pytest.mark.parametrize("method,t,name", [
    ("adams", torch.tensor([0.0, 1.0], dtype=F64), "method"),
    ("explicit_adams", torch.zeros(2, 2, dtype=F64), "t must"),
    ("explicit_adams", torch.tensor([0.0, 1.0, 0.5], dtype=F64), "t must"),
    ("explicit_adams", torch.tensor([0, 1]), "t must"),
])
def test_bad_method_or_times_raise(method, t, name):
    with pytest.raises(ValueError, match=name):
        _solve(method, _decay, torch.ones(1, dtype=F64), t, {})


# ---------------------------------------------------------------------------
# Side by side with torchdiffeq
# ---------------------------------------------------------------------------

class _Field(nn.Module):
    """A small time-dependent MLP with a unit jump at t = 0.5 (a point of every grid below
    but the power-law one), where the one-sided values chosen by `perturb` differ.
    Records (dtype, time) of each call."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(20260101)
        self.w1 = nn.Parameter(0.7 * torch.randn(8, 2, generator=g, dtype=F64))
        self.b1 = nn.Parameter(0.2 * torch.randn(8, generator=g, dtype=F64))
        self.w2 = nn.Parameter(0.7 * torch.randn(2, 8, generator=g, dtype=F64))
        self.calls = []

    def forward(self, t, y):
        self.calls.append((t.dtype, t.item()))
        hidden = torch.tanh(y @ self.w1.T.to(y.dtype) + self.b1.to(y.dtype) + 2 * t)
        return hidden @ self.w2.T.to(y.dtype) - 0.3 * y + (t >= 0.5).to(y.dtype)


def _power_grid(func, y0, t):
    u = torch.linspace(0, 1, 23, dtype=t.dtype)[1:-1] ** 1.3
    return torch.cat([t[:1], t[0] + (t[-1] - t[0]) * u, t[-1:]])


_Y0 = torch.tensor([0.3, -0.2], dtype=F64)
_T_OFF_GRID = torch.tensor([0.0, 0.13, 0.37, 0.71, 1.0], dtype=F64)


def _run(solver, method, t, options, y0=_Y0, rtol=1e-7, atol=1e-9):
    """(ys, nfe, calls, non-convergence warnings, grads w.r.t. y0, t and the parameters)."""
    field = _Field()
    y0 = y0.clone().requires_grad_()
    t = t.clone().requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if solver == "torchdiffeq":
            import torchdiffeq
            ys = torchdiffeq.odeint(field, y0, t, method=method, options=dict(options), rtol=rtol, atol=atol)
            nfe = len(field.calls)
        else:
            ys, nfe = solve_multistep(method, field, y0, t, rtol=rtol, atol=atol, options=dict(options))
            assert nfe == len(field.calls)
    weights = torch.linspace(-1.0, 1.5, ys.numel(), dtype=ys.dtype).reshape(ys.shape)
    grads = torch.autograd.grad((ys * weights).sum(), [y0, t, *field.parameters()])
    not_converged = sum("converge" in str(w.message) for w in caught)
    return ys.detach(), nfe, field.calls, not_converged, grads


def _assert_close(actual, expected, rtol=1e-12):
    scale = max(expected.abs().max().item(), 1e-300)
    assert (actual - expected).abs().max().item() <= rtol * scale


def _assert_same_solve(ours, theirs, rtol=1e-12, compare_grads=True):
    ys, nfe, calls, not_converged, grads = ours
    ys_ref, nfe_ref, calls_ref, not_converged_ref, grads_ref = theirs
    _assert_close(ys, ys_ref, rtol)
    assert nfe == nfe_ref
    assert calls == calls_ref  # the same evaluation times, bit for bit, in the same dtype
    assert not_converged == not_converged_ref
    if compare_grads:
        for g, g_ref in zip(grads, grads_ref):
            _assert_close(g, g_ref, rtol)


_GRIDS = {
    "step_size": ({"step_size": 0.05}, _T_OFF_GRID),
    "grid_constructor": ({"grid_constructor": _power_grid}, _T_OFF_GRID),
    "grid_t": ({}, torch.linspace(0, 1, 21, dtype=F64)),
}


@pytest.mark.parametrize("perturb", [False, True])
@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("grid", list(_GRIDS))
@pytest.mark.parametrize("decreasing", [False, True])
@pytest.mark.parametrize("method", MULTISTEP_METHODS)
def test_matches_torchdiffeq(method, decreasing, grid, interp, perturb):
    pytest.importorskip("torchdiffeq")
    options, t = _GRIDS[grid]
    options = dict(options, interp=interp, perturb=perturb)
    if decreasing:
        t = t.flip(0)
    _assert_same_solve(_run("neuralode", method, t, options), _run("torchdiffeq", method, t, options))


@pytest.mark.parametrize("method,options,tol", [
    ("explicit_adams", {"max_order": 2}, 1e-7),
    ("explicit_adams", {"max_order": 3}, 1e-7),
    ("explicit_adams", {"max_order": 4}, 1e-7),
    ("explicit_adams", {"max_order": 7}, 1e-7),
    ("implicit_adams", {"max_order": 4}, 1e-7),
    ("implicit_adams", {"max_order": 6, "max_iters": 2}, 1e-7),
    # Never converges: the warning, and the history losing its oldest derivative, every step.
    ("implicit_adams", {"max_iters": 1}, 1e-13),
    ("fixed_adams", {"max_order": 12, "max_iters": 10, "perturb": True}, 1e-10),
])
def test_matches_torchdiffeq_orders_and_iterations(method, options, tol):
    pytest.importorskip("torchdiffeq")
    options = dict(options, step_size=0.04)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_order < 4 warns in both
        ours = _run("neuralode", method, _T_OFF_GRID, options, rtol=tol, atol=tol)
        theirs = _run("torchdiffeq", method, _T_OFF_GRID, options, rtol=tol, atol=tol)
    _assert_same_solve(ours, theirs)
    if options.get("max_iters") == 1:
        assert ours[3] > 0


def test_matches_torchdiffeq_per_element_tolerances():
    pytest.importorskip("torchdiffeq")
    rtol = torch.tensor([1e-9, 1e-5], dtype=F64)
    atol = torch.tensor([1e-11, 1e-7], dtype=F64)
    options = {"step_size": 0.05}
    ours = _run("neuralode", "implicit_adams", _T_OFF_GRID, options, rtol=rtol, atol=atol)
    theirs = _run("torchdiffeq", "implicit_adams", _T_OFF_GRID, options, rtol=rtol, atol=atol)
    _assert_same_solve(ours, theirs)


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
@pytest.mark.parametrize("decreasing", [False, True])
def test_matches_torchdiffeq_float32_state_float64_times(method, decreasing):
    pytest.importorskip("torchdiffeq")
    t = _T_OFF_GRID.flip(0) if decreasing else _T_OFF_GRID
    y0 = _Y0.float()
    options = {"step_size": 0.05, "perturb": True, "interp": "cubic"}
    ours = _run("neuralode", method, t, options, y0=y0, rtol=1e-5, atol=1e-6)
    theirs = _run("torchdiffeq", method, t, options, y0=y0, rtol=1e-5, atol=1e-6)
    assert ours[0].dtype == torch.float32
    assert ours[2] == theirs[2] and {dtype for dtype, _ in ours[2]} == {torch.float32}
    _assert_close(ours[0], theirs[0], rtol=1e-5)
    for g, g_ref in zip(ours[4], theirs[4]):
        _assert_close(g, g_ref, rtol=1e-4)


def test_cubic_with_several_outputs_per_step_matches_torchdiffeq_with_fewer_evaluations():
    # torchdiffeq evaluates f(t1, y1) once per output; here once per step.
    pytest.importorskip("torchdiffeq")
    t = torch.tensor([0.0, 0.11, 0.12, 0.13, 0.6, 1.0], dtype=F64)
    options = {"step_size": 0.1, "interp": "cubic"}
    ours = _run("neuralode", "explicit_adams", t, options)
    theirs = _run("torchdiffeq", "explicit_adams", t, options)
    _assert_close(ours[0], theirs[0])
    for g, g_ref in zip(ours[4], theirs[4]):
        _assert_close(g, g_ref)
    assert ours[1] == theirs[1] - 2


def test_output_on_inner_grid_point_differs_from_torchdiffeq_only_in_dt():
    # torchdiffeq's dL/dt is 0 for an output on an inner step_size grid point; here it is the
    # linear interpolant's, which moves from t[0] (the grid's origin) to that output's time.
    pytest.importorskip("torchdiffeq")
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    options = {"step_size": 0.25}
    ours = _run("neuralode", "explicit_adams", t, options)
    theirs = _run("torchdiffeq", "explicit_adams", t, options)
    assert torch.equal(ours[0], theirs[0])
    grads, grads_ref = ours[4], theirs[4]
    for i in [0, 2, 3, 4]:  # y0 and the parameters
        _assert_close(grads[i], grads_ref[i])
    dt, dt_ref = grads[1], grads_ref[1]
    assert dt_ref[1].item() == 0.0 and dt[1].item() != 0.0
    assert dt[0].item() + dt[1].item() == pytest.approx(dt_ref[0].item(), rel=1e-12)
    assert dt[2].item() == pytest.approx(dt_ref[2].item(), rel=1e-12)


def test_coefficients_equal_torchdiffeq_tables():
    pytest.importorskip("torchdiffeq")
    from torchdiffeq._impl import fixed_adams

    for q in range(1, MAX_ORDER + 1):
        assert [float(c) for c in adams_bashforth_coefficients(q)] == fixed_adams._BASHFORTH_DIVISOR[q].tolist()
    # torchdiffeq's one-point Moulton entry is [1/11] (never used: the corrector has >= 4 points).
    for p in range(2, MAX_ORDER + 1):
        assert [float(c) for c in adams_moulton_coefficients(p)] == fixed_adams._MOULTON_DIVISOR[p].tolist()
