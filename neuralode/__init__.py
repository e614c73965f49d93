"""neuralode: fast Neural ODEs for PyTorch.

Fused C++/CUDA Runge-Kutta kernels and integration loops behind a torchdiffeq-style
API (:func:`odeint`, :func:`odeint_adjoint`) and the paper's :class:`NeuralODE`
module; :mod:`neuralode.reference` keeps the paper-tutorial algorithm in plain
PyTorch as the oracle (import it explicitly: the library itself does not use it).
"""

from .module import NeuralODE
from .odeint import ADAPTIVE_METHODS, FIXED_STEP_METHODS, GRADIENT_MODES, METHODS, odeint, odeint_adjoint
from .odef import ODEF
from .dense import odeint_dense
from .events import odeint_event
from .stats import SolverStats

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
]
__version__ = "0.1.0"
