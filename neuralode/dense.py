"""``odeint_dense``: the solution of one solve as a function of time (torchdiffeq's API)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ._compile import solve_boundary
from .odef import ODEF
from .odeint import odeint
from .spec import ADAPTIVE_METHODS, ATOL, DEFAULT_METHOD, RTOL

__all__ = ["odeint_dense"]


@solve_boundary
def odeint_dense(
    func,
    y0: Tensor,
    t0,
    t1,
    *,
    rtol=RTOL,
    atol=ATOL,
    method: Optional[str] = None,
    options: Optional[dict] = None,
) -> Callable[[Tensor], Tensor]:
    """Solve ``dy/dt = func(t, y)`` from ``t0`` to ``t1``; return ``y(t)`` for any ``t`` in
    between, from the adaptive method's dense output.

    The returned function takes a number, a 0-d or a 1-D tensor of times in ``[t0, t1]``
    (any order, repeats allowed) and returns ``y`` at them: shape ``(*t_eval.shape,
    *y0.shape)``. Its values are the dense interpolant of the steps of the solve from
    ``t0`` to ``t1``: observation times never move a step here, so the function solves
    again with the requested times as observations, every step landing where it landed
    the first time (the cost of one solve per call). The values are differentiable by
    autograd: in y0 and f's parameters through the solve, in the evaluation times by
    ``dy/dt = f(t, y(t))``. ``method``: any adaptive method (torchdiffeq: ``dopri5`` only).
    """
    method = DEFAULT_METHOD if method is None else method
    if method not in ADAPTIVE_METHODS:
        raise ValueError(f"odeint_dense needs an adaptive method (its dense output), got {method!r}; "
                         f"choose one of {', '.join(ADAPTIVE_METHODS)}")
    if not isinstance(y0, Tensor):
        raise TypeError(f"odeint_dense: y0 must be a torch.Tensor, got {type(y0).__name__}")
    # Numbers are float64 times (as numpy's); tensors keep their dtype, promoted to y0's.
    as_time = lambda x: x if isinstance(x, Tensor) else torch.tensor(float(x), dtype=torch.float64)
    ends = torch.stack([as_time(t0), as_time(t1)]).detach().to(y0.device)
    if not ends.is_floating_point():
        ends = ends.to(torch.float64)
    if y0.is_floating_point():
        ends = ends.to(torch.promote_types(ends.dtype, y0.dtype))
    lo, hi = sorted(ends.tolist())
    if lo == hi:
        raise ValueError(f"odeint_dense: t0 and t1 must differ, both are {lo}")
    kwargs = dict(rtol=rtol, atol=atol, method=method, options=options)
    # Solved once now, as torchdiffeq does: a bad argument or a failing solve raises here.
    odeint(func, y0, ends.detach(), **kwargs)

    f_of = lambda t, y: (func(y, t) if isinstance(func, ODEF) else func(t.to(y.dtype), y))

    def dense_output(t_eval) -> Tensor:
        times = torch.as_tensor(t_eval, device=ends.device)
        times = times.to(torch.promote_types(times.dtype, ends.dtype) if times.is_floating_point() else ends.dtype)
        shape = times.shape
        flat = times.detach().reshape(-1)
        if flat.numel() and (bool((flat.detach() < lo).any()) or bool((flat.detach() > hi).any())):
            raise ValueError(f"odeint_dense: times must lie in [{lo}, {hi}], got {flat.detach().min().item()} "
                             f"to {flat.detach().max().item()}")
        descending = bool(ends[1] < ends[0])
        inner, inverse = torch.unique(flat, sorted=True, return_inverse=True)
        if descending:
            inner, inverse = inner.flip(0), inner.numel() - 1 - inverse
        # t0 first and t1 last (the steps are those of the solve to t1), the requested
        # times between; y(t0) and y(t1) come out of the same solve.
        interior = inner[(inner != ends[0]) & (inner != ends[1])]
        path = torch.cat([ends[:1], interior, ends[1:]])
        ys = odeint(func, y0, path, **kwargs)
        position = torch.searchsorted(path.detach() if not descending else -path.detach(),
                                      inner.detach() if not descending else -inner.detach())
        out = ys[position][inverse]
        if times.requires_grad:
            # dy/dt = f(t, y(t)): the derivative in the evaluation times, from the ODE.
            with torch.no_grad():
                slopes = torch.stack([f_of(ti, yi) for ti, yi in zip(flat, out)])
            out = out + (times.reshape(-1) - flat).to(out.dtype).reshape(-1, *([1] * y0.dim())) * slopes
        return out.reshape(*shape, *y0.shape)

    return dense_output
