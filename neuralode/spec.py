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
from functools import lru_cache
from typing import Optional

import torch
from torch import Tensor

from . import _C

__all__ = [
    "METHODS", "FIXED_STEP_METHODS", "ADAPTIVE_METHODS", "GRADIENT_MODES", "DEFAULT_METHOD",
    "RTOL", "ATOL", "ADAPTIVE_DEFAULTS", "FIXED_STEP_OPTIONS", "ADAPTIVE_OPTIONS", "build_spec",
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
#: ``first_step`` 0 is Hairer's automatic choice; ``controller`` "I" or "PI".
ADAPTIVE_DEFAULTS = {
    "first_step": 0.0, "safety": 0.9, "ifactor": 10.0, "dfactor": 0.2, "controller": "I",
    "beta1": 0.7, "beta2": 0.4, "min_step": 0.0, "max_step": math.inf,
    "max_num_steps": DEFAULT_MAX_NUM_STEPS, "step_t": (),
}
ADAPTIVE_OPTIONS = tuple(ADAPTIVE_DEFAULTS)
#: Options of the fixed-step methods: ``step_size`` (uniform grid) or ``max_step``
#: (subdivision; default inf: one step per interval), ``max_num_steps``.
FIXED_STEP_OPTIONS = ("step_size", "max_step", "max_num_steps")
#: The adjoint's error norm: "full" (default) or "seminorm" (``adjoint_options["norm"]``).
NORMS = ("full", "seminorm")


def check_method(method, name: str) -> str:
    """``method`` or the default; a clear error for an unknown one."""
    if method is None:
        return DEFAULT_METHOD
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{name}: unknown method {method!r}; choose one of {', '.join(METHODS)}")
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


def _fixed_plan(method: str, options: dict, t: Tensor, name: str):
    # A fixed grid has no error norm: 'norm' (a callable, or the adjoint's "seminorm") is
    # taken and ignored, as torchdiffeq's fixed-grid solvers do.
    unknown = sorted(set(options) - set(FIXED_STEP_OPTIONS) - {"norm"})
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(map(repr, unknown))} for method {method!r}; "
            f"the fixed-step methods take {', '.join(FIXED_STEP_OPTIONS)}"
        )
    if "step_size" in options and "max_step" in options:
        raise ValueError(f"{name}: give either 'step_size' or 'max_step', not both")
    grid, step = "subdivide", math.inf
    for key in ("step_size", "max_step"):
        if key in options:
            value = _number(options[key])
            # max_step = inf is allowed: one step per interval.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0) or (
                math.isinf(value) and key == "step_size"
            ):
                what = "a positive finite number" if key == "step_size" else "a positive number"
                raise ValueError(f"{name}: {key!r} must be {what}, got {options[key]!r}")
            grid, step = ("uniform" if key == "step_size" else "subdivide"), float(value)
    if grid == "uniform" and t.dim() == 3:
        raise ValueError(f"{name}: 'step_size' needs 1-D times; with per-sample times (T, batch, 1) use 'max_step'")
    d = ADAPTIVE_DEFAULTS
    return _C.StepPlan(
        method=method, grid=grid, step=step, rtol=None, atol=None, safety=d["safety"],
        ifactor=d["ifactor"], dfactor=d["dfactor"], pi=False, beta1=d["beta1"], beta2=d["beta2"],
        first_step=0.0, min_step=0.0, max_step=math.inf,
        max_num_steps=_max_num_steps(options, name), step_t=[],
    )


