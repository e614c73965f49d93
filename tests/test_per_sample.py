"""Per-sample steps (``options={"per_sample": True}``): each sample of a batch steps on its own.

Oracles: the same sample solved alone (its steps depend on its row only, so the values agree
to round-off), closed forms, tight solves, and gradcheck."""

import math

import pytest
import torch
from torch import nn

import neuralode

F64 = torch.float64
PS = {"per_sample": True}


class RowMLP(nn.Module):
    """f(t, y) = tanh(y W^T + t u) V^T: row-wise (each sample's derivative from its own row)."""

    def __init__(self, dim=3, hidden=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(hidden, dim, generator=g, dtype=F64) * 0.8)
        self.u = nn.Parameter(torch.randn(hidden, generator=g, dtype=F64))
        self.v = nn.Parameter(torch.randn(dim, hidden, generator=g, dtype=F64) * 0.8)

    def forward(self, t, y):
        return torch.tanh(y @ self.w.T + t * self.u) @ self.v.T


def _times(T, B, decreasing=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(T, B, 1, generator=g, dtype=F64) * 3, dim=0, descending=decreasing).values
    return t


@pytest.mark.parametrize("decreasing", [False, True])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "dopri8"])
def test_each_sample_equals_that_sample_alone(method, decreasing):
    f = RowMLP()
    y0 = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    t = _times(6, 5, decreasing)
    ys = neuralode.odeint(f, y0, t, method=method, rtol=1e-7, atol=1e-9, options=PS)
    for b in range(5):
        alone = neuralode.odeint(f, y0[b:b + 1], t[:, b:b + 1], method=method, rtol=1e-7, atol=1e-9, options=PS)
        # The same steps: equal to round-off. (dopri8's error estimate cancels to ~1e-4 of its
        # stages' rounding, which differs with the batch's BLAS kernel: its steps differ
        # slightly, the values to the tolerance.)
        bound = 1e-7 if method == "dopri8" else 1e-10
        torch.testing.assert_close(ys[:, b], alone[:, 0], rtol=bound, atol=bound)
    # ... and within the tolerance of a tight solve
    tight = neuralode.odeint(f, y0, t, method="dopri8", rtol=1e-12, atol=1e-12)
    assert (ys - tight).abs().max().item() < 1e-4  # global error at rtol 1e-7


def test_one_dimensional_times_with_per_sample_steps_match_closed_form():
    """y_b' = -k_b y_b: a stiff row does not set the step of the others."""
    k = torch.tensor([0.5, 5.0, 50.0], dtype=F64).view(3, 1)
    y0 = torch.ones(3, 2, dtype=F64)
    t = torch.linspace(0, 1, 5, dtype=F64)
    stats = neuralode.SolverStats()
    ys = neuralode.odeint(lambda t_, y: -k * y, y0, t, rtol=1e-8, atol=1e-10, options=PS, stats=stats)
    exact = torch.exp(-k.view(1, 3, 1) * t.view(-1, 1, 1)) * torch.ones(1, 3, 2, dtype=F64)
    assert ys.shape == (5, 3, 2)
    torch.testing.assert_close(ys, exact, rtol=0, atol=1e-7)
    slow = neuralode.odeint(lambda t_, y: -k[:1] * y, y0[:1], t, rtol=1e-8, atol=1e-10, options=PS,
                            stats=(alone := neuralode.SolverStats()))
    # The slow row alone needs far fewer steps than the batch's stiffest row.
    assert alone.steps_accepted < stats.steps_accepted


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint"])
@pytest.mark.parametrize("times", ["per-sample", "1-D"])
def test_gradcheck_backprop_and_checkpoint(times, gradient):
    f = RowMLP(dim=2, hidden=4)
    y0 = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    t = (_times(4, 3) if times == "per-sample" else torch.tensor([0.1, 0.7, 1.6, 2.0], dtype=F64)).requires_grad_()
    params = list(f.parameters())

    def run(y0_, t_, *p):
        return neuralode.odeint(f, y0_, t_, rtol=1e-10, atol=1e-10, options=PS, gradient=gradient)

    assert torch.autograd.gradcheck(run, (y0, t, *params), atol=1e-5, rtol=1e-3)


