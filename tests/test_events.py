"""Events: ``odeint(..., event_fn=)``, ``odeint_event`` and events per sample.

Oracles: closed forms (a ball under gravity), gradcheck of the event time and the state
at the event (finite differences of the whole search), and torchdiffeq's
``odeint_event`` side by side."""

import math

import pytest
import torch
from torch import nn

import neuralode
from neuralode import odeint, odeint_adjoint, odeint_event

try:
    import torchdiffeq
except ImportError:  # the side-by-side tests need it; the rest do not
    torchdiffeq = None
needs_torchdiffeq = pytest.mark.skipif(torchdiffeq is None, reason="torchdiffeq is not installed")

G, FLOOR = 9.81, 0.5


def fall_time(h0, v0, g=G, floor=FLOOR):
    """First t > 0 with h0 + v0 t - g t^2 / 2 = floor."""
    return (v0 + math.sqrt(v0 * v0 + 2 * g * (h0 - floor))) / g


class Ball(nn.Module):
    """dh/dt = v, dv/dt = -g; the event: h - floor (a parameter of the event only)."""

    def __init__(self, g=G, floor=FLOOR):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(g, dtype=torch.float64))
        self.floor = nn.Parameter(torch.tensor(floor, dtype=torch.float64))

    def forward(self, t, y):
        return torch.stack([y[..., 1], -self.g * torch.ones_like(y[..., 1])], -1)

    def event(self, t, y):
        return y[..., 0] - self.floor


SEARCHES = [("dopri5", {}), ("tsit5", {}), ("bosh3", {}), ("rk4", {"step_size": 0.01, "interp": "cubic"})]


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method,options", SEARCHES)
def test_ball_event_time_and_gradients_match_the_closed_form(method, options, gradient):
    ball = Ball()
    y0 = torch.tensor([10.0, 1.0], dtype=torch.float64, requires_grad=True)
    t0 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    event_t, sol = odeint_event(ball, y0, t0, event_fn=ball.event, method=method, options=options,
                                rtol=1e-10, atol=1e-10, gradient=gradient)
    assert sol.shape == (2, 2) and event_t.shape == ()
    tol = 1e-8 if not options else 1e-6
    assert abs(event_t.item() - (0.3 + fall_time(10.0, 1.0))) < tol
    assert abs(sol[1, 0].item() - FLOOR) < tol  # the state at the event is on the floor
    torch.testing.assert_close(sol[0], y0.detach())
    # L = tau + v(tau); tau = t0 + (v0 + s) / g with s = sqrt(v0^2 + 2 g (h0 - floor)), v(tau) = -s.
    loss = event_t + sol[1, 1]
    grads = torch.autograd.grad(loss, [y0, t0, ball.g, ball.floor])

    def closed(h0, v0, t0_, g, floor):
        s = torch.sqrt(v0 * v0 + 2 * g * (h0 - floor))
        return t0_ + (v0 + s) / g - s

    exact = torch.autograd.functional.jacobian(
        closed, tuple(torch.tensor(x, dtype=torch.float64) for x in (10.0, 1.0, 0.3, G, FLOOR)))
    got = [grads[0][0], grads[0][1], grads[1], grads[2], grads[3]]
    for g_, e in zip(got, exact):
        # rk4's grid moves with t0: its discrete dtau/dt0 differs from 1 by O(step).
        assert abs(g_.item() - e.item()) < (2e-2 if options and g_ is grads[1] else 1e-5), (got, exact)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_reverse_time_event_matches_the_closed_form(gradient):
    # Backwards from t0 = 2 the ball (h = 0.5 + 1, v = -3 at t0) rises to the floor in the past.
    ball = Ball()
    y0 = torch.tensor([FLOOR + 1.0, -3.0], dtype=torch.float64, requires_grad=True)
    t0 = torch.tensor(2.0, dtype=torch.float64)
    event_t, sol = odeint_event(ball, y0, t0, event_fn=ball.event, reverse_time=True, rtol=1e-10, atol=1e-10,
                                gradient=gradient)
    # h(t0 - s) = 1.5 + 3 s - g s^2 / 2 ... in reverse time the ball goes up first, then down to the floor.
    s = (3.0 + math.sqrt(9.0 + 2 * G * 1.0)) / G
    assert abs(event_t.item() - (2.0 - s)) < 1e-8
    (grad_h0,) = torch.autograd.grad(event_t, [y0], allow_unused=True)[:1]
    # d(event_t)/dh0 = -ds/dh0 = -1 / sqrt(9 + 2 g)
    assert abs(grad_h0[0].item() + 1 / math.sqrt(9.0 + 2 * G)) < 1e-6


