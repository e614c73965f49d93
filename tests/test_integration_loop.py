"""What the one integration loop (planner, system, observer) gives every method:
checkpointing for the fixed-step methods, the adaptive adjoint landing on every knot,
and per-sample adaptive times in one C++ call. Gradients are checked against closed
forms and against backprop (the exact gradient of the discrete solve)."""


import pytest
import torch
from torch import nn

import neuralode
from neuralode import _C
from test_adaptive import TanhMLP  # f(t, z) = W2 tanh(W1 [z, t] + b1) + b2, per-sample t too

FIXED = ["euler", "midpoint", "rk4", "rk4_classic"]


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _times(kind):
    if kind == "per_sample":
        t = torch.tensor([[0.0, 0.1, -0.2], [0.5, 0.9, 0.3], [1.4, 1.0, 0.9]], dtype=torch.float64)
        return t.unsqueeze(-1)
    return torch.tensor([0.0, 0.5, 1.4], dtype=torch.float64)


# ---------------------------------------------------------------- checkpoint, fixed steps

FIXED_CASES = [
    ("1d", {"max_step": 0.2}),
    ("1d", {"step_size": 0.3}),  # a uniform grid: outputs between grid points interpolated
    ("1d", None),  # one step per interval
    ("per_sample", {"max_step": 0.2}),
]


@pytest.mark.parametrize("times,options", FIXED_CASES)
@pytest.mark.parametrize("method", FIXED)
def test_fixed_checkpoint_equals_backprop(method, times, options):
    """The replay of the recorded steps is the exact gradient of the discrete solve:
    backprop's to round-off, w.r.t. y0, the parameters and the times."""
    func = TanhMLP(hidden=6)
    y0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    t = _times(times).requires_grad_(True)
    w = torch.randn(3, 3, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    inputs = [y0, t] + list(func.parameters())
    grads, stats = {}, {}
    for gradient in ("backprop", "checkpoint"):
        stats[gradient] = neuralode.SolverStats()
        ys = neuralode.odeint(func, y0, t, method=method, options=options, gradient=gradient, stats=stats[gradient])
        grads[gradient] = torch.autograd.grad((ys * w).sum(), inputs)
    for name, a, b in zip(("y0", "t", "w1", "b1", "w2", "b2"), grads["checkpoint"], grads["backprop"]):
        assert b.abs().max() > 0, name
        assert _rel(a, b) < 1e-12, name
    # The replay takes every recorded step once, no more.
    ck = stats["checkpoint"]
    assert ck.steps_accepted_backward == ck.steps_accepted == stats["backprop"].steps_accepted
    assert ck.nfe_backward == ck.nfe_forward


@pytest.mark.parametrize("times", ["1d", "per_sample"])
@pytest.mark.parametrize("method", FIXED)
def test_fixed_checkpoint_gradcheck(method, times):
    func = TanhMLP(hidden=3)
    names = [n for n, _ in func.named_parameters()]
    options = {"max_step": 0.35}

    def fn(y0, t, *ps):
        params = dict(zip(names, ps))
        f = lambda tt, z: torch.func.functional_call(func, params, (tt, z))
        return neuralode.odeint(f, y0, t, method=method, options=options, gradient="checkpoint", adjoint_params=ps)

    y0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64, requires_grad=True)
    t = _times(times).requires_grad_(True)
    ps = [p.detach().clone().requires_grad_(True) for p in func.parameters()]
    assert torch.autograd.gradcheck(fn, (y0, t, *ps), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_fixed_checkpoint_matches_closed_form():
    """dz/dt = -k z with RK4: the discrete solve's gradient is the closed form of the
    RK4 amplification factor R(-k h) = 1 - kh + (kh)^2/2 - (kh)^3/6 + (kh)^4/24."""
    k = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[2.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ys = neuralode.odeint(lambda t, z: -k * z, y0, t, method="rk4_classic", options={"max_step": 0.25},
                          gradient="checkpoint", adjoint_params=(k,))
    g_y0, g_k = torch.autograd.grad(ys[-1].sum(), [y0, k])
    x = -k.detach() * 0.25
    r = 1 + x + x**2 / 2 + x**3 / 6 + x**4 / 24
    dr_dk = -0.25 * (1 + x + x**2 / 2 + x**3 / 6)
    assert abs(ys[-1].item() - 2.0 * r.item() ** 4) < 1e-14
    assert abs(g_y0.item() - r.item() ** 4) < 1e-14
    assert abs(g_k.item() - 2.0 * 4 * r.item() ** 3 * dr_dk.item()) < 1e-13


# ---------------------------------------------------------------- the adjoint on knots


class JumpMLP(nn.Module):
    """A small MLP whose output gain jumps at the given times: f is discontinuous there.
    With ``kinks=True`` the gain instead bends there (continuous, its slope in t jumps by
    0.25, 0.5, 0.75: from 1 to 3.5 at t = 4, so that the errors' growth stays that of the
    smooth case; with the jumps' 1, 2, 3 the gain would reach 11)."""

    def __init__(self, jumps, kinks=False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(16, 3, generator=g, dtype=torch.float64) * 0.8)
        self.w2 = nn.Parameter(torch.randn(2, 16, generator=g, dtype=torch.float64) * 0.5)
        self.jumps = list(jumps)
        self.kinks = kinks

    def forward(self, t, z):
        if self.kinks:
            gain = 1.0 + sum(0.25 * (k + 1) * torch.relu(t - j).to(z.dtype) for k, j in enumerate(self.jumps))
        else:
            gain = 1.0 + sum(float(k + 1) * (t >= j).to(z.dtype) for k, j in enumerate(self.jumps))
        tt = t.expand(z.shape[0], 1).to(z.dtype)
        return gain * (torch.tanh(torch.cat([z, tt], 1) @ self.w1.T) @ self.w2.T)


def _adjoint_vs_checkpoint(jumps, norm, knots="jump_t"):
    func = JumpMLP(jumps, kinks=knots == "step_t")
    y0 = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 1.5, 4.0], dtype=torch.float64)
    out = {}
    for gradient in ("checkpoint", "adjoint"):
        stats = neuralode.SolverStats()
        y = y0.clone().requires_grad_(True)
        extra = {"adjoint_options": {knots: jumps, "norm": norm}} if gradient == "adjoint" else {}
        ys = neuralode.odeint(func, y, t, rtol=1e-8, atol=1e-8, gradient=gradient,
                              options={knots: jumps}, stats=stats, **extra)
        out[gradient] = (torch.autograd.grad(ys.pow(2).sum(), [y] + list(func.parameters())), stats)
    diff = max(_rel(a, c) for a, c in zip(out["adjoint"][0], out["checkpoint"][0]))
    stats = out["adjoint"][1]
    return diff, stats.nfe_backward / stats.nfe_forward


