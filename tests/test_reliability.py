"""No silent wrong answer: each way neuralode used to return a wrong number (or a
misleading error) without a word now gives the right answer or a clear error. Oracles:
closed forms (linear ODEs through torch.linalg.matrix_exp, dz/dt = -k z) and backprop
(the exact gradient of the same discrete solve)."""

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

import neuralode

EXACT_MODES = ["adjoint", "checkpoint"]
T1 = torch.tensor([0.0, 1.0], dtype=torch.float64)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# ---------------------------------------------------------------- parameters of closures


@pytest.mark.parametrize("y0_requires_grad", [False, True])
@pytest.mark.parametrize("gradient", EXACT_MODES)
def test_closure_over_module_without_adjoint_params_raises(gradient, y0_requires_grad):
    """A lambda over a module hides its parameters: refusing beats training nothing."""
    net = nn.Linear(2, 2).double()
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=y0_requires_grad)
    with pytest.raises(ValueError, match="func uses a tensor that requires grad .* adjoint_params="):
        neuralode.odeint(lambda t, z: net(z), y0, T1, gradient=gradient)


class _Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2).double()

    def dynamics(self, t, z):
        return torch.tanh(self.lin(z))


def _dynamics_of(holder, t, z):
    return torch.tanh(holder.lin(z))


@pytest.mark.parametrize("gradient", EXACT_MODES)
@pytest.mark.parametrize("kind", ["bound_method", "partial"])
def test_parameters_of_bound_methods_and_partials_are_found(kind, gradient):
    holder = _Holder()
    func = holder.dynamics if kind == "bound_method" else functools.partial(_dynamics_of, holder)
    y0 = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    grads = {}
    for mode in ("backprop", gradient):
        ys = neuralode.odeint(func, y0, t, method="rk4_classic", options={"max_step": 0.1}, gradient=mode)
        grads[mode] = torch.autograd.grad(ys.pow(2).sum(), list(holder.parameters()))
    tol = 1e-12 if gradient == "checkpoint" else 1e-6  # the adjoint: O(h^4) from the discrete gradient
    for a, b in zip(grads[gradient], grads["backprop"]):
        assert b.abs().max() > 0 and _rel(a, b) < tol


@pytest.mark.parametrize("gradient", EXACT_MODES)
def test_the_same_tensor_twice_in_adjoint_params_counts_once(gradient):
    """dz/dt = -k z: dL/dk of L = sum z(1) is -sum z0 e^{-k} (not twice that)."""
    k = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    ys = neuralode.odeint(lambda t, z: -k * z, y0, T1, rtol=1e-10, atol=1e-10, gradient=gradient,
                          adjoint_params=(k, k))
    (g,) = torch.autograd.grad(ys[-1].sum(), [k])
    assert abs(g.item() - (-3.0 * math.exp(-0.5))) < 1e-8


# ---------------------------------------------------------------- non-finite values


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "rk4_classic"])
def test_fixed_step_nan_mid_solve_names_the_interval(method, gradient):
    f = lambda t, y: y * torch.nan if t > 0.5 else -y
    y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"the solution became NaN or Inf between t=0\.4\d* and t=1"):
        neuralode.odeint(f, y0, t, method=method, gradient=gradient, options={"max_step": 0.1})


@pytest.mark.parametrize("gradient", EXACT_MODES)
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "rk4_classic", "dopri5"])
def test_non_finite_gradient_is_an_error(method, gradient):
    """f = sqrt|y| from y = 0 is finite, its derivative is not: the gradient would be inf."""
    y0 = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    ys = neuralode.odeint(lambda t, y: torch.sqrt(y.abs()), y0, T1, method=method, gradient=gradient)
    with pytest.raises(ValueError, match="became NaN or Inf"):
        ys.sum().backward()


# ---------------------------------------------------------------- second derivatives

W0 = torch.tensor([[-0.2, -1.0], [1.0, -0.3]], dtype=torch.float64)
Z0 = torch.tensor([[0.6, -0.4], [0.1, 0.9]], dtype=torch.float64)
WEIGHT = torch.tensor([[1.0, -2.0], [0.5, 0.3]], dtype=torch.float64)
V = torch.tensor([[0.3, 0.1], [-0.2, 0.7]], dtype=torch.float64)


def _hvp(first_grads, inputs):
    """d/d(inputs) of sum_i <g_i, V>: a Hessian-vector product."""
    return torch.autograd.grad(sum((g * V).sum() for g in first_grads), inputs, allow_unused=True)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method,options", [("rk4_classic", {"max_step": 0.02}), ("dopri5", None)])
