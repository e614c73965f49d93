"""Speed of neuralode against torchdiffeq 0.2.5, torchode 1.0.1 and the paper's reference, side by side.

Every candidate solves the same problem with the same solver (float32 unless the problem
says otherwise, the same thread count) and the same initial weights (one seeded module used by all), and we time one
forward + backward: ``zero_grad``, solve, loss, ``backward``. Candidates are timed in
turn, repeat by repeat (``timing.interleaved``), after a warm-up; we report medians,
the dynamics evaluations (NFE) of the forward and of the backward pass, the steps
taken, and speed ratios peer / neuralode (> 1: neuralode is faster).

Problems (their sizes are fixed; ``--quick`` only cuts the repeats):

* ``P1`` (dopri5, rtol 1e-5, atol 1e-6): a batch of 512 two-dimensional states
  ``y0 ~ N(0, 1)``, dynamics an MLP 2-64-64-2 with ELU (time-independent),
  ``t = [0, 5]``, loss ``mean(z(5)^2)``.
* ``P2`` (dopri5, rtol 1e-5, atol 1e-6): the paper's non-linear spiral. 256
  trajectories of the true dynamics ``neuralode.dynamics.TestODEF``
  (``A = [[-0.1, -1], [1, -0.1]]``, ``B = [[-0.2, 1], [-1, -0.2]]``, ``x0 = [-1, 0]``)
  from initial states uniform in ``[-2, 2]^2``, observed at 200 times in ``[0, 10]``
  (classic RK4 in float64 with ~0.01 steps, once, untimed, independent of every
  candidate). The model, an MLP 2-64-64-2 with ELU (time-independent), starts from the
  true initial states; loss the MSE against the observations at all 200 times.
* ``MNIST`` (Euler, step 0.05: the paper tutorial's solver, 20 steps): the MNIST ODE
  block ``neuralode.dynamics.ConvODEF(64)`` (two 3x3 convolutions with time as a
  channel, batch norm) on a batch of 32 states of 64 x 6 x 6 (the feature maps after
  the paper's down-sampling), ``t = [0, 1]``, loss ``mean(z(1)^2)``. Dominated by f.
* ``spiral`` (Euler, step 0.05, 160 steps): the paper's first experiment. 16
  trajectories of the linear spiral ``dz/dt = z W^T``, ``W = [[-0.1, -1], [1, -0.1]]``
  (exact solution by the matrix exponential) from initial states uniform in
  ``[-2, 2]^2``, observed at 33 times ``0, 0.25, ..., 8``; the model a random linear
  map (``LinearODEF``, seeded), loss the MSE over all times. Dominated by the solver's
  own per-step cost, f being a 2 x 2 matrix product.
* ``CNF`` (dopri5, rtol 1e-5, atol 1e-6): an FFJORD-style continuous normalizing flow
  on the tuple state ``(z, logp)``: 512 two-dimensional samples of a mixture of 4
  Gaussians (std 0.3, centres ``(+-1.5, +-1.5)``) flowed over ``t = [0, 1]``,
  ``dz/dt`` an MLP 3-64-64-2 with tanh of ``[z, t]``, ``dlogp/dt = -e^T (df/dz) e``
  (Hutchinson's trace estimator: one ``autograd.grad`` with ``create_graph=True`` per
  evaluation, the noise ``e ~ N(0, 1)`` drawn once for the batch), loss the negative
  log-likelihood under a standard normal base, ``-mean(log N(z(1)) - logp(1))``. torchode
  solves one tensor, not a tuple: not available here.
* ``event`` (dopri5, rtol 1e-5, atol 1e-6): a solve that stops at an event, through
  ``odeint_event`` (gradients through the event time by the implicit function theorem).
  One two-dimensional state (not a batch: torchdiffeq's events are for the whole
  state) starting at the origin, dynamics an MLP 2-64-64-2 with ELU (time-independent,
  P1's), event function ``g(t, y) = |y - y0|^2 - 4`` (the state leaves the disc of
  radius 2 around its start: about t = 9, after 10 steps), loss
  ``event_t + sum(y(event_t))``. torchode has no events and the reference no adaptive
  solver: not available here.
* ``irregular`` (dopri5, rtol 1e-5, atol 1e-6): per-sample observation times. 128
  four-dimensional states ``y0 ~ N(0, 1)``, each observed at its own 20 times (``t = 0``
  and 19 sorted uniform draws in ``(0, 5]``; times of shape ``(20, 128, 1)``), dynamics an
  MLP 4-64-4 with tanh (time-independent; PyTorch's initial weights and biases times 3,
  so that the solution turns on time scales of ~0.1-1 instead of drifting), loss the
  mean of ``z^2`` over every sample's observations.
* ``vdp`` (dopri5, rtol 1e-6, atol 1e-6, float64): 256 Van der Pol oscillators, state
  ``(x, v)``, ``dx/dt = v``, ``dv/dt = mu_b (1 - x^2) v - x`` with a learnable ``mu`` of
  256 values spread evenly over ``[0.5, 10]`` (the stiff samples need ~10x the steps
  of the mild ones), ``(x, v)(0)`` uniform in ``[-2, 2]^2``, 20 times ``linspace(0,
  10)`` shared by every sample, loss the mean of ``x^2`` and ``v^2`` over all
  observations; the gradient is ``dL/dmu``.

  For these two problems the candidates are neuralode's per-sample steps
  (``options={"per_sample": True}``: each sample its own step size, error ratio and
  accept / reject, f called on the whole batch with ``t`` of shape ``(batch, 1)``) with
  each gradient mode, and its shared mode (``per_sample=False``: one step size for the
  batch; with per-sample times in a normalized time that restarts at every
  observation) with backprop and adjoint; ``torchode AutoDiffAdjoint`` (per-sample
  steps, autograd through the loop), ``torchode BacksolveAdjoint`` (per-sample steps
  forward and backward, per-sample vector-Jacobian products by ``torch.func.vmap``;
  ``vdp`` passes one-hot rows as its vmapped ``args`` so that each sample reads its own
  ``mu``) and ``torchode JointBacksolveAdjoint`` (the batch as one state: one step size,
  so only for times shared by every sample); torchdiffeq's ``odeint`` and
  ``odeint_adjoint`` with one step size for the batch (``irregular``: on the union of
  every sample's times, each sample read at its own; ``odeint_adjoint`` there would
  solve each of the ~2,400 intervals of that union backwards on its own and is left
  out). A second table gives per sample: f evaluations (every library evaluates every
  row of the batch at each call, torchode's ``n_f_evals`` included), accepted steps
  (max / mean over samples; neuralode's per-sample count from the per-row step starts
  its step callback sees, torchode's ``n_accepted``; one step size: the batch's) and the
  iterations of the batched loop; and the error of every sample against a tight solve
  (neuralode's shared mode, dopri5, rtol = atol = 1e-10, float64, backprop; computed
  once, untimed): the worst sample's largest error, the largest of each sample's error
  in units of its own tolerance ``atol + rtol max|y_b|`` (is each sample within the
  tolerance on its own?), and the relative error of the gradient.

Candidates: ``neuralode adjoint`` (``neuralode.odeint_adjoint``), ``neuralode
backprop`` and ``neuralode checkpoint`` (``neuralode.odeint(..., gradient=...)``),
``torchdiffeq adjoint`` (``torchdiffeq.odeint_adjoint``), ``torchdiffeq backprop``
(``torchdiffeq.odeint``); for the event problem ``neuralode.odeint_event(...,
gradient=mode)`` and ``torchdiffeq.odeint_event(..., odeint_interface=torchdiffeq.odeint``
or ``torchdiffeq.odeint_adjoint)``, the adjoint and checkpoint candidates with
``adjoint_params``), ``torchode AutoDiffAdjoint`` (``Dopri5`` with
``IntegralController``, or ``Euler`` with ``FixedStepController``; autograd through
the solver; per-sample step sizes), and ``reference adjoint``
(``neuralode.reference.NeuralODE``, the paper tutorial's Euler + adjoint in plain
PyTorch; fixed-step Euler problems only); for ``irregular`` and ``vdp`` those listed
with them. A candidate that is not importable, does not apply or raises (e.g. a
gradient mode that per-sample steps do not support yet) is reported as "not
available: <reason>" and the others still run.

Run::

    python -m benchmarks.speed [--problem P1|P2|MNIST|spiral|CNF|event|irregular|vdp|all]
                               [--repeats N] [--quick] [--device cpu|cuda] [--out DIR]

It prints a markdown table per problem and writes ``DIR/speed_<problem>_<device>.json``
(default ``DIR``: ``benchmarks/results``) with every time, NFE, step count, the
library statistics, and a correctness cross-check (each candidate's loss, and the
largest difference of the first parameter's gradient to torchdiffeq's backprop,
relative to the largest entry of the latter; the event problem also each candidate's
event time, its difference to torchdiffeq's backprop, and the evaluations of the event
function in each pass; ``irregular`` and ``vdp`` also the largest difference of the
solution to torchdiffeq's backprop and the per-sample counts and errors above).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import warnings
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import Counted, CountedODEF, fmt_ratio, solver_kwargs
from .timing import interleaved, machine_info, median

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")

# torchdiffeq's fixed-step solvers ignore the step callbacks the counted dynamics define.
warnings.filterwarnings("ignore", message="Solver '.*' does not support callbacks")

#: The adaptive problems' solver.
METHOD = "dopri5"
RTOL = 1e-5
ATOL = 1e-6
#: The fixed-step problems' solver: the paper tutorial's Euler with its largest step.
FIXED_METHOD = "euler"
FIXED_STEP = 0.05
DTYPE = torch.float32
WARMUP = 2
DEFAULT_REPEATS = 10
QUICK_REPEATS = 3
#: A small P1 for smoke tests (``run(tiny=True)``): batch 64, MLP 2-16-16-2, one repeat.
TINY_PROBLEM = "P1-tiny"
#: A small fixed-step spiral for smoke tests: batch 4, 5 times in [0, 0.8].
TINY_FIXED_PROBLEM = "spiral-tiny"
#: A small CNF for smoke tests: batch 64, MLP 3-16-16-2.
TINY_CNF_PROBLEM = "CNF-tiny"
#: A small event problem for smoke tests: MLP 2-16-16-2 (the event about t = 6.3, 7 steps).
TINY_EVENT_PROBLEM = "event-tiny"
#: A small irregular problem for smoke tests: batch 8, 5 times per sample, MLP 4-16-4.
TINY_IRREGULAR_PROBLEM = "irregular-tiny"
#: A small Van der Pol problem for smoke tests: batch 8, 4 times in [0, 1.5].
TINY_VDP_PROBLEM = "vdp-tiny"
TINY_REPEATS = 1
#: Every problem, in the order ``--problem all`` runs them.
PROBLEMS = ("P1", "P2", "MNIST", "spiral", "CNF", "event", "irregular", "vdp")
#: The tiny problems of ``run(tiny=True)``, in that order.
TINY_PROBLEMS = (TINY_PROBLEM, TINY_FIXED_PROBLEM, TINY_CNF_PROBLEM, TINY_EVENT_PROBLEM, TINY_IRREGULAR_PROBLEM,
                 TINY_VDP_PROBLEM)
#: The event problem's radius: the event is where the state leaves the disc of this
#: radius around its start.
EVENT_RADIUS = 2.0
#: The irregular problem's factor on PyTorch's initial weights and biases: with it the
#: states move ~5 per unit time through tanh features of width ~1/3, so each trajectory
#: turns on time scales of ~0.1-1 (with the default init it drifts almost straight).
IRREGULAR_INIT_SCALE = 3.0
#: The Van der Pol problem's solver: float64, rtol = atol = 1e-6.
VDP_SOLVER = {"method": METHOD, "rtol": 1e-6, "atol": 1e-6}
#: The range of the Van der Pol problem's mu (evenly spread over the batch).
VDP_MU = (0.5, 10.0)
#: The tolerance of the tight float64 solve the per-sample problems' errors are measured
#: against. Its own error, against dopri8 at 1e-12 on ``vdp``, is ~1e-6 in the states and
#: relative ~1e-6 in dL/dmu: far below the candidates' (~1e-4 and more).
TIGHT_TOL = 1e-10

#: The candidate every gradient and loss is compared with.
REFERENCE = "torchdiffeq backprop"

CANDIDATES = (
    "neuralode adjoint",
    "neuralode backprop",
    "neuralode checkpoint",
    "torchdiffeq adjoint",
    "torchdiffeq backprop",
    "torchode AutoDiffAdjoint",
    "reference adjoint",
)

#: The candidates of the per-sample problems (``Problem.per_sample``).
PER_SAMPLE_CANDIDATES = (
    "neuralode per-sample backprop",
    "neuralode per-sample adjoint",
    "neuralode per-sample checkpoint",
    "neuralode shared backprop",
    "neuralode shared adjoint",
    "torchdiffeq adjoint",
    "torchdiffeq backprop",
    "torchode AutoDiffAdjoint",
    "torchode BacksolveAdjoint",
    "torchode JointBacksolveAdjoint",
)

#: (label, peer, neuralode mode): reported as time(peer) / time(neuralode mode).
RATIOS = (
    ("torchdiffeq odeint_adjoint / neuralode adjoint", "torchdiffeq adjoint", "neuralode adjoint"),
    ("torchdiffeq odeint / neuralode backprop", "torchdiffeq backprop", "neuralode backprop"),
    ("torchode AutoDiffAdjoint / neuralode backprop", "torchode AutoDiffAdjoint", "neuralode backprop"),
    ("torchdiffeq odeint / neuralode checkpoint", "torchdiffeq backprop", "neuralode checkpoint"),
    ("torchode AutoDiffAdjoint / neuralode checkpoint", "torchode AutoDiffAdjoint", "neuralode checkpoint"),
    ("reference adjoint / neuralode adjoint", "reference adjoint", "neuralode adjoint"),
)

#: The ratios of the per-sample problems: per-sample steps against torchode's (which steps
#: per sample too) and against one step size for the batch (neuralode's shared mode,
#: torchdiffeq); the shared mode against its peers.
PER_SAMPLE_RATIOS = (
    ("torchode AutoDiffAdjoint / neuralode per-sample backprop", "torchode AutoDiffAdjoint",
     "neuralode per-sample backprop"),
    ("torchode BacksolveAdjoint / neuralode per-sample adjoint", "torchode BacksolveAdjoint",
     "neuralode per-sample adjoint"),
    ("torchode AutoDiffAdjoint / neuralode per-sample checkpoint", "torchode AutoDiffAdjoint",
     "neuralode per-sample checkpoint"),
    ("torchdiffeq odeint / neuralode per-sample backprop", "torchdiffeq backprop", "neuralode per-sample backprop"),
    ("torchdiffeq odeint_adjoint / neuralode per-sample adjoint", "torchdiffeq adjoint",
     "neuralode per-sample adjoint"),
    ("neuralode shared backprop / neuralode per-sample backprop", "neuralode shared backprop",
     "neuralode per-sample backprop"),
    ("torchdiffeq odeint / neuralode shared backprop", "torchdiffeq backprop", "neuralode shared backprop"),
    ("torchdiffeq odeint_adjoint / neuralode shared adjoint", "torchdiffeq adjoint", "neuralode shared adjoint"),
    ("torchode JointBacksolveAdjoint / neuralode shared adjoint", "torchode JointBacksolveAdjoint",
     "neuralode shared adjoint"),
)


def _not_available(err: BaseException) -> str:
    msg = str(err).strip().splitlines()
    return f"not available: {type(err).__name__}: {msg[0] if msg else ''}".rstrip(": ")


# --------------------------------------------------------------------------- libraries


def _import_libraries() -> Dict[str, object]:
    """Each library, or the reason it is not available (a string)."""
    libs: Dict[str, object] = {}
    for name in ("neuralode", "torchdiffeq", "torchode"):
        try:
            libs[name] = __import__(name)
        except Exception as err:  # ImportError, or a broken extension build
            libs[name] = _not_available(err)
    return libs


def _version(lib) -> str:
    return lib if isinstance(lib, str) else str(getattr(lib, "__version__", "unknown"))


# --------------------------------------------------------------------------- dynamics


class CountedMLP(Counted):
    """MLP 2-64-64-2 with ELU, time-independent."""

    def __init__(self, dim: int = 2, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, dim)
        )

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        self.nfe += 1
        return self.net(z)


class CountedCNF(Counted):
    """FFJORD-style dynamics on the state ``(z, logp)``: ``dz/dt = MLP([z, t])`` (MLP
    ``dim+1``-hidden-hidden-``dim`` with tanh) and ``dlogp/dt = -e^T (df/dz) e``,
    Hutchinson's estimate of ``-tr(df/dz)`` with the batch's fixed noise ``e`` (``noise``,
    the shape of ``z``): one vector-Jacobian product with ``create_graph=True`` per
    evaluation, so that the backward pass can differentiate it."""

    def __init__(self, noise: Tensor, dim: int = 2, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, dim)
        )
        self.noise = noise

    def forward(self, t: Tensor, states):
        self.nfe += 1
        z = states[0]
        with torch.enable_grad():
            z.requires_grad_(True)
            dz = self.net(torch.cat([z, t.expand(z.shape[0], 1)], dim=1))
            e_dfdz = torch.autograd.grad(dz, z, self.noise, create_graph=True)[0]
        return dz, -(e_dfdz * self.noise).sum(dim=1, keepdim=True)


def _cnf_nll(ys) -> Tensor:
    """The CNF's loss from its trajectory ``(zs, logps)``: the negative log-likelihood of the
    data under a standard normal base, ``-mean(log N(z(1)) - logp(1))``."""
    zs, logps = ys
    z1, logp1 = zs[-1], logps[-1]
    log_normal = -0.5 * z1.pow(2).sum(dim=1, keepdim=True) - math.log(2 * math.pi)
    return -(log_normal - logp1).mean()


class CountedEvent:
    """The event problem's event function ``g(t, y) = |y - centre|^2 - radius^2``, negative
    inside the disc around ``centre`` and positive outside, counting its evaluations
    (``calls``). Both libraries evaluate it after every accepted step, then in a root
    search on the interpolant of the step where its sign changed (torchdiffeq: bisection
    to ``atol`` in time; neuralode: Illinois' regula falsi to the clock's round-off), and
    again for the gradient through the event time: work that the NFE columns (evaluations
    of f) do not show."""

    def __init__(self, centre: Tensor, radius: float):
        self.centre = centre
        self.radius = radius
        self.calls = 0

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        """``g(t, y)``: one value for the whole state (``y`` of shape ``(2,)``)."""
        self.calls += 1
        return (y - self.centre).pow(2).sum(-1) - self.radius**2


def _event_loss(out) -> Tensor:
    """The event problem's loss from ``odeint_event``'s ``(event_t, [y0, y(event_t)])``:
    ``event_t + sum(y(event_t))``, so that the gradient goes through the event time too."""
    event_t, ys = out
    return event_t.reshape(()) + ys[-1].sum()


class CountedTanhMLP(Counted):
    """MLP ``dim``-``hidden``-``dim`` with tanh, time-independent; ``scale`` multiplies every
    weight and bias of PyTorch's initialization (faster, more curved dynamics)."""

    def __init__(self, dim: int = 4, hidden: int = 64, scale: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        with torch.no_grad():
            for p in self.net.parameters():
                p.mul_(scale)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        self.nfe += 1
        return self.net(z)


class CountedVanDerPol(Counted):
    """Van der Pol oscillators, one per sample: state ``(x, v)``, ``dx/dt = v``,
    ``dv/dt = mu_b (1 - x^2) v - x``, with ``mu`` (one value per sample) a parameter."""

    def __init__(self, mu: Tensor):
        super().__init__()
        self.mu = nn.Parameter(mu)

    def forward(self, t: Tensor, z: Tensor, rows: Optional[Tensor] = None) -> Tensor:
        """``f(t, z)`` for ``z`` of shape ``(batch, 2)``, or of one sample ``(2,)`` with ``rows``
        its one-hot row (torchode's BacksolveAdjoint evaluates one sample at a time under
        ``vmap``, where the parameters are not batched: the row picks the sample's mu)."""
        self.nfe += 1
        mu = self.mu if rows is None else rows @ self.mu
        x, v = z[..., 0], z[..., 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], dim=-1)


