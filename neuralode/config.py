"""What a bug report needs: :func:`show_config` (also ``python -m neuralode``)."""

from __future__ import annotations

import platform
import sys
from typing import Optional, TextIO

import numpy
import torch

from ._extension import build_info
from ._version import __version__


def _kernel_on(dispatch_key: str) -> bool:
    """Whether the fused stage kernel is registered for a dispatch key (what was compiled in)."""
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key("neuralode::stage_combine", dispatch_key))
    except (RuntimeError, AttributeError):
        return False


def config() -> dict:
    """neuralode's, torch's and the machine's versions and settings, as a dict: the version,
    the torch it was built against and the one running, the compiled backends (CPU, CUDA)
    with their CUDA architectures, the GPUs visible, and torch's thread counts."""
    from . import _C  # noqa: F401  (registers the kernels queried below)

    info = build_info()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "neuralode": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "torch CUDA": torch.version.cuda,
        "built against torch": info.TORCH_VERSION if info else "unknown (built without a build record)",
        "built against CUDA": (info.CUDA_VERSION if info and info.CUDA_KERNELS else None),
        "compiled backends": [k for k, key in (("CPU", "CPU"), ("CUDA", "CUDA")) if _kernel_on(key)],
        "CUDA architectures": info.CUDA_ARCHS if info and info.CUDA_KERNELS else None,
        "debug build": info.DEBUG if info else None,
        "GPUs visible": gpus,
        "threads": torch.get_num_threads(),
        "inter-op threads": torch.get_num_interop_threads(),
    }


def show_config(file: Optional[TextIO] = None) -> dict:
    """Prints :func:`config` one ``name: value`` line each (to ``file``, default stdout), for
    bug reports; returns the dict."""
    cfg = config()
    out = sys.stdout if file is None else file
    width = max(len(k) for k in cfg)
    for key, value in cfg.items():
        if isinstance(value, list):
            value = ", ".join(value) if value else "none"
        print(f"{key:<{width}}  {value}", file=out)
    return cfg
