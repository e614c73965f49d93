"""The library's tensor ops, with their fake (meta) kernels.

The op schemas, the CPU/CUDA kernels and the autograd formulas are registered in
C++ when ``neuralode._C`` is imported (``csrc/ops.cpp``, ``csrc/ops_autograd.cpp``);
this module adds the fake (meta) kernels the PyTorch compiler stack needs.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import _C  # noqa: F401  (registers the ops)

__all__ = ["stage_combine", "rk_solution_error", "rk_solution_error_rows"]


def stage_combine(y0: Tensor, ks: Sequence[Tensor], coeffs: Sequence[float], dt: Optional[Tensor] = None) -> Tensor:
    """``y0 + dt * sum_j coeffs[j] * ks[j]`` in one fused pass.

    ``dt`` holds one value, one value per row of ``y0`` (``y0.shape[0]`` values:
    per-sample steps), or is None for ``dt = 1``. Differentiable w.r.t. ``y0``,
    every ``k`` and ``dt``.
    """
    return torch.ops.neuralode.stage_combine.default(y0, list(ks), [float(c) for c in coeffs], dt)


@torch.library.register_fake("neuralode::stage_combine")
def _stage_combine_fake(y0, ks, coeffs, dt):
    torch._check(len(ks) == len(coeffs), lambda: "stage_combine: one coefficient per stage derivative")
    for k in ks:
        torch._check(k.shape == y0.shape, lambda: "stage_combine: every k must have y0's shape")
        torch._check(k.dtype == y0.dtype, lambda: "stage_combine: every k must have y0's dtype")
    if dt is not None:
        torch._check(dt.dtype == y0.dtype, lambda: "stage_combine: dt must have y0's dtype")
    return torch.empty_like(y0, memory_format=torch.contiguous_format)


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


def rk_solution_error_rows(y0, ks, b, e, dt, rtol, atol):
    """:func:`rk_solution_error` with the error sum per row of ``y0`` (its first dimension):
    ``(y1, sums)`` with ``sums`` float64 of shape ``(rows,)``; each row's RMS error ratio is
    ``sqrt(sums / elements per row)`` (per-sample step control)."""
    return torch.ops.neuralode.rk_solution_error_rows.default(
        y0, list(ks), [float(c) for c in b], [float(c) for c in e], dt, rtol, atol
    )


@torch.library.register_fake("neuralode::rk_solution_error_rows")
def _rk_solution_error_rows_fake(y0, ks, b, e, dt, rtol, atol):
    torch._check(len(ks) == len(b) == len(e), lambda: "rk_solution_error_rows: one b and e weight per k")
    torch._check(y0.dim() >= 1, lambda: "rk_solution_error_rows: y0 needs a first (batch) dimension")
    for k in ks:
        torch._check(k.shape == y0.shape, lambda: "rk_solution_error_rows: every k must have y0's shape")
    return (
        torch.empty_like(y0, memory_format=torch.contiguous_format),
        y0.new_empty((y0.shape[0],), dtype=torch.float64),
    )
