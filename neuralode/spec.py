"""The solve specification: every default of a solve, in one place, and the checks
that turn ``odeint``'s arguments into one immutable ``_C.SolveSpec``.

A spec holds, for each direction of the solve (the forward and, with
``gradient="adjoint"``, the backward one), a ``_C.StepPlan``: the method, where its
steps go (a fixed grid or error control with its controller settings and knots)
and the tolerances; and the gradient mode. It is built once per call and handed to
the C++ loop as it is.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import Counter
from functools import lru_cache
from typing import Optional

import torch
from torch import Tensor

from . import _C

__all__ = [
    "METHODS", "FIXED_STEP_METHODS", "ADAPTIVE_METHODS", "GRADIENT_MODES", "DEFAULT_METHOD",
    "RTOL", "ATOL", "ADAPTIVE_DEFAULTS", "FIXED_STEP_OPTIONS", "ADAPTIVE_OPTIONS", "SOLVER_NAMES",
    "build_spec",
]

#: Fixed-step Runge-Kutta methods (tableaux in csrc/tableau.h).
FIXED_STEP_METHODS = tuple(_C.methods(False))
#: Adaptive (embedded) Runge-Kutta methods.
ADAPTIVE_METHODS = tuple(_C.methods(True))
METHODS = FIXED_STEP_METHODS + ADAPTIVE_METHODS
DEFAULT_METHOD = "dopri5"
#: What ``gradient=`` accepts.
GRADIENT_MODES = ("backprop", "adjoint", "checkpoint")
#: Default tolerances (torchdiffeq's).
RTOL, ATOL = 1e-7, 1e-9
DEFAULT_MAX_NUM_STEPS = 2**31 - 1
#: Options of the adaptive methods and their defaults (torchdiffeq's where it has them):
#: ``first_step`` 0 is Hairer's automatic choice; ``controller`` "I", "PI" (with ``beta1``,
#: ``beta2``) or "predictive" (neuralode's own; per-sample steps default to "predictive"); ``step_t`` / ``jump_t`` knots; ``dtype`` torchdiffeq's time
#: dtype (accepted; the adaptive clock is float64 whatever it says).
ADAPTIVE_DEFAULTS = {
    "first_step": 0.0, "safety": 0.9, "ifactor": 10.0, "dfactor": 0.2, "controller": "I",
    "beta1": 0.7, "beta2": 0.4, "min_step": 0.0, "max_step": math.inf,
    "max_num_steps": DEFAULT_MAX_NUM_STEPS, "step_t": (), "jump_t": (), "dtype": torch.float64,
    "per_sample": False,
}
ADAPTIVE_OPTIONS = tuple(ADAPTIVE_DEFAULTS)
#: Step-size controllers: torchdiffeq's I rule, Gustafsson's PI controller, and the I rule
#: capped by Gustafsson's predictive rule after accepted steps (fewer rejections where the
#: error grows from step to step).
CONTROLLERS = ("I", "PI", "predictive")
#: The controller of per-sample steps when none is given.
PER_SAMPLE_CONTROLLER = "predictive"
#: Options of the fixed-step methods. torchdiffeq's: ``step_size`` (a uniform grid) or
#: ``grid_constructor`` (a grid of one's own), ``interp`` ("linear" or "cubic") between grid
#: points, ``perturb``; neuralode's own: ``max_step`` (each interval cut into equal steps;
#: default inf: one step per interval), ``max_num_steps``. ``norm`` is taken and ignored, as
#: torchdiffeq's fixed-grid solvers do (they have no error to measure).
FIXED_STEP_OPTIONS = ("step_size", "grid_constructor", "interp", "perturb", "max_step", "max_num_steps", "norm")
#: How the options name a solver in warnings: torchdiffeq's class of each method (names in
#: its style for the methods torchdiffeq lacks), so that warning filters written for
#: torchdiffeq match.
SOLVER_NAMES = {
    "euler": "Euler", "midpoint": "Midpoint", "rk4": "RK4", "rk4_classic": "RK4Classic",
    "heun2": "Heun2", "heun3": "Heun3", "bosh3": "Bosh3Solver", "dopri5": "Dopri5Solver",
    "tsit5": "Tsit5Solver", "dopri8": "Dopri8Solver", "adaptive_heun": "AdaptiveHeunSolver",
    "fehlberg2": "Fehlberg2",
}
#: The adjoint's error norm: "full" (default) or "seminorm" (``adjoint_options["norm"]``).
NORMS = ("full", "seminorm")


def check_method(method, name: str) -> str:
    """``method`` or the default; a clear error for an unknown one."""
    if method is None:
        return DEFAULT_METHOD
    if not isinstance(method, str) or method not in METHODS:
        from .python_methods import PYTHON_METHODS  # the methods outside the engine

        if name == "adjoint_method" and method in PYTHON_METHODS:
            raise ValueError(f"adjoint_method: the adjoint runs on the Runge-Kutta engine, not {method!r}; "
                             f"choose one of {', '.join(METHODS)}")
        raise ValueError(f"{name}: unknown method {method!r}; choose one of {', '.join(METHODS + PYTHON_METHODS)}")
    return method


@lru_cache(maxsize=64)
def _scalar_tolerance(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    # Shared between calls: the kernels only read tolerances.
    return torch.tensor([value], dtype=dtype, device=device)


def tolerance(value, y0: Tensor, name: str) -> Tensor:
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
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (value >= 0) or math.isinf(value):
        raise ValueError(f"{name} must be a finite non-negative number or tensor, got {value!r}")
    return _scalar_tolerance(float(value), y0.dtype, y0.device)


def _has_zero(tol) -> bool:
    """Whether a tolerance (number or tensor, already checked) has a zero."""
    return bool((tol == 0).any()) if isinstance(tol, Tensor) else float(tol) == 0.0


def _number(value):
    """A Python number from a tensor or numpy scalar (anything else as it is)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return int(value) if isinstance(value, numbers.Integral) else float(value)
    return value


