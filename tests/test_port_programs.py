"""Programs written the way torchdiffeq users write them, run on neuralode.

Each program below is torchdiffeq code with one change: ``from neuralode import
odeint, odeint_adjoint`` instead of ``from torchdiffeq import ...``. The tests check
that the programs run and give the right numbers: closed forms where the problem has
one (these run without torchdiffeq), and, side by side with torchdiffeq 0.2.5 when it
is installed, the same outputs and gradients on the same model, data and noise.

Programs:

* a continuous normalizing flow (FFJORD-style): state ``(z, logp)``, a time-conditioned
  MLP, the divergence by Hutchinson's estimator (``autograd.grad`` of ``e . f`` with
  ``create_graph=True``, one noise draw per batch), trained with Adam through
  ``odeint_adjoint``; the exact-trace version on a linear field against its closed form.
  Its adjoint and checkpoint solves find the parameters themselves, as torchdiffeq's
  (``test_cnf_adjoint_finds_the_parameters_itself``: FFJORD's ``z.requires_grad_(True)``
  on the state piece it receives is not a captured tensor);
* a latent ODE whose encoder runs backwards in time (decreasing ``t``), as in
  torchdiffeq's latent ODE example, and a decoder forwards;
* float64 numpy times with a float32 model;
* a learnable start time ``t0`` (an ``nn.Parameter``) with dopri5.

Bounds: the two libraries take different adaptive steps (their dopri5 error
estimates and first-step rules differ), so side-by-side results differ by the
solvers' own errors: each bound is a small multiple of the tolerance asked for, as
are the closed-form bounds. ``_rel``: largest difference over the largest entry.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from neuralode import odeint, odeint_adjoint

F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models in one thread: on a loaded machine with few cores, more threads make
    these tiny ops many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rel(a, b) -> float:
    """Largest difference relative to the largest entry of ``b`` (tensors or sequences of them)."""
    if isinstance(a, (tuple, list)):
        a = torch.cat([x.reshape(-1) for x in a])
        b = torch.cat([x.reshape(-1) for x in b])
    return float((a - b).abs().max() / b.abs().max())


def _grads(module: nn.Module) -> list:
    return [p.grad.detach().clone() for p in module.parameters()]


# ---------------------------------------------------------------------------
# Continuous normalizing flow (FFJORD-style), state (z, logp)
# ---------------------------------------------------------------------------


class HutchinsonCNF(nn.Module):
    """``d/dt (z, logp) = (f(t, z), -tr(df/dz))`` with ``f`` an MLP of ``[z, t]`` and the
    trace estimated by Hutchinson's ``e^T (df/dz) e``; ``self.noise`` (``e``) is drawn once
    per batch by the training loop. ``exact=True``: the exact trace, one ``autograd.grad``
    per dimension (what FFJORD does for low-dimensional data)."""

    def __init__(self, dim: int = 2, hidden: int = 32, exact: bool = False):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1, hidden), nn.Tanh(),
            nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, dim),
        )
        self.exact = exact
        self.noise = None

    def forward(self, t, states):
        z, _ = states
        with torch.enable_grad():
            z.requires_grad_(True)
            dz = self.net(torch.cat([z, t.expand(z.shape[0], 1)], dim=1))
            if self.exact:
                trace = sum(
                    torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i]
                    for i in range(z.shape[1])
                ).unsqueeze(1)
            else:
                e_dfdz = torch.autograd.grad(dz, z, self.noise, create_graph=True)[0]
                trace = (e_dfdz * self.noise).sum(dim=1, keepdim=True)
        return dz, -trace


class LinearCNF(nn.Module):
    """``d/dt (z, logp) = (z A^T, -tr(df/dz))`` with the exact trace by autograd (it is
    ``tr(A)``): ``logp(T) = logp(0) - tr(A) T`` and ``z(T) = z(0) expm(T A^T)``."""

    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, states):
        z, _ = states
        with torch.enable_grad():
            z.requires_grad_(True)
            dz = z @ self.A.T
            trace = sum(
                torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i] for i in range(z.shape[1])
            ).unsqueeze(1)
        return dz, -trace


def _gaussian_mixture(n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """``n`` samples of an equal mixture of 4 Gaussians (std 0.3) centred on (+-1.5, +-1.5)."""
    centres = torch.tensor([[1.5, 1.5], [-1.5, 1.5], [-1.5, -1.5], [1.5, -1.5]], dtype=dtype)
    which = torch.randint(0, 4, (n,), generator=generator)
    return centres[which] + 0.3 * torch.randn(n, 2, generator=generator, dtype=dtype)


def _cnf_nll(odeint_fn, func, x, t, **kwargs):
    """Negative log-likelihood of ``x`` under the flow to a standard normal: ``z(T)`` and
    ``logp(T) = -int tr`` from ``(x, 0)``, ``log p(x) = log N(z(T)) - logp(T)``."""
    logp0 = torch.zeros(x.shape[0], 1, dtype=x.dtype)
    zs, logps = odeint_fn(func, (x, logp0), t, method="dopri5", **kwargs)
    z1, logp1 = zs[-1], logps[-1]
    log_normal = -0.5 * z1.pow(2).sum(dim=1, keepdim=True) - math.log(2 * math.pi)
    return -(log_normal - logp1).mean()


def test_cnf_trains_with_odeint_adjoint():
    """Five Adam steps of an FFJORD-style CNF (Hutchinson trace, fresh noise per batch,
    float32) through ``odeint_adjoint`` on samples of a Gaussian mixture: every step runs,
    the loss is finite, and the negative log-likelihood of the data goes down."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    func = HutchinsonCNF(hidden=16)
    opt = torch.optim.Adam(func.parameters(), lr=2e-2)
    x = _gaussian_mixture(64, gen)
    t = torch.tensor([0.0, 1.0])
    losses = []
    for _ in range(5):
        func.noise = torch.randn(x.shape, generator=gen)  # once per batch
        opt.zero_grad()
        loss = _cnf_nll(odeint_adjoint, func, x, t, rtol=1e-5, atol=1e-5)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    # The estimate is noisy (one noise draw per step): the end against the start, with
    # the exact trace so that the noise does not decide it.
    func.exact = True
    with torch.no_grad():
        x_eval = x.detach()
        final = _cnf_nll(odeint, func, x_eval, t, rtol=1e-5, atol=1e-5).item()
        torch.manual_seed(0)
        start = _cnf_nll(odeint, HutchinsonCNF(hidden=16, exact=True), x_eval, t, rtol=1e-5, atol=1e-5).item()
    assert losses[-1] < losses[0]
    assert final < start - 0.05, (start, final, losses)


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_cnf_adjoint_finds_the_parameters_itself(gradient):
    """FFJORD's dynamics call ``z.requires_grad_(True)`` on the state they receive:
    ``odeint_adjoint(func, (z, logp), t)`` without ``adjoint_params`` must run (torchdiffeq
    takes ``func.parameters()``) and give the gradient of the explicit-parameters call."""
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    func = HutchinsonCNF(hidden=8)
    x = _gaussian_mixture(16, gen)
    func.noise = torch.randn(x.shape, generator=gen)
    t = torch.tensor([0.0, 1.0])
    _cnf_nll(odeint, func, x, t, rtol=1e-5, atol=1e-5, gradient=gradient).backward()
    implicit = _grads(func)
    func.zero_grad()
    _cnf_nll(odeint, func, x, t, rtol=1e-5, atol=1e-5, gradient=gradient,
             adjoint_params=tuple(func.parameters())).backward()
    assert _rel(implicit, _grads(func)) == 0.0


