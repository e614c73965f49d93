"""Checks shared by the tests of the experiments' JSON outputs."""

import math


def finite_numbers(obj) -> bool:
    """True when every float inside ``obj`` (nested dicts and lists) is finite."""
    if isinstance(obj, dict):
        return all(finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(finite_numbers(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True