def _positive(options: dict, key: str, name: str, allow_inf: bool = False) -> float:
    value = _number(options.get(key, ADAPTIVE_DEFAULTS.get(key)))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0) or (
        math.isinf(value) and not allow_inf
    ):
        raise ValueError(f"{name}: {key!r} must be a positive number, got {options[key]!r}")
    return float(value)


def _max_num_steps(options: dict, name: str) -> int:
    value = _number(options.get("max_num_steps", DEFAULT_MAX_NUM_STEPS))
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: 'max_num_steps' must be a positive int, got {value!r}")
    return value


def _expected(method: str, options: dict, allowed) -> dict:
    """The options ``method`` takes. The others are warned about as torchdiffeq warns
    (``"<Solver>: Unexpected arguments {...}"``, a UserWarning) and then ignored."""
    unexpected = {k: v for k, v in options.items() if k not in allowed}
    if unexpected:
        warnings.warn(f"{SOLVER_NAMES[method]}: Unexpected arguments {unexpected}")
    return {k: v for k, v in options.items() if k in allowed}


def _given(options: dict, key: str) -> bool:
    """Whether ``key`` is set: torchdiffeq's options that default to None count as unset
    when None is passed."""
    return options.get(key) is not None


def _grid_maker(constructor, func, y0: Tensor, t: Tensor, name: str):
    """``grid(t)`` for the C++ planner, which calls it with the times the steps are placed
    from (possibly a copy of t that requires grad, so that the grid keeps its graph).

    torchdiffeq's rule: ``grid_constructor(func, y0, t)`` is the grid the steps go along,
    from t[0] to t[-1]. For decreasing t, torchdiffeq solves in the time s = -t; its
    constructor then receives -t and the dynamics in s, ``-func(-s, y)``, and its grid is
    negated back. The grid is checked: 1-D, finite, from t[0] to t[-1], strictly monotonic
    in t's direction."""
    decreasing = t.shape[0] > 1 and bool(t[-1] < t[0])

    def grid(times: Tensor) -> Tensor:
        if decreasing:
            g = constructor(lambda s, y: -func(-s, y), y0, -times)
        else:
            g = constructor(func, y0, times)
        if not isinstance(g, Tensor):
            raise TypeError(f"{name}: 'grid_constructor' must return a torch.Tensor, got {type(g).__name__}")
        g = (-g if decreasing else g).to(dtype=times.dtype, device=times.device)
        if g.dim() != 1 or g.shape[0] < 2 or not bool(torch.isfinite(g).all()):
            raise ValueError(f"{name}: 'grid_constructor' must return a finite 1-D grid of at least 2 times, "
                             f"got shape {tuple(g.shape)}")
        if not (bool(g[0] == times[0]) and bool(g[-1] == times[-1])):
            raise ValueError(
                f"{name}: the grid from 'grid_constructor' must start at t[0] and end at t[-1] (torchdiffeq's "
                f"rule); it goes from {g[0].item()!r} to {g[-1].item()!r}, t from {times[0].item()!r} to "
                f"{times[-1].item()!r}"
            )
        steps = g[1:] - g[:-1]
        if not bool((steps < 0).all() if decreasing else (steps > 0).all()):
            raise ValueError(f"{name}: the grid from 'grid_constructor' must be strictly "
                             f"{'decreasing' if decreasing else 'increasing'}, as t is")
        return g

    return grid


