"""method="scipy_solver" (neuralode.scipy_solver): SciPy's solve_ivp behind the odeint API.

Closed forms, how func is called, errors, and side by side with torchdiffeq's
scipy_solver when torchdiffeq is installed. Tests that need SciPy skip without it;
the missing-SciPy message is tested either way.
"""

import math
import sys
import warnings

import numpy as np
import pytest
import torch

from neuralode.scipy_solver import SCIPY_METHODS, SCIPY_OPTIONS, solve_scipy

F64 = torch.float64


def _decay(t, y):
    return -y


def _solve(func, y0, t, options, rtol=1e-8, atol=1e-10):
    return solve_scipy(func, y0, t, rtol=rtol, atol=atol, options=options)


def test_missing_scipy_raises_import_error_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.integrate", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install scipy"):
        _solve(_decay, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), {})


def test_options_listed():
    assert SCIPY_OPTIONS == ("solver", "min_step", "max_step")


@pytest.mark.parametrize("solver", SCIPY_METHODS)
@pytest.mark.parametrize("decreasing", [False, True])
def test_decay_closed_form(solver, decreasing):
    pytest.importorskip("scipy")
    t = torch.tensor([0.0, 0.3, 1.0, 2.0], dtype=F64)
    if decreasing:
        t = t.flip(0)
    y0 = torch.tensor([1.0, -3.0], dtype=F64)
    ys, nfe = _solve(_decay, y0, t, {"solver": solver})
    exact = y0 * torch.exp(-(t - t[0]))[:, None]
    assert ys.shape == (4, 2) and nfe > 0
    # solve_ivp's value at t[0] (LSODA's from its interpolant: y0 to round-off).
    torch.testing.assert_close(ys[0], y0, rtol=1e-14, atol=0)
    assert ((ys - exact).abs() / exact.abs()).max().item() < 1e-6


def test_default_solver_is_lsoda():
    pytest.importorskip("scipy")
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    default, _ = _solve(_decay, y0, t, {})
    lsoda, _ = _solve(_decay, y0, t, {"solver": "LSODA"})
    rk45, _ = _solve(_decay, y0, t, {"solver": "RK45"})
    assert torch.equal(default, lsoda) and not torch.equal(default, rk45)


def test_func_sees_time_and_state_in_y0_dtype_without_autograd():
    pytest.importorskip("scipy")
    seen = []

    def f(t, y):
        seen.append((t.dim(), t.dtype, tuple(y.shape), y.dtype, torch.is_grad_enabled()))
        return -y

    y0 = torch.ones(2, 3, dtype=torch.float32, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ys, nfe = _solve(f, y0, t, {"solver": "RK45"}, rtol=1e-6, atol=1e-8)
    assert set(seen) == {(0, torch.float32, (2, 3), torch.float32, False)}
    assert nfe == len(seen)
    assert ys.shape == (3, 2, 3) and ys.dtype == torch.float32 and ys.device == y0.device
    assert not ys.requires_grad and ys.grad_fn is None
    assert torch.allclose(ys[-1], torch.full((2, 3), math.exp(-1.0)), rtol=1e-5)


def test_lsoda_times_reach_func_in_full_precision():
    # torchdiffeq builds the time tensor from a Python float with torch.tensor (float32 by
    # default) and so rounds LSODA's times to float32; here a float64 state sees them exactly.
    pytest.importorskip("scipy")
    times = []

    def f(t, y):
        times.append(t.item())
        return -y

    _solve(f, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), {"solver": "LSODA"})
    assert any(float(np.float32(value)) != value for value in times)


def test_single_time_returns_initial_state():
    pytest.importorskip("scipy")
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    ys, nfe = _solve(_decay, y0, torch.tensor([0.5], dtype=F64), {})
    assert nfe == 0 and ys.shape == (1, 2) and torch.equal(ys[0], y0.detach()) and not ys.requires_grad


def test_per_element_tolerances_as_tensors():
    pytest.importorskip("scipy")
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.tensor([1.0, 1.0], dtype=F64)
    as_floats, _ = _solve(_decay, y0, t, {"solver": "RK45"}, rtol=1e-6, atol=1e-9)
    as_tensors, _ = _solve(_decay, y0, t, {"solver": "RK45"},
                           rtol=torch.tensor([1e-6, 1e-6], dtype=F64), atol=torch.tensor([1e-9, 1e-9], dtype=F64))
    loose, _ = _solve(_decay, y0, t, {"solver": "RK45"},
                      rtol=torch.tensor([1e-6, 1e-2], dtype=F64), atol=torch.tensor([1e-9, 1e-4], dtype=F64))
    assert torch.equal(as_floats, as_tensors)
    assert not torch.equal(as_floats, loose)


