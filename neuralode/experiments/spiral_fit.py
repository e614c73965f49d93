"""Fitting a dynamics to one observed 2-D trajectory: what the two spiral experiments share.

The data is one trajectory ``z(t)`` of a true dynamics from ``z(0) = z0``, observed at
``n_points`` times with Gaussian noise. Training follows the paper tutorial: each
iteration draws ``batch`` random sub-trajectories (each ``points`` sorted observations
from a window of random length), solves the model from the first observation of each
at its own times (per-sample times ``(T, batch, 1)``), and minimises the mean squared
error to the observations with Adam. Snapshots of the model's whole trajectory from
``z0`` taken during training make the strip of pictures the paper shows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import neuralode

from . import common
from .common import progress, pyplot

#: A fine RK4 for the true trajectory and for the model's whole trajectory in plots.
FINE = {"method": "rk4_classic", "options": {"max_step": 0.01}}
#: The paper tutorial's data: one trajectory from Z0 observed at N_POINTS times in
#: [0, T_MAX] with noise of std NOISE.
Z0 = (0.6, 0.3)
T_MAX = 6.29 * 5
N_POINTS = 200
NOISE = 0.01
#: The training solve: classic RK4, every interval cut into steps of at most 0.2.
SOLVER = {"method": "rk4_classic", "options": {"max_step": 0.2}}


def make_trajectory(true_func, seed: int, z0=Z0, t_max: float = T_MAX, n_points: int = N_POINTS, noise: float = NOISE):
    """``(times (n,), true (n, 2), obs (n, 2))``: the true trajectory from ``z0`` at
    ``n_points`` equally spaced times in ``[0, t_max]``, and it plus N(0, noise^2) noise."""
    g = torch.Generator().manual_seed(seed)
    z0 = torch.as_tensor(z0, dtype=torch.float32).reshape(1, 2)
    times = torch.linspace(0.0, t_max, n_points)
    with torch.no_grad():
        true = neuralode.odeint(true_func, z0, times, **FINE)[:, 0]
    obs = true + noise * torch.randn(true.shape, generator=g)
    return times, true, obs


def sample_batch(times: Tensor, obs: Tensor, batch: int, points: int, rng, min_span: float = 2.0, max_span: float = 5.0):
    """``batch`` random sub-trajectories of ``points`` sorted observations each.

    Each starts at a uniform time in ``[0, t_max - max_span]`` and spans a uniform
    length in ``[min_span, max_span]``. Returns observations ``(points, batch, 2)`` and
    their times ``(points, batch, 1)``.
    """
    t_np = times.numpy()
    if t_np[-1] <= max_span:
        raise ValueError(f"the trajectory ({t_np[-1]:g} long) must be longer than max_span ({max_span:g})")
    idx = np.empty((points, batch), dtype=np.int64)
    for b in range(batch):
        t0 = rng.uniform(0, t_np[-1] - max_span)
        t1 = t0 + rng.uniform(min_span, max_span)
        window = np.nonzero((t_np >= t0) & (t_np <= t1))[0]
        if window.size < points:
            raise ValueError(
                f"points={points} observations do not fit in a window of {t1 - t0:.2f} time units "
                f"({window.size} observations); use fewer points or more n_points"
            )
        idx[:, b] = np.sort(rng.choice(window, size=points, replace=False))
    idx = torch.from_numpy(idx)
    return obs[idx], times[idx].unsqueeze(-1)


def fit_parser(name: str, description: str, iters: int, quick_iters: int):
    """The command line of a spiral experiment: the common options plus ``--iters``,
    ``--batch``, ``--points``, ``--lr`` and ``--snapshots``, one thread by default."""
    parser = common.experiment_parser(name, description)
    parser.add_argument("--iters", type=int, default=None, help=f"training iterations (default {iters}, quick {quick_iters})")
    parser.add_argument("--batch", type=int, default=16, help="sub-trajectories per iteration")
    parser.add_argument("--points", type=int, default=10, help="observations per sub-trajectory")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--snapshots", type=int, default=8, help="snapshots of the trajectory through training")
    # One thread: the ops of a 2-D problem are tiny, and with two threads on a busy
    # 2-core machine every one of them waits for a descheduled peer (5x slower measured).
    parser.set_defaults(threads=1)
    return parser


def parse_fit_args(parser, argv, name: str, iters: int, quick_iters: int, at_least_one=()):
    """Parses and checks the options (each bad one exits with a message naming it), sets
    up seed, threads and the output folder: ``(args, iters, out_dir, device)``.
    ``at_least_one``: further integer options (attribute names) that must be >= 1."""
    args = parser.parse_args(argv)
    n_iters = args.iters if args.iters is not None else (quick_iters if args.quick else iters)
    checks = [(n_iters, "iters"), (args.batch, "batch"), (args.snapshots, "snapshots")]
    checks += [(getattr(args, a), a) for a in at_least_one]
    for value, flag in checks:
        if value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.points < 2:
        parser.error(f"--points must be at least 2, got {args.points}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    device, out_dir = common.setup(args, name)
    if device.type != "cpu":
        # A batch of 2-D states: every step is a few tiny kernels, far faster on the host.
        print(f"note: {name} runs on the CPU (a batch of 2-D states gains nothing from {device})")
    return args, n_iters, out_dir, device


@dataclass
class FitResult:
    """What :func:`fit` returns: the loss per iteration, snapshots ``(iteration,
    trajectory (n, 2))`` of the model's whole trajectory from ``z0``, and seconds."""

    losses: List[float] = field(default_factory=list)
    snapshots: List[tuple] = field(default_factory=list)
    seconds: float = 0.0
    #: Evaluations of the dynamics per training iteration (means).
    nfe_forward: float = 0.0
    nfe_backward: float = 0.0

    @property
    def last_losses_mean(self) -> float:
        """Mean loss of the last 20 iterations (one iteration's loss is noisy)."""
        return float(np.mean(self.losses[-20:]))

    def summary_fields(self) -> dict:
        """The training figures every spiral experiment's JSON holds."""
        return {
            "first_loss": self.losses[0],
            "last_losses_mean": self.last_losses_mean,
            "iterations": len(self.losses),
            "seconds": self.seconds,
            "nfe_forward_per_iteration": self.nfe_forward,
            "nfe_backward_per_iteration": self.nfe_backward,
            "snapshot_iterations": [it for it, _ in self.snapshots],
            "losses": self.losses,
        }

    def summary_rows(self) -> dict:
        """The training lines of the printed summary."""
        return {
            "iterations": len(self.losses),
            "training seconds": self.seconds,
            "first / last loss": f"{self.losses[0]:.3e} / {self.last_losses_mean:.3e}",
            "NFE per iteration, forward / backward": f"{self.nfe_forward:.0f} / {self.nfe_backward:.0f}",
        }


