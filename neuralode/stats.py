"""Solver statistics: how much work a solve did and where its time went."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class SolverStats:
    """Counters of solves, filled in by ``odeint(..., stats=SolverStats())``.

    Every solve adds to the counters, so one object can sum a training epoch. The
    forward fields are set when the solve returns; the backward fields when its
    gradient is computed (``gradient="adjoint"`` or ``"checkpoint"``; with
    ``"backprop"`` autograd replays the recorded ops and f is not called again).

    Attributes:
        nfe_forward, nfe_backward: evaluations of the dynamics f (a vector-Jacobian
            product of f counts as one evaluation).
        steps_accepted, steps_rejected: steps of the forward solve (fixed-step
            methods: every step is accepted).
        steps_accepted_backward, steps_rejected_backward: steps of the backward solve
            (the adjoint's, or the replayed steps of the checkpointed adjoint).
        f_seconds_forward, f_seconds_backward: wall-clock seconds inside f and its
            VJPs (on CUDA: issuing their kernels, which run asynchronously).
        solve_seconds_forward, solve_seconds_backward: wall-clock seconds of the whole
            solve; the difference to the f seconds is the solver's own overhead.
        solves: number of forward solves counted.
        steps_per_sample_max, steps_per_sample_mean (and ``_backward``): with per-sample
            steps (``options["per_sample"]``, or per-sample times with an adaptive method),
            each sample's accepted steps, their largest and mean over the batch (summed
            over solves). ``steps_accepted`` then counts the batched loop's steps in which
            some sample moved: what the evaluations of f follow.
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    steps_accepted: int = 0
    steps_rejected: int = 0
    steps_accepted_backward: int = 0
    steps_rejected_backward: int = 0
    f_seconds_forward: float = 0.0
    f_seconds_backward: float = 0.0
    solve_seconds_forward: float = 0.0
    solve_seconds_backward: float = 0.0
    solves: int = 0
    steps_per_sample_max: int = 0
    steps_per_sample_mean: float = 0.0
    steps_per_sample_max_backward: int = 0
    steps_per_sample_mean_backward: float = 0.0

    def add_forward(self, raw: dict) -> None:
        """Adds the counters of one forward solve (a dict from the C++ loops)."""
        self.nfe_forward += int(raw.get("nfe", 0))
        self.steps_accepted += int(raw.get("accepted", 0))
        self.steps_rejected += int(raw.get("rejected", 0))
        self.f_seconds_forward += float(raw.get("f_seconds", 0.0))
        self.solve_seconds_forward += float(raw.get("total_seconds", 0.0))
        self.steps_per_sample_max += int(raw.get("accepted_max", 0))
        self.steps_per_sample_mean += float(raw.get("accepted_mean", 0.0))
        self.solves += 1

    def add_backward(self, raw: dict) -> None:
        """Adds the counters of one backward solve."""
        self.nfe_backward += int(raw.get("nfe", 0))
        self.steps_accepted_backward += int(raw.get("accepted", 0))
        self.steps_rejected_backward += int(raw.get("rejected", 0))
        self.f_seconds_backward += float(raw.get("f_seconds", 0.0))
        self.solve_seconds_backward += float(raw.get("total_seconds", 0.0))
        self.steps_per_sample_max_backward += int(raw.get("accepted_max", 0))
        self.steps_per_sample_mean_backward += float(raw.get("accepted_mean", 0.0))

    def as_dict(self) -> dict:
        """Every counter by name (a plain dict, e.g. for JSON)."""
        return asdict(self)
