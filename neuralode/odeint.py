"""``odeint`` and ``odeint_adjoint``: the public solve, with a torchdiffeq-style API.

The integration loops run in C++ (``neuralode._C``) and call the dynamics
through one interface; Runge-Kutta stages are combined by the fused
``stage_combine`` kernel. Gradients come in three modes:

* ``"backprop"``: autograd records every fused op of the solve (the paper's
  "RK-Net" baseline): the exact gradient of the discrete solve, memory
  O(steps x activations of f).
* ``"adjoint"``: the continuous adjoint (Chen et al. 2018): the augmented system
  ``[z, a, a_t, a_theta]`` is solved backwards in one pass over all observation
  times, with O(1) memory in the number of steps; the gradient converges to the
  exact one as the steps shrink (fixed step: at the method's order; adaptive: as
  the tolerances tighten).
* ``"checkpoint"`` (adaptive methods): the discrete adjoint. The forward solve
  keeps only its accepted steps ``(t, dt, z)``; the backward pass replays each
  step with autograd, last first, and backpropagates through that step alone:
  the gradient of the discrete solve to round-off with O(steps x |z|) memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from . import _C
from . import _ops  # noqa: F401  (fake and autograd registrations)
from .reference import ODEF
from .stats import SolverStats

__all__ = ["odeint", "odeint_adjoint", "METHODS", "FIXED_STEP_METHODS", "ADAPTIVE_METHODS", "GRADIENT_MODES"]

#: Fixed-step Runge-Kutta methods (tableaux in csrc/tableau.h).
FIXED_STEP_METHODS = tuple(_C.methods(False))
#: Adaptive (embedded) Runge-Kutta methods.
ADAPTIVE_METHODS = tuple(_C.methods(True))
METHODS = FIXED_STEP_METHODS + ADAPTIVE_METHODS
DEFAULT_METHOD = "dopri5"
#: What ``gradient=`` accepts.
GRADIENT_MODES = ("backprop", "adjoint", "checkpoint")
#: Options of the fixed-step methods.
FIXED_STEP_OPTIONS = ("step_size", "max_step", "max_num_steps")
#: Options of the adaptive methods (``norm`` only in ``adjoint_options``).
ADAPTIVE_OPTIONS = (
    "first_step", "safety", "ifactor", "dfactor", "controller", "beta1", "beta2",
    "min_step", "max_step", "max_num_steps", "step_t",
)
DEFAULT_MAX_NUM_STEPS = 2**31 - 1


@dataclass(frozen=True)
class _StepRule:
    """Where a fixed-step solver steps: ``max_step`` subdivides every interval
    (``n = ceil(max |dt| / max_step)``, the reference's rule; ``inf``: one step per
    interval), ``step_size`` walks a uniform grid and interpolates outputs."""

    method: str
    kind: str
    value: float
    max_num_steps: int

    def args(self):
        """The rule as the C++ loops take it: ``(method, kind, value, max_num_steps)``."""
        return (self.method, self.kind, self.value, self.max_num_steps)


def _as_callable(func) -> Callable[[Tensor, Tensor], Tensor]:
    """The dynamics as ``f(t, z)``: ``ODEF`` modules (``forward(z, t)``) are adapted."""
    if isinstance(func, ODEF):
        return lambda t, z: func(z, t)
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y) or be an ODEF module, got {type(func).__name__}")
    return func


def _check_method(method, name: str) -> str:
    if method is None:
        return DEFAULT_METHOD
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{name}: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def _step_rule(method: str, options: Optional[dict], name: str) -> _StepRule:
    options = dict(options or {})
    unknown = sorted(set(options) - set(FIXED_STEP_OPTIONS))
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(map(repr, unknown))} for method {method!r}; "
            f"the fixed-step methods take {', '.join(FIXED_STEP_OPTIONS)}"
        )
    if "step_size" in options and "max_step" in options:
        raise ValueError(f"{name}: give either 'step_size' or 'max_step', not both")
    max_num_steps = options.get("max_num_steps", DEFAULT_MAX_NUM_STEPS)
    if not isinstance(max_num_steps, int) or max_num_steps <= 0:
        raise ValueError(f"{name}: 'max_num_steps' must be a positive int, got {max_num_steps!r}")
    kind, value = "max_step", math.inf
    for key in ("step_size", "max_step"):
        if key in options:
            value = options[key]
            if isinstance(value, Tensor):
                value = value.item()
            # max_step = inf is allowed: one step per interval.
            if not isinstance(value, (int, float)) or not (value > 0) or (math.isinf(value) and key == "step_size"):
                what = "a positive finite number" if key == "step_size" else "a positive number"
                raise ValueError(f"{name}: {key!r} must be {what}, got {options[key]!r}")
            kind, value = key, float(value)
    return _StepRule(method, kind, value, max_num_steps)


def _check_state_and_times(y0, t) -> None:
    if not isinstance(y0, Tensor):
        raise TypeError(f"y0 must be a torch.Tensor, got {type(y0).__name__}")
    if y0.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"y0 must be float32 or float64, got {y0.dtype}; convert it with y0.float() or y0.double()")
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"t must be a floating-point tensor, got {t.dtype}; use t.to(y0.dtype)")
    if torch.finfo(t.dtype).eps > torch.finfo(y0.dtype).eps:
        raise TypeError(
            f"t is {t.dtype} but y0 is {y0.dtype}: time must be at least as precise as the state; use t.to(y0.dtype)"
        )
    if t.device != y0.device:
        raise ValueError(f"t is on {t.device} but y0 is on {y0.device}; move t with t.to(y0.device)")
    if t.dim() == 1:
        pass
    elif t.dim() == 3 and y0.dim() >= 1 and t.shape[1:] == (y0.shape[0], 1):
        pass
    else:
        expected = f"(T,) or (T, {y0.shape[0]}, 1)" if y0.dim() >= 1 else "(T,)"
        raise ValueError(f"t must have shape {expected} for y0 of shape {tuple(y0.shape)}, got {tuple(t.shape)}")
    if t.shape[0] < 1:
        raise ValueError("t must hold at least one time")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t contains NaN or Inf; every observation time must be finite")
    # min and max in one reduction: NaN propagates into them and Inf shows in them, and
    # unlike isfinite(y0).all() no bool tensor of y0's size is made (~10x cheaper).
    if y0.numel() > 0 and not bool(torch.isfinite(torch.stack(torch.aminmax(y0.detach()))).all()):
        raise ValueError("y0 contains NaN or Inf; the initial state must be finite")
    if t.shape[0] > 1:
        steps = t[1:] - t[:-1]
        increasing, decreasing = bool((steps > 0).all()), bool((steps < 0).all())
        if not (increasing or decreasing):
            raise ValueError(
                "t must be strictly increasing or strictly decreasing"
                + (" for every sample" if t.dim() == 3 else "")
                + f", got {t.flatten()[:8].tolist()}{' ...' if t.numel() > 8 else ''}"
            )


def _tolerance(value, y0: Tensor, name: str) -> Tensor:
    """rtol/atol as the kernels take them: one value, or one per element of y0."""
    if isinstance(value, Tensor):
        if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
            raise ValueError(f"{name} must be finite and non-negative")
        try:
            value = torch.broadcast_to(value.to(device=y0.device, dtype=y0.dtype), y0.shape)
        except RuntimeError:
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} does not broadcast to y0's shape {tuple(y0.shape)}"
            ) from None
        return value.contiguous() if value.numel() > 1 else value.reshape(1)
    if not isinstance(value, (int, float)) or not (value >= 0) or math.isinf(value):
        raise ValueError(f"{name} must be a finite non-negative number or tensor, got {value!r}")
    return torch.tensor([float(value)], dtype=y0.dtype, device=y0.device)


def _positive(options: dict, key: str, default: float, name: str, allow_inf: bool = False) -> float:
    value = options.get(key, default)
    if isinstance(value, Tensor):
        value = value.item()
    if not isinstance(value, (int, float)) or not (value > 0) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name}: {key!r} must be a positive number, got {options[key]!r}")
    return float(value)


def _step_control(y0: Tensor, t: Tensor, rtol, atol, options: Optional[dict], name: str, adjoint: bool):
    """The C++ StepControl from the user's tolerances and options; returns it and the norm."""
    options = dict(options or {})
    allowed = ADAPTIVE_OPTIONS + (("norm",) if adjoint else ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(map(repr, unknown))} for an adaptive method; "
            f"the adaptive methods take {', '.join(allowed)}"
        )
    c = _C.StepControl()
    c.rtol = _tolerance(rtol, y0, "rtol")
    c.atol = _tolerance(atol, y0, "atol")
    c.safety = _positive(options, "safety", 0.9, name)
    c.ifactor = _positive(options, "ifactor", 10.0, name)
    c.dfactor = _positive(options, "dfactor", 0.2, name)
    if not (c.safety <= 1 and c.dfactor < 1 < c.ifactor):
        raise ValueError(f"{name}: need safety <= 1, dfactor < 1 and ifactor > 1")
    controller = options.get("controller", "I")
    if controller not in ("I", "PI"):
        raise ValueError(f"{name}: 'controller' must be 'I' or 'PI', got {controller!r}")
    c.pi = controller == "PI"
    c.beta1 = _positive(options, "beta1", 0.7, name)
    c.beta2 = _positive(options, "beta2", 0.4, name)
    if "first_step" in options:
        c.first_step = _positive(options, "first_step", 0.0, name)
    if "min_step" in options:
        value = options["min_step"]
        if not isinstance(value, (int, float)) or not (value >= 0):
            raise ValueError(f"{name}: 'min_step' must be a non-negative number, got {value!r}")
        c.min_step = float(value)
    c.max_step = _positive(options, "max_step", math.inf, name, allow_inf=True)
    max_num_steps = options.get("max_num_steps", DEFAULT_MAX_NUM_STEPS)
    if not isinstance(max_num_steps, int) or max_num_steps <= 0:
        raise ValueError(f"{name}: 'max_num_steps' must be a positive int, got {max_num_steps!r}")
    c.max_num_steps = max_num_steps
    step_t = options.get("step_t", ())
    step_t = step_t.detach().flatten().tolist() if isinstance(step_t, Tensor) else [float(x) for x in step_t]
    if not all(math.isfinite(x) for x in step_t):
        raise ValueError(f"{name}: 'step_t' must hold finite times")
    direction = 1.0 if t.shape[0] < 2 or float(t[-1].detach()) >= float(t[0].detach()) else -1.0
    c.step_t = sorted(step_t, key=lambda x: direction * x)
    norm = options.get("norm", "full")
    if norm not in ("full", "seminorm"):
        raise ValueError(f"{name}: 'norm' must be 'full' or 'seminorm', got {norm!r}")
    return c, norm


