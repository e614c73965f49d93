"""The paper's dynamics functions, in its ``ODEF`` convention ``forward(z, t)``.

These are the tutorial's classes (experiments 1 and 2, and the MNIST block);
they work unchanged with ``neuralode.reference.NeuralODE`` and with the fused
``neuralode.NeuralODE``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .odef import ODEF

__all__ = [
    "LinearODEF",
    "SpiralFunctionExample",
    "RandomLinearODEF",
    "TestODEF",
    "NNODEF",
    "ConvODEF",
]


class LinearODEF(ODEF):
    """``dz/dt = z W^T``: a linear map of the state (no bias, no time)."""

    def __init__(self, W: Tensor):
        super().__init__()
        self.lin = nn.Linear(W.shape[1], W.shape[0], bias=False)
        self.lin.weight = nn.Parameter(W)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.lin(x)


class SpiralFunctionExample(LinearODEF):
    """The true dynamics of experiment 1: ``W = [[-0.1, -1], [1, -0.1]]``, a decaying spiral."""

    def __init__(self):
        super().__init__(Tensor([[-0.1, -1.0], [1.0, -0.1]]))


class RandomLinearODEF(LinearODEF):
    """A random starting point for experiment 1: ``W ~ N(0, 1/4)``."""

    def __init__(self):
        super().__init__(torch.randn(2, 2) / 2.0)


class TestODEF(ODEF):
    """The non-linear dynamics of experiment 2.

    ``dx/dt = sigmoid(x . x0) A (x - x0) + sigmoid(-x . x0) B (x + x0)``: two linear
    maps gated by which side of the hyperplane normal to ``x0`` the state is on.
    The gates get a trailing axis (``[:, None]``) so that batches of any size
    broadcast; the tutorial's version only worked for a batch of one.
    """

    def __init__(self, A: Tensor, B: Tensor, x0: Tensor):
        super().__init__()
        self.A = nn.Linear(2, 2, bias=False)
        self.A.weight = nn.Parameter(A)
        self.B = nn.Linear(2, 2, bias=False)
        self.B.weight = nn.Parameter(B)
        self.x0 = nn.Parameter(x0)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        xTx0 = torch.sum(x * self.x0, dim=1)
        dxdt = torch.sigmoid(xTx0)[:, None] * self.A(x - self.x0) + torch.sigmoid(-xTx0)[:, None] * self.B(x + self.x0)
        return dxdt


class NNODEF(ODEF):
    """An MLP dynamics ``in_dim (+1 for t) -> hid_dim -> hid_dim -> in_dim`` with ELU.

    Unless ``time_invariant``, the time is concatenated to the state, so ``t`` must
    have shape ``(batch, 1)`` (per-sample times).
    """

    def __init__(self, in_dim: int, hid_dim: int, time_invariant: bool = False):
        super().__init__()
        self.time_invariant = time_invariant
        if time_invariant:
            self.lin1 = nn.Linear(in_dim, hid_dim)
        else:
            self.lin1 = nn.Linear(in_dim + 1, hid_dim)
        self.lin2 = nn.Linear(hid_dim, hid_dim)
        self.lin3 = nn.Linear(hid_dim, in_dim)
        self.elu = nn.ELU(inplace=True)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if not self.time_invariant:
            x = torch.cat((x, t), dim=-1)
        h = self.elu(self.lin1(x))
        h = self.elu(self.lin2(h))
        out = self.lin3(h)
        return out


def _conv3x3(in_feats: int, out_feats: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_feats, out_feats, kernel_size=3, stride=stride, padding=1, bias=False)


def _add_time(in_tensor: Tensor, t: Tensor) -> Tensor:
    bs, c, w, h = in_tensor.shape
    return torch.cat((in_tensor, t.expand(bs, 1, w, h)), dim=1)


def _norm2d(kind: str, dim: int) -> nn.Module:
    # GroupNorm's groups as in the paper's code: 32, or one per channel for narrow blocks.
    return nn.BatchNorm2d(dim) if kind == "batch" else nn.GroupNorm(min(32, dim), dim)


class ConvODEF(ODEF):
    """The MNIST ODE block: two 3x3 convolutions with time as an extra channel.

    ``h = N1(relu(conv1([x, t])))``, ``dx/dt = N2(relu(conv2([h, t])))``, where ``N`` is
    the normalization ``norm``:

    * ``"batch"`` (default, the tutorial's): ``BatchNorm2d(dim)``. In training mode it
      normalizes with each evaluation's batch statistics, but its running statistics,
      used in eval mode, average every evaluation of the solve, i.e. the states at
      all the solver's stage times; in eval mode that one average serves every t.
    * ``"group"`` (the paper's ODE-Net): ``GroupNorm(min(32, dim), dim)``: statistics of
      each sample's own channels, the same in training and eval mode, nothing kept
      across evaluations.
    """

    NORMS = ("batch", "group")

    def __init__(self, dim: int, norm: str = "batch"):
        super().__init__()
        if norm not in self.NORMS:
            raise ValueError(f"norm must be one of {self.NORMS}, got {norm!r}")
        self.norm = norm
        self.conv1 = _conv3x3(dim + 1, dim)
        self.norm1 = _norm2d(norm, dim)
        self.conv2 = _conv3x3(dim + 1, dim)
        self.norm2 = _norm2d(norm, dim)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        xt = _add_time(x, t)
        h = self.norm1(torch.relu(self.conv1(xt)))
        ht = _add_time(h, t)
        dxdt = self.norm2(torch.relu(self.conv2(ht)))
        return dxdt
