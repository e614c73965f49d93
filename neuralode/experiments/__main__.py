"""``python -m neuralode.experiments <name> [options]``: runs one of the paper's experiments."""

from __future__ import annotations

import importlib
import sys

from . import EXPERIMENTS


def _describe(name: str) -> str:
    try:
        module = importlib.import_module(f"neuralode.experiments.{EXPERIMENTS[name]}")
    except Exception as err:  # a broken module must not hide the others
        return f"(cannot be imported: {type(err).__name__}: {err})"
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def usage() -> str:
    """The command line's help: its forms and every experiment with its one-line description."""
    lines = [
        "usage: python -m neuralode.experiments <name> [--quick] [--device cpu|cuda] [--out DIR] [options]",
        "       python -m neuralode.experiments <name> --help   (the experiment's options)",
        "",
        "experiments:",
    ]
    lines += [f"  {name:<18} {_describe(name)}" for name in EXPERIMENTS]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Runs the experiment named by the first argument with the rest; 0 on success, 2 for an unknown name."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "--list", "list"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in EXPERIMENTS:
        print(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(f"neuralode.experiments.{EXPERIMENTS[name]}")
    module.main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
