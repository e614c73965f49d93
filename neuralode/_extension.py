"""Loading the compiled extension ``neuralode._C``.

The extension is compiled against one torch build: its C++ symbols exist only there. After
an upgrade of torch the dynamic linker would report a mangled undefined symbol; instead the
torch (and CUDA) version recorded at build time (``neuralode/_build_info.py``, written by
``setup.py``) is compared with the running one first, and a failed load names what to
rebuild.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

import torch

#: What rebuilds the extension against the torch in use.
REBUILD = (
    "rebuild it against this torch: `pip install --no-build-isolation --no-deps -e .` in the "
    "neuralode source tree (`make test` does it too), or reinstall neuralode from a wheel built "
    "against this torch"
)


def build_info() -> Optional[ModuleType]:
    """The build's record (versions, CUDA kernels, architectures), or None when the extension
    was built without one (by hand, or by a setup.py older than the record)."""
    try:
        return importlib.import_module("neuralode._build_info")
    except ImportError:
        return None


def check_versions(built_torch: str, built_cuda: Optional[str], running_torch: str,
                   running_cuda: Optional[str]) -> None:
    """Raises ImportError unless the extension's torch (and, with CUDA kernels, CUDA) version
    is the running one: the C++ ABI of torch is not stable across its releases."""
    if built_torch != running_torch:
        raise ImportError(
            f"neuralode's compiled extension was built against torch {built_torch}, but this "
            f"environment runs torch {running_torch}; {REBUILD}"
        )
    if built_cuda is not None and built_cuda != running_cuda:
        raise ImportError(
            f"neuralode's CUDA kernels were built for CUDA {built_cuda}, but this environment's "
            f"torch uses CUDA {running_cuda}; {REBUILD}"
        )


def load() -> ModuleType:
    """``neuralode._C``, after the version check; a load failure is re-raised with the cause
    and the rebuild command."""
    info = build_info()
    if info is not None:
        check_versions(info.TORCH_VERSION, info.CUDA_VERSION if info.CUDA_KERNELS else None,
                       torch.__version__, torch.version.cuda)
    try:
        return importlib.import_module("neuralode._C")
    except ImportError as exc:
        raise ImportError(
            f"neuralode's compiled extension neuralode._C could not be loaded ({exc}); it must "
            f"be built for the torch in use ({torch.__version__}): {REBUILD}"
        ) from exc