class TorchodeDynamics(nn.Module):
    """Counted dynamics as torchode calls them, on flat states: batched (``y`` of shape
    ``(batch, features)``, ``t`` of shape ``(batch,)``) or one sample (``y`` of shape
    ``(features,)``, ``t`` 0-d: BacksolveAdjoint's per-sample VJPs under ``vmap``), with
    torchode's ``args`` passed on when given. A module, not a closure: BacksolveAdjoint
    differentiates the parameters of ``term.f`` with ``torch.func``."""

    def __init__(self, func: nn.Module, state_shape):
        super().__init__()
        self.func = func
        self.state_shape = tuple(state_shape)

    def forward(self, t: Tensor, y: Tensor, args=None) -> Tensor:
        extra = () if args is None else (args,)
        if y.dim() == 1:
            return self.func(t, y.view(self.state_shape), *extra).flatten()
        batch = y.shape[0]
        t = t.view(batch, *([1] * len(self.state_shape)))
        return self.func(t, y.view(batch, *self.state_shape), *extra).flatten(1)


class RowSteps:
    """neuralode's ``callback_step`` while a per-sample solve is profiled: records each
    attempt's per-row start times and step sizes (``(batch, 1)`` with per-sample steps) to
    count each sample's accepted steps, which ``SolverStats`` does not give (its counts are
    of the batched loop). A row's start moves only when its step was accepted; after its
    last observation its step size is 0; the loop's last attempt is accepted for every row
    still moving (else it would go on)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """Forgets the attempts recorded so far (before a new solve)."""
        self.t0: List[Tensor] = []
        self.dt: List[Tensor] = []

    def __call__(self, t0: Tensor, y0, dt: Tensor) -> None:
        self.t0.append(t0.detach().reshape(-1).clone())
        self.dt.append(dt.detach().reshape(-1).clone())

    def accepted(self) -> Optional[Tensor]:
        """Accepted steps per sample (shape ``(batch,)``), or None when nothing per row was seen."""
        if not self.t0 or self.t0[0].numel() < 2:
            return None
        t0, dt = torch.stack(self.t0), torch.stack(self.dt)  # (attempts, batch)
        return (t0[1:] != t0[:-1]).sum(0) + (dt[-1] != 0).long()


def _spiral_dynamics(libs):
    """The paper's ``TestODEF`` with the tutorial's A, B, x0 (float64)."""
    A = torch.tensor([[-0.1, -1.0], [1.0, -0.1]], dtype=torch.float64)
    B = torch.tensor([[-0.2, 1.0], [-1.0, -0.2]], dtype=torch.float64)
    x0 = torch.tensor([-1.0, 0.0], dtype=torch.float64)
    if isinstance(libs["neuralode"], str):
        # neuralode cannot be imported (e.g. its extension is being rebuilt): the same
        # formula as neuralode.dynamics.TestODEF, so that the peers still run.
        def rhs(x):
            xTx0 = (x * x0).sum(dim=1, keepdim=True)
            return torch.sigmoid(xTx0) * ((x - x0) @ A.T) + torch.sigmoid(-xTx0) * ((x + x0) @ B.T)

        return rhs, "TestODEF formula (neuralode not importable)"
    from neuralode.dynamics import TestODEF

    true_f = TestODEF(A, B, x0)
    return (lambda x: true_f(x, None)), "neuralode.dynamics.TestODEF"


@torch.no_grad()
def _rk4_observations(rhs, y0: Tensor, t: Tensor, substeps: int) -> Tensor:
    """Classic RK4, ``substeps`` equal steps per observation interval: ``(T, *y0.shape)``."""
    ys = [y0]
    y = y0
    for i in range(t.shape[0] - 1):
        h = (t[i + 1] - t[i]) / substeps
        for _ in range(substeps):
            k1 = rhs(y)
            k2 = rhs(y + 0.5 * h * k1)
            k3 = rhs(y + 0.5 * h * k2)
            k4 = rhs(y + h * k3)
            y = y + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        ys.append(y)
    return torch.stack(ys)


# --------------------------------------------------------------------------- problems


ADAPTIVE = {"method": METHOD, "rtol": RTOL, "atol": ATOL}
FIXED = {"method": FIXED_METHOD, "step": FIXED_STEP}


@dataclasses.dataclass
class Problem:
    """One speed problem: the counted dynamics, initial state, times, loss, description and solver."""
    name: str
    func: Counted
    y0: Union[Tensor, Tuple[Tensor, ...]]  # (batch, *state), or a tuple of such (torchdiffeq's tupled state)
    t: Tensor  # (T,); with ``event_fn``: [t0]
    loss: Callable  # ys (T, batch, *state), or a tuple of such -> scalar; with ``event_fn``: (event_t, ys) -> scalar
    description: dict
    #: ``ADAPTIVE`` or ``FIXED``.
    solver: dict = dataclasses.field(default_factory=lambda: dict(ADAPTIVE))
    #: The adjoint and checkpoint candidates pass ``adjoint_params=tuple(func.parameters())``.
    explicit_adjoint_params: bool = False
    #: An event problem: the candidates solve with their library's ``odeint_event`` from
    #: ``t[0]`` until this function changes sign.
    event_fn: Optional[CountedEvent] = None
    dtype: torch.dtype = DTYPE
    #: A per-sample problem: the candidates of ``PER_SAMPLE_CANDIDATES``; ``t`` is (T,) or
    #: per sample (T, batch, 1).
    per_sample: bool = False
    #: The per-sample problems' tight float64 solve (``_tight_reference``): ``ys`` and the
    #: first parameter's ``grad``, or ``error``.
    tight: Optional[dict] = None
    #: torchode's ``args`` for BacksolveAdjoint, vmapped over the batch (``vdp``: one-hot rows).
    torchode_args: Optional[Tensor] = None

    @property
    def fixed_step(self) -> bool:
        return "step" in self.solver

    @property
    def candidates(self) -> Tuple[str, ...]:
        return PER_SAMPLE_CANDIDATES if self.per_sample else CANDIDATES

    @property
    def ratios(self) -> tuple:
        return PER_SAMPLE_RATIOS if self.per_sample else RATIOS


def solver_text(solver: dict) -> str:
    """The solver of a problem in words, e.g. ``dopri5, rtol 1e-05, atol 1e-06``."""
    if "step" in solver:
        return f"{solver['method']}, fixed step {solver['step']:g}"
    return f"{solver['method']}, rtol {solver['rtol']:g}, atol {solver['atol']:g}"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _tight_reference(func: nn.Module, y0: Tensor, t: Tensor, loss: Callable, libs) -> dict:
    """The per-sample problems' oracle, computed once and untimed: neuralode's shared mode
    (one step size for the batch: not the per-sample code under test), dopri5 at rtol =
    atol = ``TIGHT_TOL`` in float64 on a float64 copy of ``func``, backprop. Returns the
    solution ``ys`` at the observations, the first parameter's gradient ``grad``, the loss
    and the work done; or ``{"error": ...}`` when neuralode cannot be imported."""
    nlo = libs["neuralode"]
    if isinstance(nlo, str):
        return {"error": nlo}
    model = copy.deepcopy(func).double()
    stats = nlo.SolverStats()
    ys = nlo.odeint(model, y0.double(), t.double(), method=METHOD, rtol=TIGHT_TOL, atol=TIGHT_TOL, stats=stats)
    value = loss(ys)
    value.backward()
    return {
        "ys": ys.detach(),
        "grad": next(model.parameters()).grad.detach().clone(),
        "loss": float(value.detach()),
        "solver": f"neuralode shared mode, {METHOD}, rtol = atol = {TIGHT_TOL:g}, float64, backprop",
        "nfe_forward": stats.nfe_forward,
        "steps": {"accepted": stats.steps_accepted, "rejected": stats.steps_rejected},
    }


def build_problem(name: str, device: str, libs) -> Problem:
    """The problem called ``name`` (see the module docstring) on ``device``, seeded."""
    if name in ("P1", TINY_PROBLEM):
        # TINY_PROBLEM: P1 shrunk for smoke tests (batch 64, MLP 2-16-16-2).
        batch, hidden = (512, 64) if name == "P1" else (64, 16)
        gen = torch.Generator().manual_seed(0)
        y0 = torch.randn(batch, 2, generator=gen, dtype=DTYPE)
        torch.manual_seed(1)
        func = CountedMLP(hidden=hidden)
        t = torch.tensor([0.0, 5.0], dtype=DTYPE)
        desc = {
            "name": name,
            "summary": f"batch {batch} of 2-D states, MLP 2-{hidden}-{hidden}-2 ELU dynamics, t = [0, 5], "
            "loss mean(z(5)^2)",
            "batch": batch,
            "state_dim": 2,
            "times": [0.0, 5.0],
            "y0": "N(0, 1), torch.Generator seed 0",
            "model": f"MLP 2-{hidden}-{hidden}-2 with ELU, time-independent, torch.manual_seed(1) init",
            "loss": "mean(z(5)^2)",
        }
        return Problem(name, func.to(device), y0.to(device), t.to(device), lambda ys: ys[-1].pow(2).mean(), desc)

    if name == "P2":
        batch, n_times, t_end, substeps = 256, 200, 10.0, 5
        gen = torch.Generator().manual_seed(0)
        x_init = torch.rand(batch, 2, generator=gen, dtype=torch.float64) * 4.0 - 2.0
        t64 = torch.linspace(0.0, t_end, n_times, dtype=torch.float64)
        rhs, source = _spiral_dynamics(libs)
        obs64 = _rk4_observations(rhs, x_init, t64, substeps)
        finer = _rk4_observations(rhs, x_init, t64, 2 * substeps)
        data_error = float((obs64 - finer).abs().max())
        obs = obs64.to(DTYPE).to(device)
        torch.manual_seed(1)
        func = CountedMLP()
        desc = {
            "name": "P2",
            "summary": "the paper's non-linear spiral (TestODEF): 256 trajectories x 200 times in [0, 10], "
            "MLP 2-64-64-2 ELU model, MSE over all times",
            "batch": batch,
            "state_dim": 2,
            "observation_times": f"linspace(0, {t_end}, {n_times})",
            "true_dynamics": source,
            "A": [[-0.1, -1.0], [1.0, -0.1]],
            "B": [[-0.2, 1.0], [-1.0, -0.2]],
            "x0": [-1.0, 0.0],
            "initial_states": "uniform in [-2, 2]^2, torch.Generator seed 0",
            "data_solver": f"classic RK4 in float64, {substeps} equal steps per observation interval "
            f"(h = {t_end / (n_times - 1) / substeps:.4f}), untimed",
            "data_max_abs_change_with_half_step": data_error,
            "observation_abs_max": float(obs64.abs().max()),
            "model": "MLP 2-64-64-2 with ELU, time-independent, torch.manual_seed(1) init; starts from the true initial states",
            "loss": "mse over all 200 times",
        }
        return Problem(
            "P2", func.to(device), obs[0].contiguous(), t64.to(DTYPE).to(device), lambda ys: F.mse_loss(ys, obs), desc
        )

    if name == "MNIST":
        from neuralode.dynamics import ConvODEF

        batch, channels, size = 32, 64, 6
        gen = torch.Generator().manual_seed(0)
        y0 = torch.randn(batch, channels, size, size, generator=gen, dtype=DTYPE)
        torch.manual_seed(1)
        func = CountedODEF(ConvODEF(channels))
        desc = {
            "name": "MNIST",
            "summary": f"the MNIST ODE block ConvODEF({channels}) on a batch of {batch} states of "
            f"{channels}x{size}x{size}, t = [0, 1], loss mean(z(1)^2)",
            "batch": batch,
            "state_shape": [channels, size, size],
            "times": [0.0, 1.0],
            "y0": "N(0, 1), torch.Generator seed 0",
            "model": f"neuralode.dynamics.ConvODEF({channels}) (batch norm in training mode), torch.manual_seed(1) init",
            "loss": "mean(z(1)^2)",
        }
        t = torch.tensor([0.0, 1.0], dtype=DTYPE)
        return Problem(name, func.to(device), y0.to(device), t.to(device), lambda ys: ys[-1].pow(2).mean(), desc, dict(FIXED))

    if name in ("spiral", TINY_FIXED_PROBLEM):
        from neuralode.dynamics import LinearODEF

        # Intervals of 0.25 (exact in binary): each is 5 Euler steps of 0.05 for every candidate.
        batch, n_times, interval = (16, 33, 0.25) if name == "spiral" else (4, 5, 0.25)
        W = torch.tensor([[-0.1, -1.0], [1.0, -0.1]], dtype=torch.float64)
        gen = torch.Generator().manual_seed(0)
        x_init = torch.rand(batch, 2, generator=gen, dtype=torch.float64) * 4.0 - 2.0
        t64 = torch.arange(n_times, dtype=torch.float64) * interval
        # dz/dt = z W^T  =>  z(t) = z0 expm(t W^T), exactly.
        obs = torch.stack([x_init @ torch.linalg.matrix_exp(ti * W.T) for ti in t64]).to(DTYPE).to(device)
        torch.manual_seed(1)
        func = CountedODEF(LinearODEF(torch.randn(2, 2) / 2.0))
        steps = round(float(t64[-1]) / FIXED_STEP)
        desc = {
            "name": name,
            "summary": f"the paper's linear spiral: {batch} trajectories x {n_times} times in "
            f"[0, {float(t64[-1]):g}] ({steps} Euler steps), random linear model (LinearODEF), MSE over all times",
            "batch": batch,
            "state_dim": 2,
            "observation_times": f"0, {interval:g}, ..., {float(t64[-1]):g}",
            "true_dynamics": "dz/dt = z W^T, W = [[-0.1, -1], [1, -0.1]], exact (matrix exponential)",
            "initial_states": "uniform in [-2, 2]^2, torch.Generator seed 0",
            "model": "LinearODEF(randn(2, 2) / 2), torch.manual_seed(1); starts from the true initial states",
            "loss": f"mse over all {n_times} times",
            "euler_steps": steps,
        }
        return Problem(
            name, func.to(device), obs[0].contiguous(), t64.to(DTYPE).to(device), lambda ys: F.mse_loss(ys, obs), desc, dict(FIXED)
        )

    if name in ("CNF", TINY_CNF_PROBLEM):
        # TINY_CNF_PROBLEM: the CNF shrunk for smoke tests (batch 64, MLP 3-16-16-2).
        batch, hidden = (512, 64) if name == "CNF" else (64, 16)
        gen = torch.Generator().manual_seed(0)
        centres = torch.tensor([[1.5, 1.5], [-1.5, 1.5], [-1.5, -1.5], [1.5, -1.5]], dtype=DTYPE)
        x = centres[torch.randint(0, 4, (batch,), generator=gen)] + 0.3 * torch.randn(batch, 2, generator=gen, dtype=DTYPE)
        noise = torch.randn(batch, 2, generator=gen, dtype=DTYPE)
        torch.manual_seed(1)
        func = CountedCNF(noise.to(device), hidden=hidden)
        y0 = (x.to(device), torch.zeros(batch, 1, dtype=DTYPE, device=device))
        t = torch.tensor([0.0, 1.0], dtype=DTYPE)
        desc = {
            "name": name,
            "summary": f"FFJORD-style CNF on (z, logp): batch {batch} of 2-D samples of a 4-Gaussian mixture, "
            f"MLP 3-{hidden}-{hidden}-2 tanh of [z, t], Hutchinson trace (one VJP per evaluation), t = [0, 1], "
            "loss the NLL under N(0, I)",
            "batch": batch,
            "state": f"tuple (z ({batch}, 2), logp ({batch}, 1)), logp(0) = 0",
            "times": [0.0, 1.0],
            "data": "mixture of 4 Gaussians, std 0.3, centres (+-1.5, +-1.5), torch.Generator seed 0",
            "noise": "Hutchinson noise e ~ N(0, 1) of z's shape, drawn once (same generator)",
            "model": f"dz/dt = MLP 3-{hidden}-{hidden}-2 with tanh of [z, t], dlogp/dt = -e^T (df/dz) e; "
            "torch.manual_seed(1) init",
            "loss": "-mean(log N(z(1); 0, I) - logp(1))",
        }
        return Problem(name, func.to(device), y0, t.to(device), _cnf_nll, desc)

    if name in ("event", TINY_EVENT_PROBLEM):
        # TINY_EVENT_PROBLEM: the event problem shrunk for smoke tests (MLP 2-16-16-2).
        hidden = 64 if name == "event" else 16
        torch.manual_seed(1)
        func = CountedMLP(hidden=hidden)
        # One state, not a batch: torchdiffeq's event is one sign change of the whole state.
        y0 = torch.zeros(2, dtype=DTYPE, device=device)
        event_fn = CountedEvent(y0.clone(), EVENT_RADIUS)
        desc = {
            "name": name,
            "summary": f"one 2-D state from the origin, MLP 2-{hidden}-{hidden}-2 ELU dynamics, until it leaves "
            f"the disc of radius {EVENT_RADIUS:g} (odeint_event), loss event_t + sum(y(event_t))",
            "state": "one tensor of shape (2,), no batch dimension",
            "state_dim": 2,
            "t0": 0.0,
            "y0": "(0, 0)",
            "model": f"MLP 2-{hidden}-{hidden}-2 with ELU, time-independent, torch.manual_seed(1) init",
            "event_fn": f"g(t, y) = |y - y0|^2 - {EVENT_RADIUS ** 2:g}, one value (the whole state)",
            "loss": "event_t + sum(y(event_t)), differentiated through event_t (implicit function theorem)",
        }
        t = torch.tensor([0.0], dtype=DTYPE)
        return Problem(name, func.to(device), y0, t.to(device), _event_loss, desc,
                       explicit_adjoint_params=True, event_fn=event_fn)

    if name in ("irregular", TINY_IRREGULAR_PROBLEM):
        # TINY_IRREGULAR_PROBLEM: shrunk for smoke tests (batch 8, 5 times, MLP 4-16-4).
        batch, n_times, hidden = (128, 20, 64) if name == "irregular" else (8, 5, 16)
        t_end = 5.0
        gen = torch.Generator().manual_seed(0)
        y0 = torch.randn(batch, 4, generator=gen, dtype=DTYPE)
        # Every sample starts at t = 0 (torchdiffeq can then solve the batch on the union of
        # the times); the others are the sample's own.
        later = torch.sort(t_end * (1.0 - torch.rand(n_times - 1, batch, 1, generator=gen, dtype=DTYPE)), dim=0).values
        t = torch.cat([torch.zeros(1, batch, 1, dtype=DTYPE), later]).to(device)
        torch.manual_seed(1)
        func = CountedTanhMLP(dim=4, hidden=hidden, scale=IRREGULAR_INIT_SCALE).to(device)
        y0 = y0.to(device)
        loss = lambda ys: ys.pow(2).mean()  # noqa: E731
        desc = {
            "name": name,
            "summary": f"batch {batch} of 4-D states, each observed at its own {n_times} times in [0, {t_end:g}] "
            f"(per-sample times), MLP 4-{hidden}-4 tanh dynamics (init x{IRREGULAR_INIT_SCALE:g}), "
            "loss mean(z^2) over the observations",
            "batch": batch,
            "state_dim": 4,
            "observation_times": f"per sample, shape ({n_times}, {batch}, 1): 0, then {n_times - 1} sorted "
            f"uniform draws in (0, {t_end:g}], torch.Generator seed 0",
            "union_of_times": int(torch.unique(t).numel()),
            "y0": "N(0, 1), torch.Generator seed 0 (drawn before the times)",
            "model": f"MLP 4-{hidden}-4 with tanh, time-independent, torch.manual_seed(1) init, every weight and "
            f"bias x{IRREGULAR_INIT_SCALE:g}",
            "loss": "mean(z^2) over every sample's observations",
        }
        return Problem(name, func, y0, t, loss, desc, dtype=DTYPE, per_sample=True,
                       tight=_tight_reference(func, y0, t, loss, libs))

    if name in ("vdp", TINY_VDP_PROBLEM):
        # TINY_VDP_PROBLEM: shrunk for smoke tests (batch 8, 4 times in [0, 1.5]).
        batch, n_times, t_end = (256, 20, 10.0) if name == "vdp" else (8, 4, 1.5)
        dtype = torch.float64
        gen = torch.Generator().manual_seed(0)
        y0 = (torch.rand(batch, 2, generator=gen, dtype=dtype) * 4.0 - 2.0).to(device)
        t = torch.linspace(0.0, t_end, n_times, dtype=dtype, device=device)
        func = CountedVanDerPol(torch.linspace(*VDP_MU, batch, dtype=dtype)).to(device)
        loss = lambda ys: ys.pow(2).mean()  # noqa: E731
        desc = {
            "name": name,
            "summary": f"{batch} Van der Pol oscillators with a learnable mu each in [{VDP_MU[0]:g}, {VDP_MU[1]:g}], "
            f"{n_times} shared times in [0, {t_end:g}], float64, loss mean(z^2) over the observations",
            "batch": batch,
            "state": "(x, v), dx/dt = v, dv/dt = mu_b (1 - x^2) v - x",
            "mu": f"parameter, linspace({VDP_MU[0]:g}, {VDP_MU[1]:g}, {batch}), one value per sample",
            "observation_times": f"linspace(0, {t_end:g}, {n_times}), the same for every sample",
            "y0": "uniform in [-2, 2]^2, torch.Generator seed 0",
            "dtype": "float64",
            "loss": "mean(z^2) over all observations; gradient dL/dmu",
        }
        return Problem(name, func, y0, t, loss, desc, dict(VDP_SOLVER), dtype=dtype, per_sample=True,
                       tight=_tight_reference(func, y0, t, loss, libs),
                       torchode_args=torch.eye(batch, dtype=dtype, device=device))

    raise ValueError(f"unknown problem {name!r}")


# --------------------------------------------------------------------------- candidates

#: A solve: given a dict to collect library statistics into (or None while timed),
#: returns the loss. ``None``: the candidate is not available (see ``errors``).
Solve = Callable[[Optional[dict]], Tensor]


def make_candidates(problem: Problem, libs) -> Dict[str, object]:
    """name -> solve function, or "not available: ..." (a string)."""
    if problem.per_sample:
        return _per_sample_candidates(problem, libs)
    func, y0, t, loss = problem.func, problem.y0, problem.t, problem.loss
    event_fn = problem.event_fn
    out: Dict[str, object] = {}
    nlo_kwargs = solver_kwargs(problem.solver, "max_step")
    tdq_kwargs = solver_kwargs(problem.solver, "step_size")
    params_kwargs = {"adjoint_params": tuple(func.parameters())} if problem.explicit_adjoint_params else {}

    nlo = libs["neuralode"]
    for mode in ("adjoint", "backprop", "checkpoint"):
        name = f"neuralode {mode}"
        if isinstance(nlo, str):
            out[name] = nlo
            continue

        def solve(collect, mode=mode):
            kwargs = {}
            if collect is not None and collect.get("use_stats", False):
                kwargs["stats"] = collect["neuralode_stats"] = nlo.SolverStats()
            if event_fn is not None:
                extra = params_kwargs if mode != "backprop" else {}
                solved = nlo.odeint_event(func, y0, t[0], event_fn=event_fn, gradient=mode, **nlo_kwargs, **extra,
                                          **kwargs)
                return _event_solved(solved, collect, loss)
            if mode == "adjoint":
                ys = nlo.odeint_adjoint(func, y0, t, **nlo_kwargs, **params_kwargs, **kwargs)
            elif mode == "checkpoint":
                ys = nlo.odeint(func, y0, t, gradient=mode, **nlo_kwargs, **params_kwargs, **kwargs)
            else:
                ys = nlo.odeint(func, y0, t, gradient=mode, **nlo_kwargs, **kwargs)
            return loss(ys)

        out[name] = solve

    tdq = libs["torchdiffeq"]
    for name, fn_name in (("torchdiffeq adjoint", "odeint_adjoint"), ("torchdiffeq backprop", "odeint")):
        if isinstance(tdq, str):
            out[name] = tdq
            continue

        def solve(collect, fn=getattr(tdq, fn_name), extra=params_kwargs if fn_name == "odeint_adjoint" else {}):
            if event_fn is not None:
                solved = tdq.odeint_event(func, y0, t[0], event_fn=event_fn, odeint_interface=fn, **tdq_kwargs, **extra)
                return _event_solved(solved, collect, loss)
            return loss(fn(func, y0, t, **tdq_kwargs, **extra))

        out[name] = solve

    tode = libs["torchode"]
    name = "torchode AutoDiffAdjoint"
    if isinstance(tode, str):
        out[name] = tode
    elif event_fn is not None:
        out[name] = "not available: torchode has no events"
    elif isinstance(y0, tuple):
        out[name] = "not available: torchode solves one tensor state, not a tuple"
    else:
        # torchode: flat states (batch, features) and per-sample times (batch,) / (batch, T).
        batch, state_shape = y0.shape[0], y0.shape[1:]
        t_shape = (batch,) + (1,) * len(state_shape)
        term = tode.ODETerm(lambda tt, yy: func(tt.view(t_shape), yy.view(batch, *state_shape)).flatten(1))
        if problem.fixed_step:
            step_method = tode.Euler(term=term)
            controller = tode.FixedStepController()
            dt0 = torch.full((batch,), problem.solver["step"], dtype=y0.dtype, device=y0.device)
        else:
            step_method = tode.Dopri5(term=term)
            controller = tode.IntegralController(atol=problem.solver["atol"], rtol=problem.solver["rtol"], term=term)
            dt0 = None
        solver = tode.AutoDiffAdjoint(step_method, controller)
        t_eval = t.unsqueeze(0).repeat(batch, 1)
        y0_flat = y0.flatten(1)

        def solve(collect):
            sol = solver.solve(tode.InitialValueProblem(y0=y0_flat, t_eval=t_eval), dt0=dt0)
            if collect is not None:
                collect["torchode_solution"] = sol
            ys = sol.ys.transpose(0, 1)  # (batch, T, features) -> (T, batch, features)
            return loss(ys.reshape(ys.shape[0], batch, *state_shape))

        out[name] = solve

    name = "reference adjoint"
    if event_fn is not None:
        out[name] = "not available: the reference has no events (and runs fixed-step Euler only)"
    elif not problem.fixed_step:
        out[name] = "not available: the reference implements fixed-step Euler only"
    elif isinstance(nlo, str) or not isinstance(func, CountedODEF) or problem.solver["method"] != "euler":
        out[name] = nlo if isinstance(nlo, str) else "not available: needs Euler and paper-convention dynamics"
    else:
        from neuralode import reference

        assert problem.solver["step"] == reference.H_MAX
        ref_model = reference.NeuralODE(func.paper_view())

        def solve(collect):
            return loss(ref_model(y0, t, return_whole_sequence=True))

        out[name] = solve
    return out


def _per_sample_candidates(problem: Problem, libs) -> Dict[str, object]:
    """The per-sample problems' candidates (``PER_SAMPLE_CANDIDATES``): name -> solve
    function, or "not available: ..." (a string). Each solve, while profiled, also records
    its solution at the observations, ``(T, batch, *state)``, for the per-sample errors."""
    func, y0, t, loss = problem.func, problem.y0, problem.t, problem.loss
    kwargs = solver_kwargs(problem.solver)
    batch, state_shape = y0.shape[0], y0.shape[1:]
    per_sample_times = t.dim() == 3
    out: Dict[str, object] = {}

    nlo = libs["neuralode"]
    for name, options, mode in (
        ("neuralode per-sample backprop", {"per_sample": True}, "backprop"),
        ("neuralode per-sample adjoint", {"per_sample": True}, "adjoint"),
        ("neuralode per-sample checkpoint", {"per_sample": True}, "checkpoint"),
        ("neuralode shared backprop", {"per_sample": False}, "backprop"),
        ("neuralode shared adjoint", {"per_sample": False}, "adjoint"),
    ):
        if isinstance(nlo, str):
            out[name] = nlo
            continue

        # A mode that per-sample steps do not support raises ValueError at the first call:
        # run_problem reports it as "not available" with the library's message.
        def solve(collect, options=options, mode=mode):
            extra = {}
            if collect is not None and collect.get("use_stats", False):
                extra["stats"] = collect["neuralode_stats"] = nlo.SolverStats()
            if mode == "adjoint":
                ys = nlo.odeint_adjoint(func, y0, t, options=options, **kwargs, **extra)
            else:
                ys = nlo.odeint(func, y0, t, options=options, gradient=mode, **kwargs, **extra)
            return _observed(ys, collect, loss)

        out[name] = solve

    tdq = libs["torchdiffeq"]
    if per_sample_times and not isinstance(tdq, str):
        # torchdiffeq has one time axis: solve on the union of every sample's times and read
        # each sample at its own (the first time, 0, is every sample's).
        union = torch.unique(t)
        index = torch.searchsorted(union, t[..., 0].contiguous())  # (T, batch)
        rows = torch.arange(batch, device=y0.device)
    for name, fn_name in (("torchdiffeq adjoint", "odeint_adjoint"), ("torchdiffeq backprop", "odeint")):
        if isinstance(tdq, str):
            out[name] = tdq
            continue
        if per_sample_times and fn_name == "odeint_adjoint":
            out[name] = (
                f"not available: torchdiffeq has no per-sample times, and on the union of the samples' times "
                f"({union.numel()} of them) odeint_adjoint solves each of its {union.numel() - 1} intervals "
                "backwards on its own: too slow to time here (odeint runs on that union)"
            )
            continue

        def solve(collect, fn=getattr(tdq, fn_name)):
            if per_sample_times:
                ys = fn(func, y0, union, **kwargs)[index, rows]
            else:
                ys = fn(func, y0, t, **kwargs)
            return _observed(ys, collect, loss)

        out[name] = solve

    tode = libs["torchode"]
    names = ("torchode AutoDiffAdjoint", "torchode BacksolveAdjoint", "torchode JointBacksolveAdjoint")
    if isinstance(tode, str):
        out.update({name: tode for name in names})
        return out
    rtol, atol = problem.solver["rtol"], problem.solver["atol"]
    dynamics = TorchodeDynamics(func, state_shape)
    term = tode.ODETerm(dynamics)
    args = problem.torchode_args
    # BacksolveAdjoint vmaps its vector-Jacobian products over the samples with the
    # parameters unbatched: per-sample parameters are read through the vmapped args.
    args_term = term if args is None else tode.ODETerm(dynamics, with_args=True)
    adjoints = {
        "torchode AutoDiffAdjoint": (
            tode.AutoDiffAdjoint(tode.Dopri5(term=term), tode.IntegralController(atol=atol, rtol=rtol, term=term)),
            None,
        ),
        "torchode BacksolveAdjoint": (
            tode.BacksolveAdjoint(args_term, tode.Dopri5(term=args_term),
                                  tode.IntegralController(atol=atol, rtol=rtol, term=args_term),
                                  vmap_args_dims=None if args is None else 0),
            args,
        ),
    }
    if per_sample_times:
        out["torchode JointBacksolveAdjoint"] = (
            "not available: torchode's JointBacksolveAdjoint solves the batch as one state, so every sample "
            "must be observed at the same times (up to an affine map); these are each sample's own"
        )
    else:
        adjoints["torchode JointBacksolveAdjoint"] = (
            tode.JointBacksolveAdjoint(term, tode.Dopri5(term=None), tode.IntegralController(atol=atol, rtol=rtol)),
            None,
        )
    t_eval = t[..., 0].T.contiguous() if per_sample_times else t.unsqueeze(0).repeat(batch, 1)
    y0_flat = y0.flatten(1)

    for name, (adjoint, solve_args) in adjoints.items():

        def solve(collect, adjoint=adjoint, solve_args=solve_args):
            sol = adjoint.solve(tode.InitialValueProblem(y0=y0_flat, t_eval=t_eval), args=solve_args)
            if collect is not None:
                collect["torchode_solution"] = sol
            ys = sol.ys.transpose(0, 1)  # (batch, T, features) -> (T, batch, features)
            return _observed(ys.reshape(ys.shape[0], batch, *state_shape), collect, loss)

        out[name] = solve
    return out


def _observed(ys: Tensor, collect: Optional[dict], loss: Callable) -> Tensor:
    """The loss of a solution at the observations; while profiled (``collect`` given) also
    records the solution, for the per-sample errors and the cross-check."""
    if collect is not None:
        collect["ys"] = ys.detach()
    return loss(ys)


def _event_solved(out, collect: Optional[dict], loss: Callable) -> Tensor:
    """The loss of an ``odeint_event`` result ``(event_t, ys)``; while profiled (``collect``
    given) also records the event time."""
    if collect is not None:
        collect["event_t"] = float(out[0].detach())
    return loss(out)


def _plain(x):
    """JSON-friendly numbers from tensors."""
    if isinstance(x, Tensor):
        return x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, (int, float, str, bool)) or x is None:
        return x
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return repr(x)


def _stats_dict(stats) -> dict:
    """The fields of a ``neuralode.SolverStats`` (dataclass, plain object or pybind class)."""
    if getattr(stats, "__dict__", None):
        d = dict(vars(stats))
    elif dataclasses.is_dataclass(stats):
        d = dataclasses.asdict(stats)
    else:
        d = {}
        for k in dir(stats):
            if k.startswith("_"):
                continue
            v = getattr(stats, k)
            if not callable(v):
                d[k] = v
    return {k: _plain(v) for k, v in d.items()}


def _profile_once(name: str, solve: Solve, problem: Problem, libs) -> dict:
    """One untimed forward + backward with counters: NFE and steps of each pass, the
    library's own statistics, the loss and the first parameter's gradient."""
    func = problem.func
    nlo = libs["neuralode"]
    collect: dict = {}
    library_stats = None
    if name.startswith("neuralode"):
        if hasattr(nlo, "SolverStats"):
            collect["use_stats"] = True
        else:
            library_stats = "not available: neuralode has no SolverStats"

    event_fn = problem.event_fn
    # Each sample's accepted steps of neuralode's per-sample mode, from its step callback:
    # set on the dynamics for this untimed solve only.
    row_steps = RowSteps() if name.startswith("neuralode per-sample") else None

    def forward(collect):
        func.zero_grad(set_to_none=True)
        func.reset_counters()
        if event_fn is not None:
            event_fn.calls = 0
        if row_steps is not None:
            row_steps.reset()
            func.callback_step = row_steps
        try:
            return solve(collect)
        finally:
            if row_steps is not None:
                del func.callback_step

    try:
        loss = forward(collect)
    except TypeError as err:
        if not collect.get("use_stats") or "stats" not in str(err):
            raise
        library_stats = _not_available(err) + " (the solve was repeated without stats=)"
        collect = {}
        loss = forward(collect)
    nfe_forward = func.nfe
    steps_forward = dict(func.steps)
    event_calls_forward = event_fn.calls if event_fn is not None else None
    loss.backward()
    nfe_backward = func.nfe - nfe_forward
    steps_all = dict(func.steps)

    result = {
        "nfe_forward": nfe_forward,
        "nfe_backward": nfe_backward,
        "loss": float(loss.detach()),
        "steps_forward": None,
        "steps_backward": None,
    }
    if event_fn is not None:
        result["event_t"] = collect.get("event_t")
        result["event_fn_evals"] = {"forward": event_calls_forward, "backward": event_fn.calls - event_calls_forward}
    if name.startswith("torchdiffeq"):
        result["steps_forward"] = {"accepted": steps_forward["accepted"], "rejected": steps_forward["rejected"]}
        if name.endswith("adjoint"):
            result["steps_backward"] = {
                "accepted": steps_all["accepted_adjoint"],
                "rejected": steps_all["rejected_adjoint"],
            }
    if "neuralode_stats" in collect:
        library_stats = _stats_dict(collect["neuralode_stats"])
        acc, rej = library_stats.get("steps_accepted"), library_stats.get("steps_rejected")
        if acc is not None:
            result["steps_forward"] = {"accepted": acc, "rejected": rej}

        def backward_field(word):
            keys = [k for k in library_stats if word in k and ("backward" in k or "adjoint" in k)]
            return library_stats[keys[0]] if keys else None

        if backward_field("accepted") is not None:
            result["steps_backward"] = {"accepted": backward_field("accepted"), "rejected": backward_field("rejected")}
    if "torchode_solution" in collect:
        sol = collect["torchode_solution"]
        n_steps, n_acc = sol.stats["n_steps"], sol.stats["n_accepted"]
        library_stats = {
            "status_all_success": bool((sol.status == 0).all()),
            "n_f_evals": _plain(sol.stats["n_f_evals"].max()),
            "n_f_evals_mean": float(sol.stats["n_f_evals"].double().mean()),
            "n_steps_max": _plain(n_steps.max()),
            "n_steps_mean": float(n_steps.double().mean()),
            "n_accepted_min": _plain(n_acc.min()),
            "n_accepted_max": _plain(n_acc.max()),
            "n_accepted_mean": float(n_acc.double().mean()),
        }
        # Per-sample step sizes: the batched loop runs max(n_steps) iterations.
        result["steps_forward"] = {
            "iterations": library_stats["n_steps_max"],
            "accepted_per_sample_max": library_stats["n_accepted_max"],
        }
        # torchode's backsolves add the stats of their backward solves (one per observation
        # interval) to the forward's stats during backward.
        backsolves = sol.stats.get("backsolve")
        if backsolves:
            iterations = sum(int(b["n_steps"].max()) for b in backsolves)
            library_stats["backsolve_solves"] = len(backsolves)
            library_stats["backsolve_iterations"] = iterations
            result["steps_backward"] = {"iterations": iterations}
    result["library_stats"] = library_stats
    if problem.per_sample:
        result["per_sample"] = _per_sample_counts(result, collect, row_steps)
        if "ys" in collect and problem.tight and "ys" in problem.tight:
            result["accuracy"] = _accuracy(collect["ys"], func, problem)
    result["_ys"] = collect.get("ys")
    first = next(func.parameters())
    result["_grad"] = None if first.grad is None else first.grad.detach().clone()
    return result


def _per_sample_counts(result: dict, collect: dict, row_steps: Optional[RowSteps]) -> dict:
    """A per-sample problem's counts per sample of one candidate's forward solve: f
    evaluations (every library evaluates every row at each call: torchode's ``n_f_evals``,
    otherwise the batched calls), accepted steps (max and mean over the samples; one step
    size for the batch: the batch's) and the iterations of the batched loop."""
    nfe = result["nfe_forward"]
    out = {"f_evals_max": nfe, "f_evals_mean": float(nfe), "accepted_max": None, "accepted_mean": None,
           "iterations": None}
    if "torchode_solution" in collect:
        stats = result["library_stats"]
        out.update(f_evals_max=stats["n_f_evals"], f_evals_mean=stats["n_f_evals_mean"],
                   accepted_max=stats["n_accepted_max"], accepted_mean=stats["n_accepted_mean"],
                   iterations=stats["n_steps_max"])
        return out
    steps = result.get("steps_forward")
    if steps and "accepted" in steps:
        out["iterations"] = steps["accepted"] + (steps.get("rejected") or 0)
        out["accepted_max"], out["accepted_mean"] = steps["accepted"], float(steps["accepted"])
    rows = row_steps.accepted() if row_steps is not None else None
    if rows is not None:
        out["accepted_max"], out["accepted_mean"] = int(rows.max()), float(rows.double().mean())
    return out


def _accuracy(ys: Tensor, func: nn.Module, problem: Problem) -> dict:
    """One candidate's errors against the problem's tight solve: each sample's largest
    error over its observations and state (the worst sample's, its index, and the
    median sample's); the largest over the samples of that error in units of the sample's
    tolerance ``atol + rtol max|y_b|`` (``y_b`` the sample's tight solution at its
    observations; a global error, so a few units are normal, but not orders of magnitude
    more than the other samples'); and the relative error of the first parameter's
    gradient, ``max |g - g_tight| / max |g_tight|``."""
    tight = problem.tight
    ref = tight["ys"]
    batch = ref.shape[1]
    err = (ys.to(ref.dtype) - ref).abs().transpose(0, 1).reshape(batch, -1)
    per_sample = err.amax(1)
    size = ref.abs().transpose(0, 1).reshape(batch, -1).amax(1)
    units = per_sample / (problem.solver["atol"] + problem.solver["rtol"] * size)
    worst = int(per_sample.argmax())
    out = {
        "worst_sample": worst,
        "worst_sample_max_abs_err": float(per_sample[worst]),
        "median_sample_max_abs_err": float(per_sample.median()),
        "max_err_over_tolerance": float(units.max()),
        "max_err_over_tolerance_sample": int(units.argmax()),
        "grad_rel_err": None,
    }
    grad = next(func.parameters()).grad
    if grad is not None:
        g_ref = tight["grad"]
        out["grad_rel_err"] = float((grad.to(g_ref.dtype) - g_ref).abs().max() / g_ref.abs().max())
    return out


def _steps_text(r: dict) -> str:
    def fmt(s):
        if s is None:
            return "-"
        if "iterations" in s:
            return f"{s['iterations']} it."
        if s.get("rejected") is None:
            return f"{s['accepted']}"
        return f"{s['accepted']}+{s['rejected']}r"

    return f"{fmt(r.get('steps_forward'))} / {fmt(r.get('steps_backward'))}"


# --------------------------------------------------------------------------- run


def run_problem(problem_name: str, repeats: int, device: str, out_dir: str, libs, command: str) -> dict:
    """Times every candidate on one problem, cross-checks losses and gradients, writes the problem's JSON."""
    problem = build_problem(problem_name, device, libs)
    solves = make_candidates(problem, libs)
    func = problem.func

    results: Dict[str, dict] = {}
    timed: Dict[str, Callable[[], None]] = {}
    for name in problem.candidates:
        solve = solves[name]
        if isinstance(solve, str):
            results[name] = {"available": False, "error": solve}
            continue
        try:
            profile = _profile_once(name, solve, problem, libs)
        except Exception as err:
            results[name] = {"available": False, "error": _not_available(err)}
            continue
        results[name] = {"available": True, "error": None, **profile}

        def step(solve=solve):
            func.zero_grad(set_to_none=True)
            solve(None).backward()

        timed[name] = step

    times = interleaved(timed, repeats=repeats, warmup=WARMUP, device=device) if timed else {}
    for name, secs in times.items():
        results[name]["median_seconds"] = median(secs)
        results[name]["all_seconds"] = secs

    # Correctness cross-check against torchdiffeq's backprop (or the first available).
    ref_name = REFERENCE if results.get(REFERENCE, {}).get("available") else next(
        (n for n in problem.candidates if results[n].get("available")), None
    )
    if ref_name is not None:
        ref = results[ref_name]
        for name, r in results.items():
            if not r.get("available"):
                continue
            r["loss_rel_diff"] = abs(r["loss"] - ref["loss"]) / abs(ref["loss"]) if ref["loss"] else None
            g, g_ref = r["_grad"], ref["_grad"]
            if g is None or g_ref is None:
                r["grad_max_rel_diff"] = None
            else:
                r["grad_max_rel_diff"] = float((g - g_ref).abs().max() / g_ref.abs().max())
            if problem.event_fn is not None:
                r["event_t_abs_diff"] = abs(r["event_t"] - ref["event_t"])
            if r.get("_ys") is not None and ref.get("_ys") is not None:
                r["solution_max_abs_diff"] = float((r["_ys"] - ref["_ys"]).abs().max())
    for r in results.values():
        r.pop("_grad", None)
        r.pop("_ys", None)

    ratios = {}
    for label, peer, mode in problem.ratios:
        missing = [n for n in (peer, mode) if "median_seconds" not in results[n]]
        if missing:
            ratios[label] = f"not available: {', '.join(missing)} not available"
        else:
            ratios[label] = results[peer]["median_seconds"] / results[mode]["median_seconds"]

    if problem.per_sample:
        notes = (
            "neuralode per-sample: options per_sample=True, each sample its own step size, RMS error norm "
            "over its row, accept/reject; neuralode shared: one step size for the batch, RMS error norm over "
            "the batch (per-sample times: in a normalized time that restarts at every observation); "
            "torchdiffeq: one step size for the batch (per-sample times: on the union of all samples' "
            "times); torchode: per-sample step sizes and error norms (IntegralController), not compiled; "
            "BacksolveAdjoint: per-sample backward solves, one per observation interval, per-sample VJPs by "
            "torch.func.vmap; JointBacksolveAdjoint: the batch as one state; NFE: batched calls of f; "
            "neuralode: timed without stats="
        )
    elif problem.fixed_step:
        notes = (
            "fixed steps: neuralode and the reference split every observation interval into equal "
            "steps of at most `step` (options max_step); torchdiffeq steps on a uniform grid of "
            "`step` (options step_size; the observation times lie on it); torchode Euler with "
            "FixedStepController and dt0 = step; neuralode: timed without stats="
        )
    else:
        notes = (
            "torchdiffeq: one step size for the whole batch, RMS error norm over the batch "
            "(adjoint: default adjoint options, same tolerances); torchode: per-sample step sizes and "
            "error norms (IntegralController), not compiled; neuralode: timed without stats="
        )
    result = {
        "benchmark": "speed",
        "suite": "speed",
        "problem": problem.description,
        "solver": {**problem.solver, "dtype": _dtype_name(problem.dtype), "notes": notes},
        "timed": "zero_grad + solve + loss + backward, interleaved, median over repeats after warm-up",
        "repeats": repeats,
        "warmup": WARMUP,
        "libraries": {name: _version(lib) for name, lib in libs.items()},
        "candidates": results,
        "ratios_peer_over_neuralode": ratios,
        "cross_check": {
            "reference": ref_name,
            "gradient_parameter": "first parameter ({}, {})".format(
                next(n for n, _ in func.named_parameters()), "x".join(str(d) for d in next(func.parameters()).shape)
            ),
            "grad_max_rel_diff": "max |g - g_ref| / max |g_ref|",
            "loss_rel_diff": "|loss - loss_ref| / |loss_ref|",
            **({"event_t_abs_diff": "|event_t - event_t_ref|"} if problem.event_fn is not None else {}),
            **({"solution_max_abs_diff": "max |ys - ys_ref| over observations, samples and state"}
               if problem.per_sample else {}),
        },
        "machine": machine_info(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }
    if problem.tight is not None:
        result["tight_reference"] = {k: v for k, v in problem.tight.items() if k not in ("ys", "grad")}
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"speed_{problem_name}_{device.split(':')[0]}.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=2)
    print_table(result, os.path.relpath(path))
    return result


def _event_lines(result: dict) -> List[str]:
    """Markdown lines of an event problem's second table (each candidate's event time, its
    difference to the cross-check's reference, the event function's evaluations in the
    forward / backward pass), after an empty line; none for the other problems."""
    candidates = result["candidates"]
    if not any(r.get("event_t") is not None for r in candidates.values()):
        return []
    ref = result.get("cross_check", {}).get("reference")
    lines = [
        "",
        f"| candidate | event_t | event_t diff. to {ref} | event_fn evaluations fwd / bwd |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, r in candidates.items():
        if not r.get("available") or r.get("event_t") is None:
            continue
        diff, evals = r.get("event_t_abs_diff"), r["event_fn_evals"]
        lines.append(
            f"| {name} | {r['event_t']:.7f} | {'-' if diff is None else f'{diff:.1e}'} | "
            f"{evals['forward']} / {evals['backward']} |"
        )
    return lines


def _sci(x) -> str:
    return "-" if x is None else f"{x:.1e}"


def _max_mean(mx, mean) -> str:
    if mx is None:
        return "-"
    return f"{mx} / {mean:.4g}"


def _per_sample_lines(result: dict) -> List[str]:
    """Markdown lines of a per-sample problem's second table (per candidate: f evaluations
    and accepted steps per sample, max / mean over the samples, the batched loop's
    iterations, and the errors against the tight solve), after an empty line; none for
    the other problems."""
    candidates = result["candidates"]
    if not any(r.get("per_sample") for r in candidates.values()):
        return []
    tight = result.get("tight_reference") or {}
    param = result.get("cross_check", {}).get("gradient_parameter", "the first parameter")
    if "solver" in tight:
        against = f"against a tight solve ({tight['solver']})"
    else:
        against = f"no tight solve ({tight.get('error', 'not computed')})"
    lines = [
        "",
        f"Per sample (forward solve), and errors {against}; tolerance units: each sample's max |error| / "
        f"(atol + rtol max |y_b|), the largest over the samples; gradient: {param}.",
        "",
        "| candidate | f evals per sample max / mean | accepted steps per sample max / mean | loop iterations "
        "| worst sample: max abs error (sample) | median sample: max abs error | max error in tolerance units "
        "(sample) | grad rel. error |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in candidates.items():
        counts = r.get("per_sample")
        if not r.get("available") or not counts:
            continue
        acc = r.get("accuracy") or {}
        worst = (f"{acc['worst_sample_max_abs_err']:.1e} ({acc['worst_sample']})"
                 if acc.get("worst_sample_max_abs_err") is not None else "-")
        units = (f"{acc['max_err_over_tolerance']:.3g} ({acc['max_err_over_tolerance_sample']})"
                 if acc.get("max_err_over_tolerance") is not None else "-")
        lines.append(
            f"| {name} | {_max_mean(counts['f_evals_max'], counts['f_evals_mean'])} | "
            f"{_max_mean(counts['accepted_max'], counts['accepted_mean'])} | "
            f"{'-' if counts['iterations'] is None else counts['iterations']} | {worst} | "
            f"{_sci(acc.get('median_sample_max_abs_err'))} | {units} | "
            f"{_sci(acc.get('grad_rel_err'))} |"
        )
    return lines


def print_table(result: dict, path: str) -> None:
    """Prints one problem's result as markdown tables."""
    m = result["machine"]
    print(f"\n### {result['problem']['name']}: {result['problem']['summary']}\n")
    print(
        f"{solver_text(result['solver'])}, {result['solver'].get('dtype', 'float32')}, {m['device']}, "
        f"{m['threads']} threads, "
        f"torch {m['torch']}, median of {result['repeats']} after {result['warmup']} warm-up; "
        + ", ".join(f"{k} {v}" for k, v in result["libraries"].items())
        + "\n"
    )
    print("| candidate | median ms | NFE fwd / bwd | steps fwd / bwd | loss | grad rel. diff |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in result["candidates"].items():
        if not r.get("available"):
            print(f"| {name} | {r['error']} | | | | |")
            continue
        ms = f"{r['median_seconds'] * 1e3:.2f}" if "median_seconds" in r else "-"
        gd = r.get("grad_max_rel_diff")
        print(
            f"| {name} | {ms} | {r['nfe_forward']} / {r['nfe_backward']} | {_steps_text(r)} | "
            f"{r['loss']:.6g} | {'-' if gd is None else f'{gd:.1e}'} |"
        )
    for line in _event_lines(result) + _per_sample_lines(result):
        print(line)
    print("\n| speed ratio (peer / neuralode, > 1: neuralode faster) | value |")
    print("| --- | ---: |")
    for label, v in result["ratios_peer_over_neuralode"].items():
        print(f"| {label} | {v if isinstance(v, str) else f'{v:.2f}x'} |")
    for name, r in result["candidates"].items():
        if name.startswith("neuralode") and r.get("available"):
            print(f"\n{name} statistics: {r['library_stats']}")
    print(f"\ngradient reference: {result['cross_check']['reference']}; written {path}")


# --------------------------------------------------------------------------- suite interface


def run(
    quick: bool = False,
    device: str = "cpu",
    out_dir: str = RESULTS_DIR,
    tiny: bool = False,
    problems=None,
    repeats: Optional[int] = None,
    **kw,
) -> dict:
    """The suite interface of ``python -m benchmarks``: the same measurement as the CLI.

    Every problem of ``PROBLEMS`` with ``DEFAULT_REPEATS`` repeats (``quick``: ``QUICK_REPEATS``;
    ``tiny``: only ``TINY_PROBLEMS``, a small P1, a small spiral, a small CNF, a small event
    problem, a small irregular problem and a small Van der Pol problem, ``TINY_REPEATS``
    repeat, for smoke tests). Writes
    ``speed_<problem>_<device>.json`` per problem to ``out_dir`` and returns
    ``{"suite": "speed", "machine", "date", "command", "problems": {name: result}}``.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda: torch sees no CUDA device")
    if repeats is None:
        repeats = TINY_REPEATS if tiny else QUICK_REPEATS if quick else DEFAULT_REPEATS
    if problems is None:
        problems = TINY_PROBLEMS if tiny else PROBLEMS
    problems = tuple(problems)
    if tiny:
        command = f"python -c 'from benchmarks import speed; speed.run(tiny=True, device=\"{device}\")'"
    else:
        which = "all" if problems == PROBLEMS else ",".join(problems)
        command = f"python -m benchmarks.speed --problem {which} --repeats {repeats} --device {device}"
    libs = _import_libraries()
    # tiny: one thread (tiny ops on a loaded machine are far slower with more), restored after.
    threads = torch.get_num_threads()
    if tiny:
        torch.set_num_threads(1)
    try:
        results = {p: run_problem(p, repeats, device, out_dir, libs, command) for p in problems}
    finally:
        torch.set_num_threads(threads)
    return {
        "suite": "speed",
        "machine": machine_info(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "problems": results,
    }


def _problem_markdown(result: dict) -> str:
    m, prob = result["machine"], result["problem"]
    dtype = result["solver"].get("dtype", "float32")
    solver = solver_text(result["solver"]) + ("" if dtype == "float32" else f", {dtype}")
    lines = [f"**{prob['name']}** ({solver}): {prob['summary']}.", ""]
    libs = ", ".join(f"{k} {v}" for k, v in result.get("libraries", {}).items())
    lines.append(
        f"{m['device']}"
        + (f" ({m['gpu']})" if m.get("gpu") else "")
        + f", {m['threads']} threads, torch {m['torch']}, median of {result['repeats']} after "
        f"{result['warmup']} warm-up, {result['date'][:10]}; {libs}."
    )
    lines += [
        "",
        "| candidate | median ms | NFE fwd / bwd | steps fwd / bwd | loss | grad rel. diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in result["candidates"].items():
        if not r.get("available"):
            lines.append(f"| {name} | {r['error']} | | | | |")
            continue
        ms = f"{r['median_seconds'] * 1e3:.2f}" if "median_seconds" in r else "-"
        gd = r.get("grad_max_rel_diff")
        lines.append(
            f"| {name} | {ms} | {r['nfe_forward']} / {r['nfe_backward']} | {_steps_text(r)} | "
            f"{r['loss']:.6g} | {'-' if gd is None else f'{gd:.1e}'} |"
        )
    lines += _event_lines(result)
    lines += _per_sample_lines(result)
    lines += ["", "| speed ratio (peer / neuralode, > 1: neuralode faster) | value |", "| --- | ---: |"]
    for label, v in result["ratios_peer_over_neuralode"].items():
        lines.append(f"| {label} | {fmt_ratio(v)} |")
    where = f" JSON: `{result['_path']}`." if result.get("_path") else ""
    lines += ["", f"Command: `{result['command']}`.{where}"]
    return "\n".join(lines)


def markdown_many(results: List[dict]) -> str:
    """Markdown of several per-problem results (one JSON file each)."""
    order = {name: i for i, name in enumerate(PROBLEMS)}
    results = sorted(results, key=lambda r: (order.get(r["problem"]["name"], len(order)), r["problem"]["name"], r["machine"]["device"]))
    if not results:
        return ""
    ref = results[0].get("cross_check", {}).get("reference", REFERENCE)
    intro = (
        "float32 (unless a problem names another dtype), the same solver and the same seeded model for "
        f"every candidate (adaptive problems: {METHOD}, rtol {RTOL:g}, atol {ATOL:g} unless a problem names "
        f"others; fixed-step problems: the paper tutorial's {FIXED_METHOD}, "
        f"step {FIXED_STEP:g}, which `neuralode.reference` also runs), "
        "one forward + backward (`zero_grad`, solve, loss, `backward`), candidates timed in turn, "
        "repeat by repeat, in one process (medians). NFE: evaluations of f in the forward / backward "
        "pass (batched calls); steps `5+0r`: accepted + rejected (torchode: iterations of its batched loop, "
        "per-sample steps; neuralode per-sample: iterations of its batched loop in which some sample "
        f"accepted + in which none did). `grad rel. diff`: largest difference of the first weight's gradient "
        f"to {ref}, relative to its largest entry. A peer that is not installed is reported as not available."
    )
    return "\n\n".join([intro] + [_problem_markdown(r) for r in results])


def markdown(result: dict) -> str:
    """Markdown of ``run``'s result, or of one ``speed_<problem>_<device>.json``."""
    if "problems" in result:
        return markdown_many(list(result["problems"].values()))
    return markdown_many([result])


def main(argv=None):
    """The command line of the speed suite (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="all", choices=PROBLEMS + ("all",))
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPEATS} repeats (same problem sizes)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    repeats = QUICK_REPEATS if args.quick else args.repeats
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    command = "python -m benchmarks.speed " + " ".join(
        [f"--problem {args.problem}", f"--repeats {repeats}", f"--device {args.device}"]
    )
    libs = _import_libraries()
    problems = PROBLEMS if args.problem == "all" else (args.problem,)
    return {p: run_problem(p, repeats, args.device, args.out, libs, command) for p in problems}


if __name__ == "__main__":
    main(sys.argv[1:])
