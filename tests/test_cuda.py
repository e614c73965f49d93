"""CUDA against CPU on the same inputs (skipped without a GPU or a CUDA build)."""

import pytest
import torch
from torch import nn

import neuralode
from neuralode._ops import stage_combine


def _cuda_kernels_built():
    if not torch.cuda.is_available():
        return False
    try:
        stage_combine(torch.zeros(1, device="cuda"), [], [], None)
        return True
    except (RuntimeError, NotImplementedError):
        return False


pytestmark = pytest.mark.skipif(not _cuda_kernels_built(), reason="needs a CUDA device and a CUDA build of neuralode")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dt_kind", ["none", "scalar", "rows"])
@pytest.mark.parametrize("shape", [(1,), (5, 7), (256, 3, 33), (3, 1_000_003)])
def test_stage_combine_cuda_matches_cpu(shape, dt_kind, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    y0 = torch.randn(*shape, generator=g, dtype=dtype)
    ks = [torch.randn(*shape, generator=g, dtype=dtype) for _ in range(5)]
    coeffs = [0.1, -0.3, 0.7, 1.0 / 6, 2.5]
    dt = {"none": None, "scalar": torch.tensor(0.37, dtype=dtype), "rows": torch.rand(shape[0], generator=g, dtype=dtype)}[dt_kind]
    cpu = stage_combine(y0, ks, coeffs, dt)
    cuda = stage_combine(y0.cuda(), [k.cuda() for k in ks], coeffs, None if dt is None else dt.cuda())
    tol = 2e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=tol, atol=tol)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 2))

    def forward(self, t, z):
        return self.net(torch.cat([z, t.expand(z.shape[0], 1) if t.dim() == 0 else t], dim=1))


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4_classic"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_solve_cuda_matches_cpu(method, gradient, per_sample):
    results = {}
    for device in ("cpu", "cuda"):
        func = MLP().double().to(device)
        y0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
        y0.requires_grad_(True)
        if per_sample:
            t = torch.sort(torch.rand(4, 16, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64), 0).values
        else:
            t = torch.tensor([0.0, 0.3, 0.8, 1.5], dtype=torch.float64)
        t = t.to(device).requires_grad_(True)
        ys = neuralode.odeint(func, y0, t, method=method, options={"max_step": 0.1}, gradient=gradient)
        grads = torch.autograd.grad(ys.pow(2).sum(), [y0, t] + list(func.parameters()))
        results[device] = [ys.detach()] + list(grads)
    for cpu, cuda in zip(results["cpu"], results["cuda"]):
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-9, atol=1e-10)


def test_neuralode_reference_match_on_cuda():
    from neuralode import reference
    from neuralode.dynamics import TestODEF

    g = torch.Generator().manual_seed(3)
    func = TestODEF(torch.randn(2, 2, generator=g), torch.randn(2, 2, generator=g), torch.randn(2, generator=g)).double().cuda()
    z0 = torch.randn(8, 2, dtype=torch.float64, device="cuda", requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64, device="cuda", requires_grad=True)
    z_ref = reference.NeuralODE(func)(z0, t, True)
    z_fused = neuralode.NeuralODE(func)(z0, t, True)
    torch.testing.assert_close(z_fused, z_ref, rtol=1e-10, atol=1e-12)
    inputs = [z0, t] + list(func.parameters())
    for a, b in zip(torch.autograd.grad(z_fused.sum(), inputs), torch.autograd.grad(z_ref.sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5"])
def test_adaptive_solve_cuda_matches_cpu(method, gradient):
    results = {}
    for device in ("cpu", "cuda"):
        func = MLP().double().to(device)
        y0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
        y0.requires_grad_(True)
        t = torch.tensor([0.0, 0.3, 0.8, 1.5], dtype=torch.float64, device=device)
        stats = neuralode.SolverStats()
        ys = neuralode.odeint(func, y0, t, method=method, rtol=1e-8, atol=1e-8, gradient=gradient, stats=stats)
        grads = torch.autograd.grad(ys.pow(2).sum(), [y0] + list(func.parameters()))
        results[device] = ([ys.detach()] + list(grads), stats.steps_accepted, stats.nfe_backward)
    # The error ratios are reduced in another order on the GPU: a step decision may
    # differ at round-off, so compare at the solve's tolerance, not bit for bit.
    for cpu, cuda in zip(results["cpu"][0], results["cuda"][0]):
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_events_cuda_match_cpu(gradient, per_sample):
    """The event search (g read to the host once per step) and its gradients, CUDA against CPU."""
    results = {}
    for device in ("cpu", "cuda"):
        y0 = torch.tensor([[3.0, 0.5], [2.0, -1.0]], dtype=torch.float64, device=device, requires_grad=True)
        y0_ = y0 if per_sample else y0[0]
        f = lambda t, y: torch.stack([y[..., 1], -torch.sin(y[..., 0]) - 9.81 * torch.ones_like(y[..., 1])], -1)  # noqa: E731
        event_t, sol = neuralode.odeint_event(f, y0_, torch.tensor(0.0, dtype=torch.float64, device=device),
                                              event_fn=lambda t, y: y[..., 0], event_per_sample=per_sample,
                                              rtol=1e-9, atol=1e-9, gradient=gradient,
                                              adjoint_params=() if gradient != "backprop" else None)
        (grad,) = torch.autograd.grad(event_t.sum() + sol[-1].sum(), [y0])
        results[device] = (event_t.detach(), sol.detach(), grad)
    for cpu, cuda in zip(results["cpu"], results["cuda"]):
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-9, atol=1e-10)
