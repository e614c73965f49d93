"""Smoke test of an installed neuralode (``make dist-check``), not a pytest module.

Run by the Python of the fresh environment the wheel was installed into, from outside the
source tree, with the source tree's path as the argument: the neuralode imported must be the
installed one. Checks the import and its version check, a solve, and a backward pass through
the adjoint against the closed form of dy/dt = -k y, then prints the configuration.
"""

import math
import os
import sys

import torch

import neuralode

source_tree = os.path.realpath(sys.argv[1])
installed = os.path.realpath(os.path.dirname(neuralode.__file__))
assert installed != os.path.join(source_tree, "neuralode"), f"imported the source tree's neuralode ({installed})"
assert os.path.basename(os.path.dirname(installed)) == "site-packages", installed

from neuralode import _build_info  # noqa: E402  (written by the wheel's own build)

assert _build_info.TORCH_VERSION == torch.__version__, (_build_info.TORCH_VERSION, torch.__version__)

k = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
y0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
t = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float64)
ys = neuralode.odeint_adjoint(lambda t_, y: -k * y, y0, t, rtol=1e-10, atol=1e-12, adjoint_params=(k,))
exact = y0.detach() * torch.exp(-k.detach() * t).unsqueeze(1)
assert torch.allclose(ys, exact, rtol=1e-8, atol=1e-10), (ys, exact)
ys[-1].sum().backward()
# L = sum_i y0_i exp(-1.5 k): dL/dy0 = exp(-1.5 k), dL/dk = -1.5 sum(y0) exp(-1.5 k)
e = math.exp(-1.5 * 0.7)
assert torch.allclose(y0.grad, torch.full((2,), e, dtype=torch.float64), rtol=1e-7), y0.grad
assert abs(k.grad.item() - (-1.5 * 3.0 * e)) < 1e-7, k.grad

neuralode.show_config()
print(f"installed neuralode {neuralode.__version__} from {installed}: import, solve and adjoint ok")
