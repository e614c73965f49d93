"""Recover linear spiral dynamics from one noisy trajectory (the paper's first experiment).

The true dynamics is ``dz/dt = z W^T`` with ``W = [[-0.1, -1], [1, -0.1]]``, a decaying
spiral, observed from ``z0 = (0.6, 0.3)`` at 200 times in ``[0, 6.29 * 5]`` with noise
of std 0.01. The model is a linear dynamics ``dz/dt = z M^T`` starting from a random
``M ~ N(0, 1/4)``, trained with ``odeint_adjoint`` (RK4, steps of at most 0.2) on
random sub-trajectories with per-sample times; the result is the learned ``M`` and its
largest entry-wise error to ``W``. Writes ``spiral_linear.png`` (phase plane,
coordinates, loss), ``spiral_linear_snapshots.png`` (the model's trajectory at
iterations through training) and ``spiral_linear.json``.

Run: ``python -m neuralode.experiments spiral-linear [--quick] [--iters N] [--out DIR]``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from neuralode.dynamics import LinearODEF, SpiralFunctionExample

from . import common
from .spiral_fit import fit, make_trajectory, plot_fit, plot_snapshots, trajectory, trajectory_error

NAME = "spiral-linear"
TRUE_W = [[-0.1, -1.0], [1.0, -0.1]]
Z0 = (0.6, 0.3)
T_MAX = 6.29 * 5
N_POINTS = 200
NOISE = 0.01
#: The training solve: classic RK4, every interval cut into steps of at most 0.2.
SOLVER = {"method": "rk4", "options": {"max_step": 0.2}}
ITERS = 600
QUICK_ITERS = 400


def make_data(seed: int = 0):
    """``(times, true, obs)``: the true spiral from ``Z0`` and its noisy observations."""
    return make_trajectory(SpiralFunctionExample(), Z0, T_MAX, N_POINTS, NOISE, seed)


def main(argv=None) -> dict:
    parser = common.experiment_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=None, help=f"training iterations (default {ITERS}, quick {QUICK_ITERS})")
    parser.add_argument("--batch", type=int, default=16, help="sub-trajectories per iteration")
    parser.add_argument("--points", type=int, default=10, help="observations per sub-trajectory")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--snapshots", type=int, default=8, help="snapshots of the trajectory through training")
    # One thread: the ops of a 2-D problem are tiny, and with two threads on a busy
    # 2-core machine every one of them waits for a descheduled peer (5x slower measured).
    parser.set_defaults(threads=1)
    args = parser.parse_args(argv)
    iters = args.iters if args.iters is not None else (QUICK_ITERS if args.quick else ITERS)
    for value, flag in ((iters, "--iters"), (args.batch, "--batch"), (args.snapshots, "--snapshots")):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if args.points < 2:
        parser.error(f"--points must be at least 2, got {args.points}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    device, out_dir = common.setup(args, NAME)
    if device.type != "cpu":
        # A 2x2 linear map: every step is a few tiny kernels, far faster on the host.
        print(f"note: {NAME} runs on the CPU (a 2x2 problem gains nothing from {device})")

    times, true, obs = make_data(args.seed)
    func = LinearODEF(torch.randn(2, 2) / 2.0)
    w_start = func.lin.weight.detach().clone()
    result = fit(
        func, times, obs, iters=iters, batch=args.batch, points=args.points, lr=args.lr, solver=SOLVER,
        seed=args.seed, n_snapshots=args.snapshots, desc=NAME, disable_progress=args.no_progress,
    )
    w = func.lin.weight.detach()
    error = (w - torch.tensor(TRUE_W)).abs().max().item()
    learned = trajectory(func, true[0], times)

    png = plot_fit(times, true, obs, {"learned": learned},
                   os.path.join(out_dir, "spiral_linear.png"), result.losses)
    strip = plot_snapshots(times, true, obs, result.snapshots, os.path.join(out_dir, "spiral_linear_snapshots.png"),
                           "Learning the linear spiral: the model's trajectory from z0 during training")
    summary = {
        "experiment": NAME,
        "first_loss": result.losses[0],
        "last_losses_mean": float(np.mean(result.losses[-20:])),
        "true_matrix": TRUE_W,
        "start_matrix": w_start.tolist(),
        "learned_matrix": w.tolist(),
        "max_abs_error": error,
        "trajectory_error": trajectory_error(learned, true),
        "iterations": iters,
        "seconds": result.seconds,
        "nfe_forward_per_iteration": result.nfe_forward,
        "nfe_backward_per_iteration": result.nfe_backward,
        "snapshot_iterations": [it for it, _ in result.snapshots],
        "solver": SOLVER,
        "losses": result.losses,
        "run": common.run_info(device, argv),
    }
    path = common.write_json(os.path.join(out_dir, "spiral_linear.json"), summary)

    np.set_printoptions(precision=4, suppress=True)
    print(f"start matrix:\n{w_start.numpy()}\nlearned matrix:\n{w.numpy()}\ntrue matrix:\n{np.array(TRUE_W)}")
    common.print_summary(
        f"{NAME}: learned matrix max-abs error {error:.4f}",
        {
            "iterations": iters,
            "training seconds": result.seconds,
            "first / last loss": f"{result.losses[0]:.3e} / {summary['last_losses_mean']:.3e}",
            "trajectory max-abs error": summary["trajectory_error"]["max_abs"],
            "NFE per iteration, forward / backward": f"{result.nfe_forward:.0f} / {result.nfe_backward:.0f}",
        },
        files=(png, strip, path),
    )
    return summary


if __name__ == "__main__":
    main()
