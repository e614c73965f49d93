"""``odeint`` and ``odeint_adjoint``: the public solve, with a torchdiffeq-style API.

``odeint`` checks its arguments, builds one immutable solve specification
(:func:`neuralode.spec.build_spec`) and hands it to the C++ loop
(``neuralode._C.solve``), which calls the dynamics through one interface and
combines Runge-Kutta stages with fused kernels. Gradients come in three modes:

* ``"backprop"``: autograd records every fused op of the solve (the paper's
  "RK-Net" baseline): the exact gradient of the discrete solve, memory
  O(steps x activations of f).
* ``"adjoint"``: the continuous adjoint (Chen et al. 2018): ``[z, a]`` is solved
  backwards in one pass over all observation times, ``dL/dtheta`` and ``dL/dt``
  accumulated outside the state, with O(1) memory in the number of steps; the
  gradient converges to the exact one as the steps shrink (fixed step: at the
  method's order; adaptive: as the tolerances tighten).
* ``"checkpoint"``: the discrete adjoint. The forward solve keeps only its
  accepted steps ``(t, dt, z)``; the backward pass replays each step with
  autograd, last first, and backpropagates through that step alone: the gradient
  of the discrete solve to round-off with O(steps x |z|) memory.

The two non-backprop modes run as one ``torch.autograd.Function`` whose backward
is ``neuralode._C.gradient`` on the same spec.
"""

from __future__ import annotations

import math
import functools
import inspect
import warnings
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ._compile import solve_boundary
from . import _C
from . import callbacks, events, python_methods
from . import _ops  # noqa: F401  (the fused ops' fake kernels, for torch.compile)
from .odef import ODEF
from .state import StateLayout
from .spec import ADAPTIVE_METHODS, ATOL, FIXED_STEP_METHODS, GRADIENT_MODES, METHODS, RTOL, build_spec
from .stats import SolverStats

__all__ = ["odeint", "odeint_adjoint", "METHODS", "FIXED_STEP_METHODS", "ADAPTIVE_METHODS", "GRADIENT_MODES"]


def _as_callable(func) -> Callable[[Tensor, Tensor], Tensor]:
    """The dynamics as ``f(t, z)``: ``ODEF`` modules (``forward(z, t)``) are adapted."""
    if isinstance(func, ODEF):
        return lambda t, z: func(z, t)
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y) or be an ODEF module, got {type(func).__name__}")
    return func