def _linear_problem(scales, seed=0, T=6):
    """y_b' = A_b y_b with per-sample matrices (rows scaled apart, so that their steps and
    rejections differ) and its closed form y_b(t) = expm(A_b (t - t_0b)) y_0b."""
    g = torch.Generator().manual_seed(seed)
    B = len(scales)
    A = (torch.randn(B, 2, 2, generator=g, dtype=F64) * 0.7 * torch.tensor(scales, dtype=F64).view(B, 1, 1))
    A = (A - 2 * torch.eye(2, dtype=F64) * torch.tensor(scales, dtype=F64).view(B, 1, 1)).requires_grad_()
    y0 = torch.randn(B, 2, generator=g, dtype=F64).requires_grad_()
    t = torch.sort(torch.rand(T, B, 1, generator=g, dtype=F64) * 2, dim=0).values.requires_grad_()
    c = torch.randn(T, B, 2, generator=g, dtype=F64)

    def closed(y0_, A_, t_):
        return torch.stack([torch.einsum("bij,bj->bi", torch.linalg.matrix_exp(A_ * (t_[j] - t_[0]).view(B, 1, 1)), y0_)
                            for j in range(T)])

    return A, y0, t, c, closed


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_joint_adjoint_matches_the_closed_form(gradient):
    """dL/dy0, dL/dA (a per-sample parameter) and dL/dt (per-sample times) against the matrix
    exponential; rows of very different stiffness, so that rows are rejected in steps where
    others are accepted (the adjoint's dL/dtheta then leaves the rejected rows out)."""
    A, y0, t, c, closed = _linear_problem([0.1, 1.0, 8.0, 30.0])
    f = lambda t_, y: torch.einsum("bij,bj->bi", A, y)  # noqa: E731
    stats = neuralode.SolverStats()
    ys = neuralode.odeint(f, y0, t, rtol=1e-10, atol=1e-10, options=PS, gradient=gradient, stats=stats,
                          adjoint_params=(A,) if gradient != "backprop" else None)
    got = torch.autograd.grad((ys * c).sum(), [y0, A, t])
    exact = torch.autograd.grad((closed(y0, A, t) * c).sum(), [y0, A, t])
    for g_, e in zip(got, exact):
        torch.testing.assert_close(g_, e, rtol=1e-6, atol=1e-7)


def test_joint_adjoint_and_checkpoint_with_one_dimensional_times_and_module_parameters():
    """dL/dt and dL/dtheta of every mode against a fine solve on the shared clock (dopri8,
    1e-12: another planner, far tighter)."""
    f = RowMLP(dim=2, hidden=6)
    y0 = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0.0, 0.4, 1.1, 2.0], dtype=F64, requires_grad=True)
    fine_ys = neuralode.odeint(f, y0, t, method="dopri8", rtol=1e-12, atol=1e-12)
    fine = torch.autograd.grad(fine_ys.pow(2).sum(), [t, *f.parameters()])
    grads = {}
    for gradient in ("backprop", "adjoint", "checkpoint"):
        ys = neuralode.odeint(f, y0, t, rtol=1e-10, atol=1e-10, options=PS, gradient=gradient)
        grads[gradient] = torch.autograd.grad(ys.pow(2).sum(), [t, *f.parameters()])
        for a, b in zip(grads[gradient], fine):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(grads["backprop"], grads["checkpoint"]):  # the same discrete gradient
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_refused_where_not_supported_yet_or_meaningless():
    f = RowMLP()
    y0 = torch.randn(2, 3, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match="per_sample"):
        neuralode.odeint(f, (y0, y0), t, options=PS)
    with pytest.raises(ValueError, match="per_sample"):
        neuralode.odeint(f, y0, t, options={**PS, "step_t": [0.5]})
    with pytest.raises(ValueError, match="per_sample.*must be True or False"):
        neuralode.odeint(f, y0, t, options={"per_sample": 1})
    with pytest.raises(ValueError, match="adjoint_options: 'per_sample' must be the forward's"):
        neuralode.odeint(f, y0, t, options=PS, gradient="adjoint", adjoint_options={"per_sample": False})


def test_nan_in_one_sample_names_it():
    def f(t, y):
        out = -y
        return torch.where(t > 0.5, out * float("nan"), out) if y.shape[0] == 1 else torch.cat(
            [out[:1], torch.where(t[1:] > 0.5, out[1:] * float("nan"), out[1:])])

    y0 = torch.ones(2, 1, dtype=F64)
    with pytest.raises(ValueError, match="sample 1 became NaN or Inf"):
        neuralode.odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), options=PS)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("shape", [(0, 2), (3, 0)])
