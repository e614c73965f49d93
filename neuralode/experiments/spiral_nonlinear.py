"""Learn the paper's non-linear spiral dynamics with an MLP (the paper's second 2-D experiment).

The true dynamics is the tutorial's ``TestODEF``:

    dz/dt = sigmoid(z . x0) A (z - x0) + sigmoid(-z . x0) B (z + x0),
    A = [[-0.1, -1], [1, -0.1]],  B = [[-0.2, 1], [-1, -0.2]],  x0 = (-1, 0),

two linear spirals glued along the line ``z . x0 = 0``, observed from ``z0 = (0.6, 0.3)``
at 200 times in ``[0, 6.29 * 5]`` with noise of std 0.01. The model is ``NNODEF``, an MLP
``2 (+1 for t) -> hidden -> hidden -> 2`` with ELU, time-invariant unless
``--time-dependent``; it is trained with ``odeint_adjoint`` (RK4, steps of at most 0.2) on
random sub-trajectories with per-sample times. The result is the error of the model's
whole trajectory from ``z0`` against the true one. Writes ``spiral_nonlinear.png``
(trajectories before and after training, coordinates, loss),
``spiral_nonlinear_snapshots.png`` (through training) and ``spiral_nonlinear.json``.

Run: ``python -m neuralode.experiments spiral-nonlinear [--quick] [--iters N] [--time-dependent]``.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch

from neuralode.dynamics import NNODEF, TestODEF

from . import common
from .spiral_fit import fit, make_trajectory, plot_fit, plot_snapshots, trajectory, trajectory_error

NAME = "spiral-nonlinear"
A = [[-0.1, -1.0], [1.0, -0.1]]
B = [[-0.2, 1.0], [-1.0, -0.2]]
X0 = [-1.0, 0.0]
Z0 = (0.6, 0.3)
T_MAX = 6.29 * 5
N_POINTS = 200
NOISE = 0.01
SOLVER = {"method": "rk4", "options": {"max_step": 0.2}}
ITERS = 3000
QUICK_ITERS = 1000


def true_dynamics() -> TestODEF:
    """The tutorial's ``TestODEF(A, B, x0)``."""
    return TestODEF(torch.tensor(A), torch.tensor(B), torch.tensor(X0))


def make_data(seed: int = 0):
    """``(times, true, obs)``: the true trajectory from ``Z0`` and its noisy observations."""
    return make_trajectory(true_dynamics(), Z0, T_MAX, N_POINTS, NOISE, seed)


def main(argv=None) -> dict:
    parser = common.experiment_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=None, help=f"training iterations (default {ITERS}, quick {QUICK_ITERS})")
    parser.add_argument("--hidden", type=int, default=32, help="width of the MLP's two hidden layers")
    parser.add_argument("--time-dependent", action="store_true", help="feed t to the MLP as well")
    parser.add_argument("--batch", type=int, default=16, help="sub-trajectories per iteration")
    parser.add_argument("--points", type=int, default=10, help="observations per sub-trajectory")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--snapshots", type=int, default=8, help="snapshots of the trajectory through training")
    # One thread: the ops of a 2-D problem are tiny, and with two threads on a busy
    # 2-core machine every one of them waits for a descheduled peer (5x slower measured).
    parser.set_defaults(threads=1)
    args = parser.parse_args(argv)
    iters = args.iters if args.iters is not None else (QUICK_ITERS if args.quick else ITERS)
    for value, flag in ((iters, "--iters"), (args.hidden, "--hidden"), (args.batch, "--batch"), (args.snapshots, "--snapshots")):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if args.points < 2:
        parser.error(f"--points must be at least 2, got {args.points}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    device, out_dir = common.setup(args, NAME)
    if device.type != "cpu":
        print(f"note: {NAME} runs on the CPU (a batch of 2-D states gains nothing from {device})")

    times, true, obs = make_data(args.seed)
    func = NNODEF(2, args.hidden, time_invariant=not args.time_dependent)
    untrained = copy.deepcopy(func)
    result = fit(
        func, times, obs, iters=iters, batch=args.batch, points=args.points, lr=args.lr, solver=SOLVER,
        seed=args.seed, n_snapshots=args.snapshots, desc=NAME, disable_progress=args.no_progress,
    )
    before = trajectory(untrained, true[0], times)
    after = trajectory(func, true[0], times)
    err_before, err_after = trajectory_error(before, true), trajectory_error(after, true)

    png = plot_fit(times, true, obs, {"before training": before, "after training": after},
                   os.path.join(out_dir, "spiral_nonlinear.png"), result.losses)
    strip = plot_snapshots(times, true, obs, result.snapshots, os.path.join(out_dir, "spiral_nonlinear_snapshots.png"),
                           "Learning the non-linear spiral: the MLP's trajectory from z0 during training")
    summary = {
        "experiment": NAME,
        "true_dynamics": {"A": A, "B": B, "x0": X0, "z0": list(Z0)},
        "model": f"NNODEF(2, {args.hidden}, time_invariant={not args.time_dependent})",
        "parameters": sum(p.numel() for p in func.parameters()),
        "first_loss": result.losses[0],
        "last_losses_mean": float(np.mean(result.losses[-20:])),
        "trajectory_error_before": err_before,
        "trajectory_error_after": err_after,
        "iterations": iters,
        "seconds": result.seconds,
        "nfe_forward_per_iteration": result.nfe_forward,
        "nfe_backward_per_iteration": result.nfe_backward,
        "snapshot_iterations": [it for it, _ in result.snapshots],
        "solver": SOLVER,
        "losses": result.losses,
        "run": common.run_info(device, argv),
    }
    path = common.write_json(os.path.join(out_dir, "spiral_nonlinear.json"), summary)
    common.print_summary(
        f"{NAME}: trajectory RMSE {err_after['rmse']:.4f} after training ({err_before['rmse']:.3f} before)",
        {
            "model": summary["model"],
            "iterations": iters,
            "training seconds": result.seconds,
            "first / last loss": f"{result.losses[0]:.3e} / {summary['last_losses_mean']:.3e}",
            "trajectory max-abs error before / after": f"{err_before['max_abs']:.4f} / {err_after['max_abs']:.4f}",
            "NFE per iteration, forward / backward": f"{result.nfe_forward:.0f} / {result.nfe_backward:.0f}",
        },
        files=(png, strip, path),
    )
    return summary


if __name__ == "__main__":
    main()