class _FixedAdjoint:
    """Fixed-step solve; its gradient is the continuous adjoint with ``adjoint_rule``'s steps."""

    def __init__(self, rule: _StepRule, adjoint_rule: _StepRule):
        self.rule, self.adjoint_rule = rule, adjoint_rule

    def forward(self, f, y0, t):
        ys, raw = _C.solve_forward(f, y0, t, *self.rule.args(), False)
        return ys, raw, (t, ys)

    def backward(self, f, params, saved, grad_ys, need_t):
        t, ys = saved
        return _C.solve_adjoint(f, list(params), t, ys, grad_ys, *self.adjoint_rule.args(), need_t)


class _AdaptiveAdjoint:
    """Adaptive solve; its gradient is the adaptive continuous adjoint (own method, step
    control and error norm)."""

    def __init__(self, method: str, control, adjoint_method: str, adjoint_control, norm: str):
        self.method, self.control = method, control
        self.adjoint_method, self.adjoint_control, self.seminorm = adjoint_method, adjoint_control, norm == "seminorm"

    def forward(self, f, y0, t):
        ys, raw, _ = _C.solve_adaptive(f, y0, t, self.method, self.control, False, False)
        return ys, raw, (t, ys)

    def backward(self, f, params, saved, grad_ys, need_t):
        t, ys = saved
        return _C.solve_adaptive_adjoint(
            f, list(params), t, ys, grad_ys, self.adjoint_method, self.adjoint_control, self.seminorm, need_t
        )