def _fixed_plan(method: str, options: dict, y0: Tensor, t: Tensor, func, name: str):
    options = _expected(method, options, FIXED_STEP_OPTIONS)
    if _given(options, "step_size") and _given(options, "grid_constructor"):
        raise ValueError(f"{name}: 'step_size' and 'grid_constructor' are mutually exclusive arguments; give one")
    for key in ("step_size", "grid_constructor"):
        if _given(options, key) and "max_step" in options:
            raise ValueError(f"{name}: give either {key!r} or 'max_step', not both")
    grid, step, constructor = "subdivide", math.inf, None
    for key in ("step_size", "max_step"):
        # max_step is neuralode's own: None is a bad value there, not "unset".
        if _given(options, key) if key == "step_size" else key in options:
            value = _number(options[key])
            # max_step = inf is allowed: one step per interval.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0) or (
                math.isinf(value) and key == "step_size"
            ):
                what = "a positive finite number" if key == "step_size" else "a positive number"
                raise ValueError(f"{name}: {key!r} must be {what}, got {options[key]!r}")
            grid, step = ("uniform" if key == "step_size" else "subdivide"), float(value)
    for key in ("step_size", "grid_constructor"):
        if _given(options, key) and t.dim() == 3:
            raise ValueError(f"{name}: {key!r} needs 1-D times; with per-sample times (T, batch, 1) use 'max_step'")
    if _given(options, "grid_constructor"):
        if not callable(options["grid_constructor"]):
            raise ValueError(f"{name}: 'grid_constructor' must be callable as grid_constructor(func, y0, t), "
                             f"got {type(options['grid_constructor']).__name__}")
        grid = "constructed"
        constructor = _grid_maker(options["grid_constructor"], func, y0, t, name)
    interp = options.get("interp", "linear")
    if interp not in ("linear", "cubic"):
        raise ValueError(f"{name}: 'interp' must be 'linear' or 'cubic', got {interp!r}")
    perturb = options.get("perturb", False)
    if isinstance(perturb, Tensor) and perturb.numel() == 1:
        perturb = perturb.item()
    if not isinstance(perturb, (bool, numbers.Integral)) or perturb not in (0, 1):
        raise ValueError(f"{name}: 'perturb' must be True or False, got {perturb!r}")
    d = ADAPTIVE_DEFAULTS
    return _C.StepPlan(
        method=method, grid=grid, step=step, rtol=None, atol=None, safety=d["safety"],
        ifactor=d["ifactor"], dfactor=d["dfactor"], controller="I", beta1=d["beta1"], beta2=d["beta2"],
        first_step=0.0, min_step=0.0, max_step=math.inf,
        max_num_steps=_max_num_steps(options, name), step_t=[], jump_t=[],
        grid_constructor=constructor, interp=interp, perturb=bool(perturb),
    )


def _knots(options: dict, key: str, t: Tensor, name: str) -> list:
    """``step_t`` or ``jump_t`` as a list of finite times (None or absent: none)."""
    value = options.get(key)
    if value is None:
        return []
    try:
        knots = torch.as_tensor(value.detach() if isinstance(value, Tensor) else value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name}: {key!r} must be times (a sequence or tensor of numbers), got {value!r}") from None
    knots = knots.cpu().flatten().tolist()
    if not all(math.isfinite(x) for x in knots):
        raise ValueError(f"{name}: {key!r} must hold finite times")
    if knots and t.dim() == 3:
        raise ValueError(f"{name}: {key!r} needs 1-D times (each sample's times differ)")
    return knots


def _check_knots_apart(step_t: list, jump_t: list, t: Tensor, name: str) -> None:
    """torchdiffeq's rule: among the knots not behind t[0], no time twice (in step_t and
    jump_t, or twice in one): a time is either one where f is continuous or one where it
    jumps."""
    if len(step_t) + len(jump_t) < 2:
        return  # nothing to repeat (and no read of t to the host)
    t0 = t.reshape(-1)[0].item() if t.numel() else 0.0
    sign = -1.0 if t.dim() == 1 and t.shape[0] > 1 and bool(t[-1] < t[0]) else 1.0
    counts = Counter(x for x in step_t + jump_t if sign * (x - t0) >= 0)
    repeated = sorted(x for x, n in counts.items() if n > 1)
    if repeated:
        raise ValueError(
            f"{name}: 'step_t' and 'jump_t' must not have any repeated elements between them (torchdiffeq's rule), "
            f"got {repeated} more than once; put a time where f jumps in jump_t only"
        )


