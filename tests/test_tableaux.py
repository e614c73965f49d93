"""Methods as tableaux (data only): rk4 (Kutta's 3/8 rule, torchdiffeq's rk4), rk4_classic,
heun2, heun3 (fixed step), adaptive_heun, fehlberg2 (adaptive). Their order from the global
error on the harmonic oscillator (closed form cos, -sin), the error estimate of the
adaptive ones, and one step of each rk4 against its formula."""

import math

import numpy as np
import pytest
import torch

import neuralode

ORDERS = {"rk4": 4, "rk4_classic": 4, "heun2": 2, "heun3": 3, "adaptive_heun": 2, "fehlberg2": 2}
OSC = lambda t, y: torch.stack([y[:, 1], -y[:, 0]], 1)


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_order(method):
    y0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    end = 4.0
    exact = torch.tensor([[math.cos(end), -math.sin(end)]], dtype=torch.float64)
    t = torch.tensor([0.0, end], dtype=torch.float64)
    hs = [0.1, 0.05, 0.025]
    errors = []
    for h in hs:
        stats = neuralode.SolverStats()
        if method in neuralode.FIXED_STEP_METHODS:
            y = neuralode.odeint(OSC, y0, t, method=method, options={"max_step": h}, stats=stats)
        else:  # tolerances too loose to reject: a fixed step h
            y = neuralode.odeint(OSC, y0, t, method=method, rtol=1e6, atol=1e6, stats=stats,
                                 options={"first_step": h, "max_step": h, "step_t": [end]})
        assert stats.steps_accepted == round(end / h) and stats.steps_rejected == 0
        errors.append((y[-1] - exact).abs().max().item())
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert abs(slope - ORDERS[method]) < 0.3, (slope, errors)


@pytest.mark.parametrize("method", ["adaptive_heun", "fehlberg2"])
def test_adaptive_error_control(method):
    """Tightening the tolerance 100x cuts the error at least 20x and costs steps: the
    embedded estimate drives the control. (Fehlberg 2(1)'s estimate, with weights -1/512,
    0, 1/512, is small against its true error: ~500 tol on this problem, as in torchdiffeq.)"""
    y0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    t = torch.linspace(0.0, 3.0, 7, dtype=torch.float64)
    exact = torch.stack([torch.cos(t), -torch.sin(t)], -1)[:, None, :]
    nfe, err = [], []
    for tol in (1e-4, 1e-6):
        stats = neuralode.SolverStats()
        y = neuralode.odeint(OSC, y0, t, method=method, rtol=tol, atol=tol, stats=stats)
        err.append((y - exact).abs().max().item())
        nfe.append(stats.nfe_forward)
    assert err[1] < err[0] / 20 and err[0] < 1000 * 1e-4
    assert nfe[1] > 2 * nfe[0]


def _one_step(method, f, y0, h):
    t = torch.tensor([0.0, h], dtype=torch.float64)
    return neuralode.odeint(f, y0, t, method=method)[-1]


def test_rk4_is_the_three_eighths_rule_and_rk4_classic_the_classic_method():
    """One step of each against its formula (t-dependent f, so that the nodes count too)."""
    f = lambda t, y: torch.cos(3 * t) * y + y**2
    y0 = torch.tensor([0.3, -0.7], dtype=torch.float64)
    h = 0.4
    k1 = f(torch.tensor(0.0, dtype=torch.float64), y0)
    # 3/8 rule: c = 0, 1/3, 2/3, 1; b = 1/8, 3/8, 3/8, 1/8.
    t = lambda c: torch.tensor(c * h, dtype=torch.float64)
    k2 = f(t(1 / 3), y0 + h * k1 / 3)
    k3 = f(t(2 / 3), y0 + h * (k2 - k1 / 3))
    k4 = f(t(1.0), y0 + h * (k1 - k2 + k3))
    expected = y0 + h * (k1 + 3 * (k2 + k3) + k4) / 8
    assert torch.allclose(_one_step("rk4", f, y0, h), expected, rtol=1e-14, atol=1e-14)
    # Classic: c = 0, 1/2, 1/2, 1; b = 1/6, 1/3, 1/3, 1/6.
    k2 = f(t(0.5), y0 + h * k1 / 2)
    k3 = f(t(0.5), y0 + h * k2 / 2)
    k4 = f(t(1.0), y0 + h * k3)
    expected = y0 + h * (k1 + 2 * (k2 + k3) + k4) / 6
    assert torch.allclose(_one_step("rk4_classic", f, y0, h), expected, rtol=1e-14, atol=1e-14)