class _Checkpointed:
    """Adaptive solve that keeps its accepted steps (a tape); its gradient replays them
    one by one: the exact gradient of the discrete solve. No gradient w.r.t. t."""

    def __init__(self, method: str, control):
        self.method, self.control = method, control
        self.tape = None

    def forward(self, f, y0, t):
        ys, raw, self.tape = _C.solve_adaptive(f, y0, t, self.method, self.control, False, True)
        return ys, raw, (t,)

    def backward(self, f, params, saved, grad_ys, need_t):
        (t,) = saved
        grad_y0, grad_params, raw = _C.solve_checkpoint_adjoint(f, list(params), grad_ys, self.tape, self.method, t)
        return grad_y0, None, grad_params, raw


class _Solve(torch.autograd.Function):
    """``y`` at every time of ``t``, solved in C++ without recording a graph; the backward
    is the ``strategy``'s (:class:`_FixedAdjoint`, :class:`_AdaptiveAdjoint` or
    :class:`_Checkpointed`), which returns dL/dy0, dL/dt and dL/dparams."""

    @staticmethod
    def forward(ctx, f, strategy, params, stats, y0, t, *param_tensors):
        ys, raw, saved = strategy.forward(f, y0, t)
        if stats is not None:
            stats.add_forward(raw)
        ctx.f, ctx.strategy, ctx.params, ctx.stats = f, strategy, params, stats
        ctx.save_for_backward(*saved)
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        need_t = ctx.needs_input_grad[5]
        grad_y0, grad_t, grad_params, raw = ctx.strategy.backward(
            ctx.f, ctx.params, ctx.saved_tensors, grad_ys, need_t
        )
        if ctx.stats is not None:
            ctx.stats.add_backward(raw)
        return (None, None, None, None, grad_y0, grad_t if need_t else None, *grad_params)