@pytest.mark.parametrize("norm", ["full", "seminorm"])
def test_adjoint_lands_on_every_knot(norm):
    """f jumps at three jump_t knots: walking backwards the adjoint stops at each one, so
    it agrees with the discrete adjoint to the solve's tolerance, as on smooth dynamics,
    and its backward NFE stays about as close to the forward's as there (it used to step
    across all but the farthest knot: a gradient difference of ~6e-6, and backward/forward
    NFE 3.3 against 1.8 with the seminorm, 5.0 against 2.2 with the full norm). The bound
    is absolute, 300 tol (rtol = atol = 1e-8; dopri5's error estimate is torchdiffeq's, 2/3
    of the textbook one, so errors run ~1.5x the tolerance's share): the smooth case's own
    difference moves by 5x with where the steps fall (1e-7 to 9e-7)."""
    smooth_diff, smooth_ratio = _adjoint_vs_checkpoint([], norm)
    jump_diff, jump_ratio = _adjoint_vs_checkpoint([1.0, 2.0, 3.0], norm)
    assert smooth_diff < 3e-6
    assert jump_diff < 3e-6, (jump_diff, smooth_diff)
    # The full norm also controls dL/dtheta, whose error grows with the gain (7x after the
    # last knot): a little more room there.
    assert jump_ratio < (1.15 if norm == "seminorm" else 1.3) * smooth_ratio, (jump_ratio, smooth_ratio)


@pytest.mark.parametrize("norm", ["full", "seminorm"])
def test_adjoint_lands_on_every_step_t_knot(norm):
    """step_t knots (torchdiffeq's: f continuous there, the step's last stage kept as the
    next one's first) on an f whose gain bends at three knots: walking backwards the adjoint
    lands on each, so it agrees with the discrete adjoint as on smooth dynamics, with its
    backward NFE as close to the forward's. (f that jumps needs jump_t, above: with step_t
    the kept stage is f from the wrong side of the jump, an O(h) error at each knot.)"""
    smooth_diff, smooth_ratio = _adjoint_vs_checkpoint([], norm, "step_t")
    kink_diff, kink_ratio = _adjoint_vs_checkpoint([1.0, 2.0, 3.0], norm, "step_t")
    assert smooth_diff < 3e-6
    assert kink_diff < 3e-6, (kink_diff, smooth_diff)
    assert kink_ratio < (1.15 if norm == "seminorm" else 1.3) * smooth_ratio, (kink_ratio, smooth_ratio)


