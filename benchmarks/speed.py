"""Speed of neuralode against torchdiffeq 0.2.5, torchode 1.0.1 and the paper's reference, side by side.

Every candidate solves the same problem with the same solver (float32, the same thread
count) and the same initial weights (one seeded module used by all), and we time one
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
PyTorch; fixed-step Euler problems only). A candidate that is not importable, does
not apply or raises is reported as "not available: <reason>" and the others still run.

Run::

    python -m benchmarks.speed [--problem P1|P2|MNIST|spiral|CNF|event|all] [--repeats N] [--quick]
                               [--device cpu|cuda] [--out DIR]

It prints a markdown table per problem and writes ``DIR/speed_<problem>_<device>.json``
(default ``DIR``: ``benchmarks/results``) with every time, NFE, step count, the
library statistics, and a correctness cross-check (each candidate's loss, and the
largest difference of the first parameter's gradient to torchdiffeq's backprop,
relative to the largest entry of the latter; the event problem also each candidate's
event time, its difference to torchdiffeq's backprop, and the evaluations of the event
function in each pass).
"""

from __future__ import annotations

import argparse
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
TINY_REPEATS = 1
#: Every problem, in the order ``--problem all`` runs them.
PROBLEMS = ("P1", "P2", "MNIST", "spiral", "CNF", "event")
#: The event problem's radius: the event is where the state leaves the disc of this
#: radius around its start.
EVENT_RADIUS = 2.0

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

#: (label, peer, neuralode mode): reported as time(peer) / time(neuralode mode).
RATIOS = (
    ("torchdiffeq odeint_adjoint / neuralode adjoint", "torchdiffeq adjoint", "neuralode adjoint"),
    ("torchdiffeq odeint / neuralode backprop", "torchdiffeq backprop", "neuralode backprop"),
    ("torchode AutoDiffAdjoint / neuralode backprop", "torchode AutoDiffAdjoint", "neuralode backprop"),
    ("torchdiffeq odeint / neuralode checkpoint", "torchdiffeq backprop", "neuralode checkpoint"),
    ("torchode AutoDiffAdjoint / neuralode checkpoint", "torchode AutoDiffAdjoint", "neuralode checkpoint"),
    ("reference adjoint / neuralode adjoint", "reference adjoint", "neuralode adjoint"),
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

    @property
    def fixed_step(self) -> bool:
        return "step" in self.solver


def solver_text(solver: dict) -> str:
    """The solver of a problem in words, e.g. ``dopri5, rtol 1e-05, atol 1e-06``."""
    if "step" in solver:
        return f"{solver['method']}, fixed step {solver['step']:g}"
    return f"{solver['method']}, rtol {solver['rtol']:g}, atol {solver['atol']:g}"


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

    raise ValueError(f"unknown problem {name!r}")


# --------------------------------------------------------------------------- candidates

#: A solve: given a dict to collect library statistics into (or None while timed),
#: returns the loss. ``None``: the candidate is not available (see ``errors``).
Solve = Callable[[Optional[dict]], Tensor]


def make_candidates(problem: Problem, libs) -> Dict[str, object]:
    """name -> solve function, or "not available: ..." (a string)."""
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
            controller = tode.IntegralController(atol=ATOL, rtol=RTOL, term=term)
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

    def forward(collect):
        func.zero_grad(set_to_none=True)
        func.reset_counters()
        if event_fn is not None:
            event_fn.calls = 0
        return solve(collect)

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
    result["library_stats"] = library_stats
    first = next(func.parameters())
    result["_grad"] = None if first.grad is None else first.grad.detach().clone()
    return result


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
    for name in CANDIDATES:
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
        (n for n in CANDIDATES if results[n].get("available")), None
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
    for r in results.values():
        r.pop("_grad", None)

    ratios = {}
    for label, peer, mode in RATIOS:
        missing = [n for n in (peer, mode) if "median_seconds" not in results[n]]
        if missing:
            ratios[label] = f"not available: {', '.join(missing)} not available"
        else:
            ratios[label] = results[peer]["median_seconds"] / results[mode]["median_seconds"]

    result = {
        "benchmark": "speed",
        "suite": "speed",
        "problem": problem.description,
        "solver": {
            **problem.solver,
            "dtype": "float32",
            "notes": (
                "fixed steps: neuralode and the reference split every observation interval into equal "
                "steps of at most `step` (options max_step); torchdiffeq steps on a uniform grid of "
                "`step` (options step_size; the observation times lie on it); torchode Euler with "
                "FixedStepController and dt0 = step; neuralode: timed without stats="
                if problem.fixed_step
                else "torchdiffeq: one step size for the whole batch, RMS error norm over the batch "
                "(adjoint: default adjoint options, same tolerances); torchode: per-sample step sizes and "
                "error norms (IntegralController), not compiled; neuralode: timed without stats="
            ),
        },
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
        },
        "machine": machine_info(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }
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


def print_table(result: dict, path: str) -> None:
    """Prints one problem's result as markdown tables."""
    m = result["machine"]
    print(f"\n### {result['problem']['name']}: {result['problem']['summary']}\n")
    print(
        f"{solver_text(result['solver'])}, float32, {m['device']}, {m['threads']} threads, "
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
    for line in _event_lines(result):
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
    ``tiny``: only ``TINY_PROBLEM``, ``TINY_FIXED_PROBLEM``, ``TINY_CNF_PROBLEM`` and
    ``TINY_EVENT_PROBLEM``, a small P1, a small spiral, a small CNF and a small event
    problem, ``TINY_REPEATS`` repeat, for smoke tests). Writes
    ``speed_<problem>_<device>.json`` per problem to ``out_dir`` and returns
    ``{"suite": "speed", "machine", "date", "command", "problems": {name: result}}``.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda: torch sees no CUDA device")
    if repeats is None:
        repeats = TINY_REPEATS if tiny else QUICK_REPEATS if quick else DEFAULT_REPEATS
    if problems is None:
        problems = (TINY_PROBLEM, TINY_FIXED_PROBLEM, TINY_CNF_PROBLEM, TINY_EVENT_PROBLEM) if tiny else PROBLEMS
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
    lines = [f"**{prob['name']}** ({solver_text(result['solver'])}): {prob['summary']}.", ""]
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
        "float32, the same solver and the same seeded model for every candidate (adaptive problems: "
        f"{METHOD}, rtol {RTOL:g}, atol {ATOL:g}; fixed-step problems: the paper tutorial's {FIXED_METHOD}, "
        f"step {FIXED_STEP:g}, which `neuralode.reference` also runs), "
        "one forward + backward (`zero_grad`, solve, loss, `backward`), candidates timed in turn, "
        "repeat by repeat, in one process (medians). NFE: evaluations of f in the forward / backward "
        "pass; steps `5+0r`: accepted + rejected (torchode: iterations of its batched loop, per-sample "
        f"steps). `grad rel. diff`: largest difference of the first weight's gradient to {ref}, "
        "relative to its largest entry. A peer that is not installed is reported as not available."
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