def _prepare_times(t, layout: StateLayout) -> Tensor:
    """``t`` checked and brought to torchdiffeq's rules: on the state's device (moved with
    torchdiffeq's warning), and at least as precise as the state (the solver's clock is
    float64 on the host anyway; ``f`` sees times in the state's dtype, see ``_times_for``)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}; e.g. torch.as_tensor(t)")
    if not t.is_floating_point():
        raise TypeError(f"t must be a floating-point tensor, got {t.dtype}; use t.float() or t.double()")
    if t.device != layout.device:
        warnings.warn("t is not on the same device as y0. Coercing to y0.device.")
        t = t.to(layout.device)
    per_sample = t.dim() == 3
    if per_sample and layout.is_tuple:
        raise ValueError("per-sample times (T, batch, 1) need y0 to be one tensor with the batch first, not a tuple")
    if per_sample:
        # Per-sample step sizes enter the kernels as a weight per row: in the state's dtype.
        t = t.to(layout.dtype)
    elif t.dtype != torch.promote_types(t.dtype, layout.dtype):
        t = t.to(torch.promote_types(t.dtype, layout.dtype))
    return t


def _check_state_and_times(y0: Tensor, t: Tensor) -> None:
    """Checks of the engine's buffer ``y0`` and the times."""
    if not (t.dim() == 1 or (t.dim() == 3 and y0.dim() >= 1 and t.shape[1:] == (y0.shape[0], 1))):
        expected = f"(T,) or (T, {y0.shape[0]}, 1)" if y0.dim() >= 1 else "(T,)"
        raise ValueError(f"t must have shape {expected} for y0 of shape {tuple(y0.shape)}, got {tuple(t.shape)}")
    if t.shape[0] < 1:
        raise ValueError("t must hold at least one time")
    if t.dim() == 1:
        # One read of t to the host (it is short) and the checks in Python: cheaper
        # than three reductions on the device.
        times = t.tolist()
        if not all(map(math.isfinite, times)):
            raise ValueError("t contains NaN or Inf; every observation time must be finite")
        steps = [b - a for a, b in zip(times, times[1:])]
        monotonic = all(s > 0 for s in steps) or all(s < 0 for s in steps)
    else:
        if not bool(torch.isfinite(t).all()):
            raise ValueError("t contains NaN or Inf; every observation time must be finite")
        steps = t[1:] - t[:-1]
        monotonic = bool((steps > 0).all()) or bool((steps < 0).all())
    if not monotonic:
        raise ValueError(
            "t must be strictly increasing or strictly decreasing"
            + (" for every sample" if t.dim() == 3 else "")
            + f", got {t.flatten()[:8].tolist()}{' ...' if t.numel() > 8 else ''}"
        )
    # min and max in one reduction: NaN propagates into them and Inf shows in them, and
    # unlike isfinite(y0).all() no bool tensor of y0's size is made (~10x cheaper).
    if y0.numel() > 0 and not bool(torch.isfinite(torch.stack(torch.aminmax(y0.detach()))).all()):
        raise ValueError("y0 contains NaN or Inf; the initial state must be finite")


def _times_for(f: Callable, dtype: torch.dtype, t_dtype: torch.dtype) -> Callable:
    """``f`` called with times in the state's dtype (torchdiffeq's rule: the user's layers
    see one dtype) while the solver keeps its clock in ``t_dtype``."""
    if t_dtype == dtype:
        return f

    def cast(t: Tensor, y: Tensor):
        return f(t.to(dtype), y)

    cast.__wrapped__ = f
    return cast


def _time_gradient_by_shift(solve: Callable, f: Callable, y0: Tensor, t: Tensor,
                            stats: Optional[SolverStats] = None) -> Tensor:
    """``solve(y0, t)`` made differentiable in ``t`` for solvers whose steps do not carry
    it (adaptive steps on a host clock): dL/dt from the ODE itself,

        dL/dt_i = <dL/dy(t_i), f(t_i, y_i)>  (i > 0),
        dL/dt_0 = -<a(t_0), f(t_0, y_0)> with a(t_0) the gradient reaching y_0 from later times,

    obtained with no change of any value: the solve starts from
    ``y0 - (t_0 - stop(t_0)) f_0`` and each output gets ``+ (t_i - stop(t_i)) f_i``
    (both terms are 0; their derivatives are the formulas above). Costs one evaluation
    of f per output time. The f_i keep their graph (to y_i and the parameters), so that
    mixed second derivatives such as d/dtheta (dL/dt_i) are right; d2L/dt2 is not
    (the shift is first order in t)."""
    t_const = t.detach()
    # The shifts in the state's dtype: a float64 t must not promote a float32 solution.
    shift = (t - t_const).to(y0.dtype)
    f0 = f(t_const[0], y0)
    shift0 = shift[0].reshape(-1, *([1] * (y0.dim() - 1))) if t.dim() == 3 else shift[0]
    ys = solve(y0 - shift0 * f0, t_const)
    fs = torch.stack([f0] + [f(t_const[i], ys[i]) for i in range(1, len(t))])
    if stats is not None:
        stats.nfe_forward += len(t)  # the evaluations above, outside the solve's own count
    # 1-D times: one shift per output; per-sample times (T, batch, 1): one per output and row.
    per_row = shift.reshape(len(t), -1, *([1] * (y0.dim() - 1))) if t.dim() == 3 else shift.reshape(
        -1, *([1] * y0.dim()))
    return ys + per_row * fs


