"""Step callbacks, as torchdiffeq looks them up on the dynamics.

``func.callback_step(t0, y0, dt)`` is called before every step attempt,
``func.callback_accept_step(t0, y0, dt)`` after an accepted step and
``func.callback_reject_step(t0, y0, dt)`` after a rejected one (adaptive methods), with
the step's start time (0-d, the state's dtype), the state at the start (laid out as the
user's ``y0``: a tuple for a tuple state) and the step size (signed: negative when the
solve runs backwards in time). The ``*_adjoint`` variants are called in the same way by
the continuous adjoint's backward solve, with the augmented state
``(dL/dt, *y, *dL/dy, *dL/dtheta)`` (torchdiffeq's layout). The C++ loop calls only the
ones that are defined: none costs nothing.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Tuple

__all__ = ["CALLBACK_NAMES", "forward_callbacks", "adjoint_callbacks"]

CALLBACK_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")
# What each kind of solve calls (torchdiffeq's valid_callbacks): fixed grids step only.
_FIXED_GRID = ("callback_step",)

Triple = Optional[Tuple[Optional[Callable], ...]]


def _lookup(func, suffix: str) -> list:
    return [getattr(func, name + suffix, None) for name in CALLBACK_NAMES]


def forward_callbacks(func, layout, adaptive: bool, engine: bool, method: str) -> Triple:
    """The forward solve's ``(step, accept, reject)`` for the C++ loop, or None; warns as
    torchdiffeq does about the ones the method never calls."""
    found = _lookup(func, "")
    valid = CALLBACK_NAMES if adaptive else _FIXED_GRID
    unused = {n for n, cb in zip(CALLBACK_NAMES, found) if cb is not None and (not engine or n not in valid)}
    if unused:
        warnings.warn(f"Solver '{method}' does not support callbacks {unused}")
    found = [cb if n in valid else None for n, cb in zip(CALLBACK_NAMES, found)]
    if not engine or not any(found):
        return None

    def wrap(cb):
        if cb is None:
            return None
        return lambda t0, state, dt: cb(t0, layout.unpack(state[0]), dt)

    return tuple(wrap(cb) for cb in found)


def adjoint_callbacks(func, layout, adaptive: bool) -> Triple:
    """The adjoint's ``(step, accept, reject)`` from ``func.callback_*_adjoint``, or None
    (a fixed-step backward solve calls the step one only)."""
    found = _lookup(func, "_adjoint")
    if not adaptive:
        found = [found[0], None, None]
    if not any(found):
        return None

    def wrap(cb):
        if cb is None:
            return None

        def call(t0, state, dt):
            z, a, a_t, *params = state
            cb(t0, (a_t, *layout.pieces(z), *layout.pieces(a), *params), dt)

        return call

    return tuple(wrap(cb) for cb in found)