@pytest.mark.parametrize("knots", ["jump_t", "step_t"])
@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_adjoint_with_knots_matches_closed_form(gradient, knots):
    """dz/dt = g(t) z W^T on [0, 3]: z(3) = z0 expm(G W)^T with G = int g = 4.5, the
    gradients w.r.t. z0 and W from autograd through matrix_exp. jump_t: g = 1, 3, 0.5 on
    [0, 1), [1, 2), [2, 3] (f jumps); step_t: g = 1 + relu(t - 1) / 2 + relu(t - 2) (f bends)."""
    jumps = [1.0, 2.0]
    W0 = torch.tensor([[-0.2, -1.0], [1.0, -0.3]], dtype=torch.float64)
    W = nn.Parameter(W0.clone())
    if knots == "jump_t":
        g = lambda t: torch.where(t < 1.0, 1.0, torch.where(t < 2.0, 3.0, 0.5)).to(torch.float64)
    else:
        g = lambda t: (1.0 + 0.5 * torch.relu(t - 1.0) + torch.relu(t - 2.0)).to(torch.float64)
    f = lambda t, z: g(t) * (z @ W.T)
    z0 = torch.tensor([[0.6, -0.4], [0.1, 0.9]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0], [0.5, 0.3]], dtype=torch.float64)
    ys = neuralode.odeint(f, z0, t, rtol=1e-10, atol=1e-10, options={knots: jumps},
                          gradient=gradient, adjoint_params=(W,))
    got = torch.autograd.grad((ys[-1] * w).sum(), [z0, W])
    Wc = W0.clone().requires_grad_(True)
    zc = z0.detach().clone().requires_grad_(True)
    exact = torch.autograd.grad((zc @ torch.linalg.matrix_exp(4.5 * Wc).T * w).sum(), [zc, Wc])
    assert _rel(ys[-1].detach(), (z0 @ torch.linalg.matrix_exp(4.5 * W0).T).detach()) < 1e-8
    for a, b in zip(got, exact):
        assert _rel(a, b) < 1e-7


# ---------------------------------------------------------------- per-sample adaptive times


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of the two C++ entry points."""
    counts = {"solve": 0, "gradient": 0}
    for name in counts:
        original = getattr(_C, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(_C, name, counted)
    return counts


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_per_sample_adaptive_is_one_call_and_exact(method, gradient, calls):
    """dz/dt = -k z with per-sample times: z_b(t_ib) = z0_b exp(-k (t_ib - t_0b)); one C++
    solve (and one gradient call) however many observation times, and the closed-form
    gradients w.r.t. z0, k and every t_ib: dz_i/dt_i = -k z_i, dz_i/dt_0 = k z_i."""
    k = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    z0 = torch.tensor([[1.0, 2.0], [-0.5, 0.3], [0.8, -1.2]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.0, 0.2, -1.0], [0.4, 0.9, -0.6], [1.1, 1.0, 0.5], [2.0, 1.6, 0.9]],
                     dtype=torch.float64).unsqueeze(-1).requires_grad_(True)
    w = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    kwargs = {} if gradient == "backprop" else {"adjoint_params": (k,)}
    ys = neuralode.odeint(lambda tt, z: -k * z, z0, t, method=method, rtol=1e-10, atol=1e-10,
                          gradient=gradient, **kwargs)
    g_z0, g_k, g_t = torch.autograd.grad((ys * w).sum(), [z0, k, t])
    assert calls == {"solve": 1, "gradient": 0 if gradient == "backprop" else 1}

    with torch.no_grad():
        elapsed = t - t[0]  # (T, B, 1)
        exact = z0 * torch.exp(-k * elapsed)
        wz = (w * exact).sum(-1, keepdim=True)  # (T, B, 1)
        exact_g_z0 = (w * torch.exp(-k * elapsed)).sum(0)
        exact_g_k = -(wz * elapsed).sum()
        exact_g_t = -k * wz
        exact_g_t[0] = k * wz[1:].sum(0)
    assert _rel(ys.detach(), exact) < 1e-8
    assert _rel(g_z0, exact_g_z0) < 1e-7
    assert _rel(g_k, exact_g_k) < 1e-7
    assert _rel(g_t, exact_g_t) < 1e-7
