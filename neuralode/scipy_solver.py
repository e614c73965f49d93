"""``method="scipy_solver"``: SciPy's ``solve_ivp`` behind the odeint API.

Semantics of torchdiffeq 0.2.5's ``scipy_solver``: the state is flattened to a
float64 NumPy vector, ``solve_ivp`` integrates ``dy/dt = f(t, y)`` with the
chosen method and returns the solution at the output times, which is cast back
to y0's dtype and device. ``func`` is called under ``torch.no_grad()`` with the
time as a 0-d tensor in y0's dtype and the state as a tensor of y0's shape.

Decreasing ``t`` is solved forwards in ``s = -t`` with ``g(s, y) = -f(-s, y)``,
as torchdiffeq does, so the step sequence (and the values) are the same.

The solve runs outside autograd: its output carries no graph. Gradients need
``gradient="adjoint"``, whose backward solves the adjoint system (handled by
the caller, not here).

SciPy is optional: it is imported when a solve asks for it.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["SCIPY_OPTIONS", "SCIPY_METHODS", "solve_scipy"]

#: The options :func:`solve_scipy` reads (torchdiffeq's ``solver``, ``min_step``, ``max_step``).
SCIPY_OPTIONS = ("solver", "min_step", "max_step")
#: The method names ``solve_ivp`` knows; a ``scipy.integrate.OdeSolver`` subclass is accepted too.
SCIPY_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
_DEFAULT_SOLVER = "LSODA"  # torchdiffeq's default


def _import_solve_ivp():
    try:
        from scipy.integrate import OdeSolver, solve_ivp
    except ImportError as exc:
        raise ImportError("method='scipy_solver' needs scipy: pip install scipy") from exc
    return solve_ivp, OdeSolver


def _solver_name(solver) -> str:
    return solver if isinstance(solver, str) else getattr(solver, "__name__", repr(solver))


def _parse_solver(solver, ode_solver_base):
    if isinstance(solver, str) and solver in SCIPY_METHODS:
        return solver
    if inspect.isclass(solver) and issubclass(solver, ode_solver_base):
        return solver
    raise ValueError(f"options['solver'] must be one of {SCIPY_METHODS} or a scipy.integrate.OdeSolver "
                     f"subclass, got {solver!r}")


def _parse_step_bound(name: str, value, allow_zero: bool) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) or \
            value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"options['{name}'] must be a {bound} number, got {value!r}")
    return float(value)


def _scipy_tolerance(tol):
    """rtol/atol for ``solve_ivp``: a float, or a flat float64 array with one value per element."""
    if isinstance(tol, Tensor):
        tol = tol.detach().to("cpu", torch.float64)
        return tol.item() if tol.numel() == 1 else tol.reshape(-1).numpy()
    if isinstance(tol, numbers.Real):
        return float(tol)
    array = np.asarray(tol, dtype=np.float64)
    return array.item() if array.size == 1 else array.reshape(-1)


def _numpy_dynamics(func: Callable, y0: Tensor, reverse: bool):
    """``func`` as ``solve_ivp`` calls it, ``(s, y_flat) -> dy_flat`` in float64, with a call count."""
    shape, dtype, device = y0.shape, y0.dtype, y0.device
    calls = [0]

    def rhs(s, y_flat):
        calls[0] += 1
        time = torch.as_tensor(s, dtype=torch.float64).to(device=device, dtype=dtype)
        y = torch.as_tensor(y_flat, dtype=torch.float64).to(device=device, dtype=dtype).reshape(shape)
        with torch.no_grad():
            f = -func(-time, y) if reverse else func(time, y)
        return f.detach().to("cpu", torch.float64).reshape(-1).numpy()

    return rhs, calls


def solve_scipy(func: Callable, y0: Tensor, t: Tensor, *, rtol, atol, options: Optional[dict]) -> tuple:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0`` with ``scipy.integrate.solve_ivp``.

    ``solve_ivp(g, (s[0], s[-1]), y0, method=solver, t_eval=s, rtol=rtol, atol=atol, ...)``
    with ``s = t`` (increasing) or ``s = -t`` and ``g(s, y) = -f(-s, y)`` (decreasing t);
    each method controls its local error ``|e_i| <= atol_i + rtol_i |y_i|``.

    Args:
        func: ``func(t, y)``, called without autograd; t a 0-d tensor in y0's dtype, y of y0's shape.
        y0: real float32/float64 tensor of any shape (on any device; SciPy works on the CPU).
        t: 1-D, strictly increasing or decreasing output times.
        rtol, atol: numbers, or tensors/arrays with one value per element of y0 (flattened).
        options: ``solver`` (a ``solve_ivp`` method name or ``OdeSolver`` subclass, default
            ``"LSODA"``), ``min_step`` (LSODA only, default 0), ``max_step`` (default inf).
            Other keys are ignored.

    Returns:
        ``(ys, nfe)``: ``ys`` of shape ``(len(t), *y0.shape)`` in y0's dtype and device, without
        an autograd graph; ``nfe`` the number of func calls (finite-difference Jacobians included).

    Raises:
        ImportError: scipy is not installed.
        ValueError: bad times or option values (the message names the option).
        RuntimeError: ``solve_ivp`` reports a failure (the message names the solver).
    """
    solve_ivp, ode_solver_base = _import_solve_ivp()
    options = {} if options is None else options
    solver = _parse_solver(options.get("solver", _DEFAULT_SOLVER), ode_solver_base)
    min_step = _parse_step_bound("min_step", options.get("min_step"), allow_zero=True)
    max_step = _parse_step_bound("max_step", options.get("max_step"), allow_zero=False)
    if min_step is not None and max_step is not None and min_step > max_step:
        raise ValueError(f"options['min_step']={min_step} exceeds options['max_step']={max_step}")
    if not isinstance(t, Tensor) or t.dim() != 1 or not t.is_floating_point() or t.numel() == 0:
        raise ValueError("t must be a non-empty 1-D floating-point tensor of times")
    times = t.detach().to("cpu", torch.float64).numpy()
    if t.numel() == 1:
        return y0.detach().clone().unsqueeze(0), 0
    steps = np.diff(times)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        raise ValueError("t must be strictly increasing or strictly decreasing")
    reverse = bool(steps[0] < 0)
    s = -times if reverse else times

    rhs, calls = _numpy_dynamics(func, y0, reverse)
    kwargs = {"max_step": max_step} if max_step is not None else {}
    # Passed only when set: the other methods warn about a min_step they ignore.
    if min_step is not None:
        kwargs["min_step"] = min_step
    y_start = y0.detach().to("cpu", torch.float64).reshape(-1).numpy()
    sol = solve_ivp(rhs, (s[0], s[-1]), y_start, method=solver, t_eval=s,
                    rtol=_scipy_tolerance(rtol), atol=_scipy_tolerance(atol), **kwargs)
    # torchdiffeq returns whatever solve_ivp produced even when it failed (fewer rows
    # than len(t)); here a failure is an error, on purpose.
    if sol.status < 0 or sol.y.shape[1] != len(s):
        stopped = float(sol.t[-1]) if sol.t.size else float(s[0])
        stopped = -stopped if reverse else stopped
        raise RuntimeError(f"scipy_solver: solve_ivp with solver={_solver_name(solver)!r} failed near "
                           f"t={stopped:g}: {sol.message}")
    ys = torch.from_numpy(np.ascontiguousarray(sol.y.T)).to(device=y0.device, dtype=y0.dtype)
    return ys.reshape(len(s), *y0.shape), calls[0]
