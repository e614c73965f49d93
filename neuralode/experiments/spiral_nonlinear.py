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

import torch

from neuralode.dynamics import NNODEF, TestODEF

from . import common
from .spiral_fit import (
    SOLVER,
    Z0,
    fit_from_args,
    fit_parser,
    make_trajectory,
    parse_fit_args,
    plot_fit,
    plot_snapshots,
    trajectory,
    trajectory_error,
)

NAME = "spiral-nonlinear"
A = [[-0.1, -1.0], [1.0, -0.1]]
B = [[-0.2, 1.0], [-1.0, -0.2]]
X0 = [-1.0, 0.0]
ITERS = 3000
QUICK_ITERS = 1000


def true_dynamics() -> TestODEF:
    """The tutorial's ``TestODEF(A, B, x0)``."""
    return TestODEF(torch.tensor(A), torch.tensor(B), torch.tensor(X0))


def make_data(seed: int = 0):
    """``(times, true, obs)``: the true trajectory from ``Z0`` and its noisy observations."""
    return make_trajectory(true_dynamics(), seed)


def main(argv=None) -> dict:
    """Runs the experiment with the command-line options ``argv``; returns its summary (the JSON)."""
    parser = fit_parser(NAME, __doc__.splitlines()[0], ITERS, QUICK_ITERS)
    parser.add_argument("--hidden", type=int, default=32, help="width of the MLP's two hidden layers")
    parser.add_argument("--time-dependent", action="store_true", help="feed t to the MLP as well")
    args, iters, out_dir, device = parse_fit_args(parser, argv, NAME, ITERS, QUICK_ITERS, at_least_one=("hidden",))

    times, true, obs = make_data(args.seed)
    func = NNODEF(2, args.hidden, time_invariant=not args.time_dependent)
    untrained = copy.deepcopy(func)
    result = fit_from_args(func, times, obs, args, iters, SOLVER, NAME)
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
        "trajectory_error_before": err_before,
        "trajectory_error_after": err_after,
        **result.summary_fields(),
        "solver": SOLVER,
        "run": common.run_info(device, argv),
    }
    path = common.write_json(os.path.join(out_dir, "spiral_nonlinear.json"), summary)
    common.print_summary(
        f"{NAME}: trajectory RMSE {err_after['rmse']:.4f} after training ({err_before['rmse']:.3f} before)",
        {
            "model": summary["model"],
            **result.summary_rows(),
            "trajectory max-abs error before / after": f"{err_before['max_abs']:.4f} / {err_after['max_abs']:.4f}",
        },
        files=(png, strip, path),
    )
    return summary


if __name__ == "__main__":
    main()
