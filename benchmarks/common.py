"""Helpers that several benchmark suites share: dynamics that count their evaluations,
the keyword arguments of a library's ``odeint`` for a solver, and a ratio as text.
(The timing helpers, ``sync`` among them, are in ``benchmarks.timing``.)"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import Tensor, nn


class Counted(nn.Module):
    """Dynamics ``f(t, z)`` (torchdiffeq's and neuralode's convention) that count their
    evaluations (``nfe``) and the steps torchdiffeq reports through its callbacks
    (``steps``: accepted and rejected, of the forward solve and of the adjoint solve
    separately). Subclasses add 1 to ``nfe`` in ``forward``; ``reset_counters`` zeroes all."""

    def __init__(self):
        super().__init__()
        self.reset_counters()

    def reset_counters(self) -> None:
        """Zeroes ``nfe`` and every step counter."""
        self.nfe = 0
        self.steps = {"accepted": 0, "rejected": 0, "accepted_adjoint": 0, "rejected_adjoint": 0}

    # torchdiffeq's step callbacks (ignored by the other libraries).
    def callback_accept_step(self, t0, y0, dt):
        self.steps["accepted"] += 1

    def callback_reject_step(self, t0, y0, dt):
        self.steps["rejected"] += 1

    def callback_accept_step_adjoint(self, t0, y0, dt):
        self.steps["accepted_adjoint"] += 1

    def callback_reject_step_adjoint(self, t0, y0, dt):
        self.steps["rejected_adjoint"] += 1


class CountedODEF(Counted):
    """A paper-convention dynamics (``forward(z, t)``, e.g. ``ConvODEF``) seen as a counted
    ``f(t, z)``: a module, so that torchdiffeq's ``odeint_adjoint`` finds its parameters.

    ``paper_view()`` gives the same dynamics as a ``neuralode.reference.ODEF`` (for the
    reference candidate) that counts into this module's ``nfe``.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        self.nfe += 1
        return self.inner(z, t)

    def paper_view(self):
        from neuralode.reference import ODEF

        counter = self

        class PaperView(ODEF):
            def __init__(self):
                super().__init__()
                self.inner = counter.inner  # the same parameters

            def forward(self, z: Tensor, t: Tensor) -> Tensor:
                counter.nfe += 1
                return self.inner(z, t)

        return PaperView()


def solver_kwargs(solver: dict, step_option: str = "step_size") -> dict:
    """The keyword arguments of a library's ``odeint`` for ``solver``: ``{"method", "rtol",
    "atol"}`` (adaptive) or ``{"method", "step"}`` (fixed step). A fixed step goes into
    ``options[step_option]``: torchdiffeq's ``step_size`` (a uniform grid, which the times
    of the speed problems lie on; neuralode takes it too) or neuralode's ``max_step`` (every
    interval split into equal steps of at most it)."""
    if "step" in solver:
        return {"method": solver["method"], "options": {step_option: solver["step"]}}
    return {"method": solver["method"], "rtol": solver["rtol"], "atol": solver["atol"]}


def fmt_ratio(value: Union[float, str, None], steps: Optional[Sequence[int]] = None) -> str:
    """A ratio as text: ``1.23x``, with ``steps`` (the fewest and the most) ``1.23x (10 -> 1000
    steps)``; a string (e.g. ``"not available: ..."``) as it is, ``None`` as ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    text = f"{value:.2f}x"
    return text if steps is None else f"{text} ({steps[0]} -> {steps[1]} steps)"