@torch.no_grad()
def trajectory(func, z0: Tensor, times: Tensor) -> Tensor:
    """The model's trajectory ``(n, 2)`` from ``z0`` (shape (2,) or (1, 2)) at ``times``, fine RK4.

    The times are passed per sample, ``(n, 1, 1)``, as in training: a time-dependent
    dynamics then gets ``t`` of shape ``(1, 1)`` like it did there.
    """
    return neuralode.odeint(func, z0.reshape(1, 2), times.reshape(-1, 1, 1), **FINE)[:, 0]


def fit(
    func,
    times: Tensor,
    obs: Tensor,
    *,
    iters: int,
    batch: int,
    points: int,
    lr: float,
    solver: dict,
    seed: int,
    n_snapshots: int = 8,
    desc: str = "fitting",
    disable_progress: bool = False,
    on_iteration: Optional[Callable[[int, float], None]] = None,
) -> FitResult:
    """Adam on the MSE of sub-trajectories through ``neuralode.odeint_adjoint(**solver)``.

    ``n_snapshots`` snapshots are taken at iterations spaced evenly from 0 (before any
    update) to ``iters`` (the trained model).
    """
    if iters < 1:
        raise ValueError(f"iters must be at least 1, got {iters}")
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(func.parameters(), lr=lr)
    snap_at = sorted({round(i * iters / max(n_snapshots - 1, 1)) for i in range(n_snapshots)})
    result = FitResult()
    stats = neuralode.SolverStats()
    z0 = obs[0]
    start = time.perf_counter()
    bar = progress(range(iters + 1), desc=desc, disable=disable_progress)
    for it in bar:
        if it in snap_at:
            result.snapshots.append((it, trajectory(func, z0, times)))
        if it == iters:
            break
        obs_b, ts_b = sample_batch(times, obs, batch, points, rng)
        z = neuralode.odeint_adjoint(func, obs_b[0], ts_b, stats=stats, **solver)
        loss = F.mse_loss(z, obs_b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss became {value} at iteration {it}; lower --lr")
        result.losses.append(value)
        bar.set_postfix(loss=f"{value:.2e}")
        if on_iteration is not None:
            on_iteration(it, value)
    bar.close()
    result.seconds = time.perf_counter() - start
    result.nfe_forward, result.nfe_backward = stats.nfe_forward / iters, stats.nfe_backward / iters
    return result


def fit_from_args(func, times: Tensor, obs: Tensor, args, iters: int, solver: dict, name: str) -> FitResult:
    """:func:`fit` with the options of :func:`fit_parser`."""
    return fit(
        func, times, obs, iters=iters, batch=args.batch, points=args.points, lr=args.lr, solver=solver,
        seed=args.seed, n_snapshots=args.snapshots, desc=name, disable_progress=args.no_progress,
    )


def trajectory_error(learned: Tensor, true: Tensor) -> dict:
    """Errors of a learned trajectory against the true one at the same times:
    ``max_abs`` = max |learned - true|, ``rmse`` = sqrt(mean (learned - true)^2)."""
    diff = learned - true
    return {"max_abs": float(diff.abs().max()), "rmse": float(diff.pow(2).mean().sqrt())}


def plot_snapshots(times: Tensor, true: Tensor, obs: Tensor, snapshots, path: str, title: str) -> str:
    """The strip of snapshots: one phase-plane panel per snapshot (true trajectory,
    observations, the model's trajectory at that iteration), in a grid."""
    plt = pyplot()
    n = len(snapshots)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows), squeeze=False)
    lim = float(max(true.abs().max(), obs.abs().max())) * 1.15
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (it, traj) in zip(axes.flat, snapshots):
        ax.scatter(obs[:, 0], obs[:, 1], s=3, c="0.7")
        ax.plot(true[:, 0], true[:, 1], lw=1.5, label="true")
        traj = traj.clamp(-10 * lim, 10 * lim)  # an early, unstable model must not wreck the axes
        ax.plot(traj[:, 0], traj[:, 1], "--", lw=1.5, label="model")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=f"iteration {it}", xticks=[], yticks=[])
    axes.flat[0].legend(loc="lower left", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_fit(times: Tensor, true: Tensor, obs: Tensor, curves: dict, path: str, losses: List[float]) -> str:
    """Phase plane and the two coordinates over time for the true trajectory and each
    ``curves[label]`` trajectory, and the training loss."""
    plt = pyplot()
    times, true, obs = (np.asarray(x) for x in (times, true, obs))
    curves = {label: np.asarray(traj) for label, traj in curves.items()}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    axes[0].scatter(obs[:, 0], obs[:, 1], s=5, c="0.7", label="observations")
    axes[0].plot(true[:, 0], true[:, 1], lw=2, label="true")
    for label, traj in curves.items():
        axes[0].plot(traj[:, 0], traj[:, 1], "--", lw=1.5, label=label)
    axes[0].set(title="Phase plane", xlabel="z1", ylabel="z2")
    lim = float(np.abs(true).max()) * 1.3
    axes[0].set(xlim=(-lim, lim), ylim=(-lim, lim))
    axes[0].legend(fontsize=8)
    for k, name in enumerate(("z1", "z2")):
        axes[1].plot(times, true[:, k], lw=2, label=f"true {name}")
        for label, traj in curves.items():
            axes[1].plot(times, np.clip(traj[:, k], -lim, lim), "--", lw=1.2, label=f"{label} {name}")
    axes[1].set(title="Coordinates over time", xlabel="t")
    axes[1].legend(fontsize=7, ncol=2)
    axes[2].semilogy(np.arange(1, len(losses) + 1), losses, lw=0.8)
    axes[2].set(title="Training loss (MSE of sub-trajectories)", xlabel="iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
