"""The methods that do not run on the Runge-Kutta engine: torchdiffeq's Adams family
(:mod:`neuralode.multistep`) and ``scipy_solver`` (:mod:`neuralode.scipy_solver`).

``odeint`` hands them the engine's buffer and the wrapped dynamics exactly as it hands
them to the C++ loop. Their gradients:

* ``"backprop"``: the Adams methods are plain autograd (w.r.t. y0, parameters and t);
  ``scipy_solver`` works in numpy and has no graph, so it is refused there (torchdiffeq
  returns a result without a gradient);
* ``"adjoint"``: the forward runs here, the continuous adjoint runs on the engine with
  ``adjoint_method``: by default ``rk4`` on the same grid for the Adams methods and
  ``dopri5`` with the same tolerances for ``scipy_solver`` (torchdiffeq's default, the
  forward's method, has no adjoint of its own here);
* ``"checkpoint"``: refused (it replays Runge-Kutta steps).
"""

from __future__ import annotations

import time
import warnings
from typing import Callable, Optional

from torch import Tensor

from .multistep import MULTISTEP_METHODS, MULTISTEP_OPTIONS, solve_multistep
from .spec import ADAPTIVE_METHODS
from .scipy_solver import SCIPY_OPTIONS, solve_scipy

__all__ = ["PYTHON_METHODS", "OPTIONS", "SOLVER_CLASS", "DEFAULT_ADJOINT_METHOD", "adjoint_options_from", "solver", "warn_unknown"]

PYTHON_METHODS = MULTISTEP_METHODS + ("scipy_solver",)
#: The options each method understands (the others warn, as torchdiffeq's solvers do).
OPTIONS = {**{m: MULTISTEP_OPTIONS for m in MULTISTEP_METHODS}, "scipy_solver": SCIPY_OPTIONS}
#: torchdiffeq's solver class of each method (its unknown-option warning names it).
SOLVER_CLASS = {"explicit_adams": "AdamsBashforth", "implicit_adams": "AdamsBashforthMoulton",
                "fixed_adams": "AdamsBashforthMoulton", "scipy_solver": "ScipyWrapperODESolver"}
# Keys torchdiffeq's solvers take without a word although they do nothing there.
SILENT = {**{m: ("norm",) for m in MULTISTEP_METHODS}, "scipy_solver": ("norm", "grid_points", "eps")}
DEFAULT_ADJOINT_METHOD = {**{m: "rk4" for m in MULTISTEP_METHODS}, "scipy_solver": "dopri5"}
# The forward options that mean the same to the default adjoint method (the engine's
# fixed grid takes step_size; perturb and interp do not matter to a backward solve whose
# steps land on every observation).
_CARRIED = {**{m: ("step_size", "grid_constructor") for m in MULTISTEP_METHODS}, "scipy_solver": ()}


def adjoint_options_from(method: str, options: dict, adjoint_method: str) -> dict:
    """The adjoint's options when none are given: those of the forward's that mean the
    same to the default adjoint method (the grid: ``step_size`` or ``grid_constructor``).
    Refused (torchdiffeq's rule) when some would be carried to an adjoint method of
    another kind."""
    carried = {k: v for k, v in options.items() if k in _CARRIED[method]}
    if carried and (adjoint_method in ADAPTIVE_METHODS) != (DEFAULT_ADJOINT_METHOD[method] in ADAPTIVE_METHODS):
        raise ValueError(f"adjoint_method={adjoint_method!r} is not of the kind the options of method={method!r} "
                         "are for: pass adjoint_options as well (the forward's options cannot be carried over)")
    return carried


def warn_unknown(method: str, options: Optional[dict]) -> None:
    """torchdiffeq's warning for options a method does not take (not an error there)."""
    unused = {k: v for k, v in (options or {}).items() if k not in OPTIONS[method] + SILENT[method]}
    if unused:
        warnings.warn(f"{SOLVER_CLASS[method]}: Unexpected arguments {unused}")


def solver(method: str, rtol, atol, options: Optional[dict]) -> Callable:
    """``run(f, y0, t) -> (ys, stats dict)`` for one of :data:`PYTHON_METHODS`."""
    options = {k: v for k, v in (options or {}).items() if k in OPTIONS[method]}

    def run(f: Callable, y0: Tensor, t: Tensor):
        start = time.perf_counter()
        if method == "scipy_solver":
            ys, nfe = solve_scipy(f, y0, t, rtol=rtol, atol=atol, options=options)
        else:
            ys, nfe = solve_multistep(method, f, y0, t, rtol=rtol, atol=atol, options=options)
        return ys, {"nfe": nfe, "accepted": 0, "rejected": 0, "f_seconds": 0.0,
                    "total_seconds": time.perf_counter() - start}

    return run
