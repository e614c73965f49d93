"""neuralode: fast Neural ODEs for PyTorch.

Fused C++/CUDA Runge-Kutta kernels and integration loops behind a torchdiffeq-style
API (:func:`odeint`, :func:`odeint_adjoint`) and the paper's :class:`NeuralODE`
module; :mod:`neuralode.reference` keeps the paper-tutorial algorithm in plain
PyTorch as the oracle (import it explicitly: the library itself does not use it).
"""

from ._version import __version__
from ._extension import load as _load_extension

_load_extension()  # the version check first: a clear error instead of an undefined symbol

from .module import NeuralODE  # noqa: E402
from .odeint import ADAPTIVE_METHODS, FIXED_STEP_METHODS, GRADIENT_MODES, METHODS, odeint, odeint_adjoint  # noqa: E402
from .odef import ODEF  # noqa: E402
from .dense import odeint_dense  # noqa: E402
from .events import odeint_event  # noqa: E402
from .stats import SolverStats  # noqa: E402
from .config import show_config  # noqa: E402

__all__ = [
    "odeint",
    "odeint_adjoint",
    "odeint_dense",
    "odeint_event",
    "NeuralODE",
    "ODEF",
    "SolverStats",
    "METHODS",
    "FIXED_STEP_METHODS",
    "ADAPTIVE_METHODS",
    "GRADIENT_MODES",
    "show_config",
    "__version__",
]