def _adaptive_plan(method: str, rtol, atol, options: dict, y0: Tensor, t: Tensor, name: str, adjoint: bool,
                   segments=(), norm_wrapper=None):
    allowed = ADAPTIVE_OPTIONS + ("norm",)
    options = _expected(method, options, allowed)
    safety, ifactor, dfactor = (_positive(options, k, name) for k in ("safety", "ifactor", "dfactor"))
    if not (safety <= 1 and dfactor < 1 < ifactor):
        raise ValueError(f"{name}: need safety <= 1, dfactor < 1 and ifactor > 1")
    first_step = _positive(options, "first_step", name) if _given(options, "first_step") else 0.0
    min_step = _number(options.get("min_step", ADAPTIVE_DEFAULTS["min_step"]))
    if isinstance(min_step, bool) or not isinstance(min_step, (int, float)) or not (min_step >= 0):
        raise ValueError(f"{name}: 'min_step' must be a non-negative number, got {min_step!r}")
    step_t, jump_t = _knots(options, "step_t", t, name), _knots(options, "jump_t", t, name)
    _check_knots_apart(step_t, jump_t, t, name)
    time_dtype = options.get("dtype", ADAPTIVE_DEFAULTS["dtype"])
    if time_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name}: 'dtype' (the time dtype) must be torch.float32 or torch.float64, got {time_dtype!r}")
    max_step = _positive(options, "max_step", name, allow_inf=True)
    if min_step > max_step:
        raise ValueError(f"{name}: 'min_step' ({min_step}) is larger than 'max_step' ({max_step}); no step fits")
    rtol_t, atol_t = tolerance(rtol, y0, "rtol"), tolerance(atol, y0, "atol")
    if y0.numel() > 0 and bool(((rtol_t == 0) & (atol_t == 0)).any()):
        raise ValueError(
            f"{'adjoint_rtol/adjoint_atol' if adjoint else 'rtol/atol'}: both are 0 for some element, so "
            "no step with any error could be accepted; give atol > 0 (the error allowed near zero)"
        )
    # Per-sample times (T, batch, 1) step each sample on its own unless per_sample=False
    # asks for the shared clock (one step size in a normalized time; also where a callable
    # norm needs the whole batch's error).
    per_sample = options.get("per_sample", t.dim() == 3 and not callable(options.get("norm")))
    if not isinstance(per_sample, bool):
        raise ValueError(f"{name}: 'per_sample' must be True or False, got {per_sample!r}")
    if per_sample:
        # Each sample (the first dimension of y0) steps on its own (csrc/per_sample_planner.cpp).
        if y0.dim() < 1 or len(segments) > 1 or callable(options.get("norm")):
            raise ValueError(f"{name}: 'per_sample' needs y0 to be one tensor whose first dimension is the "
                             "batch (no tuple state, no callable norm)")
        if step_t or jump_t:
            raise ValueError(f"{name}: 'per_sample' does not take 'step_t'/'jump_t' knots")
    # Per-sample steps default to the predictive controller: no torchdiffeq steps to match
    # there, and a stiff row's adjoint takes a third of the rejections with it
    # (benchmarks/results_notes.md, vdp).
    controller = options.get("controller", PER_SAMPLE_CONTROLLER if per_sample else ADAPTIVE_DEFAULTS["controller"])
    if controller not in CONTROLLERS:
        raise ValueError(f"{name}: 'controller' must be one of {CONTROLLERS}, got {controller!r}")
    norm = options.get("norm", NORMS[0])
    user_norm = None
    if callable(norm):
        # A user's norm of the scaled error, called as torchdiffeq calls it (the wrapper
        # lays the engine's tensors out as the user's state).
        user_norm = norm_wrapper(norm) if norm_wrapper is not None else (lambda q, _n=norm: _n(q[0]))
        norm = NORMS[0]
    elif "norm" in options and (not adjoint or norm not in NORMS):
        raise ValueError(
            f"{name}: 'norm' must be a callable of the scaled error"
            + (" or 'full' or 'seminorm'" if adjoint else "") + f", got {norm!r}"
        )
    plan = _C.StepPlan(
        method=method, grid="subdivide", step=math.inf,
        rtol=rtol_t, atol=atol_t,
        safety=safety, ifactor=ifactor, dfactor=dfactor, controller=controller,
        beta1=_positive(options, "beta1", name), beta2=_positive(options, "beta2", name),
        first_step=first_step, min_step=float(min_step),
        max_step=max_step,
        max_num_steps=_max_num_steps(options, name), step_t=step_t, jump_t=jump_t,
        grid_constructor=None, interp="linear", perturb=False,
        atol_has_zero=_has_zero(atol), segments=list(segments), norm=user_norm,
        # The adjoint's first step is chosen on [z] alone: a user's adjoint norm takes the
        # whole augmented state, so the first step uses the built-in norm there.
        norm_first_step=not adjoint,
        per_sample=per_sample,
    )
    return plan, norm