def pendulum(params):
    k, c = params

    def f(t, y):
        return torch.stack([y[1], -k * torch.sin(y[0]) - c * y[1] + 0.1 * torch.cos(t)])

    return f


GRADCHECK = [("dopri5", {}), ("tsit5", {}), ("rk4", {"step_size": 0.005, "interp": "cubic"})]


@pytest.mark.parametrize("reverse_time", [False, True])
@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint", "checkpoint"])
@pytest.mark.parametrize("method,options", GRADCHECK)
def test_gradcheck_event_time_and_state(method, options, interface, reverse_time):
    """d(event_t, y(event_t)) / d(y0, t0, parameters of func, parameter of event_fn) against
    finite differences of the whole search (float64): backprop (odeint), the adjoint and the
    checkpoint."""
    solver = {"odeint": odeint, "odeint_adjoint": odeint_adjoint,
              "checkpoint": lambda *a, **k: odeint(*a, gradient="checkpoint", **k)}[interface]
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    t0 = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    params = torch.tensor([2.0, 0.3], dtype=torch.float64, requires_grad=True)
    level = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)

    def run(y0_, t0_, params_, level_):
        f = pendulum(params_)
        kwargs = dict(adjoint_params=(params_,)) if interface != "odeint" else {}
        event_t, sol = odeint_event(f, y0_, t0_, event_fn=lambda t, y: y[0] - level_, reverse_time=reverse_time,
                                    odeint_interface=solver, method=method, options=options, rtol=1e-11,
                                    atol=1e-11, **kwargs)
        return event_t, sol[-1]

    event_t, _ = run(y0.detach(), t0.detach(), params.detach(), level.detach())
    assert (event_t.item() > 0.1) != reverse_time
    assert torch.autograd.gradcheck(run, (y0, t0, params, level), atol=1e-5, rtol=1e-3)


def _tuple_ball(g):
    def f(t, state):
        h, v = state
        return v, -g * torch.ones_like(v)

    return f


@needs_torchdiffeq
@pytest.mark.parametrize("reverse_time", [False, True])
@pytest.mark.parametrize("adjoint", [False, True])
@pytest.mark.parametrize("method,options", [("dopri5", {}), ("rk4", {"step_size": 0.05})])
def test_side_by_side_with_torchdiffeq_odeint_event(method, options, adjoint, reverse_time):
    """Same event time and state, same gradients w.r.t. y0, t0 and func's parameter; a tuple state."""
    results = []
    for lib in (neuralode, torchdiffeq):
        g = torch.tensor(9.81, dtype=torch.float64, requires_grad=True)
        h0 = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
        v0 = torch.tensor([2.0 if not reverse_time else -2.0], dtype=torch.float64, requires_grad=True)
        t0 = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
        interface = lib.odeint_adjoint if adjoint else lib.odeint
        kwargs = dict(adjoint_params=(g,)) if adjoint else {}
        event_t, (h, v) = lib.odeint_event(_tuple_ball(g), (h0, v0), t0, event_fn=lambda t, s: s[0][0] - 1.0,
                                           reverse_time=reverse_time, odeint_interface=interface, method=method,
                                           options=options, rtol=1e-9, atol=1e-9, **kwargs)
        loss = 2 * event_t + v[-1].sum() + h[-1].sum()
        grads = torch.autograd.grad(loss, [h0, v0, t0, g])
        results.append((event_t.detach(), h.detach(), v.detach(), grads))
    ours, theirs = results
    assert abs(ours[0].item() - theirs[0].item()) < 1e-7
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours[2], theirs[2], atol=1e-6, rtol=1e-6)
    for a, b in zip(ours[3], theirs[3]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@needs_torchdiffeq
def test_odeint_with_event_fn_returns_torchdiffeq_values():
    """odeint(event_fn=...) itself: (event_t, [y0, y(event_t)]); event_t carries no gradient, the
    state differentiates at the fixed event time, as torchdiffeq's."""
    out = []
    for lib in (neuralode, torchdiffeq):
        y0 = torch.tensor([2.0, 0.5], dtype=torch.float64, requires_grad=True)
        f = lambda t, y: torch.stack([y[1], -torch.sin(y[0])])  # noqa: E731
        event_t, sol = lib.odeint(f, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), event_fn=lambda t, y: y[0],
                                  rtol=1e-9, atol=1e-9)
        assert not event_t.requires_grad and sol.shape == (2, 2)
        (grad,) = torch.autograd.grad(sol[1].sum(), [y0])
        out.append((event_t, sol.detach(), grad))
    assert abs(out[0][0].item() - out[1][0].item()) < 1e-7
    torch.testing.assert_close(out[0][1], out[1][1], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out[0][2], out[1][2], atol=1e-5, rtol=1e-5)