class _Solve(torch.autograd.Function):
    """``y`` at every time of ``t``, solved in C++ without recording a graph; the backward
    is ``_C.gradient`` on the same spec (the continuous adjoint, or the replay of the
    checkpoint tape), which returns dL/dy0, dL/dt and dL/dparams."""

    @staticmethod
    def forward(ctx, f, spec, stats, check_params, modules, run, hooks, event, y0, t, *param_tensors):
        ctx.event, ctx.event_at_start = event, False
        if event is not None:
            # An event search (neuralode.events): outputs y0 and y at the event; the
            # backward solves from the event time (fixed there) back to t[0].
            ys, raw, tape, event.time = _C.solve(spec, f, y0, t, False, list(param_tensors), check_params,
                                                 hooks[0], event_fn=event.fn)
            ctx.event_at_start = raw["accepted"] == 0
            ctx.t_event = torch.stack([t[0].detach(), event.time])
        elif run is None:
            ys, raw, tape = _C.solve(spec, f, y0, t, False, list(param_tensors), check_params, hooks[0])
        else:  # a method outside the engine (neuralode.python_methods): its forward, our adjoint
            ys, raw = run(f, y0, t)
            tape = None
        if stats is not None:
            stats.add_forward(raw)
        ctx.f, ctx.spec, ctx.stats, ctx.tape, ctx.modules = f, spec, stats, tape, modules
        ctx.adjoint_callbacks = hooks[1]
        # What the backward reads, saved so that autograd's version check refuses a
        # backward after any of it was changed in place: the outputs (the adjoint restarts
        # from them) or y0 (the checkpoint's second derivatives re-solve from it), t and
        # the parameters.
        ctx.save_for_backward(t, ys if tape is None else y0, *param_tensors)
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        need_t = ctx.needs_input_grad[9]
        t, ys_or_y0, *params = ctx.saved_tensors
        if ctx.event_at_start:  # g(t0, y0) = 0: both outputs are y0 itself
            return (None,) * 8 + (grad_ys[0] + grad_ys[1], torch.zeros_like(t) if need_t else None,
                                  *[torch.zeros_like(p) for p in params])
        # The backward evaluates f again: it must not move module state (BatchNorm's
        # running statistics) that the forward's evaluations already moved.
        buffers = [b for m in ctx.modules for b in m.buffers()]
        kept = [b.detach().clone() for b in buffers]
        # Grad mode on here means create_graph=True: the gradient must be differentiable.
        create_graph = torch.is_grad_enabled()
        if ctx.tape is not None and create_graph:
            grad_y0, grad_t, grad_params, raw = _checkpoint_second_order(ctx, ys_or_y0, t, params, grad_ys, need_t)
        else:
            # The adjoint of an event search solves from the event time; the time gradient
            # goes to t[0] only (t[1] gave the direction).
            adjoint_t = ctx.t_event if ctx.event is not None and ctx.tape is None else t
            grad_y0, grad_t, grad_params, raw = _C.gradient(
                ctx.spec, ctx.f, params, adjoint_t, None if ctx.tape is not None else ys_or_y0, grad_ys, ctx.tape,
                need_t, create_graph, ctx.adjoint_callbacks,
            )
            if grad_t is not None and adjoint_t is not t:
                grad_t = torch.cat([grad_t[:1], torch.zeros_like(t[1:])])
        with torch.no_grad():
            for b, k in zip(buffers, kept):
                b.copy_(k)
        if ctx.stats is not None:
            ctx.stats.add_backward(raw)
        return (None,) * 8 + (grad_y0, grad_t if need_t else None, *grad_params)


