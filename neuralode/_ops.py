"""The library's tensor ops: fake (meta) kernels and autograd formulas.

The op schemas and the CPU/CUDA kernels are registered in C++ when
``neuralode._C`` is imported (``csrc/ops.cpp``); this module adds what the
PyTorch compiler stack and autograd need next to each op.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import _C  # noqa: F401  (registers the ops)

__all__ = ["stage_combine", "rk_solution_error"]


def stage_combine(y0: Tensor, ks: Sequence[Tensor], coeffs: Sequence[float], dt: Optional[Tensor] = None) -> Tensor:
    """``y0 + dt * sum_j coeffs[j] * ks[j]`` in one fused pass.

    ``dt`` holds one value, one value per row of ``y0`` (``y0.shape[0]`` values:
    per-sample steps), or is None for ``dt = 1``. Differentiable w.r.t. ``y0``,
    every ``k`` and ``dt``.
    """
    return torch.ops.neuralode.stage_combine.default(y0, list(ks), [float(c) for c in coeffs], dt)


def _rows(dt: Tensor, like: Tensor) -> Tensor:
    """``dt`` shaped to broadcast over ``like``: a scalar, or ``(rows, 1, ..., 1)``."""
    if dt.numel() == 1:
        return dt.reshape(())
    return dt.reshape((-1,) + (1,) * (like.dim() - 1))


@torch.library.register_fake("neuralode::stage_combine")
def _stage_combine_fake(y0, ks, coeffs, dt):
    torch._check(len(ks) == len(coeffs), lambda: "stage_combine: one coefficient per stage derivative")
    for k in ks:
        torch._check(k.shape == y0.shape, lambda: "stage_combine: every k must have y0's shape")
        torch._check(k.dtype == y0.dtype, lambda: "stage_combine: every k must have y0's dtype")
    if dt is not None:
        torch._check(dt.dtype == y0.dtype, lambda: "stage_combine: dt must have y0's dtype")
    return torch.empty_like(y0, memory_format=torch.contiguous_format)


def _stage_combine_setup_context(ctx, inputs, output):
    y0, ks, coeffs, dt = inputs
    ctx.coeffs = list(coeffs)
    ctx.n_ks = len(ks)
    ctx.has_dt = dt is not None
    dt_needs_grad = dt is not None and ctx.needs_input_grad[3]
    # The ks are needed only for dL/ddt = sum over a row of g * sum_j c_j k_j.
    saved = (dt,) if dt is not None else ()
    ctx.save_for_backward(*(saved + (tuple(ks) if dt_needs_grad else ())))


def _stage_combine_backward(ctx, grad):
    saved = ctx.saved_tensors
    dt = saved[0] if ctx.has_dt else None
    scaled = grad if dt is None else grad * _rows(dt, grad)
    grad_ks = [scaled * c for c in ctx.coeffs]
    grad_dt = None
    if dt is not None and ctx.needs_input_grad[3]:
        ks = saved[1:]
        increment = stage_combine(torch.zeros_like(ks[0]), ks, ctx.coeffs, None)
        prod = grad * increment
        if dt.numel() == 1:
            grad_dt = prod.sum().reshape(dt.shape)
        else:
            grad_dt = prod.reshape(dt.numel(), -1).sum(1).reshape(dt.shape)
    return grad, grad_ks, None, grad_dt


torch.library.register_autograd(
    "neuralode::stage_combine", _stage_combine_backward, setup_context=_stage_combine_setup_context
)


def rk_solution_error(y0, ks, b, e, dt, rtol, atol):
    """The end of an adaptive step in one pass: ``(y1, sum_sq)``.

    ``y1 = y0 + dt * sum_j b[j] ks[j]`` and ``sum_sq = sum_i (err_i / (atol_i + rtol_i *
    max(|y0_i|, |y1_i|)))^2`` with ``err = dt * sum_j e[j] ks[j]`` (float64 scalar; the RMS
    error ratio is ``sqrt(sum_sq / numel)``). ``rtol``/``atol``: one value or one per element.
    ``y1`` is differentiable like :func:`stage_combine`; ``sum_sq`` is not.
    """
    return torch.ops.neuralode.rk_solution_error.default(
        y0, list(ks), [float(c) for c in b], [float(c) for c in e], dt, rtol, atol
    )


@torch.library.register_fake("neuralode::rk_solution_error")
def _rk_solution_error_fake(y0, ks, b, e, dt, rtol, atol):
    torch._check(len(ks) == len(b) == len(e), lambda: "rk_solution_error: one b and e weight per k")
    for k in ks:
        torch._check(k.shape == y0.shape, lambda: "rk_solution_error: every k must have y0's shape")
    return (
        torch.empty_like(y0, memory_format=torch.contiguous_format),
        y0.new_empty((), dtype=torch.float64),
    )


def _rk_solution_error_setup_context(ctx, inputs, output):
    y0, ks, b, e, dt, rtol, atol = inputs
    _stage_combine_setup_context(ctx, (y0, ks, b, dt), output[0])


def _rk_solution_error_backward(ctx, grad_y1, _grad_sum_sq):
    grad_y0, grad_ks, _, grad_dt = _stage_combine_backward(ctx, grad_y1)
    return grad_y0, grad_ks, None, None, grad_dt, None, None


torch.library.register_autograd(
    "neuralode::rk_solution_error", _rk_solution_error_backward, setup_context=_rk_solution_error_setup_context
)
