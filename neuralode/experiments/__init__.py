"""The paper's experiments, runnable from one command each.

::

    python -m neuralode.experiments <name> [--quick] [--device cpu|cuda] [--out DIR] [options]
    python -m neuralode.experiments --list

Every experiment shows a progress bar, prints a summary at the end and writes PNG
plots and a JSON of its figures to ``--out`` (default ``runs/<name>/``). ``--quick``
is a configuration sized for a 2-core CPU. Each module's ``main(argv)`` runs it and
returns the summary (the JSON's content).
"""

from __future__ import annotations

#: name -> module of neuralode.experiments, in the order of the paper; then the event
#: handling example (torchdiffeq's bouncing ball).
EXPERIMENTS = {
    "spiral-linear": "spiral_linear",
    "spiral-nonlinear": "spiral_nonlinear",
    "mnist": "mnist",
    "latent-ode": "latent_ode",
    "bouncing-ball": "bouncing_ball",
}

__all__ = ["EXPERIMENTS"]