def _cnf_step0_gradients(odeint_fn, explicit_params: bool = False, **kwargs):
    """Loss and parameter gradients of the first training step (float64, fixed seed,
    fixed data and noise): the same model for every library. ``explicit_params``: pass
    ``adjoint_params=tuple(func.parameters())`` (else found from the module)."""
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    func = HutchinsonCNF(hidden=16).double()
    x = _gaussian_mixture(32, gen, dtype=F64)
    func.noise = torch.randn(x.shape, generator=gen, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    if explicit_params:
        kwargs["adjoint_params"] = tuple(func.parameters())
    loss = _cnf_nll(odeint_fn, func, x, t, rtol=1e-6, atol=1e-8, **kwargs)
    loss.backward()
    return loss.item(), _grads(func)


def test_cnf_adjoint_gradient_matches_backprop():
    """The CNF's continuous-adjoint gradient (``odeint_adjoint``, rtol 1e-6) equals the
    exact gradient of the discrete solve (``gradient="backprop"``) and the discrete
    adjoint (``"checkpoint"``) to the tolerance's level (rel. 1e-3); backprop and
    checkpoint agree to round-off."""
    loss_adj, g_adj = _cnf_step0_gradients(odeint_adjoint)
    loss_bp, g_bp = _cnf_step0_gradients(odeint)
    loss_ck, g_ck = _cnf_step0_gradients(odeint, gradient="checkpoint")
    assert loss_adj == loss_bp == loss_ck
    assert _rel(g_adj, g_bp) < 1e-3
    assert _rel(g_ck, g_bp) < 1e-9


def test_cnf_side_by_side_with_torchdiffeq():
    """Same model, data and noise: neuralode's ``odeint_adjoint`` against torchdiffeq's
    (and both libraries' backprop): the losses agree to the tolerance's level and the
    gradients to rel. 1e-4 (the libraries take different steps; measured: ~1e-6)."""
    tdq = pytest.importorskip("torchdiffeq")
    loss_ours, g_ours = _cnf_step0_gradients(odeint_adjoint)
    loss_theirs, g_theirs = _cnf_step0_gradients(tdq.odeint_adjoint)
    loss_bp_ours, g_bp_ours = _cnf_step0_gradients(odeint)
    loss_bp_theirs, g_bp_theirs = _cnf_step0_gradients(tdq.odeint)
    assert abs(loss_ours - loss_theirs) < 1e-5 * abs(loss_theirs)
    assert abs(loss_bp_ours - loss_bp_theirs) < 1e-5 * abs(loss_bp_theirs)
    assert _rel(g_ours, g_theirs) < 1e-4
    assert _rel(g_bp_ours, g_bp_theirs) < 1e-4


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint", "backprop"])
def test_cnf_exact_trace_linear_closed_form(gradient):
    """Exact-trace CNF on a linear field ``f(z) = z A^T``: ``logp(T) = -tr(A) T`` for every
    sample, ``z(T) = z(0) expm(T A^T)``, and the gradient of ``sum logp(T)`` w.r.t. ``A``
    is ``-n T I`` (``n`` samples), in every gradient mode."""
    A = torch.tensor([[0.3, -1.2], [0.8, -0.5]], dtype=F64)
    func = LinearCNF(A)
    z0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    logp0 = torch.zeros(5, 1, dtype=F64)
    T = 1.5
    t = torch.tensor([0.0, 0.5, T], dtype=F64)
    kwargs = {} if gradient == "backprop" else {"adjoint_params": tuple(func.parameters())}
    zs, logps = odeint(func, (z0, logp0), t, method="dopri5", rtol=1e-10, atol=1e-12, gradient=gradient, **kwargs)
    exact_z = torch.stack([z0 @ torch.linalg.matrix_exp(ti * A.T) for ti in t])
    exact_logp = (-torch.trace(A) * t).reshape(-1, 1, 1).expand(-1, 5, 1)
    torch.testing.assert_close(logps, exact_logp, rtol=0, atol=1e-12)
    torch.testing.assert_close(zs, exact_z, rtol=1e-8, atol=1e-9)
    logps[-1].sum().backward()
    torch.testing.assert_close(func.A.grad, -5 * T * torch.eye(2, dtype=F64), rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------
# Latent ODE: an encoder run backwards in time, a decoder forwards
# ---------------------------------------------------------------------------


class ODEFunc(nn.Module):
    """A time-independent MLP field, as in torchdiffeq's examples."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ELU(), nn.Linear(hidden, dim))

    def forward(self, t, y):
        return self.net(y)


class LatentODE(nn.Module):
    """An ODE-RNN encoder run from the last observation to the first (each interval a
    solve with decreasing ``t``, then a jump ``h = tanh(W [h, x_i])``), the initial latent
    state from ``h`` (its mean; no sampling), and an ODE decoder from ``t[0]`` forwards
    over all observation times."""

    def __init__(self, obs_dim: int = 2, hidden: int = 8, latent: int = 3):
        super().__init__()
        self.hidden = hidden
        self.enc_func = ODEFunc(hidden, 16)
        self.enc_jump = nn.Linear(hidden + obs_dim, hidden)
        self.to_latent = nn.Linear(hidden, latent)
        self.dec_func = ODEFunc(latent, 16)
        self.readout = nn.Linear(latent, obs_dim)

    def forward(self, odeint_fn, x, t, **kwargs):
        # x: (T, batch, obs_dim) observed at increasing t (T,)
        h = torch.zeros(x.shape[1], self.hidden, dtype=x.dtype)
        h = torch.tanh(self.enc_jump(torch.cat([h, x[-1]], dim=1)))
        for i in range(len(t) - 2, -1, -1):
            backwards = torch.stack([t[i + 1], t[i]])  # decreasing
            h = odeint_fn(self.enc_func, h, backwards, **kwargs)[-1]
            h = torch.tanh(self.enc_jump(torch.cat([h, x[i]], dim=1)))
        z0 = self.to_latent(h)
        zs = odeint_fn(self.dec_func, z0, t, **kwargs)
        return self.readout(zs)


def _spirals(batch: int, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Noisy samples of clockwise spirals ``r(t) (cos, -sin)(t + phase)`` at times ``t``."""
    phase = torch.rand(batch, generator=generator, dtype=t.dtype) * 2 * math.pi
    r = 1.0 + 0.3 * t[:, None]
    angle = t[:, None] + phase[None, :]
    x = torch.stack([r * torch.cos(angle), -r * torch.sin(angle)], dim=-1)
    return x + 0.05 * torch.randn(x.shape, generator=generator, dtype=t.dtype)


def _latent_ode_run(odeint_fn, **kwargs):
    gen = torch.Generator().manual_seed(4)
    t = torch.linspace(0.0, 2.0, 6, dtype=F64)
    x = _spirals(8, t, gen)
    torch.manual_seed(4)
    model = LatentODE().double()
    pred = model(odeint_fn, x, t, method="dopri5", rtol=1e-8, atol=1e-10, **kwargs)
    loss = (pred - x).pow(2).mean()
    loss.backward()
    return pred.detach(), _grads(model)


@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "odeint_adjoint"])
def test_latent_ode_side_by_side_with_torchdiffeq(adjoint):
    """The latent ODE (encoder solves with decreasing ``t``) gives torchdiffeq's
    reconstructions and parameter gradients: ``odeint`` against ``odeint``,
    ``odeint_adjoint`` against ``odeint_adjoint`` (rtol 1e-8: rel. 1e-5; the libraries
    take different steps)."""
    tdq = pytest.importorskip("torchdiffeq")
    ours = odeint_adjoint if adjoint else odeint
    theirs = tdq.odeint_adjoint if adjoint else tdq.odeint
    pred_ours, g_ours = _latent_ode_run(ours)
    pred_theirs, g_theirs = _latent_ode_run(theirs)
    assert _rel(pred_ours, pred_theirs) < 1e-5
    assert _rel(g_ours, g_theirs) < 1e-5


