"""Events: where a solve stops on its own, and gradients through the time it stops.

An *event* is the first time ``tau`` after ``t0`` at which ``g(t, y(t))`` changes sign
(``g`` = ``event_fn``): a ball reaching the floor, a neuron's potential reaching its
threshold. ``odeint(func, y0, t, event_fn=g)`` (torchdiffeq's API) solves from
``t[0]`` in the direction of ``t[1]`` (on past it) and returns ``(tau, [y0, y(tau)])``.
The search runs in the C++ loop (``csrc/events.h``): after every accepted step it
evaluates ``g`` at the step's end; where the sign changed, the event lies inside the
step, and a bracketing root finder (Illinois' regula falsi) locates it on the step's
interpolant (the method's dense output, or the fixed grid's linear/cubic
interpolation: no new evaluations of f) to the clock's round-off.

``odeint(..., event_fn=g)`` differentiates ``y(tau)`` at the found ``tau`` held fixed
(torchdiffeq's rule). :func:`odeint_event` also differentiates ``tau``: it is defined
implicitly by ``g(tau, y(tau; theta); phi) = 0``, so (implicit function theorem)

    dtau   = -(dg/dy . dy(tau)/dtheta dtheta + dg/dphi dphi) / D,
    D      = dg/dt + dg/dy . f(tau, y(tau))        (the total time derivative of g),
    dy_e   = dy(tau)/dtheta dtheta + f(tau, y(tau)) dtau     (the state at the event),

with ``theta`` everything ``y(tau)`` depends on (``y0``, ``t0``, the parameters of
``func``) and ``phi`` the parameters of ``event_fn``. Here this is built from autograd
pieces: ``tau + delta`` and ``y(tau) + f delta`` with ``delta = -(c - stop(c)) / D``,
``c = g(tau, y(tau))``: ``delta`` is 0 in value and has the derivative above, so the
gradient flows in whatever mode ``y(tau)`` was solved (backprop, adjoint, checkpoint).
``D = 0`` (a tangential crossing) has no derivative: it is an error, never a silent
huge gradient.

Events per sample (``event_per_sample=True``, neuralode's own): ``g`` returns one value
per row of a batched state and receives ``t`` as a ``(batch,)`` tensor (each row's own
time); every row stops at its own first sign change, on the batch's shared clock: the
solve runs until the last row's event, and each row's event is located inside the step
where its sign changed. ``event_t`` has shape ``(batch,)``. Gradients re-solve (when
autograd needs them) with per-sample times ``[t0, event_t[b]]`` in the requested mode:
one more forward solve, in which ``func`` receives times of shape ``(batch, 1)`` (see
``odeint``'s per-sample times).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from ._compile import solve_boundary
from . import _C
from .spec import ADAPTIVE_METHODS, FIXED_STEP_METHODS
from .state import StateLayout

__all__ = ["odeint_event", "EVENT_MAX_NUM_STEPS"]

#: The most steps of an event search when ``options`` give no ``max_num_steps``
#: (torchdiffeq has no limit there: a search for an event that never comes would run
#: forever; this one ends with an error that says so).
EVENT_MAX_NUM_STEPS = 100_000
#: odeint_event refuses to differentiate an event where d/dt g(t, y(t)) is below this
#: fraction of g's mean rate from the start to the event: there g touches 0 rather than
#: crosses it, and dtau = -dg / (d/dt g) would be dominated by round-off.
TANGENTIAL = 1e-8


def search_options(method: Optional[str], options: Optional[dict], t: Tensor, per_sample: bool,
                   layout: StateLayout) -> dict:
    """The options of an event search, its arguments checked: ``t`` is ``[t0, t1]``, the
    method is one of the engine's (fixed-step ones with ``step_size``), and per-sample
    events need a batched tensor state. ``max_num_steps`` defaults to
    :data:`EVENT_MAX_NUM_STEPS`."""
    if t.dim() != 1 or t.shape[0] != 2:
        raise ValueError(f"event_fn: t must be [t0, t1] (t1 gives the direction; the solve goes on until "
                         f"the event), got shape {tuple(t.shape)}")
    if method is not None and method not in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
        raise ValueError(f"event_fn: method={method!r} has no event search here; use a Runge-Kutta method "
                         f"({', '.join(ADAPTIVE_METHODS + FIXED_STEP_METHODS)})")
    options = dict(options or {})
    if method in FIXED_STEP_METHODS and options.get("step_size") is None:
        raise ValueError(f"event_fn with the fixed-step method {method!r} needs options['step_size']: the search "
                         "steps from t0 by step_size until the event")
    if per_sample and (layout.is_tuple or layout.is_complex or len(layout.shapes[0]) < 1):
        raise ValueError("event_per_sample=True needs y0 to be one real tensor whose first dimension is the batch")
    options.setdefault("max_num_steps", EVENT_MAX_NUM_STEPS)
    return options


def scalar_event_fn(event_fn: Callable, t0: Tensor, y0) -> Callable:
    """``event_fn`` as one value (torchdiffeq's rule): with several values, all are made
    positive at the start and their minimum is taken, so the event is the first sign
    change of any of them. ``t0``, ``y0``: the start, in the user's layout."""
    with torch.no_grad():
        c0 = _as_tensor(event_fn(t0, y0))
    if c0.numel() == 1:
        return lambda t, y: _as_tensor(event_fn(t, y)).reshape(())
    signs = torch.sign(c0)

    def first_of_all(t, y):
        return (_as_tensor(event_fn(t, y)) * signs).min()

    return first_of_all


def _as_tensor(c) -> Tensor:
    if not isinstance(c, Tensor):
        raise TypeError(f"event_fn must return a torch.Tensor, got {type(c).__name__}")
    return c


class _EventRun:
    """What ``_Solve`` needs of an event search: the engine's ``g(t, buffer)``, and the
    event time it found."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.time: Optional[Tensor] = None


class EventSearch:
    """One ``odeint(..., event_fn=...)`` call: the search on the engine in the requested
    gradient mode. Built by ``odeint`` from its checked arguments."""

    def __init__(self, func, f, layout: StateLayout, spec, hooks, event_fn, per_sample: bool, gradient: str,
                 params: tuple, check: bool, modules: list, stats):
        self.func, self.f, self.layout, self.spec, self.hooks = func, f, layout, spec, hooks
        self.event_fn, self.per_sample, self.gradient = event_fn, per_sample, gradient
        self.params, self.check, self.modules, self.stats = params, check, modules, stats

    def _engine_event_fn(self, t: Tensor, y: Tensor) -> Callable:
        """``g`` on the engine's buffer: one value, or one per row."""
        layout = self.layout
        if self.per_sample:
            def per_row(tt, buf):
                return _as_tensor(self.event_fn(tt, layout.unpack(buf))).reshape(-1)

            return per_row
        start = t[0].detach().to(layout.dtype)
        combined = scalar_event_fn(self.event_fn, start, layout.unpack(y.detach()))
        return lambda tt, buf: combined(tt, layout.unpack(buf))

    def run(self, y: Tensor, t: Tensor, resolve_kwargs: dict):
        """``(event_t, solution)``; ``solution`` = [y0, y(event_t)] in the user's layout."""
        g = self._engine_event_fn(t, y)
        if self.per_sample:
            return self._per_sample(y, t, g, resolve_kwargs)
        # Adaptive steps on a host clock carry no graph to t: dL/dt0 comes from the ODE,
        # as odeint's _time_gradient_by_shift: start from y0 - (t0 - stop(t0)) f(t0, y0)
        # and add the same term back to the first output (0 in value).
        shift = f0 = None
        t_solve, y_start = t, y
        if (t.requires_grad and torch.is_grad_enabled() and self.spec.forward.adaptive
                and self.gradient != "adjoint"):
            t_solve = t.detach()
            shift = (t[0] - t_solve[0]).to(y.dtype)
            f0 = self.f(t_solve[0], y)
            y_start = y - shift * f0
            if self.stats is not None:
                self.stats.nfe_forward += 1
        if self.gradient == "backprop":
            ys, raw, _, event_t = _C.solve(self.spec, self.f, y_start, t_solve, torch.is_grad_enabled(),
                                           callbacks=self.hooks[0], event_fn=g)
            if self.stats is not None:
                self.stats.add_forward(raw)
        else:
            from .odeint import _Solve

            run = _EventRun(g)
            ys = _Solve.apply(self.f, self.spec, self.stats, self.check, self.modules, None, self.hooks, run,
                              y_start, t_solve, *self.params)
            event_t = run.time
        if shift is not None:
            # Both outputs are y0 itself when the event is at the start.
            at_start = bool(event_t == t_solve[0])
            fix = shift * f0
            ys = torch.stack([ys[0] + fix, ys[1] + fix if at_start else ys[1]])
        return event_t, self.layout.unpack_trajectory(ys)

    def _per_sample(self, y: Tensor, t: Tensor, g: Callable, kwargs: dict):
        """Every row's event on the shared clock (no autograd); where gradients are needed,
        ``y`` at those times again with per-sample times, in the requested mode."""
        with torch.no_grad():
            ys, raw, _, event_t = _C.solve(self.spec, self.f, y.detach(), t.detach(), False,
                                           callbacks=self.hooks[0], event_fn=g, per_sample_event=True)
        if self.stats is not None:
            self.stats.add_forward(raw)
        wanted = torch.is_grad_enabled() and (
            self.gradient == "backprop" or y.requires_grad or t.requires_grad
            or any(p.requires_grad for p in self.params))
        if not wanted or y.shape[0] == 0:
            return event_t, ys
        from .odeint import odeint

        moved = event_t != t[0].detach()  # rows whose event is not at the start
        times = torch.stack([t[0].expand(y.shape[0]), event_t.to(t.dtype)])[:, moved].unsqueeze(-1)
        options = dict(kwargs["options"] or {})
        if kwargs["method"] in FIXED_STEP_METHODS:
            # Per-sample times take no grid: each row's interval in steps of at most step_size.
            options = {"max_step": options["step_size"], "max_num_steps": options["max_num_steps"],
                       **{k: options[k] for k in ("interp", "perturb") if k in options}}
        resolved = odeint(self.func, y[moved], times, gradient=self.gradient, stats=self.stats,
                          **{**kwargs, "options": options})
        rows = moved.nonzero().squeeze(1)
        y_event = y.index_put((rows,), resolved[1])
        return event_t, torch.stack([y, y_event])


def through_event_time(func, event_fn: Callable, event_t: Tensor, state, *, t0: Tensor, y0,
                       per_sample: bool = False):
    """``(event_t, state)`` made differentiable through the event time (implicit function
    theorem, see the module's docstring): ``state`` (the user's layout) is ``y`` at the
    fixed ``event_t`` with its graph; ``t0``, ``y0`` the start (for the sign convention of
    an ``event_fn`` with several values). Values are unchanged."""
    if not torch.is_grad_enabled():
        return event_t, state
    from .odeint import _as_callable

    layout = StateLayout(state)
    y = layout.pack(state)
    tau = event_t.detach().to(layout.dtype)
    if per_sample:
        def g(t, buf):
            return _as_tensor(event_fn(t, layout.unpack(buf))).reshape(-1)
    else:
        start = t0.detach().reshape(()).to(layout.dtype)
        combined = scalar_event_fn(event_fn, start, y0)

        def g(t, buf):
            return combined(t, layout.unpack(buf))
    f = layout.wrap(_as_callable(func))
    with torch.enable_grad():
        tau_leaf = tau.clone().requires_grad_(True)
        y_leaf = y.detach().requires_grad_(True)
        c_leaf = g(tau_leaf, y_leaf)
        dg_dt, dg_dy = torch.autograd.grad(c_leaf.sum(), (tau_leaf, y_leaf), allow_unused=True)
    dg_dt = torch.zeros_like(tau) if dg_dt is None else dg_dt
    dg_dy = torch.zeros_like(y) if dg_dy is None else dg_dy
    with torch.no_grad():
        velocity = f(tau, y.detach())
        along = dg_dy * velocity
        total = dg_dt + (along.reshape(y.shape[0], -1).sum(1) if per_sample else along.sum())
        # The mean rate of g from the start to the event: a crossing whose rate at the event
        # is vanishingly small beside it is a touch (tangential), not a crossing.
        g0 = g(t0.detach().reshape(()).to(layout.dtype).expand_as(tau), layout.pack(y0).detach())
        elapsed = (tau - t0.detach().reshape(()).to(layout.dtype)).abs()
        mean_rate = torch.where(elapsed > 0, g0.abs() / elapsed, torch.zeros_like(elapsed))
    bad = ~torch.isfinite(total) | (total.abs() <= TANGENTIAL * mean_rate) | (total == 0)
    if bool(bad.any()):
        raise ValueError(
            "odeint_event: d/dt event_fn(t, y(t)) is 0 (or vanishingly small, or not finite) at the event "
            f"(t={event_t.detach().flatten()[:4].tolist()}): event_fn touches 0 there without crossing it, so "
            "the event time has no derivative; use an event_fn that crosses 0 transversally")
    c = g(tau, y)
    delta = -(c - c.detach()) / total  # 0 in value; d(delta) = d(tau)
    rows = delta.reshape(-1, *([1] * (y.dim() - 1))) if per_sample else delta
    return event_t.detach() + delta.to(event_t.dtype), layout.unpack(y + velocity * rows)


@solve_boundary
def odeint_event(func, y0, t0, *, event_fn: Callable, reverse_time: bool = False,
                 odeint_interface: Optional[Callable] = None, **kwargs):
    """Solve ``dy/dt = func(t, y)`` from ``y(t0) = y0`` until ``event_fn(t, y)`` changes sign;
    return ``(event_t, solution)`` with ``solution = [y0, y(event_t)]`` (torchdiffeq's
    ``odeint_event``, same arguments).

    ``event_t`` and ``y(event_t)`` are differentiable w.r.t. ``y0``, ``t0``, the parameters
    of ``func`` and those of ``event_fn`` (implicit function theorem: see
    :mod:`neuralode.events`), with any gradient mode of ``odeint_interface``
    (``neuralode.odeint`` by default, or ``neuralode.odeint_adjoint``; ``kwargs`` go to it:
    ``method``, ``rtol``, ``atol``, ``options``, ``gradient``, ``event_per_sample``, ...).
    ``reverse_time=True`` searches towards earlier times. First derivatives only: second
    derivatives through the event time are not those of the event.
    """
    if odeint_interface is None:
        from .odeint import odeint as odeint_interface
    if not isinstance(t0, Tensor):
        t0 = torch.as_tensor(t0, dtype=torch.get_default_dtype())
    if t0.numel() != 1:
        raise ValueError(f"t0 must be one time, got shape {tuple(t0.shape)}")
    t0 = t0.reshape(-1)
    t = torch.cat([t0, t0.detach() + (-1.0 if reverse_time else 1.0)])
    event_t, solution = odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)
    is_tuple = isinstance(solution, tuple)
    state = tuple(s[-1] for s in solution) if is_tuple else solution[-1]
    event_t, state = through_event_time(func, event_fn, event_t, state, t0=t0, y0=y0,
                                        per_sample=kwargs.get("event_per_sample", False))
    stats = kwargs.get("stats")
    if stats is not None and torch.is_grad_enabled():
        stats.nfe_forward += 1  # f at the event, for the event time's derivative
    if is_tuple:
        return event_t, tuple(torch.cat([s[:-1], e[None]]) for s, e in zip(solution, state))
    return event_t, torch.cat([solution[:-1], state[None]])
