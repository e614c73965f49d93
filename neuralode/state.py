"""How a user's state lies in the engine's buffer: tensors, tuples and complex numbers.

The C++ loop steps one real tensor. A user's state may be

* one real tensor (float32/float64, any shape): stepped as it is, nothing copied;
* one complex tensor (complex64/complex128): stepped as its real view
  ``(*shape, 2)`` (``torch.view_as_real``, no copy), so that every kernel, the
  adjoint and the checkpoint see a real state. For a holomorphic or not ``f`` alike,
  ``d/dt [Re y, Im y] = [Re f, Im f]`` is the same ODE; gradients come back in
  PyTorch's convention for complex tensors (``dL/dRe + i dL/dIm``);
* a tuple of tensors (torchdiffeq's tupled state, e.g. ``(z, logp)``): each
  flattened (complex ones through their real view) and joined into one flat real
  buffer **once per solve**; ``f`` receives views into the stage's buffer and its
  tuple of derivatives is joined back (one copy per evaluation, as torchdiffeq).
  The error norm is torchdiffeq's mixed norm: the largest RMS over the tuple's
  tensors (``StepPlan.segments``), so that a one-element ``logp`` is not diluted
  by a large ``z``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["StateLayout", "REAL_DTYPES", "COMPLEX_DTYPES"]

REAL_DTYPES = (torch.float32, torch.float64)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)

State = Union[Tensor, Tuple[Tensor, ...]]


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def _check_tensor(x, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or a tuple of tensors, got {type(x).__name__}")
    if x.dtype not in REAL_DTYPES + COMPLEX_DTYPES:
        raise TypeError(
            f"{name} must be float32, float64, complex64 or complex128, got {x.dtype}; "
            "convert it with .float() or .double()"
        )


def _as_number(value) -> float:
    """A norm's value as a float (a tensor's detached first: the first-step choice can hand
    the norm errors that carry a graph, and only the number is wanted)."""
    return float(value.detach()) if isinstance(value, Tensor) else float(value)


class StateLayout:
    """The map between a user's state (tensor, complex tensor or tuple) and the engine's
    real buffer; see the module docstring. ``identity`` when the state is one real tensor."""

    def __init__(self, y0: State):
        self.is_tuple = isinstance(y0, (tuple, list))
        if self.is_tuple:
            if len(y0) == 0:
                raise ValueError("y0 is an empty tuple; give at least one tensor")
            for i, x in enumerate(y0):
                _check_tensor(x, f"y0[{i}]")
            reals = {_real_dtype(x.dtype) for x in y0}
            if len(reals) > 1:
                raise TypeError(
                    f"the tensors of a tuple y0 must share one precision, got {[x.dtype for x in y0]}; "
                    "convert them all with .float() or .double()"
                )
            devices = {x.device for x in y0}
            if len(devices) > 1:
                raise ValueError(f"the tensors of a tuple y0 must be on one device, got {sorted(map(str, devices))}")
            parts = tuple(y0)
        else:
            _check_tensor(y0, "y0")
            parts = (y0,)
        self.shapes = [x.shape for x in parts]
        self.complex = [x.is_complex() for x in parts]
        self.dtypes = [x.dtype for x in parts]
        self.dtype = _real_dtype(parts[0].dtype)  # the buffer's (real) dtype
        self.device = parts[0].device
        self.is_complex = any(self.complex)
        self.identity = not self.is_tuple and not self.is_complex
        # Real elements of each piece of the flat buffer (a complex element is two).
        self.numels = [x.numel() * (2 if c else 1) for x, c in zip(parts, self.complex)]
        # Where each piece starts in the flat buffer.
        self.offsets = [sum(self.numels[:i]) for i in range(len(self.numels))]

    # ------------------------------------------------------------------ state

    @property
    def segments(self) -> list:
        """Element counts of the flat buffer's pieces (the mixed norm's), or [] for one piece."""
        return list(self.numels) if self.is_tuple and len(self.numels) > 1 else []

    def pack(self, y: State) -> Tensor:
        """The engine's buffer of a state (differentiable; no copy for one tensor)."""
        if self.identity:
            return y
        if not self.is_tuple:
            return torch.view_as_real(y)
        return torch.cat([self._flat_real(x, at) for x, at in zip(y, self.offsets)])

    @staticmethod
    def _flat_real(x: Tensor, offset: int = 0) -> Tensor:
        """A piece flattened to reals, to be joined at ``offset`` of the flat buffer. A complex
        piece at an odd offset (after a real piece of odd length) is copied out as (Re, Im)
        pairs: its view_as_real would get the buffer's gradient slice in the backward, which
        cannot be viewed as complex there."""
        if not x.is_complex():
            return x.reshape(-1)
        if offset % 2:
            return torch.stack((x.real, x.imag), dim=-1).reshape(-1)
        return torch.view_as_real(x).reshape(-1)

    def unpack(self, buffer: Tensor, lead: Sequence[int] = ()) -> State:
        """The user's state from a buffer with leading dimensions ``lead`` (views)."""
        if self.identity:
            return buffer
        if not self.is_tuple:
            return torch.view_as_complex(buffer)
        out, offset = [], 0
        rows_even = not lead or buffer.shape[-1] % 2 == 0
        for shape, is_c, n in zip(self.shapes, self.complex, self.numels):
            start = offset
            piece = buffer[..., offset:offset + n]
            offset += n
            if is_c:
                piece = piece.reshape((*lead, *shape, 2))
                aligned = start % 2 == 0 and rows_even and piece.storage_offset() % 2 == 0 and not any(
                    st % 2 for st in piece.stride()[:-1])
                if aligned:
                    piece = torch.view_as_complex(piece)
                else:
                    # After a real piece of odd length, or in rows of odd length, the pairs
                    # are not aligned for a complex view, here or in a gradient laid out like
                    # the buffer (which a second derivative would view as complex): a copy.
                    piece = torch.complex(piece[..., 0], piece[..., 1])
            else:
                piece = piece.reshape((*lead, *shape))
            out.append(piece)
        return tuple(out)

    def pieces(self, buffer: Tensor) -> tuple:
        """The user's tensors of a buffer as a tuple (of one for a single tensor): how
        torchdiffeq lays a state into a tuple it hands on (adjoint norms, callbacks)."""
        state = self.unpack(buffer)
        return state if self.is_tuple else (state,)

    def unpack_trajectory(self, ys: Tensor) -> State:
        """``(T, *state)`` outputs from the engine's ``(T, *buffer)``."""
        if self.identity:
            return ys
        if not self.is_tuple:
            return torch.view_as_complex(ys)
        return self.unpack(ys, lead=(ys.shape[0],))

    def pack_derivative(self, out, t) -> Tensor:
        """f's result as a buffer like the state's, with errors naming what is wrong."""
        if not self.is_tuple:
            if not isinstance(out, Tensor):
                raise TypeError(f"func must return a torch.Tensor, got {type(out).__name__}")
            if out.shape != self.shapes[0]:
                raise ValueError(f"func returned shape {tuple(out.shape)} at t={float(t):g}; "
                                 f"the state has shape {tuple(self.shapes[0])}")
            return torch.view_as_real(out.to(self.dtypes[0])) if self.is_complex else out
        if not isinstance(out, (tuple, list)) or len(out) != len(self.shapes):
            got = f"a {type(out).__name__}" + (f" of {len(out)}" if isinstance(out, (tuple, list)) else "")
            raise TypeError(f"func must return a tuple of {len(self.shapes)} tensors like y0, got {got}")
        pieces = []
        for i, (x, shape, dtype, at) in enumerate(zip(out, self.shapes, self.dtypes, self.offsets)):
            if not isinstance(x, Tensor):
                raise TypeError(f"func's result [{i}] must be a torch.Tensor, got {type(x).__name__}")
            if x.numel() != shape.numel():
                raise ValueError(f"func's result [{i}] has shape {tuple(x.shape)}; y0[{i}] has shape {tuple(shape)}")
            pieces.append(self._flat_real(x.to(dtype) if x.dtype != dtype else x, at))
        return torch.cat(pieces)

    def wrap(self, f: Callable) -> Callable:
        """``f(t, user state) -> user derivative`` as ``f(t, buffer) -> buffer``."""
        if self.identity:
            return f

        def packed(t: Tensor, y: Tensor) -> Tensor:
            return self.pack_derivative(f(t, self.unpack(y)), t)

        packed.__wrapped__ = f  # the user's function (its modules and parameters)
        return packed

    # ------------------------------------------------------------------ tolerances and norms

    def tolerance(self, tol, name: str):
        """A tuple of per-tensor tolerances as one per buffer element (torchdiffeq's tupled
        rtol/atol); anything else as it is (numbers and tensors broadcast later).

        As torchdiffeq: for a tuple y0 a 1-D tensor with one value per tensor of y0 is such
        a tuple; for a tensor y0 a tuple or list is a tensor of tolerances."""
        if self.is_tuple and isinstance(tol, Tensor) and tol.dim() == 1 and tol.numel() == len(self.shapes) > 1:
            tol = tuple(tol.unbind(0))
        if not self.is_tuple and isinstance(tol, (tuple, list)):
            tol = torch.as_tensor(tol, dtype=self.dtype, device=self.device)
        if not isinstance(tol, (tuple, list)):
            if isinstance(tol, Tensor) and tol.numel() > 1 and not self.identity:
                if not self.is_tuple:  # a complex state: the same tolerance for Re and Im
                    try:
                        real = torch.broadcast_to(tol.to(device=self.device, dtype=self.dtype), self.shapes[0])
                    except RuntimeError:
                        raise ValueError(f"{name} of shape {tuple(tol.shape)} does not broadcast to y0's shape "
                                         f"{tuple(self.shapes[0])}") from None
                    return torch.stack([real, real], dim=-1)
                raise ValueError(f"{name}: for a tuple y0 give a tuple of tolerances, one per tensor")
            return tol
        if len(tol) != len(self.shapes):
            raise ValueError(f"{name}: a tuple of tolerances needs a tuple y0 of the same length "
                             f"({len(tol)} tolerances, y0 has {len(self.shapes)})")
        pieces = []
        for i, (value, n) in enumerate(zip(tol, self.numels)):
            v = torch.as_tensor(value, dtype=self.dtype, device=self.device)
            if v.numel() != 1:
                raise ValueError(f"{name}[{i}] must be one number per tensor of y0, got shape {tuple(v.shape)}")
            pieces.append(v.reshape(1).expand(n))
        return torch.cat(pieces)

    def user_norm(self, norm: Callable) -> Callable:
        """A user's forward norm, called as torchdiffeq calls it: on the scaled error laid
        out like y0 (a tuple for a tuple state)."""
        def call(scaled):
            (q,) = scaled
            return _as_number(norm(self.unpack(q)))
        return call

    def user_adjoint_norm(self, norm: Callable) -> Callable:
        """A user's adjoint norm, called as torchdiffeq calls it: on
        ``(t, *y, *adj_y, *adj_params)`` scaled errors (the time adjoint is kept outside
        the state here: its entry is 0)."""
        def call(scaled):
            q_z, q_a, *q_params = scaled
            return _as_number(norm((q_z.new_zeros(()), *self.pieces(q_z), *self.pieces(q_a), *q_params)))
        return call