@needs_torchdiffeq
def test_several_event_values_stop_at_the_first_of_any():
    """torchdiffeq's rule for an event_fn with several values: the first sign change of any."""
    f = lambda t, y: torch.ones_like(y)  # noqa: E731  y = y0 + t
    y0 = torch.tensor([0.0], dtype=torch.float64)
    event = lambda t, y: torch.cat([y - 3.0, 2.0 - y])  # noqa: E731  crossings at t = 3 and t = 2
    for lib in (neuralode, torchdiffeq):
        event_t, sol = lib.odeint(f, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), event_fn=event)
        assert abs(event_t.item() - 2.0) < 1e-8, lib.__name__


def test_event_at_the_start_and_its_gradient():
    y0 = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    f = lambda t, y: torch.stack([y[1], -torch.ones_like(y[1])])  # noqa: E731
    for gradient in ("backprop", "adjoint", "checkpoint"):
        event_t, sol = odeint(f, y0, torch.tensor([0.5, 1.5], dtype=torch.float64), event_fn=lambda t, y: y[0],
                              gradient=gradient, adjoint_params=() if gradient != "backprop" else None)
        assert event_t.item() == 0.5
        torch.testing.assert_close(sol, torch.stack([y0, y0]).detach())
        (grad,) = torch.autograd.grad((sol * torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)).sum(), [y0])
        torch.testing.assert_close(grad, torch.tensor([4.0, 6.0], dtype=torch.float64))


