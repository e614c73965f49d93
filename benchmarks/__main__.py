"""``python -m benchmarks [--quick] [--device cpu|cuda]``: runs every benchmark suite.

Suites: ``spiral_reference`` (the fused adjoint against ``neuralode.reference``) and
``speed`` (P1 and P2 against torchdiffeq and torchode, when installed). Each writes
its JSON to ``benchmarks/results/``.
"""

import argparse

from . import speed, spiral_reference


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run every benchmark suite.")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    quick = ["--quick"] if args.quick else []
    spiral_reference.main(quick + ["--device", args.device])
    speed.main(quick + ["--problem", "all", "--device", args.device])


if __name__ == "__main__":
    main()
