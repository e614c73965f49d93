"""Demo: the paper's first experiment, recovering linear spiral dynamics.

The true dynamics is ``dz/dt = z W^T`` with ``W = [[-0.1, -1], [1, -0.1]]``. From
one noisy trajectory we fit a linear dynamics that starts from a random matrix,
with ``odeint_adjoint`` on batches of random sub-trajectories (per-sample times
``(T, batch, 1)``), and compare the learned matrix with the true one.

It is the ``spiral-linear`` experiment (``neuralode.experiments.spiral_linear``)
writing to ``runs/demo/``. Run: ``python -m neuralode.demo [--iters N] [--out DIR]``.
"""

from __future__ import annotations

import os
import sys

from neuralode.experiments.spiral_linear import TRUE_W
from neuralode.experiments.spiral_linear import main as _spiral_linear

__all__ = ["TRUE_W", "main"]


def main(argv=None) -> dict:
    """Runs the spiral-linear experiment (default output folder ``runs/demo``); returns its summary."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", os.path.join("runs", "demo")]
    return _spiral_linear(argv)


if __name__ == "__main__":
    main()
