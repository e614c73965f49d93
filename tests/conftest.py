"""pytest configuration shared by the test files."""

import os


def pytest_report_header(config):
    """The hypothesis suite's seed and example count, so that a failure can be replayed."""
    seed = os.environ.get("NEURALODE_HYPOTHESIS_SEED", "20261130")
    examples = os.environ.get("NEURALODE_HYPOTHESIS_EXAMPLES", "3000")
    return f"hypothesis (tests/test_properties.py): seed {seed}, {examples} examples"