def _checkpoint_second_order(ctx, y0, t, params, grad_ys, need_t):
    """The checkpoint's gradient as a differentiable function (create_graph=True): the
    discrete solve again, recorded by autograd, and its exact gradient through that record
    (what backprop gives; memory O(steps x activations of f) for this call only)."""
    with torch.enable_grad():
        event_fn = ctx.event.fn if ctx.event is not None else None
        ys, raw = _C.solve(ctx.spec, ctx.f, y0, t, True, event_fn=event_fn)[:2]
        inputs = [y0] + ([t] if need_t else []) + list(params)
        wanted = [x for x in inputs if x.requires_grad]
        found = iter(torch.autograd.grad(ys, wanted, grad_ys, create_graph=True, allow_unused=True) if wanted else ())
    grads = [next(found) if x.requires_grad else None for x in inputs]
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
    grad_y0 = grads[0]
    grad_t = grads[1] if need_t else None
    return grad_y0, grad_t, grads[1 + need_t:], raw


def _modules_of(func) -> list:
    """The modules whose parameters ``func`` certainly uses: ``func`` itself, the module of a
    bound method, and modules inside a ``functools.partial`` (its function and arguments)."""
    if isinstance(func, nn.Module):
        return [func]
    if isinstance(func, functools.partial):
        found = _modules_of(func.func)
        for arg in (*func.args, *func.keywords.values()):
            found += _modules_of(arg) if isinstance(arg, (nn.Module, functools.partial)) else []
        return found
    owner = getattr(func, "__self__", None)
    if inspect.ismethod(func) and isinstance(owner, nn.Module):
        return [owner]
    return []


def _module_parameters(module: nn.Module) -> list:
    """A module's parameters, also inside an ``nn.DataParallel`` replica, whose parameters
    are plain tensor attributes (not registered: ``parameters()`` is empty there)."""
    if not getattr(module, "_is_replica", False):
        return list(module.parameters())
    return [v for m in module.modules() for v in vars(m).values() if isinstance(v, Tensor) and v.requires_grad]


def _adjoint_params(func, adjoint_params, adjoint_options=None) -> tuple:
    """The tensors ``"adjoint"``/``"checkpoint"`` differentiate besides y0 and t: the given
    ones, else the parameters of the modules ``func`` is made of; each once. Those that do
    not require grad are left out, with torchdiffeq's warning when a callable adjoint norm
    would have seen them."""
    if adjoint_params is None:
        adjoint_params = [p for m in _modules_of(func) for p in _module_parameters(m)]
    adjoint_params = list(adjoint_params)
    kept = [p for p in adjoint_params if isinstance(p, Tensor) and p.requires_grad]
    if len(kept) != len(adjoint_params) and callable((adjoint_options or {}).get("norm")):
        warnings.warn("An adjoint parameter was passed without requiring gradient. For efficiency this will be "
                      "excluded from the adjoint pass, and will not appear as a tensor in the adjoint norm.")
    unique = {id(p): p for p in kept}
    return tuple(unique.values())