def test_latent_ode_gradient_modes_agree():
    """The latent ODE's gradients in the three modes agree: backprop and checkpoint (the
    same discrete solve) to round-off, the continuous adjoint to the tolerance's level
    (rtol 1e-8: rel. 1e-4; the exact gradient of the ODE lies between, the side-by-side
    test above pins the adjoint to torchdiffeq's at rel. 1e-5)."""
    _, g_bp = _latent_ode_run(odeint)
    _, g_ck = _latent_ode_run(lambda *a, **k: odeint(*a, gradient="checkpoint", **k))
    _, g_adj = _latent_ode_run(odeint_adjoint)
    assert _rel(g_ck, g_bp) < 1e-10
    assert _rel(g_adj, g_bp) < 1e-4


class LinearField(nn.Module):
    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, h):
        return h @ self.A.T


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_decreasing_times_linear_closed_form(gradient):
    """``dh/dt = h A^T`` solved over decreasing times ``t`` from ``h(t_0)``:
    ``h(t_i) = h(t_0) expm((t_i - t_0) A^T)``; the gradients of a weighted sum of all
    outputs w.r.t. ``h(t_0)`` and ``A`` equal those of the closed form (autograd through
    ``matrix_exp``), in every gradient mode."""
    A = torch.tensor([[-0.2, 1.0], [-1.0, -0.3]], dtype=F64)
    t = torch.tensor([2.0, 1.3, 0.4, -0.5], dtype=F64)
    gen = torch.Generator().manual_seed(5)
    h0 = torch.randn(3, 2, generator=gen, dtype=F64)
    w = torch.randn(4, 3, 2, generator=gen, dtype=F64)

    func = LinearField(A)
    h0_solve = h0.clone().requires_grad_(True)
    hs = odeint(func, h0_solve, t, method="dopri5", rtol=1e-10, atol=1e-12, gradient=gradient)
    (hs * w).sum().backward()

    A_exact = A.clone().requires_grad_(True)
    h0_exact = h0.clone().requires_grad_(True)
    exact = torch.stack([h0_exact @ torch.linalg.matrix_exp((ti - t[0]) * A_exact.T) for ti in t])
    (exact * w).sum().backward()

    torch.testing.assert_close(hs.detach(), exact.detach(), rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(h0_solve.grad, h0_exact.grad, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(func.A.grad, A_exact.grad, rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------------------
# float64 numpy times, float32 model
# ---------------------------------------------------------------------------


class TimeMLP(nn.Module):
    """A float32 ``nn.Sequential`` of Linear layers fed ``[y, t]``: ``torch.cat`` would
    promote a float64 ``t`` and the float32 layers would then refuse it. Records the
    dtypes of the times it is called with."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
        self.time_dtypes = set()

    def forward(self, t, y):
        self.time_dtypes.add(t.dtype)
        return self.net(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))


def _numpy_times_run(odeint_fn, **kwargs):
    t = torch.from_numpy(np.linspace(0, 1, 10))  # float64
    y0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(6))  # float32
    torch.manual_seed(6)
    func = TimeMLP()
    ys = odeint_fn(func, y0, t, method="dopri5", rtol=1e-6, atol=1e-7, **kwargs)
    ys.pow(2).mean().backward()
    return func, ys.detach(), _grads(func)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_numpy_float64_times_with_float32_model(gradient):
    """``t = torch.from_numpy(np.linspace(0, 1, 10))`` (float64) with a float32 state and
    model: the solve runs, ``f`` only ever sees float32 times (also in the backward pass),
    the outputs are float32 and the gradient equals backprop's to float32 precision."""
    assert torch.from_numpy(np.linspace(0, 1, 10)).dtype == F64
    func, ys, grads = _numpy_times_run(odeint, gradient=gradient)
    assert ys.dtype == torch.float32 and ys.shape == (10, 8, 2)
    assert func.time_dtypes == {torch.float32}
    assert all(torch.isfinite(g).all() for g in grads)
    _, ys_bp, grads_bp = _numpy_times_run(odeint)
    torch.testing.assert_close(ys, ys_bp, rtol=0, atol=0)
    assert _rel(grads, grads_bp) < 1e-4


@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "odeint_adjoint"])
def test_numpy_float64_times_side_by_side_with_torchdiffeq(adjoint):
    """float64 numpy times, float32 model: neuralode's outputs and gradients equal
    torchdiffeq's to float32 precision (rel. 1e-4 at rtol 1e-6), and both call ``f``
    with float32 times only."""
    tdq = pytest.importorskip("torchdiffeq")
    func_ours, ys_ours, g_ours = _numpy_times_run(odeint_adjoint if adjoint else odeint)
    func_theirs, ys_theirs, g_theirs = _numpy_times_run(tdq.odeint_adjoint if adjoint else tdq.odeint)
    assert ys_ours.dtype == ys_theirs.dtype == torch.float32
    assert func_ours.time_dtypes == func_theirs.time_dtypes == {torch.float32}
    assert _rel(ys_ours, ys_theirs) < 1e-5
    assert _rel(g_ours, g_theirs) < 1e-4


# ---------------------------------------------------------------------------
# A learnable start time
# ---------------------------------------------------------------------------


class Growth(nn.Module):
    """``y' = a y`` with a learnable rate: ``y(t) = y0 exp(a (t - t0))``."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, t, y):
        return self.a * y


def _learnable_t0_run(odeint_fn, **kwargs):
    """``t0 = nn.Parameter(0.)``, ``t = cat([t0, [0.5, 1.0]])``, loss ``y(0.5) + y(1)``
    (float32, as a user writes it): the loss and the gradients w.r.t. ``t0`` and ``a``."""
    func = Growth(0.7)
    t0 = nn.Parameter(torch.tensor(0.0))
    t = torch.cat([t0.view(1), torch.tensor([0.5, 1.0])])
    y0 = torch.tensor([1.5])
    ys = odeint_fn(func, y0, t, method="dopri5", rtol=1e-7, atol=1e-9, **kwargs)
    loss = ys[1:].sum()
    loss.backward()
    return loss.item(), t0.grad.item(), func.a.grad.item()


def _learnable_t0_exact():
    a, y0 = 0.7, 1.5
    ys = [y0 * math.exp(a * s) for s in (0.5, 1.0)]
    # d y(s)/d t0 = -a y(s); d y(s)/d a = (s - t0) y(s), with t0 = 0.
    return sum(ys), -a * sum(ys), 0.5 * ys[0] + 1.0 * ys[1]


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_learnable_start_time_closed_form(gradient):
    """A learnable ``t0`` with dopri5: ``dL/dt0 = -a (y(0.5) + y(1))`` and
    ``dL/da = 0.5 y(0.5) + y(1)`` for ``y' = a y``, in every gradient mode (float32:
    rel. 1e-5)."""
    loss, g_t0, g_a = _learnable_t0_run(odeint, gradient=gradient)
    exact_loss, exact_t0, exact_a = _learnable_t0_exact()
    assert loss == pytest.approx(exact_loss, rel=1e-5)
    assert g_t0 == pytest.approx(exact_t0, rel=1e-5)
    assert g_a == pytest.approx(exact_a, rel=1e-5)


@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "odeint_adjoint"])
def test_learnable_start_time_side_by_side_with_torchdiffeq(adjoint):
    """A learnable ``t0`` with dopri5: neuralode's loss and gradients w.r.t. ``t0`` and ``a``
    equal torchdiffeq's (``odeint``: autograd through its steps; ``odeint_adjoint``: its
    time adjoint) to the tolerance's level (float32, rtol 1e-7: rel. 1e-4; torchdiffeq's
    backprop ``dL/dt0`` is the least accurate of these, ~1e-5 from the closed form)."""
    tdq = pytest.importorskip("torchdiffeq")
    ours = _learnable_t0_run(odeint_adjoint if adjoint else odeint)
    theirs = _learnable_t0_run(tdq.odeint_adjoint if adjoint else tdq.odeint)
    for mine, other in zip(ours, theirs):
        assert mine == pytest.approx(other, rel=1e-4)
