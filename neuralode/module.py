"""``NeuralODE``: the paper's module, on the fused solver."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .odeint import odeint
from .odef import ODEF

__all__ = ["NeuralODE", "DEFAULT_MAX_STEP"]

#: The paper's largest Euler step: ``max_step`` of :class:`NeuralODE` by default.
DEFAULT_MAX_STEP = 0.05


class NeuralODE(nn.Module):
    """``z(t)`` of ``dz/dt = func(z, t)`` from ``z0``: a continuous-depth block.

    With its defaults (Euler, ``max_step = 0.05``, the adjoint for gradients) it
    computes what ``neuralode.reference.NeuralODE(func)`` computes, on the fused path.

    Args:
        func: the dynamics, an :class:`ODEF` (``forward(z, t)``) or a callable ``f(t, z)``.
        method: a method of :func:`neuralode.odeint`.
        options: solver options; default ``{"max_step": 0.05}`` (the reference's subdivision).
        gradient: ``"adjoint"`` (default) or ``"backprop"``.
    """

    def __init__(self, func: ODEF, method: str = "euler", options: Optional[dict] = None, gradient: str = "adjoint"):
        super().__init__()
        self.func = func
        self.method = method
        self.options = dict(options) if options is not None else {"max_step": DEFAULT_MAX_STEP}
        self.gradient = gradient

    def forward(self, z0: Tensor, t: Tensor = Tensor([0.0, 1.0]), return_whole_sequence: bool = False) -> Tensor:
        """``z`` at every time of ``t`` (``return_whole_sequence``) or at the last one."""
        t = t.to(z0)
        z = odeint(self.func, z0, t, method=self.method, options=self.options, gradient=self.gradient)
        return z if return_whole_sequence else z[-1]