def test_second_derivatives_match_the_closed_form(method, options, gradient):
    """L = <w, z(T)>, dz/dt = z W^T: z(T) = z0 expm(T W)^T. The Hessian-vector products
    w.r.t. (W, z0) against autograd through matrix_exp (used to be zeros or 78-100% off)."""
    T = 1.5
    Wc, zc = W0.clone().requires_grad_(True), Z0.clone().requires_grad_(True)
    exact_first = torch.autograd.grad((zc @ torch.linalg.matrix_exp(T * Wc).T * WEIGHT).sum(), [Wc, zc],
                                      create_graph=True)
    exact = _hvp(exact_first, [Wc, zc])
    W, z0 = nn.Parameter(W0.clone()), Z0.clone().requires_grad_(True)
    kwargs = {} if gradient == "backprop" else {"adjoint_params": (W,)}
    ys = neuralode.odeint(lambda t, z: z @ W.T, z0, torch.tensor([0.0, T], dtype=torch.float64), method=method,
                          options=options, rtol=1e-10, atol=1e-10, gradient=gradient, **kwargs)
    first = torch.autograd.grad((ys[-1] * WEIGHT).sum(), [W, z0], create_graph=True)
    got = _hvp(first, [W, z0])
    for a, b in zip(got, exact):
        assert a is not None and _rel(a, b) < 1e-7


