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
from .spiral_fit import (
    SOLVER,
    fit_from_args,
    fit_parser,
    make_trajectory,
    parse_fit_args,
    plot_fit,
    plot_snapshots,
    trajectory,
    trajectory_error,
)

NAME = "spiral-linear"
TRUE_W = [[-0.1, -1.0], [1.0, -0.1]]
ITERS = 600
QUICK_ITERS = 400


def make_data(seed: int = 0):
    """``(times, true, obs)``: the true spiral from ``Z0`` and its noisy observations."""
    return make_trajectory(SpiralFunctionExample(), seed)


def main(argv=None) -> dict:
    """Runs the experiment with the command-line options ``argv``; returns its summary (the JSON)."""
    parser = fit_parser(NAME, __doc__.splitlines()[0], ITERS, QUICK_ITERS)
    args, iters, out_dir, device = parse_fit_args(parser, argv, NAME, ITERS, QUICK_ITERS)

    times, true, obs = make_data(args.seed)
    func = LinearODEF(torch.randn(2, 2) / 2.0)
    w_start = func.lin.weight.detach().clone()
    result = fit_from_args(func, times, obs, args, iters, SOLVER, NAME)
    w = func.lin.weight.detach()
    error = (w - torch.tensor(TRUE_W)).abs().max().item()
    learned = trajectory(func, true[0], times)

    png = plot_fit(times, true, obs, {"learned": learned},
                   os.path.join(out_dir, "spiral_linear.png"), result.losses)
    strip = plot_snapshots(times, true, obs, result.snapshots, os.path.join(out_dir, "spiral_linear_snapshots.png"),
                           "Learning the linear spiral: the model's trajectory from z0 during training")
    summary = {
        "experiment": NAME,
        "true_matrix": TRUE_W,
        "start_matrix": w_start.tolist(),
        "learned_matrix": w.tolist(),
        "max_abs_error": error,
        "trajectory_error": trajectory_error(learned, true),
        **result.summary_fields(),
        "solver": SOLVER,
        "run": common.run_info(device, argv),
    }
    path = common.write_json(os.path.join(out_dir, "spiral_linear.json"), summary)

    np.set_printoptions(precision=4, suppress=True)
    print(f"start matrix:\n{w_start.numpy()}\nlearned matrix:\n{w.numpy()}\ntrue matrix:\n{np.array(TRUE_W)}")
    common.print_summary(
        f"{NAME}: learned matrix max-abs error {error:.4f}",
        {**result.summary_rows(), "trajectory max-abs error": summary["trajectory_error"]["max_abs"]},
        files=(png, strip, path),
    )
    return summary


if __name__ == "__main__":
    main()