def test_solver_class_accepted():
    scipy_integrate = pytest.importorskip("scipy.integrate")
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.ones(1, dtype=F64)
    by_class, _ = _solve(_decay, y0, t, {"solver": scipy_integrate.DOP853})
    by_name, _ = _solve(_decay, y0, t, {"solver": "DOP853"})
    assert torch.equal(by_class, by_name)


def test_max_step_bounds_the_steps():
    pytest.importorskip("scipy")
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.ones(1, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # min_step is not passed to methods that would warn about it
        _, nfe_free = _solve(_decay, y0, t, {"solver": "RK45"})
        ys, nfe_bounded = _solve(_decay, y0, t, {"solver": "RK45", "max_step": 0.01})
    assert nfe_bounded >= 100 * 6 > nfe_free  # at least 100 steps of 6 new evaluations
    assert abs(ys[-1].item() - math.exp(-1.0)) < 1e-8


def test_failure_raises_runtime_error_naming_the_solver():
    # y' = y^2, y(0) = 1 blows up at t = 1.
    pytest.importorskip("scipy")
    with pytest.raises(RuntimeError, match="RK45"):
        _solve(lambda t, y: y * y, torch.ones(1, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64),
               {"solver": "RK45"})


@pytest.mark.parametrize("options,name", [
    ({"solver": "nope"}, "solver"),
    ({"solver": 45}, "solver"),
    ({"solver": dict}, "solver"),
    ({"max_step": 0}, "max_step"),
    ({"max_step": -1.0}, "max_step"),
    ({"max_step": "1"}, "max_step"),
    ({"min_step": -1e-3}, "min_step"),
    ({"min_step": float("nan")}, "min_step"),
    ({"min_step": 0.5, "max_step": 0.1}, "min_step"),
])
def test_bad_option_raises_value_error_naming_it(options, name):
    pytest.importorskip("scipy")
    with pytest.raises(ValueError, match=name):
        _solve(_decay, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), options)


@pytest.mark.parametrize("t", [
    torch.zeros(2, 2, dtype=F64),
    torch.tensor([0.0, 1.0, 0.5], dtype=F64),
    torch.tensor([0, 1]),
    torch.tensor([], dtype=F64),
])
def test_bad_times_raise(t):
    pytest.importorskip("scipy")
    with pytest.raises(ValueError, match="t must"):
        _solve(_decay, torch.ones(1, dtype=F64), t, {})


def test_unknown_options_are_ignored():
    pytest.importorskip("scipy")
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.ones(1, dtype=F64)
    plain, _ = _solve(_decay, y0, t, {"solver": "RK23"})
    extra, _ = _solve(_decay, y0, t, {"solver": "RK23", "norm": None, "grid_points": None, "eps": 0.0})
    assert torch.equal(plain, extra)


# ---------------------------------------------------------------------------
# Side by side with torchdiffeq
# ---------------------------------------------------------------------------

_G = torch.Generator().manual_seed(7)
_W1 = 0.7 * torch.randn(8, 2, generator=_G, dtype=F64)
_W2 = 0.7 * torch.randn(2, 8, generator=_G, dtype=F64)


def _mlp(t, y):
    return torch.tanh(y @ _W1.T.to(y.dtype) + 2 * t) @ _W2.T.to(y.dtype) - 0.3 * y


def _autonomous_mlp(t, y):
    return torch.tanh(y @ _W1.T.to(y.dtype)) @ _W2.T.to(y.dtype) - 0.3 * y


def _torchdiffeq_scipy(func, y0, t, solver, rtol, atol):
    torchdiffeq = pytest.importorskip("torchdiffeq")
    with warnings.catch_warnings():
        # torchdiffeq passes min_step to every method; all but LSODA warn that it has no effect.
        warnings.simplefilter("ignore")
        return torchdiffeq.odeint(func, y0, t, method="scipy_solver", options={"solver": solver},
                                  rtol=rtol, atol=atol)


# LSODA and BDF on an autonomous f: torchdiffeq rounds LSODA's times to float32 (see
# test_lsoda_times_reach_func_in_full_precision), which only an f without t ignores.
@pytest.mark.parametrize("solver,func", [
    ("RK45", _mlp), ("DOP853", _mlp), ("Radau", _mlp), ("LSODA", _autonomous_mlp), ("BDF", _autonomous_mlp),
])
@pytest.mark.parametrize("decreasing", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_torchdiffeq(solver, func, decreasing, dtype):
    pytest.importorskip("scipy")
    t = torch.tensor([0.0, 0.13, 0.37, 0.71, 1.0], dtype=F64)
    if decreasing:
        t = t.flip(0)
    y0 = torch.tensor([0.3, -0.2], dtype=dtype)
    ours, _ = _solve(func, y0, t, {"solver": solver}, rtol=1e-6, atol=1e-8)
    theirs = _torchdiffeq_scipy(func, y0, t, solver, 1e-6, 1e-8)
    assert ours.dtype == theirs.dtype == dtype
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