def _adaptive_plan(method: str, rtol, atol, options: dict, y0: Tensor, t: Tensor, name: str, adjoint: bool,
                   segments=(), norm_wrapper=None):
    allowed = ADAPTIVE_OPTIONS + ("norm",)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(map(repr, unknown))} for an adaptive method; "
            f"the adaptive methods take {', '.join(allowed)}"
        )
    safety, ifactor, dfactor = (_positive(options, k, name) for k in ("safety", "ifactor", "dfactor"))
    if not (safety <= 1 and dfactor < 1 < ifactor):
        raise ValueError(f"{name}: need safety <= 1, dfactor < 1 and ifactor > 1")
    controller = options.get("controller", ADAPTIVE_DEFAULTS["controller"])
    if controller not in ("I", "PI"):
        raise ValueError(f"{name}: 'controller' must be 'I' or 'PI', got {controller!r}")
    first_step = _positive(options, "first_step", name) if "first_step" in options else 0.0
    min_step = _number(options.get("min_step", ADAPTIVE_DEFAULTS["min_step"]))
    if isinstance(min_step, bool) or not isinstance(min_step, (int, float)) or not (min_step >= 0):
        raise ValueError(f"{name}: 'min_step' must be a non-negative number, got {min_step!r}")
    step_t = options.get("step_t", ())
    step_t = step_t.detach().flatten().tolist() if isinstance(step_t, Tensor) else [float(x) for x in step_t]
    if not all(math.isfinite(x) for x in step_t):
        raise ValueError(f"{name}: 'step_t' must hold finite times")
    if step_t and t.dim() == 3:
        raise ValueError(f"{name}: 'step_t' needs 1-D times (each sample's times differ)")
    max_step = _positive(options, "max_step", name, allow_inf=True)
    if min_step > max_step:
        raise ValueError(f"{name}: 'min_step' ({min_step}) is larger than 'max_step' ({max_step}); no step fits")
    rtol_t, atol_t = tolerance(rtol, y0, "rtol"), tolerance(atol, y0, "atol")
    if y0.numel() > 0 and bool(((rtol_t == 0) & (atol_t == 0)).any()):
        raise ValueError(
            f"{'adjoint_rtol/adjoint_atol' if adjoint else 'rtol/atol'}: both are 0 for some element, so "
            "no step with any error could be accepted; give atol > 0 (the error allowed near zero)"
        )
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
        safety=safety, ifactor=ifactor, dfactor=dfactor, pi=controller == "PI",
        beta1=_positive(options, "beta1", name), beta2=_positive(options, "beta2", name),
        first_step=first_step, min_step=float(min_step),
        max_step=max_step,
        max_num_steps=_max_num_steps(options, name), step_t=step_t,
        atol_has_zero=_has_zero(atol), segments=list(segments), norm=user_norm,
        # The adjoint's first step is chosen on [z] alone: a user's adjoint norm takes the
        # whole augmented state, so the first step uses the built-in norm there.
        norm_first_step=not adjoint,
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
    n_params: int = 0,
):
    """The ``_C.SolveSpec`` of one ``odeint`` call, every argument checked (errors name
    the argument and what to change).

    ``y0`` is the engine's buffer; ``layout`` (a :class:`neuralode.state.StateLayout`)
    says how the user's state lies in it: its pieces get the mixed norm, and a user's
    ``norm`` is called on the scaled error laid out like the user's state (torchdiffeq's
    convention; the adjoint's on ``(t, *y, *adj_y, *adj_params)``, ``n_params`` of them).
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
        forward = _fixed_plan(method, options, t, "options")
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
        adjoint_norm = (lambda norm: layout.user_adjoint_norm(norm, n_params)) if layout is not None else None
        backward, norm = _adaptive_plan(
            adjoint_method, rtol if adjoint_rtol is None else adjoint_rtol,
            atol if adjoint_atol is None else adjoint_atol, dict(adjoint_options), y0, t,
            "adjoint_options", adjoint=True, segments=segments, norm_wrapper=adjoint_norm,
        )
        return _C.SolveSpec(forward=forward, backward=backward, gradient=gradient, seminorm=norm == "seminorm")
    if adjoint_rtol is not None or adjoint_atol is not None:
        raise ValueError("adjoint_rtol/adjoint_atol apply to adaptive adjoint methods only")
    backward = _fixed_plan(adjoint_method, dict(adjoint_options), t, "adjoint_options")
    return _C.SolveSpec(forward=forward, backward=backward, gradient=gradient, seminorm=False)