class _Tanh(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(4, 2, generator=g, dtype=torch.float64))
        self.w2 = nn.Parameter(torch.randn(2, 4, generator=g, dtype=torch.float64) * 0.5)

    def forward(self, t, z):
        return torch.tanh(z @ self.w1.T) @ self.w2.T


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint"])
@pytest.mark.parametrize("method,options", [("rk4_classic", {"max_step": 0.05}), ("dopri5", None)])  # fixed, adaptive
def test_gradgradcheck(method, options, gradient):
    """Second derivatives against finite differences of the first. The checkpoint is the
    discrete solve's exact gradient; the adjoint's differs from it by the solver error, so
    its steps are fine (rk4_classic h = 0.05, tolerance 1e-11) and the check's atol covers that."""
    func = _Tanh()
    names = [n for n, _ in func.named_parameters()]

    def fn(y0, *ps):
        params = dict(zip(names, ps))
        f = lambda t, z: torch.func.functional_call(func, params, (t, z))
        extra = {} if gradient == "backprop" else {"adjoint_params": ps}
        return neuralode.odeint(f, y0, T1, method=method, options=options, rtol=1e-11, atol=1e-11,
                                gradient=gradient, **extra)

    y0 = torch.randn(2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    ps = [p.detach().clone().requires_grad_(True) for p in func.parameters()]
    # Adaptive solves: a perturbation of eps can change the step sequence, which moves the
    # finite differences by up to ~1e-8.
    atol = (1e-8 if method == "rk4_classic" else 1e-7) if gradient != "adjoint" else 1e-6
    assert torch.autograd.gradgradcheck(fn, (y0, *ps), eps=1e-6, atol=atol, rtol=1e-5)


# ---------------------------------------------------------------- in-place changes


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method", ["rk4_classic", "dopri5"])
def test_f_writing_into_its_argument_is_an_error_and_y0_stays(method, gradient):
    y0 = torch.ones(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="func modified its argument y in place"):
        neuralode.odeint(lambda t, z: z.mul_(-1.0), y0, T1, method=method, gradient=gradient)
    assert torch.equal(y0, torch.ones(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("gradient", EXACT_MODES)
def test_y0_changed_in_place_before_backward_is_refused(gradient):
    """The checkpoint's backward may re-solve from y0 (second derivatives), the adjoint's
    restarts from the outputs: what it reads is saved, and autograd's version check refuses
    a backward after it changed (it used to give a gradient 7.6% off)."""
    k = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=gradient == "adjoint")
    ys = neuralode.odeint(lambda t, z: -k * z, y0.detach() if gradient == "adjoint" else y0, T1,
                          gradient=gradient, adjoint_params=(k,))
    target = ys if gradient == "adjoint" else y0
    loss = ys[-1].sum()
    with torch.no_grad():
        target.mul_(3.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("gradient", EXACT_MODES)
def test_parameters_changed_in_place_before_backward_are_refused(gradient):
    k = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    ys = neuralode.odeint(lambda t, z: -k * z, torch.ones(1, 2, dtype=torch.float64), T1, gradient=gradient,
                          adjoint_params=(k,))
    with torch.no_grad():
        k.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ys.sum().backward()


def test_adjoint_outputs_changed_in_place_are_refused():
    y0 = torch.ones(1, 2, dtype=torch.float64, requires_grad=True)
    ys = neuralode.odeint(lambda t, z: -z, y0, T1, gradient="adjoint")
    loss = ys.sum()
    with torch.no_grad():
        ys.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# ---------------------------------------------------------------- tolerances and options


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_atol_zero_with_a_zero_component_solves(method, gradient):
    """A zero component with atol = 0 has a zero error scale (used to be 'step size underflow
    ... dt=-nan'): z(1) = z0 e^-1 and dL/dz0 = e^-1 for L = sum z(1)."""
    y0 = torch.tensor([[0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    ys = neuralode.odeint(lambda t, y: -y, y0, T1, method=method, rtol=1e-8, atol=0.0, gradient=gradient)
    assert ys[-1, 0, 0].item() == 0.0 and abs(ys[-1, 0, 1].item() - math.exp(-1)) < 1e-7
    (g,) = torch.autograd.grad(ys[-1].sum(), [y0])
    assert torch.allclose(g, torch.full_like(g, math.exp(-1)), rtol=1e-6, atol=0)


@pytest.mark.parametrize("kw,match", [
    ({"rtol": 0.0, "atol": 0.0}, "both are 0 for some element"),
    ({"rtol": 0.0, "atol": torch.tensor([1e-6, 0.0])}, "both are 0 for some element"),
    ({"options": {"min_step": 0.5, "max_step": 0.1}}, "'min_step' \\(0.5\\) is larger than 'max_step'"),
])
def test_impossible_tolerances_and_steps_are_refused_up_front(kw, match):
    with pytest.raises(ValueError, match=match):
        neuralode.odeint(lambda t, y: -y, torch.ones(1, 2, dtype=torch.float64), T1, **kw)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method", ["dopri5", "rk4_classic"])
def test_empty_batch(method, gradient):
    y0 = torch.ones(0, 2, dtype=torch.float64, requires_grad=True)
    ys = neuralode.odeint(lambda t, y: -y, y0, T1, method=method, gradient=gradient)
    assert ys.shape == (2, 0, 2)
    ys.sum().backward()
    assert y0.grad.shape == (0, 2)


def test_numpy_scalars_as_tolerances_and_options():
    y0 = torch.ones(1, 2, dtype=torch.float64)
    ys = neuralode.odeint(lambda t, y: -y, y0, T1, rtol=np.float64(1e-8), atol=np.float32(1e-9),
                          options={"max_step": np.float64(0.5), "max_num_steps": np.int64(1000)})
    assert abs(ys[-1, 0, 0].item() - math.exp(-1)) < 1e-7


# ---------------------------------------------------------------- stateful dynamics


class _BatchNormDynamics(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(2).double()
        self.lin = nn.Linear(2, 2).double()

    def forward(self, t, z):
        return self.lin(self.bn(z))


@pytest.mark.parametrize("gradient", EXACT_MODES)
@pytest.mark.parametrize("method", ["rk4_classic", "dopri5"])
def test_backward_evaluations_leave_batchnorm_statistics_alone(method, gradient):
    """Running statistics move with the forward's evaluations of f (as in any training step),
    not with the backward's: after backward() they are what the forward left."""
    func = _BatchNormDynamics().train()
    y0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    stats = neuralode.SolverStats()
    options = {"max_step": 0.25} if method == "rk4_classic" else None
    ys = neuralode.odeint(func, y0, T1, method=method, options=options, gradient=gradient, stats=stats)
    after_forward = {k: v.clone() for k, v in func.bn.state_dict().items()}
    # one update per forward evaluation (rk4_classic: 4 steps x 4 stages)
    assert after_forward["num_batches_tracked"].item() == stats.nfe_forward
    if method == "rk4_classic":
        assert stats.nfe_forward == 16
    ys.pow(2).sum().backward()
    for k, v in func.bn.state_dict().items():
        assert torch.equal(v, after_forward[k]), k
    assert all(p.grad is not None for p in func.parameters())


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint"])
def test_time_gradient_of_an_observation_on_the_step_size_grid(gradient):
    """t[1] = 0.05 sits on the grid of step_size 0.005: its output is the grid value, whose
    dL/dt_1 used to be 0 (and dL/dt_0 half the truth). Closed form of dz/dt = -k z."""
    k = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.05, 0.1], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=torch.float64)
    kwargs = {} if gradient == "backprop" else {"adjoint_params": (k,)}
    ys = neuralode.odeint(lambda tt, z: -k * z, y0, t, method="rk4_classic", options={"step_size": 0.005},
                          gradient=gradient, **kwargs)
    (g,) = torch.autograd.grad(ys.sum(), [t])
    td = t.detach().requires_grad_(True)
    (exact,) = torch.autograd.grad((y0 * torch.exp(-0.8 * (td - td[0]))).sum(), [td])
    # The slope of the linear interpolation, (z_{k+1} - z_k) / h, is z' to within k h / 2 = 2e-3.
    assert _rel(g, exact) < 2e-3
