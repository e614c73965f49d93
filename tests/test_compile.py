"""torch.compile on models that solve: the solve is a clean boundary (neuralode/_compile.py).

A compiled model holding a NeuralODE, or calling odeint/odeint_adjoint, gives the eager
model's outputs and gradients and prints nothing (before: one Dynamo warning per pybind
function and per .item() inside the solve); fullgraph=True stops at the solve with
neuralode's own message."""

import logging
import warnings

import pytest
import torch
from torch import nn

import neuralode
from neuralode._compile import REASON


class TanhODEF(neuralode.ODEF):
    """f(z, t) = tanh(W z + b t) in the paper's convention forward(z, t)."""

    def __init__(self, dim):
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, z, t):
        return torch.tanh(self.lin(z) + t)


class BlockModel(nn.Module):
    """Layers, a NeuralODE block (RK4, adjoint) and a head: the paper's ODE-Net in small."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(5, 4)
        self.block = neuralode.NeuralODE(TanhODEF(4), method="rk4", options={"max_step": 0.25})
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.block(torch.relu(self.inp(x))))


class AdaptiveModel(nn.Module):
    """Layers around odeint_adjoint with dopri5 (a closure as f, adjoint_params given)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.f = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3))
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        t = torch.tensor([0.0, 0.5, 1.0])
        ys = neuralode.odeint_adjoint(lambda t_, y: self.f(y), x, t, rtol=1e-6, atol=1e-8,
                                      adjoint_params=tuple(self.f.parameters()))
        return self.head(ys[-1] + ys[1])


def _outputs_and_grads(model, x):
    model.zero_grad()
    out = model(x)
    out.pow(2).sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("model_cls,backend", [(BlockModel, "inductor"), (AdaptiveModel, "aot_eager")])
def test_compiled_model_matches_eager_and_prints_nothing(model_cls, backend, capfd, caplog):
    torch._dynamo.reset()
    caplog.set_level(logging.WARNING)
    model = model_cls()
    x = torch.randn(6, 5 if model_cls is BlockModel else 3, generator=torch.Generator().manual_seed(2))
    eager = _outputs_and_grads(model, x)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = _outputs_and_grads(torch.compile(model, backend=backend), x)
        compiled_again = _outputs_and_grads(torch.compile(model, backend=backend), x)  # cached graphs
    printed = capfd.readouterr()
    # Dynamo reports graph breaks and untraceable calls as warnings of its loggers.
    assert [r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.WARNING] == []
    # What a user would see: torch's own DeprecationWarnings (inductor's use of torch.jit,
    # hidden by Python's default filters) are not the solve's.
    shown = [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert shown == []
    assert not [w for w in caught if "neuralode" in str(w.message) or "Dynamo" in str(w.message)]
    assert printed.out == "" and printed.err == "", printed
    for got in (compiled, compiled_again):
        torch.testing.assert_close(got[0], eager[0], rtol=1e-5, atol=1e-6)
        for g, e in zip(got[1], eager[1]):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def test_fullgraph_stops_at_the_solve_with_neuralode_message():
    torch._dynamo.reset()
    model = BlockModel()
    with pytest.raises(Exception, match="neuralode: a solve cannot be part of a full graph"):
        torch.compile(model, backend="eager", fullgraph=True)(torch.randn(2, 5))
    assert "compile the layers before and after the solve" in REASON


def test_entry_points_keep_their_names_and_docs():
    for fn in (neuralode.odeint, neuralode.odeint_adjoint, neuralode.odeint_dense, neuralode.odeint_event):
        assert fn.__name__.startswith("odeint") and fn.__doc__ and "t" in fn.__doc__


def test_import_does_not_load_dynamo():
    """The boundary costs nothing to a process that never compiles: Dynamo (seconds to
    import) is not imported by ``import neuralode`` or a solve."""
    import subprocess
    import sys

    script = ("import sys, torch, neuralode\n"
              "neuralode.odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]))\n"
              "print('torch._dynamo' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
