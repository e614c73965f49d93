"""``odeint`` and ``odeint_adjoint``: the public solve, with a torchdiffeq-style API.

The integration loops run in C++ (``neuralode._C``) and call the dynamics
through one interface; Runge-Kutta stages are combined by the fused
``stage_combine`` kernel. Gradients come in two modes:

* ``"backprop"``: autograd records every fused op of the solve (the paper's
  "RK-Net" baseline): the exact gradient of the discrete solve, memory
  O(steps x activations of f).
* ``"adjoint"``: the continuous adjoint (Chen et al. 2018): the augmented system
  ``[z, a, a_t, a_theta]`` is solved backwards in one pass over all observation
  times, with O(1) memory in the number of steps; the gradient converges to the
  exact one at the method's order as the step shrinks.
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

__all__ = ["odeint", "odeint_adjoint", "METHODS", "GRADIENT_MODES"]

#: Fixed-step Runge-Kutta methods (tableaux in csrc/tableau.h).
METHODS = tuple(_C.methods())
#: What ``gradient=`` accepts.
GRADIENT_MODES = ("backprop", "adjoint")
#: Options of the fixed-step methods.
FIXED_STEP_OPTIONS = ("step_size", "max_step", "max_num_steps")
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
        return (self.method, self.kind, self.value, self.max_num_steps)


def _as_callable(func) -> Callable[[Tensor, Tensor], Tensor]:
    """The dynamics as ``f(t, z)``: ``ODEF`` modules (``forward(z, t)``) are adapted."""
    if isinstance(func, ODEF):
        return lambda t, z: func(z, t)
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y) or be an ODEF module, got {type(func).__name__}")
    return func


def _step_rule(method: Optional[str], options: Optional[dict], name: str) -> _StepRule:
    if method is None:
        method = "rk4"
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{name}: unknown method {method!r}; choose one of {', '.join(METHODS)}")
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
    if not bool(torch.isfinite(y0).all()):
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


class _AdjointSolve(torch.autograd.Function):
    """z at every observation time; backward is the continuous adjoint, run in C++."""

    @staticmethod
    def forward(ctx, f, rule: _StepRule, adjoint_rule: _StepRule, params, y0, t, *param_tensors):
        ys, _nfe = _C.solve_forward(f, y0, t, *rule.args(), False)
        ctx.f, ctx.adjoint_rule, ctx.params = f, adjoint_rule, params
        ctx.save_for_backward(t, ys)
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        t, ys = ctx.saved_tensors
        need_t = ctx.needs_input_grad[5]
        grad_y0, grad_t, grad_params, _nfe = _C.solve_adjoint(
            ctx.f, list(ctx.params), t, ys, grad_ys, *ctx.adjoint_rule.args(), need_t
        )
        return (None, None, None, None, grad_y0, grad_t, *grad_params)


def odeint(
    func,
    y0: Tensor,
    t: Tensor,
    *,
    method: Optional[str] = None,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    options: Optional[dict] = None,
    gradient: str = "backprop",
    adjoint_params: Optional[Sequence[Tensor]] = None,
    adjoint_method: Optional[str] = None,
    adjoint_options: Optional[dict] = None,
) -> Tensor:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``; return ``y`` at every time in ``t``.

    Args:
        func: the dynamics, a callable ``func(t, y)`` (torchdiffeq convention) or an
            :class:`neuralode.ODEF` module (``forward(z, t)``, the paper's convention).
        y0: initial state, float32 or float64, any shape. With per-sample times its
            first dimension is the batch.
        t: observation times, strictly increasing or decreasing: 1-D ``(T,)``, passed to
            ``func`` as 0-d tensors, or per-sample ``(T, batch, 1)``, passed as ``(batch, 1)``.
        method: ``"euler"``, ``"midpoint"`` or ``"rk4"`` (classic RK4; default).
        rtol, atol: accepted for API compatibility; fixed-step methods do not use them.
        options: ``step_size`` (a uniform grid ``t[0] + k * step_size`` ending at ``t[-1]``,
            outputs linearly interpolated, as torchdiffeq), or ``max_step`` (each interval cut
            into ``n = ceil(max |t[i+1] - t[i]| / max_step)`` equal steps, the reference's rule);
            neither: one step per interval. ``max_num_steps`` bounds the total (error beyond).
        gradient: ``"backprop"`` (autograd through every step: RK-Net) or ``"adjoint"``
            (continuous adjoint, O(1) memory in the number of steps).
        adjoint_params: with ``"adjoint"``, the tensors to differentiate besides ``y0`` and
            ``t``; default ``func.parameters()`` when ``func`` is a module.
        adjoint_method, adjoint_options: with ``"adjoint"``, the backward solve's method and
            options (default: those of the forward solve).

    Returns:
        ``y`` of shape ``(T, *y0.shape)``.
    """
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {', '.join(map(repr, GRADIENT_MODES))}, got {gradient!r}")
    _check_state_and_times(y0, t)
    f = _as_callable(func)
    rule = _step_rule(method, options, "options")
    if t.dim() == 3 and rule.kind == "step_size":
        raise ValueError("options: 'step_size' needs 1-D times; with per-sample times (T, batch, 1) use 'max_step'")
    for rtol_atol, name in ((rtol, "rtol"), (atol, "atol")):
        if not (float(rtol_atol) >= 0):
            raise ValueError(f"{name} must be non-negative, got {rtol_atol}")
    if gradient == "backprop":
        if adjoint_params is not None or adjoint_method is not None or adjoint_options is not None:
            raise ValueError("adjoint_params, adjoint_method and adjoint_options need gradient='adjoint'")
        ys, _nfe = _C.solve_forward(f, y0, t, *rule.args(), torch.is_grad_enabled())
        return ys

    adjoint_rule = _step_rule(
        adjoint_method if adjoint_method is not None else rule.method,
        adjoint_options if adjoint_options is not None else options,
        "adjoint_options",
    )
    if t.dim() == 3 and adjoint_rule.kind == "step_size":
        raise ValueError("adjoint_options: 'step_size' needs 1-D times; use 'max_step'")
    if adjoint_params is None:
        adjoint_params = tuple(func.parameters()) if isinstance(func, nn.Module) else ()
    params = tuple(p for p in adjoint_params if isinstance(p, Tensor) and p.requires_grad)
    return _AdjointSolve.apply(f, rule, adjoint_rule, params, y0, t, *params)


def odeint_adjoint(
    func,
    y0: Tensor,
    t: Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: Optional[str] = None,
    options: Optional[dict] = None,
    adjoint_method: Optional[str] = None,
    adjoint_options: Optional[dict] = None,
    adjoint_params: Optional[Sequence[Tensor]] = None,
) -> Tensor:
    """``odeint(..., gradient="adjoint")`` with torchdiffeq's keyword names.

    The backward pass solves the augmented system
    ``d/dt [z, a, a_t, a_theta] = [f, -a df/dz, -a df/dt, -a df/dtheta]`` from ``t[-1]``
    to ``t[0]`` in one pass, adding ``dL/dz(t_i)`` to ``a`` at every observation time.
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
        adjoint_options=adjoint_options,
    )