def build_spec(
    y0: Tensor,
    t: Tensor,
    *,
    method: Optional[str],
    rtol,
    atol,
    options: Optional[dict],
    gradient: str,
    adjoint_method: Optional[str],
    adjoint_rtol,
    adjoint_atol,
    adjoint_options: Optional[dict],
    layout=None,
    func=None,
):
    """The ``_C.SolveSpec`` of one ``odeint`` call, every argument checked (errors name
    the argument and what to change).

    ``y0`` is the engine's buffer; ``layout`` (a :class:`neuralode.state.StateLayout`)
    says how the user's state lies in it: its pieces get the mixed norm, and a user's
    ``norm`` is called on the scaled error laid out like the user's state (torchdiffeq's
    convention; the adjoint's on ``(t, *y, *adj_y, *adj_params)``).
    ``func`` (``f(t, y)`` on the buffer) is what a fixed-step ``grid_constructor`` receives.
    """
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {', '.join(map(repr, GRADIENT_MODES))}, got {gradient!r}")
    adjoint_given = (adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options) != (None,) * 4
    if gradient != "adjoint" and adjoint_given:
        what = ("replays the forward steps: it takes no adjoint_* settings" if gradient == "checkpoint"
                else "has no backward solve")
        raise ValueError(f"gradient={gradient!r} {what}; adjoint_method, adjoint_rtol/atol and "
                         "adjoint_options need gradient='adjoint'")
    method = check_method(method, "method")
    options = dict(options or {})
    segments = layout.segments if layout is not None else []
    forward_norm = layout.user_norm if layout is not None else None
    if method in ADAPTIVE_METHODS:
        forward, _ = _adaptive_plan(method, rtol, atol, options, y0, t, "options", adjoint=False,
                                    segments=segments, norm_wrapper=forward_norm)
    else:
        for value, name in ((rtol, "rtol"), (atol, "atol")):
            tolerance(value, y0, name)
        forward = _fixed_plan(method, options, y0, t, func, "options")
    if gradient != "adjoint":
        return _C.SolveSpec(forward=forward, backward=forward, gradient=gradient, seminorm=False)

    adjoint_method = check_method(adjoint_method if adjoint_method is not None else method, "adjoint_method")
    if adjoint_options is None:
        if (adjoint_method in ADAPTIVE_METHODS) != (method in ADAPTIVE_METHODS) and options:
            # torchdiffeq's rule: the forward's options need not mean anything to another method.
            raise ValueError(
                f"adjoint_method={adjoint_method!r} is not of the forward method's kind ({method!r}) and options "
                "were given: pass adjoint_options as well (the forward's options cannot be carried over)"
            )
        # The forward's first step and norm say nothing about the backward solve's.
        adjoint_options = {k: v for k, v in options.items() if k not in ("first_step", "norm")}
    if adjoint_method in ADAPTIVE_METHODS:
        adjoint_norm = layout.user_adjoint_norm if layout is not None else None
        backward, norm = _adaptive_plan(
            adjoint_method, rtol if adjoint_rtol is None else adjoint_rtol,
            atol if adjoint_atol is None else adjoint_atol, dict(adjoint_options), y0, t,
            "adjoint_options", adjoint=True, segments=segments, norm_wrapper=adjoint_norm,
        )
        if backward.per_sample != forward.per_sample:
            raise ValueError("adjoint_options: 'per_sample' must be the forward's (the per-sample adjoint walks "
                             "back each sample's own times); give the same value or leave it out")
        return _C.SolveSpec(forward=forward, backward=backward, gradient=gradient, seminorm=norm == "seminorm")
    # A fixed-step adjoint takes no tolerances: checked, then ignored (as rtol/atol by a
    # fixed-step forward, and as torchdiffeq does).
    for value, name in ((adjoint_rtol, "adjoint_rtol"), (adjoint_atol, "adjoint_atol")):
        if value is not None:
            tolerance(value, y0, name)
    backward = _fixed_plan(adjoint_method, dict(adjoint_options), y0, t, func, "adjoint_options")
    return _C.SolveSpec(forward=forward, backward=backward, gradient=gradient, seminorm=False)
