"""The solve as a boundary for ``torch.compile``.

The integration loop is C++ that calls ``f`` itself, so Dynamo cannot trace into a solve:
it used to try, printing a warning per pybind function and per ``.item()`` it met. The
public entry points are instead run through ``torch.compiler.disable``: a compiled model
runs each solve as one eager call between its compiled graphs (the same outputs and
gradients, nothing printed), and ``fullgraph=True`` stops at the solve with :data:`REASON`.

``torch.compiler.disable`` imports Dynamo (seconds), which a process that never compiles
should not pay for at ``import neuralode``: the disabled versions are made when Dynamo is
imported (an import hook), and until then an entry point is a plain call.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import sys
from typing import Callable, List, TypeVar

import torch

F = TypeVar("F", bound=Callable)

#: What ``torch.compile(..., fullgraph=True)`` reports at a solve.
REASON = (
    "neuralode: a solve cannot be part of a full graph (its integration loop is C++ that "
    "calls f itself); torch.compile runs it as one eager call between the compiled graphs "
    "when fullgraph=False, or compile the layers before and after the solve separately"
)

# Each entry point's [function, its disabled version (None until Dynamo is imported)].
_ENTRY_POINTS: List[list] = []


def _disable(fn: Callable) -> Callable:
    try:
        return torch.compiler.disable(fn, recursive=True, reason=REASON)
    except TypeError:  # a torch without disable(reason=): the same boundary, torch's message
        return torch.compiler.disable(fn, recursive=True)


def _dynamo_imported() -> None:
    for entry in _ENTRY_POINTS:
        if entry[1] is None:
            entry[1] = _disable(entry[0])


class _OnDynamoImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``torch._dynamo`` is about to be imported, it wraps the real
    loader so that the entry points are disabled right after (before anything is traced)."""

    def find_spec(self, name, path, target=None):
        if name != "torch._dynamo":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_disable(module):
            exec_module(module)
            _dynamo_imported()

        spec.loader.exec_module = exec_then_disable
        return spec


def solve_boundary(fn: F) -> F:
    """``fn`` (a public solve) as one eager call under ``torch.compile``, with :data:`REASON`."""
    entry = [fn, None]
    _ENTRY_POINTS.append(entry)
    if "torch._dynamo" in sys.modules:
        _dynamo_imported()

    @functools.wraps(fn)
    def boundary(*args, **kwargs):
        disabled = entry[1]
        return fn(*args, **kwargs) if disabled is None else disabled(*args, **kwargs)

    return boundary  # type: ignore[return-value]


if "torch._dynamo" not in sys.modules:
    sys.meta_path.insert(0, _OnDynamoImport())