@solve_boundary
def odeint(
    func,
    y0: Tensor,
    t: Tensor,
    *,
    method: Optional[str] = None,
    rtol: Union[float, Tensor] = RTOL,
    atol: Union[float, Tensor] = ATOL,
    options: Optional[dict] = None,
    gradient: str = "backprop",
    adjoint_params: Optional[Sequence[Tensor]] = None,
    adjoint_method: Optional[str] = None,
    adjoint_rtol: Union[float, Tensor, None] = None,
    adjoint_atol: Union[float, Tensor, None] = None,
    adjoint_options: Optional[dict] = None,
    stats: Optional[SolverStats] = None,
    event_fn: Optional[Callable] = None,
    event_per_sample: bool = False,
) -> Tensor:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``; return ``y`` at every time in ``t``.

    Args:
        func: the dynamics, a callable ``func(t, y)`` (torchdiffeq convention) or an
            :class:`neuralode.ODEF` module (``forward(z, t)``, the paper's convention).
        y0: initial state: a float32/float64/complex64/complex128 tensor of any shape,
            or a tuple of such tensors (one precision and device; ``func`` then takes and
            returns tuples, and the error norm is the largest RMS over the tensors). With
            per-sample times y0 is one tensor whose first dimension is the batch. See
            :mod:`neuralode.state`.
        t: observation times, strictly increasing or decreasing, any floating dtype
            (promoted to the state's precision; ``func`` receives times in the state's
            dtype, the solver's clock is float64; on another device than y0 it is moved
            with a warning): 1-D ``(T,)``, passed to
            ``func`` as 0-d tensors, or per-sample ``(T, batch, 1)``, passed as
            ``(batch, 1)`` (every method; adaptive methods then step each sample on its
            own, see ``options["per_sample"]``; ``per_sample=False`` keeps one clock for the
            batch, a normalized time ``s`` with ``t_b(s) = t[i,b] + (s - i)(t[i+1,b] - t[i,b])``
            on interval i and a stop at every observation).
        method: adaptive ``"dopri5"`` (default), ``"tsit5"``, ``"bosh3"``, ``"dopri8"``,
            ``"adaptive_heun"``, ``"fehlberg2"``, or fixed-step ``"euler"``, ``"midpoint"``,
            ``"rk4"`` (Kutta's 3/8 rule, torchdiffeq's ``rk4``), ``"rk4_classic"`` (the classic
            RK4, weights 1/6, 1/3, 1/3, 1/6), ``"heun2"``, ``"heun3"``.
        rtol, atol: adaptive methods keep the RMS over elements of
            ``err / (atol + rtol * max(|y0|, |y1|))`` at most 1 per step; numbers, or tensors
            broadcastable to ``y0``. Fixed-step methods ignore them.
        options: torchdiffeq's, with its meaning, plus a few of neuralode's own. An option the
            method does not take is ignored with torchdiffeq's warning,
            ``"<Solver>: Unexpected arguments {...}"`` (``<Solver>`` torchdiffeq's class name,
            e.g. ``Dopri5Solver``, ``RK4``; see :data:`neuralode.spec.SOLVER_NAMES`).

            Fixed-step methods: ``step_size`` (the grid ``t[0] + k * step_size``, its last
            point replaced by ``t[-1]``) or ``grid_constructor`` (a callable
            ``(func, y0, t) -> grid``, a 1-D tensor from ``t[0]`` to ``t[-1]``; for decreasing
            ``t`` it receives ``-t`` and the dynamics in ``s = -t``, ``-func(-s, y)``, and its
            grid is negated back, as in torchdiffeq): one step from each grid point to the
            next, each observation served by the step that reaches it, interpolated inside
            it by ``interp``: ``"linear"`` (default) or ``"cubic"`` (Hermite through
            ``y, f`` at both grid points: ``f(t1, y1)`` costs one evaluation per step that
            serves an observation). The two are mutually exclusive. Neither: one step per
            interval, or, neuralode's ``max_step``, each interval cut into
            ``n = ceil(max |t[i+1] - t[i]| / max_step)`` equal steps (the reference's rule).
            ``perturb`` (default False): stage 0 samples ``f`` at ``nextafter(t0, t1)`` and the
            stages at ``c = 1`` at ``nextafter(t1, t0)`` (in ``y0``'s dtype), so that ``f``
            with a jump at a grid point is seen from inside each step. ``max_num_steps``: the
            most steps of the whole solve.

            Adaptive methods: ``first_step`` (default: Hairer's choice), ``safety`` (0.9),
            ``ifactor`` (10), ``dfactor`` (0.2), ``min_step``, ``max_step``: every step size is
            clamped to ``[min_step, max_step]`` and a step of at most ``min_step`` is accepted
            whatever its error; ``max_num_steps``: the most steps (accepted and rejected)
            tried between one observation time and the next, torchdiffeq's count;
            ``step_t``: times every step lands on (f is continuous there but not smooth; the
            last stage of the step that lands is the next step's first, f is not evaluated
            again); ``jump_t``: times every step lands on where f jumps (f is evaluated again
            at ``nextafter`` past the jump); a time may not be in both, nor twice;
            ``dtype``: torchdiffeq's time dtype, ``torch.float64`` or ``torch.float32``,
            accepted and without effect: neuralode's adaptive clock is float64 on the host
            either way. Neuralode's own: ``controller`` (``"I"``, ``"PI"`` with ``beta1``
            0.7, ``beta2`` 0.4, or ``"predictive"``: the I rule capped by Gustafsson's
            predictive rule after accepted steps, the per-sample default);
            ``per_sample`` (default: True with per-sample times): each
            sample (first dimension of ``y0``) its own step size, error ratio and accept/reject,
            ``f`` called on the whole batch with ``t`` of shape ``(batch, 1)``; every gradient
            mode (the adjoint is joint: one product per stage for dL/dtheta over the batch).
            Observation times never shorten a step: they are served from
            the method's dense output. Defaults: :data:`neuralode.spec.ADAPTIVE_DEFAULTS`.
        gradient: ``"backprop"`` (autograd through every step: RK-Net), ``"adjoint"``
            (continuous adjoint, O(1) memory in the number of steps) or ``"checkpoint"``
            (discrete adjoint, exact, O(steps x |y0|) memory).
        adjoint_params: with ``"adjoint"``/``"checkpoint"``, the tensors to differentiate
            besides ``y0`` and ``t`` (each once); default: the parameters of ``func`` when it
            is a module, a bound method of one or a ``functools.partial`` over modules. Other
            tensors that require grad and that ``func`` uses are refused (their gradient would
            be lost): list them here.
        adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options: with ``"adjoint"``, the
            backward solve's method, tolerances and options (default: the forward's);
            ``adjoint_options={"norm": "seminorm"}`` leaves the parameter adjoint out of the
            error norm (Kidger et al. 2021), ``"full"`` (default) keeps it in.
        stats: a :class:`neuralode.SolverStats` whose counters this solve adds to.
        event_fn: ``event_fn(t, y)``, torchdiffeq's event handling: ``t`` must be
            ``[t0, t1]`` (t1 gives only the direction); the solve stops at the first sign
            change of ``event_fn`` (several values: of any of them), located inside its step
            on the step's interpolant and refined to round-off, and returns
            ``(event_t, solution)`` with ``solution = [y0, y(event_t)]``. ``event_t`` carries
            no gradient here (``y(event_t)`` does, at that fixed time): see
            :func:`neuralode.odeint_event` for gradients through the event time. Fixed-step
            methods need ``options["step_size"]``; without ``max_num_steps`` the search takes
            at most :data:`neuralode.events.EVENT_MAX_NUM_STEPS` steps.
        event_per_sample: neuralode's own: ``event_fn`` returns one value per sample
            (shape ``(batch,)``, and receives ``t`` as a ``(batch,)`` tensor of each row's
            time); each sample stops at its own event: ``event_t`` has shape ``(batch,)``.
            See :mod:`neuralode.events`.

    Returns:
        ``y`` of shape ``(T, *y0.shape)`` (a tuple of such for a tuple y0); with ``event_fn``,
        ``(event_t, y)`` with ``y`` of shape ``(2, *y0.shape)``. Every mode supports second
        derivatives (``create_graph=True``; with an event, at the found event time); README's
        "Guarantees and limits" lists what each promises and every error.
    """
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {', '.join(map(repr, GRADIENT_MODES))}, got {gradient!r}")
    layout = StateLayout(y0)
    t = _prepare_times(t, layout)
    y = layout.pack(y0)
    _check_state_and_times(y, t)
    f = layout.wrap(_times_for(_as_callable(func), layout.dtype, t.dtype))
    if stats is not None and not isinstance(stats, SolverStats):
        raise TypeError(f"stats must be a neuralode.SolverStats, got {type(stats).__name__}")
    if gradient == "backprop" and adjoint_params is not None:
        raise ValueError("adjoint_params needs gradient='adjoint' or 'checkpoint'")
    params = _adjoint_params(func, adjoint_params, adjoint_options) if gradient != "backprop" else ()
    if event_fn is not None:
        options = events.search_options(method, options, t, event_per_sample, layout)
    elif event_per_sample:
        raise ValueError("event_per_sample=True needs an event_fn")
    if method in python_methods.PYTHON_METHODS:
        return _odeint_python_method(
            f, func, layout, y, t, method, layout.tolerance(rtol, "rtol"), layout.tolerance(atol, "atol"),
            dict(options or {}), gradient, params, adjoint_params, adjoint_method, adjoint_rtol, adjoint_atol,
            adjoint_options, stats,
        )
    spec = build_spec(
        y, t, method=method, rtol=layout.tolerance(rtol, "rtol"), atol=layout.tolerance(atol, "atol"),
        options=options, gradient=gradient, adjoint_method=adjoint_method,
        adjoint_rtol=None if adjoint_rtol is None else layout.tolerance(adjoint_rtol, "adjoint_rtol"),
        adjoint_atol=None if adjoint_atol is None else layout.tolerance(adjoint_atol, "adjoint_atol"),
        adjoint_options=adjoint_options, layout=layout, func=f,
    )
    hooks = (callbacks.forward_callbacks(func, layout, spec.forward.adaptive, True, spec.forward.method),
             callbacks.adjoint_callbacks(func, layout, spec.backward.adaptive) if gradient == "adjoint" else None)
    if event_fn is not None:
        search = events.EventSearch(func, f, layout, spec, hooks, event_fn, event_per_sample, gradient, params,
                                    adjoint_params is None and torch.is_grad_enabled(), _modules_of(func), stats)
        return search.run(y, t, dict(method=method, rtol=rtol, atol=atol, options=options, adjoint_params=adjoint_params,
                                     adjoint_method=adjoint_method, adjoint_rtol=adjoint_rtol,
                                     adjoint_atol=adjoint_atol, adjoint_options=adjoint_options))
    if gradient == "backprop":
        def solve(y_start, times):
            ys, raw, _ = _C.solve(spec, f, y_start, times, torch.is_grad_enabled(), callbacks=hooks[0])
            if stats is not None:
                stats.add_forward(raw)
            return ys
    else:
        # Without adjoint_params, f's first graph is searched for tensors that require grad
        # outside the parameters found: their gradient would be lost (an error naming the fix).
        check = adjoint_params is None and torch.is_grad_enabled()
        modules = _modules_of(func)

        def solve(y_start, times):
            return _Solve.apply(f, spec, stats, check, modules, None, hooks, None, y_start, times, *params)
    # Adaptive steps on a 1-D (host) clock carry no graph to t: outside the adjoint, which
    # has its own time terms, dL/dt comes from the ODE (_time_gradient_by_shift).
    if (t.requires_grad and torch.is_grad_enabled() and (t.dim() == 1 or spec.forward.per_sample)
            and spec.forward.adaptive and gradient != "adjoint"):
        ys = _time_gradient_by_shift(solve, f, y, t, stats)
    else:
        ys = solve(y, t)
    return layout.unpack_trajectory(ys)


def _odeint_python_method(f, func, layout, y, t, method, rtol, atol, options, gradient, params, adjoint_params,
                          adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options, stats):
    """``odeint`` for the methods outside the engine (see :mod:`neuralode.python_methods`)."""
    python_methods.warn_unknown(method, options)
    callbacks.forward_callbacks(func, layout, False, False, method)  # not called here: warned about
    run = python_methods.solver(method, rtol, atol, options)
    if gradient == "checkpoint":
        raise ValueError(f"gradient='checkpoint' replays Runge-Kutta steps; method={method!r} is not one: "
                         "use gradient='backprop' or 'adjoint'")
    if gradient == "backprop":
        if method == "scipy_solver" and torch.is_grad_enabled() and (y.requires_grad or t.requires_grad):
            raise ValueError("method='scipy_solver' runs in numpy: autograd cannot differentiate it; "
                             "use gradient='adjoint' (or odeint_adjoint), or detach y0 and t")
        ys, raw = run(f, y, t)
        if stats is not None:
            stats.add_forward(raw)
        return layout.unpack_trajectory(ys)
    backward_method = adjoint_method if adjoint_method is not None else python_methods.DEFAULT_ADJOINT_METHOD[method]
    if adjoint_options is None:
        adjoint_options = python_methods.adjoint_options_from(method, options, backward_method)
    try:
        # The engine runs only the backward solve: its plan is built as both directions'.
        spec = build_spec(
            y, t, method=backward_method, rtol=rtol, atol=atol, options=adjoint_options, gradient="adjoint",
            adjoint_method=backward_method,
            adjoint_rtol=None if adjoint_rtol is None else layout.tolerance(adjoint_rtol, "adjoint_rtol"),
            adjoint_atol=None if adjoint_atol is None else layout.tolerance(adjoint_atol, "adjoint_atol"),
            adjoint_options=adjoint_options, layout=layout, func=f,
        )
    except ValueError as error:
        message = str(error)
        if message.startswith("options:"):  # the options checked are the adjoint's
            raise ValueError("adjoint_options:" + message[len("options:"):]) from None
        if message.startswith("method:"):
            raise ValueError("adjoint_method:" + message[len("method:"):]) from None
        raise
    if adjoint_params is None and torch.is_grad_enabled():
        # The forward runs outside the engine: one evaluation of f under the engine's check
        # for tensors that require grad outside the parameters found (their gradient would
        # be lost), as the engine's own forward does on its first evaluation.
        _C.check_captured(f, t[0].detach(), y.detach(), list(params))
    hooks = (None, callbacks.adjoint_callbacks(func, layout, spec.backward.adaptive))
    ys = _Solve.apply(f, spec, stats, False, _modules_of(func), run, hooks, None, y, t, *params)
    return layout.unpack_trajectory(ys)


@solve_boundary
def odeint_adjoint(
    func,
    y0: Tensor,
    t: Tensor,
    *,
    rtol: Union[float, Tensor] = RTOL,
    atol: Union[float, Tensor] = ATOL,
    method: Optional[str] = None,
    options: Optional[dict] = None,
    adjoint_rtol: Union[float, Tensor, None] = None,
    adjoint_atol: Union[float, Tensor, None] = None,
    adjoint_method: Optional[str] = None,
    adjoint_options: Optional[dict] = None,
    adjoint_params: Optional[Sequence[Tensor]] = None,
    stats: Optional[SolverStats] = None,
    event_fn: Optional[Callable] = None,
    event_per_sample: bool = False,
) -> Tensor:
    """``odeint(..., gradient="adjoint")`` with torchdiffeq's keyword names.

    The backward pass solves the augmented system
    ``d/dt [z, a, a_t, a_theta] = [f, -a df/dz, -a df/dt, -a df/dtheta]`` from ``t[-1]``
    to ``t[0]`` in one pass, adding ``dL/dz(t_i)`` to ``a`` at every observation time
    and carrying on with the current step size. ``a_theta`` and ``a_t`` are accumulated
    outside the state (they never feed back into f).
    """
    return odeint(
        func,
        y0,
        t,
        method=method,
        rtol=rtol,
        atol=atol,
        options=options,
        gradient="adjoint",
        adjoint_params=adjoint_params,
        adjoint_method=adjoint_method,
        adjoint_rtol=adjoint_rtol,
        adjoint_atol=adjoint_atol,
        adjoint_options=adjoint_options,
        stats=stats,
        event_fn=event_fn,
        event_per_sample=event_per_sample,
    )