def test_empty_batch_or_empty_rows(shape, gradient):
    """No rows, or rows without elements: nothing to step, gradients of the right shape (zeros)."""
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.ones(shape, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ys = neuralode.odeint(lambda t_, y: -k * y, y0, t, options=PS, gradient=gradient,
                          adjoint_params=(k,) if gradient != "backprop" else None)
    assert ys.shape == (3, *shape)
    grad_y0, grad_k = torch.autograd.grad(ys.sum(), [y0, k], allow_unused=True)
    assert grad_y0.shape == shape
    assert grad_k is None or float(grad_k) == 0.0


def test_stats_count_each_samples_steps():
    """steps_per_sample_max/mean: each sample's accepted steps, as that sample takes alone."""
    k = torch.tensor([0.5, 5.0, 50.0], dtype=F64).view(3, 1)
    y0 = torch.ones(3, 2, dtype=F64, requires_grad=True)
    t = torch.linspace(0, 1, 5, dtype=F64)
    stats = neuralode.SolverStats()
    ys = neuralode.odeint(lambda t_, y: -k * y, y0, t, rtol=1e-8, atol=1e-10, options=PS, stats=stats,
                          gradient="adjoint", adjoint_params=())
    ys.sum().backward()
    alone = []
    for b in range(3):
        s = neuralode.SolverStats()
        neuralode.odeint(lambda t_, y: -k[b:b + 1] * y, y0[b:b + 1].detach(), t, rtol=1e-8, atol=1e-10,
                         options=PS, stats=s)
        alone.append(s.steps_accepted)
    assert stats.steps_per_sample_max == max(alone)
    assert stats.steps_per_sample_mean == pytest.approx(sum(alone) / 3)
    assert stats.steps_per_sample_mean < stats.steps_per_sample_max <= stats.steps_accepted
    assert 0 < stats.steps_per_sample_max_backward <= stats.steps_accepted_backward


class VanDerPol(nn.Module):
    """Van der Pol oscillators, one learnable mu per row: dx/dt = v, dv/dt = mu (1 - x^2) v - x."""

    def __init__(self, mu):
        super().__init__()
        self.mu = nn.Parameter(torch.as_tensor(mu, dtype=F64))

    def forward(self, t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, self.mu * (1 - x * x) * v - x], dim=-1)


def _tries(stats, backward):
    if backward:
        return stats.steps_accepted_backward + stats.steps_rejected_backward
    return stats.steps_accepted + stats.steps_rejected


def test_predictive_controller_is_the_per_sample_default_and_rejects_fewer_steps():
    """A stiff Van der Pol row (mu = 10): the I rule keeps the step after an accept and is
    rejected where the error grows from step to step (the adjoint's re-solved state leaving
    the limit cycle backwards does so all along); Gustafsson's predictive rule extrapolates
    that growth. Batch of one: every try is the row's own."""
    f = VanDerPol([10.0])
    y0 = torch.tensor([[-0.888, 0.715]], dtype=F64)
    t = torch.linspace(0, 10, 20, dtype=F64)
    tries, results = {}, {}
    for controller in (None, "predictive", "I"):
        options = dict(PS) if controller is None else {**PS, "controller": controller}
        stats = neuralode.SolverStats()
        ys = neuralode.odeint_adjoint(f, y0, t, rtol=1e-6, atol=1e-6, options=options, stats=stats)
        grad = torch.autograd.grad(ys.pow(2).mean(), f.mu)[0]
        tries[controller] = (_tries(stats, False), _tries(stats, True))
        results[controller] = (ys.detach(), grad)
    # Unset is the predictive rule, bit for bit.
    assert tries[None] == tries["predictive"]
    torch.testing.assert_close(results[None], results["predictive"], rtol=0, atol=0)
    # Fewer tries both ways (measured: 135 against 149 forwards, 268 against 297 backwards).
    assert tries["predictive"][0] < tries["I"][0]
    assert tries["predictive"][1] < 0.95 * tries["I"][1]
    # The same solution to the tolerance either way.
    torch.testing.assert_close(results["predictive"][0], results["I"][0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("per_sample", [False, True])
def test_predictive_controller_meets_the_tolerance(per_sample):
    """Any controller only places steps: with "predictive" (also on the shared clock, where
    "I" stays the default) the solution still meets rtol against the closed form."""
    A, y0, t, c, closed = _linear_problem([0.1, 1.0, 8.0, 30.0])
    f = lambda t_, y: torch.einsum("bij,bj->bi", A, y)  # noqa: E731
    ys = neuralode.odeint(f, y0, t, rtol=1e-8, atol=1e-10,
                          options={"per_sample": per_sample, "controller": "predictive"})
    torch.testing.assert_close(ys, closed(y0, A, t), rtol=1e-6, atol=1e-8)
