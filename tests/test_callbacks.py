"""Step callbacks (torchdiffeq's ``callback_step``, ``callback_accept_step``,
``callback_reject_step`` and their ``_adjoint`` variants): called per step attempt, per
accepted and per rejected step, in the forward and the adjoint pass, with the step's start
time, state and size; counted against the solver's own statistics and against torchdiffeq."""

import warnings

import pytest
import torch
from torch import nn

import neuralode

F64 = torch.float64


class Logged(nn.Module):
    """dy/dt = -k y (tuple-aware) that records every callback call."""

    def __init__(self, k=3.0, tuple_state=False):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=F64))
        self.tuple_state = tuple_state
        self.calls = []

    def forward(self, t, y):
        if self.tuple_state:
            return tuple(-self.k * x for x in y)
        return -self.k * y

    def _log(self, kind, t0, y0, dt):
        self.calls.append((kind, float(t0), y0, float(dt)))

    def callback_step(self, t0, y0, dt):
        self._log("step", t0, y0, dt)

    def callback_accept_step(self, t0, y0, dt):
        self._log("accept", t0, y0, dt)

    def callback_reject_step(self, t0, y0, dt):
        self._log("reject", t0, y0, dt)

    def callback_step_adjoint(self, t0, y0, dt):
        self._log("step_adjoint", t0, y0, dt)

    def callback_accept_step_adjoint(self, t0, y0, dt):
        self._log("accept_adjoint", t0, y0, dt)

    def callback_reject_step_adjoint(self, t0, y0, dt):
        self._log("reject_adjoint", t0, y0, dt)

    def count(self, kind):
        return sum(1 for c in self.calls if c[0] == kind)


def _solve(func, y0, **kw):
    stats = neuralode.SolverStats()
    t = torch.tensor([0.0, 2.0], dtype=F64)
    # A first step far too large: the first attempts are rejected.
    ys = neuralode.odeint(func, y0, t, rtol=1e-6, atol=1e-8, options={"first_step": 1.5}, stats=stats, **kw)
    return ys, stats


def test_forward_callbacks_count_attempts_accepts_and_rejects():
    """callback_step before every attempt, accept/reject after each: the counts are the
    solver's accepted and rejected steps, the states those at each step's start."""
    func = Logged()
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    ys, stats = _solve(func, y0)
    assert stats.steps_rejected > 0
    assert func.count("accept") == stats.steps_accepted
    assert func.count("reject") == stats.steps_rejected
    assert func.count("step") == stats.steps_accepted + stats.steps_rejected
    accepted = [c for c in func.calls if c[0] == "accept"]
    # consecutive accepted steps join up: t0 + dt of one is the next one's t0, and the
    # state passed is y at that t0 (the exact solution to the tolerance)
    for a, b in zip(accepted, accepted[1:]):
        assert abs(a[1] + a[3] - b[1]) < 1e-12
    for _, t0, y, _ in accepted:
        assert torch.allclose(y, y0 * torch.exp(torch.tensor(-3.0 * t0, dtype=F64)), rtol=1e-5)
    # the last step reaches the end (it may pass it: outputs come from the dense output)
    assert accepted[-1][1] < 2.0 <= accepted[-1][1] + accepted[-1][3] + 1e-12


def test_adjoint_callbacks_count_the_backward_steps():
    """The _adjoint variants are called by the backward solve of the continuous adjoint, once
    per attempt and per accepted/rejected step, with torchdiffeq's augmented state
    (dL/dt, y, dL/dy, dL/dk); the forward ones are not called there."""
    func = Logged()
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    ys, stats = _solve(func, y0, gradient="adjoint")
    forward_calls = len(func.calls)
    ys[-1].sum().backward()
    backward = func.calls[forward_calls:]
    assert {c[0] for c in backward} <= {"step_adjoint", "accept_adjoint", "reject_adjoint"}
    assert func.count("accept_adjoint") == stats.steps_accepted_backward
    assert func.count("reject_adjoint") == stats.steps_rejected_backward
    assert func.count("step_adjoint") == stats.steps_accepted_backward + stats.steps_rejected_backward
    _, t0, aug, dt = backward[0]
    assert t0 == 2.0 and dt < 0  # backwards in time
    a_t, y, a_y, a_k = aug
    assert a_t.shape == () and y.shape == (2,) and a_y.shape == (2,) and a_k.shape == ()
    assert torch.equal(a_y, torch.ones(2, dtype=F64))  # dL/dy(2) of sum(y(2))


def test_tuple_state_callbacks_receive_the_tuple():
    func = Logged(tuple_state=True)
    y0 = (torch.ones(2, dtype=F64), torch.full((1,), 3.0, dtype=F64))
    _solve(func, y0)
    _, _, y, _ = func.calls[0]
    assert isinstance(y, tuple) and [x.shape for x in y] == [(2,), (1,)]
    assert torch.equal(y[1], y0[1])


def test_fixed_step_methods_call_callback_step_only_and_warn_about_the_others():
    """A fixed grid calls callback_step once per step; torchdiffeq's warning for the
    accept/reject callbacks it never calls."""
    func = Logged()
    with pytest.warns(UserWarning, match="Solver 'rk4' does not support callbacks"):
        neuralode.odeint(func, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="rk4",
                         options={"step_size": 0.1})
    assert func.count("step") == 10 and func.count("accept") == 0


def test_methods_outside_the_engine_warn():
    func = Logged()
    with pytest.warns(UserWarning, match="Solver 'explicit_adams' does not support callbacks"):
        neuralode.odeint(func, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                         method="explicit_adams", options={"step_size": 0.1, "max_order": 4})
    assert func.calls == []


def test_callbacks_side_by_side_with_torchdiffeq():
    """dopri5 takes torchdiffeq's steps: the same callback calls, in the same order, at the
    same times."""
    td = pytest.importorskip("torchdiffeq")
    logs = []
    for odeint in (neuralode.odeint, td.odeint):
        func = Logged()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            odeint(func, torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64),
                   rtol=1e-6, atol=1e-8, options={"first_step": 1.5})
        logs.append([(c[0], c[1]) for c in func.calls])
    ours, theirs = logs
    assert [k for k, _ in ours] == [k for k, _ in theirs]
    assert max(abs(a - b) for (_, a), (_, b) in zip(ours, theirs)) < 1e-12
