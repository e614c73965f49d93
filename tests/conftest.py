"""pytest configuration shared by the test files."""

import os


def _hypothesis_line() -> str:
    seed = os.environ.get("NEURALODE_HYPOTHESIS_SEED", "20261130")
    examples = os.environ.get("NEURALODE_HYPOTHESIS_EXAMPLES", "3000")
    return (f"hypothesis (tests/test_properties.py): seed {seed}, {examples} examples "
            "(NEURALODE_HYPOTHESIS_SEED / NEURALODE_HYPOTHESIS_EXAMPLES to change)")


def pytest_report_header(config):
    """The hypothesis suite's seed and example count, so that a failure can be replayed."""
    return _hypothesis_line()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The same line at the end, where `pytest -q` (make test) shows it too."""
    terminalreporter.write_line(_hypothesis_line())