def test_float32_event():
    ball = lambda t, y: torch.stack([y[1], torch.full_like(y[1], -G)])  # noqa: E731
    y0 = torch.tensor([10.0, 0.0])
    event_t, sol = odeint(ball, y0, torch.tensor([0.0, 1.0]), event_fn=lambda t, y: y[0], rtol=1e-6, atol=1e-6)
    assert sol.dtype == torch.float32 and event_t.dtype == torch.float32
    assert abs(event_t.item() - math.sqrt(20 / G)) < 1e-5


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method,options", [("dopri5", {}), ("rk4", {"step_size": 0.01, "interp": "cubic"})])
def test_events_per_sample(method, options, gradient):
    """Each ball of a batch stops at its own floor contact; d(event_t)/d(h0) per row."""
    ball = Ball()
    y0 = torch.tensor([[10.0, 0.0], [5.0, 1.0], [1.0, 2.0], [FLOOR + 2.0, -1.0]], dtype=torch.float64,
                      requires_grad=True)
    event_t, sol = odeint_event(ball, y0, torch.tensor(0.0, dtype=torch.float64), event_fn=ball.event,
                                event_per_sample=True, method=method, options=options, rtol=1e-10, atol=1e-10,
                                gradient=gradient)
    exact = torch.tensor([fall_time(h, v) for h, v in y0.tolist()], dtype=torch.float64)
    assert event_t.shape == (4,)
    torch.testing.assert_close(event_t.detach(), exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(sol[1, :, 0].detach(), torch.full((4,), FLOOR, dtype=torch.float64), atol=1e-6,
                               rtol=0)
    (grad,) = torch.autograd.grad(event_t.sum(), [y0])
    # d tau / d h0 = 1 / sqrt(v0^2 + 2 g (h0 - floor)) = 1 / |v(tau)|
    s = torch.tensor([math.sqrt(v * v + 2 * G * (h - FLOOR)) for h, v in y0.tolist()], dtype=torch.float64)
    torch.testing.assert_close(grad[:, 0], 1 / s, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grad[:, 1], (1 + torch.tensor([v for _, v in y0.tolist()]) / s) / G,
                               atol=1e-5, rtol=1e-4)


def test_per_sample_event_sees_each_rows_time():
    """With event_per_sample, event_fn receives t of shape (batch,): y - t crosses where y0 + 2t = t."""
    f = lambda t, y: 2 * torch.ones_like(y)  # noqa: E731
    y0 = torch.tensor([[-1.0], [-3.0], [-0.5]], dtype=torch.float64)
    seen = []

    def event(t, y):
        seen.append(tuple(t.shape))
        return y[:, 0] - t

    event_t, sol = odeint(f, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), event_fn=event,
                          event_per_sample=True)
    torch.testing.assert_close(event_t, torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64))
    assert set(seen) == {(3,)}


def test_event_errors_name_the_fix():
    f = lambda t, y: -y  # noqa: E731
    y0 = torch.tensor([1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"t must be \[t0, t1\]"):
        odeint(f, y0, torch.tensor([0.0, 1.0, 2.0]), event_fn=lambda t, y: y[0])
    with pytest.raises(ValueError, match="step_size"):
        odeint(f, y0, t, method="rk4", event_fn=lambda t, y: y[0])
    with pytest.raises(ValueError, match="no event search"):
        odeint(f, y0, t, method="implicit_adams", event_fn=lambda t, y: y[0])
    # y = exp(-t) never reaches 0.5 - 1: the search ends, saying why.
    with pytest.raises(ValueError, match="no event within max_num_steps=50"):
        odeint(f, y0, t, event_fn=lambda t, y: y[0] + 0.5, options={"max_num_steps": 50})
    with pytest.raises(ValueError, match="no event within max_num_steps=20"):
        odeint(f, y0, t, method="euler", event_fn=lambda t, y: y[0] + 0.5,
               options={"step_size": 0.1, "max_num_steps": 20})
    with pytest.raises(ValueError, match="one value per sample"):
        odeint(f, torch.ones(3, 1, dtype=torch.float64), t, event_fn=lambda t, y: y[:2, 0], event_per_sample=True)
    with pytest.raises(ValueError, match="needs an event_fn"):
        odeint(f, y0, t, event_per_sample=True)
    with pytest.raises(ValueError, match="NaN"):
        odeint(f, y0, t, event_fn=lambda t, y: y[0] * float("nan"))
    with pytest.raises(TypeError, match="event_fn must return a torch.Tensor"):
        odeint(f, y0, t, event_fn=lambda t, y: 1.0)


def test_tangential_event_is_refused_with_gradients():
    # y = (t - 1)^2 touches 0 at t = 1 without crossing: d/dt g = 0 there, no derivative.
    f = lambda t, y: 2 * (t - 1) * torch.ones_like(y)  # noqa: E731
    y0 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    event = lambda t, y: y[0] - 0.0 * t  # noqa: E731  reaches 0 at t = 1 exactly, sign: + then 0
    with pytest.raises(ValueError, match="no derivative"):
        odeint_event(f, y0, torch.tensor(0.0, dtype=torch.float64), event_fn=event, method="rk4",
                     options={"step_size": 0.25})
