"""The four MNIST classifiers of the paper's Table 1: ODE-Net, RK-Net, ResNet and an MLP.

ODE-Net, RK-Net and ResNet share the paper tutorial's down-sampling and head, so only
the middle differs:

* down-sampling ``Conv2d(1, w, 3, 1)``, ``BatchNorm2d(w)``, ReLU, ``Conv2d(w, w, 4, 2, 1)``,
  BN, ReLU, ``Conv2d(w, w, 4, 2, 1)``: ``(B, 1, 28, 28) -> (B, w, 6, 6)``;
* the middle: an ODE block (ODE-Net, RK-Net) or 6 residual blocks (ResNet);
* the head ``BatchNorm2d(w)``, ReLU, adaptive average pooling, flatten, ``Linear(w, 10)``:
  the logits.

The ODE block integrates ``dz/dt = f(z, t)`` with ``f = neuralode.dynamics.ConvODEF(w)``
(two 3x3 convolutions with time as an extra channel, each followed by BatchNorm, the
tutorial's, or GroupNorm, the paper's: ``norm``) from t = 0 to 1. ODE-Net
differentiates the solve with the continuous adjoint (``gradient="adjoint"``: memory
constant in the number of steps), RK-Net backpropagates through the solver's operations
(``gradient="backprop"``: memory grows with the steps); both use the same solver. A
ResNet block is ``x + f(x)`` with ``f`` the same two convolutions without the time
channel: 6 of them are 6 Euler steps of size 1 with a different f per step. The MLP is
``784 -> hidden -> 10`` with ReLU on the flattened image, without down-sampling.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

import neuralode
from neuralode.dynamics import ConvODEF

__all__ = [
    "MODELS",
    "DEFAULT_SOLVER",
    "downsampling",
    "head",
    "ODEBlock",
    "ODENet",
    "ResBlock",
    "ResNet",
    "MLP",
    "build_model",
]

#: Model names in the order of the paper's Table 1 (the command line's ``--models``).
MODELS = ("mlp", "resnet", "rk-net", "ode-net")
#: The ODE block's solver (ODE-Net and RK-Net). Chosen by measurement on a 2-core CPU
#: (see the mnist experiment's docstring): RK4 with 2 steps of 0.5 (8 evaluations of f
#: forward) trained ~3x faster per iteration than dopri5 at rtol = atol = 1e-3 or Euler
#: with steps of 0.05, and reaches the ``--quick`` accuracy goal. The experiment's full
#: configuration halves the step (0.25: the adjoint's gradient then follows the discrete
#: forward to 7%, not 23%).
DEFAULT_SOLVER = {"method": "rk4_classic", "options": {"max_step": 0.5}}


def downsampling(width: int = 64) -> nn.Sequential:
    """``(B, 1, 28, 28) -> (B, width, 6, 6)``: the tutorial's three convolutions."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, 1),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 4, 2, 1),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 4, 2, 1),
    )


def head(width: int = 64, classes: int = 10) -> nn.Sequential:
    """``(B, width, H, W) -> (B, classes)`` logits: BN, ReLU, global average pool, linear."""
    return nn.Sequential(
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(width, classes),
    )


class ODEBlock(nn.Module):
    """``z(1)`` of ``dz/dt = ConvODEF(width)(z, t)``, ``z(0) = x``, solved by ``neuralode.odeint``.

    Args:
        width: channels of the state.
        gradient: ``"adjoint"`` (ODE-Net) or ``"backprop"`` (RK-Net).
        solver: keyword arguments of ``odeint`` (``method``, ``rtol``, ``atol``,
            ``options``); default :data:`DEFAULT_SOLVER`.
        norm: the normalization inside f, ``"batch"`` or ``"group"`` (see
            :class:`~neuralode.dynamics.ConvODEF`).

    ``self.stats`` (a :class:`neuralode.SolverStats`) sums the function evaluations of
    every solve: forward when the solve returns, backward (adjoint only) when its
    gradient has been computed.
    """

    def __init__(self, width: int = 64, gradient: str = "adjoint", solver: Optional[dict] = None,
                 norm: str = "batch"):
        super().__init__()
        if gradient not in ("adjoint", "backprop"):
            raise ValueError(f"gradient must be 'adjoint' (ODE-Net) or 'backprop' (RK-Net), got {gradient!r}")
        self.odef = ConvODEF(width, norm)
        self.gradient = gradient
        self.solver = dict(DEFAULT_SOLVER if solver is None else solver)
        self.stats = neuralode.SolverStats()

    def forward(self, x: Tensor) -> Tensor:
        t = torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device)
        return neuralode.odeint(self.odef, x, t, gradient=self.gradient, stats=self.stats, **self.solver)[-1]


class ODENet(nn.Module):
    """Down-sampling, :class:`ODEBlock`, head. ``gradient="backprop"`` makes it RK-Net."""

    def __init__(self, width: int = 64, gradient: str = "adjoint", solver: Optional[dict] = None,
                 norm: str = "batch"):
        super().__init__()
        self.downsampling = downsampling(width)
        self.block = ODEBlock(width, gradient, solver, norm)
        self.head = head(width)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(self.downsampling(x)))


class ResBlock(nn.Module):
    """``x + f(x)`` with ``f(x) = BN(relu(conv2(BN(relu(conv1(x))))))``: ConvODEF without time."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(torch.relu(self.conv1(x)))
        return x + self.norm2(torch.relu(self.conv2(h)))


class ResNet(nn.Module):
    """Down-sampling, ``blocks`` :class:`ResBlock` (6 in the paper), head."""

    def __init__(self, width: int = 64, blocks: int = 6):
        super().__init__()
        self.downsampling = downsampling(width)
        self.blocks = nn.Sequential(*(ResBlock(width) for _ in range(blocks)))
        self.head = head(width)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.downsampling(x)))


class MLP(nn.Module):
    """``Linear(784, hidden)``, ReLU, ``Linear(hidden, 10)`` on the flattened image."""

    def __init__(self, hidden: int = 300):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def build_model(name: str, width: int = 64, solver: Optional[dict] = None, hidden: int = 300,
                ode_norm: str = "batch") -> nn.Module:
    """The model called ``name`` (one of :data:`MODELS`); ``width`` channels for the
    convolutional ones, ``hidden`` units for the MLP, ``solver`` and the normalization
    inside f ``ode_norm`` for the ODE block."""
    if name == "ode-net":
        return ODENet(width, "adjoint", solver, ode_norm)
    if name == "rk-net":
        return ODENet(width, "backprop", solver, ode_norm)
    if name == "resnet":
        return ResNet(width)
    if name == "mlp":
        return MLP(hidden)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
