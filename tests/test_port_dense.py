"""``odeint_dense``: the dense output of one adaptive solve, as torchdiffeq's API gives it.

Checked against closed forms (the harmonic oscillator), against the solve itself (the
values at t0 and t1, and at times that are observations of an ``odeint`` call with the
same steps), against torchdiffeq's ``odeint_dense`` side by side, and for its errors.
"""

import math

import pytest
import torch

import neuralode

F64 = torch.float64


def oscillator(t, y):
    """y'' = -y as a first-order system: y(t) = [cos t, -sin t] from [1, 0]."""
    return torch.stack([y[1], -y[0]])


def exact(t):
    return torch.stack([torch.cos(t), -torch.sin(t)], dim=-1)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5", "dopri8"])
@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_dense_output_matches_the_closed_form(method, direction):
    """Every adaptive method, forwards and backwards in time: y(t) at times in any order,
    with repeats, to the tolerance's level; the shape is (*t_eval.shape, *y0.shape)."""
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t0, t1 = torch.tensor(0.0, dtype=F64), torch.tensor(4.0 * direction, dtype=F64)
    dense = neuralode.odeint_dense(oscillator, y0, t0, t1, rtol=1e-9, atol=1e-11, method=method)
    times = direction * torch.tensor([3.3, 0.1, 4.0, 2.0, 0.1, 0.0, 1.234], dtype=F64)
    ys = dense(times)
    assert ys.shape == (7, 2)
    # dopri8's dense output is 4th order (see the README): a looser bound there
    bound = 1e-5 if method == "dopri8" else 1e-6
    assert (ys - exact(times)).abs().max().item() < bound
    # repeated times give the same value; a 0-d time gives one state
    assert torch.equal(ys[1], ys[4])
    assert dense(times[3]).shape == (2,)


def test_dense_values_are_those_of_the_solve():
    """At t0 and t1 the dense output is the solve's own start and end; inside, the same
    values as an ``odeint`` call that observes those times (observations never move a step)."""
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    dense = neuralode.odeint_dense(oscillator, y0, 0.0, 5.0, rtol=1e-6, atol=1e-8)
    end = neuralode.odeint(oscillator, y0, torch.tensor([0.0, 5.0], dtype=F64), rtol=1e-6, atol=1e-8)
    assert torch.equal(dense(torch.tensor(0.0, dtype=F64)), y0)
    assert torch.equal(dense(torch.tensor(5.0, dtype=F64)), end[-1])
    inner = torch.tensor([0.7, 2.5], dtype=F64)
    observed = neuralode.odeint(oscillator, y0, torch.cat([inner.new_zeros(1), inner, inner.new_full((1,), 5.0)]),
                                rtol=1e-6, atol=1e-8)
    assert torch.equal(dense(inner), observed[1:3])


def test_dense_output_is_differentiable():
    """Gradients flow to y0 and to the evaluation times: d y(t)/d t = f(y(t))."""
    y0 = torch.tensor([1.0, 0.0], dtype=F64, requires_grad=True)
    dense = neuralode.odeint_dense(oscillator, y0, 0.0, 3.0, rtol=1e-10, atol=1e-12)
    t = torch.tensor(1.1, dtype=F64, requires_grad=True)
    y = dense(t)
    g_y0, g_t = torch.autograd.grad(y[0], [y0, t])
    # y[0](t) = y0[0] cos t + y0[1] sin t
    assert torch.allclose(g_y0, torch.tensor([math.cos(1.1), math.sin(1.1)], dtype=F64), atol=1e-8)
    assert abs(g_t.item() - (-math.sin(1.1))) < 1e-7


def test_dense_output_side_by_side_with_torchdiffeq():
    """The same dopri5 steps as torchdiffeq's odeint_dense, so the same values to round-off
    where both interpolate within a step (their dense output is the same quartic)."""
    td = pytest.importorskip("torchdiffeq")
    f = lambda t, y: torch.stack([y[1], -y[0] * (1 + 0.1 * t)])
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t0, t1 = torch.tensor(0.0, dtype=F64), torch.tensor(3.0, dtype=F64)
    ours = neuralode.odeint_dense(f, y0, t0, t1, rtol=1e-6, atol=1e-8)
    theirs = td.odeint_dense(f, y0, t0, t1, rtol=1e-6, atol=1e-8)
    times = torch.tensor([0.5, 1.7, 2.9], dtype=F64)
    ref = torch.stack([theirs(x) for x in times])
    assert (ours(times) - ref).abs().max().item() < 1e-9


@pytest.mark.parametrize("kw,err,match", [
    ({"method": "rk4"}, ValueError, "needs an adaptive method"),
    ({"t1": 0.0}, ValueError, "t0 and t1 must differ"),
])
def test_dense_output_errors(kw, err, match):
    args = {"t1": 1.0, **kw}
    t1 = args.pop("t1")
    with pytest.raises(err, match=match):
        neuralode.odeint_dense(oscillator, torch.tensor([1.0, 0.0]), 0.0, t1, **args)


def test_dense_output_refuses_times_outside_the_solve():
    dense = neuralode.odeint_dense(oscillator, torch.tensor([1.0, 0.0]), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"times must lie in \[0.0, 1.0\]"):
        dense(torch.tensor([0.5, 1.5]))
