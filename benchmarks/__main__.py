"""``python -m benchmarks``: runs the benchmark suites (for now: the spiral against the reference)."""

import sys

from . import spiral_reference

if __name__ == "__main__":
    spiral_reference.main(sys.argv[1:])