def _adjoint_params(func, adjoint_params) -> tuple:
    if adjoint_params is None:
        adjoint_params = tuple(func.parameters()) if isinstance(func, nn.Module) else ()
    return tuple(p for p in adjoint_params if isinstance(p, Tensor) and p.requires_grad)


def odeint(
    func,
    y0: Tensor,
    t: Tensor,
    *,
    method: Optional[str] = None,
    rtol: Union[float, Tensor] = 1e-7,
    atol: Union[float, Tensor] = 1e-9,
    options: Optional[dict] = None,
    gradient: str = "backprop",
    adjoint_params: Optional[Sequence[Tensor]] = None,
    adjoint_method: Optional[str] = None,
    adjoint_rtol: Union[float, Tensor, None] = None,
    adjoint_atol: Union[float, Tensor, None] = None,
    adjoint_options: Optional[dict] = None,
    stats: Optional[SolverStats] = None,
) -> Tensor:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``; return ``y`` at every time in ``t``.

    Args:
        func: the dynamics, a callable ``func(t, y)`` (torchdiffeq convention) or an
            :class:`neuralode.ODEF` module (``forward(z, t)``, the paper's convention).
        y0: initial state, float32 or float64, any shape. With per-sample times its
            first dimension is the batch.
        t: observation times, strictly increasing or decreasing: 1-D ``(T,)``, passed to
            ``func`` as 0-d tensors, or per-sample ``(T, batch, 1)``, passed as ``(batch, 1)``
            (fixed-step methods).
        method: adaptive ``"dopri5"`` (default), ``"tsit5"``, ``"bosh3"``, or fixed-step
            ``"euler"``, ``"midpoint"``, ``"rk4"`` (classic RK4).
        rtol, atol: adaptive methods keep the RMS over elements of
            ``err / (atol + rtol * max(|y0|, |y1|))`` at most 1 per step; numbers, or tensors
            broadcastable to ``y0``. Fixed-step methods ignore them.
        options: fixed-step: ``step_size`` (a uniform grid ``t[0] + k * step_size`` ending at
            ``t[-1]``, outputs linearly interpolated, as torchdiffeq), or ``max_step`` (each
            interval cut into ``n = ceil(max |t[i+1] - t[i]| / max_step)`` equal steps, the
            reference's rule); neither: one step per interval; ``max_num_steps``.
            Adaptive: ``first_step`` (default: Hairer's choice), ``safety`` (0.9), ``ifactor``
            (10), ``dfactor`` (0.2), ``controller`` (``"I"``, or ``"PI"`` with ``beta1`` 0.7,
            ``beta2`` 0.4), ``min_step``, ``max_step``, ``max_num_steps``, ``step_t`` (times
            every step must land on, e.g. discontinuities of f). Observation times never
            shorten a step: they are served from the method's dense output.
        gradient: ``"backprop"`` (autograd through every step: RK-Net), ``"adjoint"``
            (continuous adjoint, O(1) memory in the number of steps) or ``"checkpoint"``
            (adaptive methods: discrete adjoint, exact, O(steps x |y0|) memory).
        adjoint_params: with ``"adjoint"``/``"checkpoint"``, the tensors to differentiate
            besides ``y0`` and ``t``; default ``func.parameters()`` when ``func`` is a module.
        adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options: with ``"adjoint"``, the
            backward solve's method, tolerances and options (default: the forward's);
            ``adjoint_options={"norm": "seminorm"}`` leaves the parameter adjoint out of the
            error norm (Kidger et al. 2021), ``"full"`` (default) keeps it in.
        stats: a :class:`neuralode.SolverStats` whose counters this solve adds to.

    Returns:
        ``y`` of shape ``(T, *y0.shape)``.
    """
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {', '.join(map(repr, GRADIENT_MODES))}, got {gradient!r}")
    _check_state_and_times(y0, t)
    f = _as_callable(func)
    method = _check_method(method, "method")
    if stats is not None and not isinstance(stats, SolverStats):
        raise TypeError(f"stats must be a neuralode.SolverStats, got {type(stats).__name__}")
    if gradient == "backprop" and (
        adjoint_params is not None or adjoint_method is not None or adjoint_options is not None
        or adjoint_rtol is not None or adjoint_atol is not None
    ):
        raise ValueError("adjoint_params, adjoint_method, adjoint_rtol/atol and adjoint_options need gradient='adjoint'")
    if method in ADAPTIVE_METHODS:
        return _odeint_adaptive(
            f, func, y0, t, method, rtol, atol, options, gradient, adjoint_params,
            adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options, stats,
        )

    for value, name in ((rtol, "rtol"), (atol, "atol")):
        _tolerance(value, y0, name)
    rule = _step_rule(method, options, "options")
    if t.dim() == 3 and rule.kind == "step_size":
        raise ValueError("options: 'step_size' needs 1-D times; with per-sample times (T, batch, 1) use 'max_step'")
    if gradient == "checkpoint":
        raise ValueError(
            f"gradient='checkpoint' needs an adaptive method ({', '.join(ADAPTIVE_METHODS)}); "
            "with a fixed-step method use 'backprop' (exact) or 'adjoint' (O(1) memory)"
        )
    if gradient == "backprop":
        ys, raw = _C.solve_forward(f, y0, t, *rule.args(), torch.is_grad_enabled())
        if stats is not None:
            stats.add_forward(raw)
        return ys

    if adjoint_rtol is not None or adjoint_atol is not None:
        raise ValueError("adjoint_rtol/adjoint_atol apply to adaptive methods only")
    adjoint_method = _check_method(adjoint_method if adjoint_method is not None else method, "adjoint_method")
    if adjoint_method in ADAPTIVE_METHODS:
        raise ValueError("adjoint_method: a fixed-step forward solve needs a fixed-step adjoint_method")
    adjoint_rule = _step_rule(adjoint_method, adjoint_options if adjoint_options is not None else options, "adjoint_options")
    if t.dim() == 3 and adjoint_rule.kind == "step_size":
        raise ValueError("adjoint_options: 'step_size' needs 1-D times; use 'max_step'")
    params = _adjoint_params(func, adjoint_params)
    return _Solve.apply(f, _FixedAdjoint(rule, adjoint_rule), params, stats, y0, t, *params)


def _odeint_adaptive(
    f, func, y0, t, method, rtol, atol, options, gradient, adjoint_params,
    adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options, stats,
):
    if t.dim() == 3:
        return _odeint_per_sample(
            f, func, y0, t, method, rtol, atol, options, gradient, adjoint_params,
            adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options, stats,
        )
    control, _ = _step_control(y0, t, rtol, atol, options, "options", adjoint=False)
    if gradient != "adjoint" and t.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"gradients w.r.t. t with an adaptive method need gradient='adjoint' (got {gradient!r}); "
            "pass t.detach() or use the adjoint"
        )
    if gradient == "backprop":
        ys, raw, _ = _C.solve_adaptive(f, y0, t, method, control, torch.is_grad_enabled(), False)
        if stats is not None:
            stats.add_forward(raw)
        return ys
    params = _adjoint_params(func, adjoint_params)
    if gradient == "checkpoint":
        if adjoint_method is not None or adjoint_options is not None or adjoint_rtol is not None or adjoint_atol is not None:
            raise ValueError("gradient='checkpoint' replays the forward steps: it takes no adjoint_* settings")
        return _Solve.apply(f, _Checkpointed(method, control), params, stats, y0, t, *params)
    adjoint_method = _check_method(adjoint_method if adjoint_method is not None else method, "adjoint_method")
    if adjoint_method not in ADAPTIVE_METHODS:
        raise ValueError("adjoint_method: an adaptive forward solve needs an adaptive adjoint_method")
    adjoint_control, norm = _step_control(
        y0, t,
        rtol if adjoint_rtol is None else adjoint_rtol,
        atol if adjoint_atol is None else adjoint_atol,
        adjoint_options if adjoint_options is not None else {k: v for k, v in (options or {}).items() if k != "first_step"},
        "adjoint_options",
        adjoint=True,
    )
    strategy = _AdaptiveAdjoint(method, control, adjoint_method, adjoint_control, norm)
    return _Solve.apply(f, strategy, params, stats, y0, t, *params)


def _odeint_per_sample(
    f, func, y0, t, method, rtol, atol, options, gradient, adjoint_params,
    adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options, stats,
):
    """Adaptive solve with per-sample times ``(T, batch, 1)``, in a normalized time.

    Interval i is solved in ``s`` from 0 to 1 with ``t_b(s) = t_i,b + s * d_b`` and
    ``dz/ds = d_b * f(t_b(s), z)``, ``d_b = t_{i+1,b} - t_{i,b}``: one shared clock for
    samples whose times differ, one error control for the batch. Each interval is its
    own solve (the solver restarts at each observation time). ``t_i`` and ``d`` enter
    ``f`` like parameters, so every gradient mode also gives dL/dt.
    """
    extra = tuple(adjoint_params) if adjoint_params is not None else (
        tuple(func.parameters()) if isinstance(func, nn.Module) else ()
    )
    for opts, name in ((options, "options"), (adjoint_options, "adjoint_options")):
        if opts and "step_t" in opts:
            raise ValueError(f"{name}: 'step_t' needs 1-D times (each sample's times differ)")
    # Every interval ends exactly at s = 1: its output needs no interpolation.
    options = {**(options or {}), "step_t": [1.0]}
    unit = torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device)
    shape = (y0.shape[0],) + (1,) * (y0.dim() - 1)
    ys, z = [y0], y0
    for i in range(t.shape[0] - 1):
        t_i, d = t[i], t[i + 1] - t[i]
        d_state = d.reshape(shape).to(y0.dtype)

        def normalized(s, z, t_i=t_i, d=d, d_state=d_state):
            return d_state * f(t_i + s * d, z)

        params = extra + ((t_i, d) if t.requires_grad else ())
        z = _odeint_adaptive(
            normalized, None, z, unit, method, rtol, atol, options, gradient,
            params if gradient != "backprop" else None,
            adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options, stats,
        )[-1]
        ys.append(z)
    return torch.stack(ys)


def odeint_adjoint(
    func,
    y0: Tensor,
    t: Tensor,
    *,
    rtol: Union[float, Tensor] = 1e-7,
    atol: Union[float, Tensor] = 1e-9,
    method: Optional[str] = None,
    options: Optional[dict] = None,
    adjoint_rtol: Union[float, Tensor, None] = None,
    adjoint_atol: Union[float, Tensor, None] = None,
    adjoint_method: Optional[str] = None,
    adjoint_options: Optional[dict] = None,
    adjoint_params: Optional[Sequence[Tensor]] = None,
    stats: Optional[SolverStats] = None,
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
    )
