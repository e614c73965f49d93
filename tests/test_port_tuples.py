"""Tuple and complex states.

Closed forms first (a harmonic oscillator as ``(x, v)``, a linear flow with its
log-density ``(z, logp)``, ``y' = i w y`` on complex numbers), for every method family
and every gradient mode; then the pieces of the state layout (0-d, empty and complex
pieces, tuple tolerances, the mixed norm, callable norms); then side by side with
torchdiffeq 0.2.5 when it is installed: the same values, the same evaluation counts
where the algorithm is the same, the same gradients.
"""

import math
import warnings

import pytest
import torch
from torch import nn

import neuralode
from neuralode import SolverStats, odeint

F64 = torch.float64
ENGINE_ADAPTIVE = ("dopri5", "tsit5", "bosh3", "dopri8", "adaptive_heun", "fehlberg2")
ENGINE_FIXED = ("euler", "midpoint", "rk4", "heun2", "heun3")
MULTISTEP = ("explicit_adams", "implicit_adams", "fixed_adams")
# rtol, atol and the error a solve at them must meet on the closed forms below
# (fehlberg2's error estimate is ~500x too small, as torchdiffeq's; dopri8 serves
# observations between its long steps from a 4th-order interpolant, as torchdiffeq's).
ADAPTIVE_TOL = {
    "dopri5": (1e-10, 1e-12, 1e-8), "tsit5": (1e-10, 1e-12, 1e-8), "dopri8": (1e-10, 1e-12, 2e-6),
    "bosh3": (1e-8, 1e-10, 1e-6), "adaptive_heun": (1e-6, 1e-8, 1e-4), "fehlberg2": (1e-6, 1e-8, 1e-3),
}
# Fixed-step: a step and the error that step allows (order p: ~h^p).
FIXED_STEP = {"euler": (1e-3, 5e-3), "midpoint": (1e-2, 1e-4), "heun2": (1e-2, 1e-4), "heun3": (1e-2, 1e-5),
              "rk4": (1e-2, 1e-8)}


def _solve_kwargs(method):
    """Arguments that make ``method`` accurate on the smooth problems of this file."""
    if method in ADAPTIVE_TOL:
        rtol, atol, _ = ADAPTIVE_TOL[method]
        return {"method": method, "rtol": rtol, "atol": atol}
    if method in FIXED_STEP:
        return {"method": method, "options": {"step_size": FIXED_STEP[method][0]}}
    if method == "scipy_solver":
        return {"method": method, "rtol": 1e-10, "atol": 1e-12, "options": {"solver": "RK45"}}
    return {"method": method, "options": {"step_size": 1e-2}, "rtol": 1e-10, "atol": 1e-12}


def _error_bound(method):
    if method in ADAPTIVE_TOL:
        return ADAPTIVE_TOL[method][2]
    if method in FIXED_STEP:
        return FIXED_STEP[method][1]
    return 1e-6


class Counter:
    """func wrapper that counts its calls."""

    def __init__(self, func):
        self.func = func
        self.calls = 0

    def __call__(self, t, y):
        self.calls += 1
        return self.func(t, y)


def _oscillator(t, state):
    x, v = state
    return v, -x


# ---------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ENGINE_ADAPTIVE + ENGINE_FIXED + MULTISTEP + ("scipy_solver",))
def test_oscillator_tuple_matches_cos_sin(method):
    """x'' = -x as a tuple (x, v) of tensors of different shapes: every method returns a
    tuple of trajectories shaped like y0 and equal to (x0 cos t + v0 sin t, ...)."""
    if method == "scipy_solver":
        pytest.importorskip("scipy")
    x0 = torch.tensor([[1.0, -0.5]], dtype=F64)
    v0 = torch.tensor([[0.25, 2.0]], dtype=F64)
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    if method == "explicit_adams":
        # torchdiffeq's explicit Adams (that ours imitates) is unstable at this step: short span.
        t = torch.linspace(0.0, 0.3, 4, dtype=F64)
    out = odeint(_oscillator, (x0, v0), t, **_solve_kwargs(method))
    assert isinstance(out, tuple) and len(out) == 2
    xs, vs = out
    assert xs.shape == (len(t), 1, 2) and vs.shape == (len(t), 1, 2)
    c, s = torch.cos(t).reshape(-1, 1, 1), torch.sin(t).reshape(-1, 1, 1)
    bound = _error_bound(method)
    torch.testing.assert_close(xs, x0 * c + v0 * s, rtol=0, atol=bound)
    torch.testing.assert_close(vs, v0 * c - x0 * s, rtol=0, atol=bound)


class LinearFlow(nn.Module):
    """z' = z A^T, d logp/dt = -tr(A) (a linear normalizing flow): z(t) = z0 exp(tA)^T and
    logp(t) = logp0 - tr(A) t."""

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[-0.3, 1.1], [-0.9, 0.2]], dtype=F64))

    def forward(self, t, state):
        z, logp = state
        return z @ self.A.T, -torch.trace(self.A) * torch.ones_like(logp)


def _flow_closed_form(A, z0, logp0, t):
    zs = torch.stack([z0 @ torch.linalg.matrix_exp(ti * A).T for ti in t])
    logps = torch.stack([logp0 - torch.trace(A) * ti for ti in t])
    return zs, logps


def _flow_loss(zs, logps):
    return (zs[-1] ** 2).sum() + 0.5 * (zs[1] * torch.tensor([1.0, -2.0], dtype=F64)).sum() + logps[-1].sum()


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4", "implicit_adams"])
def test_flow_tuple_values_and_gradients_match_matrix_exponential(method, gradient):
    """(z, logp) with linear dynamics: outputs equal exp(tA) z0 and logp0 - tr(A) t, and
    the gradients w.r.t. z0, logp0 and A (the module's parameter, found by default) equal
    those of the closed form, in every gradient mode."""
    if method == "implicit_adams" and gradient == "checkpoint":
        pytest.skip("checkpoint replays Runge-Kutta steps only")
    func = LinearFlow()
    z0 = torch.tensor([[0.5, -1.0], [1.5, 0.25], [0.0, 1.0]], dtype=F64, requires_grad=True)
    logp0 = torch.zeros(3, 1, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.6, 1.5], dtype=F64)
    kwargs = _solve_kwargs(method)
    if gradient == "adjoint" and method in ADAPTIVE_TOL:
        kwargs["adjoint_options"] = {"norm": "seminorm"}
    zs, logps = odeint(func, (z0, logp0), t, gradient=gradient, **kwargs)
    grads = torch.autograd.grad(_flow_loss(zs, logps), (z0, logp0, func.A))

    A = func.A.detach().clone().requires_grad_()
    z0c, logp0c = z0.detach().clone().requires_grad_(), logp0.detach().clone().requires_grad_()
    zs_c, logps_c = _flow_closed_form(A, z0c, logp0c, t)
    expected = torch.autograd.grad(_flow_loss(zs_c, logps_c), (z0c, logp0c, A))
    bound = _error_bound(method)
    torch.testing.assert_close(zs, zs_c.detach(), rtol=0, atol=bound)
    torch.testing.assert_close(logps, logps_c.detach(), rtol=0, atol=bound)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=50 * bound)


class Rotation(nn.Module):
    """y' = i w y on complex numbers: y(t) = y0 exp(i w t)."""

    def __init__(self, dtype=torch.complex128):
        super().__init__()
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        self.w = nn.Parameter(torch.tensor([2.0, -0.5], dtype=real))

    def forward(self, t, y):
        return 1j * self.w * y


def _complex_loss(ys):
    c = torch.tensor([0.3 - 1.0j, 2.0 + 0.1j], dtype=ys.dtype)
    return (ys[-1].abs() ** 2 * torch.tensor([1.0, 3.0], dtype=ys.real.dtype)).sum() + (ys[-1] * c).real.sum() \
        + (ys[1] * c).imag.sum()


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4", "fixed_adams", "scipy_solver"])
def test_complex_rotation_values_and_gradients(method, gradient):
    """y' = i w y: outputs equal y0 exp(i w t) (complex128 in, complex128 out), and the
    gradients w.r.t. the complex y0 and the real w are PyTorch's complex convention (those
    autograd gives for the closed form), in every gradient mode."""
    if method == "scipy_solver":
        pytest.importorskip("scipy")
        if gradient != "adjoint":
            pytest.skip("scipy_solver has no autograd graph: adjoint only")
    if method == "fixed_adams" and gradient == "checkpoint":
        pytest.skip("checkpoint replays Runge-Kutta steps only")
    func = Rotation()
    y0 = torch.tensor([1.0 + 0.5j, -0.3 + 0.2j], dtype=torch.complex128, requires_grad=True)
    t = torch.tensor([0.0, 0.7, 2.0], dtype=F64)
    ys = odeint(func, y0, t, gradient=gradient, **_solve_kwargs(method))
    assert ys.dtype == torch.complex128 and ys.shape == (3, 2)
    g_y0, g_w = torch.autograd.grad(_complex_loss(ys), (y0, func.w))

    w = func.w.detach().clone().requires_grad_()
    y0c = y0.detach().clone().requires_grad_()
    exact = y0c * torch.exp(1j * w * t.reshape(-1, 1))
    e_y0, e_w = torch.autograd.grad(_complex_loss(exact), (y0c, w))
    bound = _error_bound(method) if method != "rk4" else 1e-7
    torch.testing.assert_close(ys, exact.detach(), rtol=0, atol=bound)
    torch.testing.assert_close(g_y0, e_y0, rtol=0, atol=50 * bound)
    torch.testing.assert_close(g_w, e_w, rtol=0, atol=50 * bound)


def test_complex64_state_stays_complex64():
    """A complex64 state is solved in float32 (its real view) and comes back complex64,
    accurate to single precision; f receives complex64 states."""
    seen = set()

    def f(t, y):
        seen.add(y.dtype)
        return 1j * 2.0 * y

    y0 = torch.tensor([1.0 + 0.0j, 0.5j], dtype=torch.complex64)
    t = torch.linspace(0, 1, 4)
    ys = odeint(f, y0, t, rtol=1e-6, atol=1e-7)
    assert ys.dtype == torch.complex64 and seen == {torch.complex64}
    exact = y0 * torch.exp(2j * t.reshape(-1, 1))
    torch.testing.assert_close(ys, exact, rtol=0, atol=2e-5)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("order", ["real_first", "complex_first"])
def test_tuple_mixing_real_and_complex_pieces(order, gradient):
    """A tuple of a real piece of odd length and a complex piece, in either order: the
    complex piece's pairs then sit at odd offsets of the flat buffer (and of each row of the
    trajectory); the solve still returns each piece in its own dtype, with the closed form
    and its gradients."""
    w = torch.tensor(1.5, dtype=F64)
    r0 = torch.tensor([1.0, 2.0, -1.0], dtype=F64, requires_grad=True)
    c0 = torch.tensor([[1.0 + 1.0j], [0.5 - 0.25j]], dtype=torch.complex128, requires_grad=True)
    real_first = order == "real_first"

    def f(t, state):
        r, c = state if real_first else state[::-1]
        dr, dc = -r, 1j * w * c
        return (dr, dc) if real_first else (dc, dr)

    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    out = odeint(f, (r0, c0) if real_first else (c0, r0), t, rtol=1e-10, atol=1e-12, gradient=gradient,
                 adjoint_params=() if gradient != "backprop" else None)
    rs, cs = out if real_first else out[::-1]
    assert rs.dtype == F64 and cs.dtype == torch.complex128
    torch.testing.assert_close(rs, r0.detach() * torch.exp(-t).reshape(-1, 1), rtol=0, atol=1e-8)
    torch.testing.assert_close(cs, c0.detach() * torch.exp(1j * w * t).reshape(-1, 1, 1), rtol=0, atol=1e-8)
    g_r, g_c = torch.autograd.grad(rs[-1].sum() + cs[-1].real.sum() + 2 * cs[1].imag.sum(), (r0, c0))
    torch.testing.assert_close(g_r, torch.full((3,), math.exp(-1.0), dtype=F64), rtol=0, atol=1e-7)
    # d/dc0 of Re(c0 e^{iw}) + 2 Im(c0 e^{iw/2}), in PyTorch's convention (conj of dL/dc0*).
    expected = torch.exp(-1j * w * torch.tensor(1.0, dtype=F64)) + 2j * torch.exp(-1j * w * 0.5)
    torch.testing.assert_close(g_c, expected.expand(2, 1).to(torch.complex128), rtol=0, atol=1e-7)


def test_second_derivatives_with_a_misaligned_complex_piece():
    """create_graph=True through a tuple whose complex piece sits at an odd offset (after
    three real numbers): every mode gives the double-backward of backprop (a second
    derivative must never view a gradient's odd slice as complex)."""
    A = torch.tensor([[-0.3, 1.1], [-0.9, 0.2]], dtype=F64, requires_grad=True)
    z0 = torch.tensor([[0.5, -1.0]], dtype=F64, requires_grad=True)
    l0 = torch.zeros(1, 1, dtype=F64)
    c0 = torch.tensor([1.0 + 1.0j], dtype=torch.complex128)

    def f(t, s):
        z, logp, c = s
        return torch.tanh(z @ A.T), -(z ** 2).sum(-1, keepdim=True), 1j * A[0, 0] * c * z.sum()

    t = torch.tensor([0.0, 1.0], dtype=F64)
    results = []
    for gradient in ("backprop", "adjoint", "checkpoint"):
        kw = {"adjoint_params": (A,)} if gradient != "backprop" else {}
        z, logp, c = odeint(f, (z0, l0, c0), t, gradient=gradient, rtol=1e-10, atol=1e-12, **kw)
        loss = z[-1].pow(2).sum() + logp[-1].sum() + (c[-1].abs() ** 2).sum()
        (g_z0,) = torch.autograd.grad(loss, z0, create_graph=True)
        results.append(torch.autograd.grad(g_z0.pow(2).sum(), A))
    for other in results[1:]:
        torch.testing.assert_close(other[0], results[0][0], rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------
# Pieces of the layout
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_zero_dim_and_empty_pieces(gradient):
    """A 0-d piece and an empty piece come back with their shapes; the empty piece has no
    error (the solve is that of the other pieces) and gradients reach the 0-d piece."""
    a0 = torch.tensor(2.0, dtype=F64, requires_grad=True)
    b0 = torch.ones(2, 3, dtype=F64)
    e0 = torch.ones(0, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    kw = {"adjoint_params": ()} if gradient != "backprop" else {}
    a, b, e = odeint(lambda t, s: (-s[0], -2 * s[1], s[2]), (a0, b0, e0), t, rtol=1e-10, atol=1e-12,
                     gradient=gradient, **kw)
    assert a.shape == (2,) and b.shape == (2, 2, 3) and e.shape == (2, 0)
    torch.testing.assert_close(a[-1], 2 * torch.exp(torch.tensor(-1.0, dtype=F64)), rtol=1e-8, atol=0)
    (g,) = torch.autograd.grad(a[-1], a0)
    torch.testing.assert_close(g, torch.exp(torch.tensor(-1.0, dtype=F64)), rtol=1e-7, atol=0)
    stats_with, stats_without = SolverStats(), SolverStats()
    odeint(lambda t, s: (-s[0], -2 * s[1], s[2]), (a0.detach(), b0, e0), t, stats=stats_with)
    odeint(lambda t, s: (-s[0], -2 * s[1]), (a0.detach(), b0), t, stats=stats_without)
    assert stats_with.nfe_forward == stats_without.nfe_forward


def test_one_element_tuple_list_state_and_list_derivative():
    """A 1-tuple comes back as a 1-tuple; a list y0 is taken as a tuple; f may return a list;
    a derivative piece of another shape but the same size is taken (torchdiffeq reshapes)."""
    t = torch.linspace(0, 1, 3, dtype=F64)
    (x,) = odeint(lambda t, s: (-s[0],), (torch.ones(2, dtype=F64),), t)
    torch.testing.assert_close(x[-1], torch.full((2,), math.exp(-1), dtype=F64), rtol=1e-6, atol=0)
    out = odeint(lambda t, s: [-s[0], (-s[1]).reshape(-1)], [torch.ones(2, dtype=F64), torch.ones(1, 2, dtype=F64)], t)
    assert isinstance(out, tuple) and out[1].shape == (3, 1, 2)
    torch.testing.assert_close(out[0][-1], out[1][-1, 0], rtol=1e-12, atol=0)


def test_tuple_state_errors():
    """What a tuple state refuses, each with an error naming the fix."""
    t = torch.linspace(0, 1, 3, dtype=F64)
    y0 = (torch.ones(2, dtype=F64), torch.ones(1, dtype=F64))
    with pytest.raises(TypeError, match="tuple of 2 tensors"):
        odeint(lambda t, s: (-s[0],), y0, t)
    with pytest.raises(TypeError, match="tuple of 2 tensors"):
        odeint(lambda t, s: -s[0], y0, t)
    with pytest.raises(ValueError, match=r"result \[1\] has shape \(3,\)"):
        odeint(lambda t, s: (-s[0], torch.ones(3, dtype=F64)), y0, t)
    with pytest.raises(TypeError, match="share one precision"):
        odeint(lambda t, s: s, (torch.ones(2), torch.ones(1, dtype=F64)), t)
    with pytest.raises(ValueError, match="empty tuple"):
        odeint(lambda t, s: s, (), t)
    with pytest.raises(ValueError, match="same length"):
        odeint(_oscillator, y0, t, atol=(1e-6, 1e-8, 1e-9))
    with pytest.raises(ValueError, match="one per tensor"):
        odeint(_oscillator, y0, t, atol=torch.full((3,), 1e-8))


def test_tuple_tolerances_spread_per_tensor():
    """Tupled rtol/atol (one per tensor): equal entries give the steps and (to round-off)
    the values of the scalar; a 1-D tensor with one value per tensor (torchdiffeq accepts it) is the same as the
    tuple; a looser tolerance on one piece takes fewer steps."""
    y0 = (torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0.0], dtype=F64))

    def f(t, s):
        x, q = s
        return torch.stack([x[1], -x[0]]), (x ** 2).sum().reshape(1) * 3.0

    t = torch.linspace(0, 3, 4, dtype=F64)
    stats_scalar, stats_tupled = SolverStats(), SolverStats()
    scalar = odeint(f, y0, t, rtol=1e-7, atol=1e-9, stats=stats_scalar)
    tupled = odeint(f, y0, t, rtol=(1e-7, 1e-7), atol=(1e-9, 1e-9), stats=stats_tupled)
    assert stats_scalar.nfe_forward == stats_tupled.nfe_forward
    for a, b in zip(scalar, tupled):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    stats_tuple, stats_tensor, stats_loose = SolverStats(), SolverStats(), SolverStats()
    as_tuple = odeint(f, y0, t, rtol=(1e-7, 1e-9), atol=(1e-9, 1e-12), stats=stats_tuple)
    as_tensor = odeint(f, y0, t, rtol=torch.tensor([1e-7, 1e-9], dtype=F64), atol=torch.tensor([1e-9, 1e-12], dtype=F64),
                       stats=stats_tensor)
    for a, b in zip(as_tuple, as_tensor):
        assert torch.equal(a, b)
    assert stats_tuple.nfe_forward == stats_tensor.nfe_forward
    odeint(f, y0, t, rtol=(1e-7, 1e-3), atol=(1e-9, 1e-3), stats=stats_loose)
    assert stats_loose.nfe_forward < stats_tuple.nfe_forward


def test_tuple_tolerance_for_a_tensor_state_is_per_element():
    """For a tensor y0 a tuple of tolerances is a tensor of them (torchdiffeq's reading):
    the same solve as the tensor."""
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    a = odeint(lambda t, y: -y * torch.tensor([1.0, 5.0], dtype=F64), y0, t, atol=(1e-6, 1e-10))
    b = odeint(lambda t, y: -y * torch.tensor([1.0, 5.0], dtype=F64), y0, t, atol=torch.tensor([1e-6, 1e-10], dtype=F64))
    assert torch.equal(a, b)


def test_complex_state_per_element_tolerance_covers_both_parts():
    """A per-element tolerance tensor for a complex state applies to the real and the
    imaginary part alike: all-equal entries give the steps and values of the scalar (a
    zero imaginary tolerance would refuse the solve or change the steps)."""
    y0 = torch.tensor([1.0 + 0.5j, 0.2 - 1.0j], dtype=torch.complex128)
    t = torch.linspace(0, 2, 3, dtype=F64)
    f = lambda t, y: 1j * y
    stats_scalar, stats_tensor = SolverStats(), SolverStats()
    scalar = odeint(f, y0, t, rtol=1e-8, atol=1e-10, stats=stats_scalar)
    per_element = odeint(f, y0, t, rtol=torch.full((2,), 1e-8), atol=torch.full((2,), 1e-10), stats=stats_tensor)
    assert stats_scalar.nfe_forward == stats_tensor.nfe_forward
    torch.testing.assert_close(scalar, per_element, rtol=1e-13, atol=1e-13)


def test_mixed_norm_is_not_diluted_by_a_large_piece():
    """torchdiffeq's mixed norm (the largest RMS over the tuple's tensors): a one-element
    logp with fast dynamics next to a large slow z needs more steps than the RMS over the
    flat state, and a callable norm computing that flat RMS on the tuple reproduces the
    solve of the flat tensor exactly (same evaluations, same values)."""
    n = 400

    def f(t, s):
        z, logp = s
        return -0.1 * z, torch.cos(8 * t) * torch.ones_like(logp) * 4

    def f_flat(t, y):
        dz, dl = f(t, (y[:n], y[n:]))
        return torch.cat([dz, dl])

    z0, l0 = torch.linspace(-1, 1, n, dtype=F64), torch.zeros(1, dtype=F64)
    t = torch.linspace(0, 2, 3, dtype=F64)
    mixed, flat, user = SolverStats(), SolverStats(), SolverStats()
    odeint(f, (z0, l0), t, rtol=1e-6, atol=1e-8, stats=mixed)
    ys_flat = odeint(f_flat, torch.cat([z0, l0]), t, rtol=1e-6, atol=1e-8, stats=flat)
    zs, ls = odeint(f, (z0, l0), t, rtol=1e-6, atol=1e-8, stats=user,
                    options={"norm": lambda q: torch.cat([x.reshape(-1) for x in q]).pow(2).mean().sqrt()})
    assert mixed.nfe_forward > flat.nfe_forward
    assert user.nfe_forward == flat.nfe_forward
    torch.testing.assert_close(torch.cat([zs, ls], dim=1), ys_flat, rtol=1e-13, atol=1e-13)


def test_callable_norm_sees_the_scaled_error_laid_out_like_y0():
    """options['norm'] is called with a tuple of tensors shaped like y0's pieces (complex
    pieces complex), each the error scaled by atol + rtol * |y|: a norm of 0 accepts every
    step (one step per interval beyond the first-step probes)."""
    seen = []

    def norm(q):
        seen.append(tuple((tuple(x.shape), x.dtype) for x in q))
        return torch.zeros((), dtype=F64)

    y0 = (torch.ones(2, 3, dtype=F64), torch.ones((), dtype=torch.complex128))
    stats = SolverStats()
    odeint(lambda t, s: (-s[0], 1j * s[1]), y0, torch.linspace(0, 1, 3, dtype=F64),
           options={"norm": norm, "first_step": 0.5}, stats=stats)
    assert set(seen) == {(((2, 3), F64), ((), torch.complex128))}
    assert stats.steps_rejected == 0 and stats.steps_accepted == 2


def test_callable_norm_returning_large_values_rejects_and_fails():
    """The callable's value is the error ratio: a norm of 2 always rejects, until the step
    underflows (an error naming the step), so the callable is really used. (The solve starts
    at t=1: from t=0 a step can shrink into the denormals without ever underflowing.)"""
    with pytest.raises(ValueError, match="underflow"):
        odeint(lambda t, s: (-s[0], -s[1]), (torch.ones(2, dtype=F64), torch.ones(1, dtype=F64)),
               torch.linspace(1, 2, 3, dtype=F64), options={"norm": lambda q: 2.0})


# ---------------------------------------------------------------------------
# Side by side with torchdiffeq
# ---------------------------------------------------------------------------

def _cnf_pair():
    """Two copies of one small (z, logp) dynamics module with the exact trace."""

    class CNF(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.A = nn.Parameter(torch.randn(3, 3, generator=g, dtype=F64) * 0.5)
            self.c = nn.Parameter(torch.randn(3, generator=g, dtype=F64) * 0.1)

        def forward(self, t, state):
            z, logp = state
            dz = torch.tanh(z @ self.A.T + self.c * t)
            trace = ((1 - dz ** 2) * torch.diagonal(self.A)).sum(-1, keepdim=True)
            return dz, -trace

    return CNF(), CNF()


def _cnf_state():
    z0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    return z0, torch.zeros(4, 1, dtype=F64)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2", "heun3"])
@pytest.mark.parametrize("options", [None, {"step_size": 0.07}])
def test_fixed_step_tuple_matches_torchdiffeq_to_roundoff(method, options):
    """Fixed-step methods on a tuple state (one step per interval, or torchdiffeq's
    step_size grid with linear interpolation): the same values to round-off and the same
    number of evaluations."""
    td = pytest.importorskip("torchdiffeq")
    ours, theirs = _cnf_pair()
    z0, l0 = _cnf_state()
    t = torch.tensor([0.0, 0.3, 0.55, 1.0], dtype=F64)
    f1, f2 = Counter(ours), Counter(theirs)
    a = odeint(f1, (z0, l0), t, method=method, options=options)
    b = td.odeint(f2, (z0, l0), t, method=method, options=options)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-13)
    assert f1.calls == f2.calls


@pytest.mark.parametrize("method", ["bosh3", "dopri8"])
@pytest.mark.parametrize("first_step", [None, 0.05])
def test_adaptive_tuple_same_evaluations_as_torchdiffeq(method, first_step):
    """Adaptive methods whose tableau is torchdiffeq's, on a tuple state under the mixed
    norm: the same first step, the same controller, so the same number of evaluations.
    The values agree to the interpolation error: observations between steps come from
    different interpolants (torchdiffeq's bosh3 one errs ~2e-5 here, ours ~1e-7)."""
    td = pytest.importorskip("torchdiffeq")
    ours, theirs = _cnf_pair()
    z0, l0 = _cnf_state()
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    options = None if first_step is None else {"first_step": first_step}
    f1, f2 = Counter(ours), Counter(theirs)
    a = odeint(f1, (z0, l0), t, method=method, rtol=1e-6, atol=1e-8, options=options)
    b = td.odeint(f2, (z0, l0), t, method=method, rtol=1e-6, atol=1e-8, options=options)
    assert f1.calls == f2.calls
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=5e-5)


@pytest.mark.parametrize("method", ENGINE_ADAPTIVE[:1] + ENGINE_ADAPTIVE[2:])
def test_first_step_choice_matches_torchdiffeq(method):
    """Hairer's first-step choice as torchdiffeq makes it (exponent 1/order, mixed norm on
    a tuple): the first three evaluation times agree (f(t0), the probe, the first stage)."""
    td = pytest.importorskip("torchdiffeq")
    ours, theirs = _cnf_pair()
    times = ([], [])

    def recorder(func, log):
        def f(t, s):
            log.append(float(t.detach()))
            return func(t, s)
        return f

    z0, l0 = _cnf_state()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    odeint(recorder(ours, times[0]), (z0, l0), t, method=method, rtol=1e-5, atol=1e-7)
    td.odeint(recorder(theirs, times[1]), (z0, l0), t, method=method, rtol=1e-5, atol=1e-7)
    assert times[0][:3] == pytest.approx(times[1][:3], rel=1e-12, abs=1e-15)


def test_callable_norm_called_as_often_as_torchdiffeq():
    """A callable forward norm on a tuple state: called on the same tuples, as many times
    as torchdiffeq calls it (first-step choice and every step), with the same result to the
    interpolation error (see above)."""
    td = pytest.importorskip("torchdiffeq")

    class Norm:
        def __init__(self):
            self.shapes = []

        def __call__(self, q):
            self.shapes.append(tuple(x.shape for x in q))
            return max(x.abs().pow(2).mean().sqrt() for x in q)

    ours, theirs = _cnf_pair()
    z0, l0 = _cnf_state()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    n1, n2 = Norm(), Norm()
    a = odeint(ours, (z0, l0), t, method="bosh3", rtol=1e-6, atol=1e-8, options={"norm": n1})
    b = td.odeint(theirs, (z0, l0), t, method="bosh3", rtol=1e-6, atol=1e-8, options={"norm": n2})
    assert n1.shapes == n2.shapes
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=5e-5)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "implicit_adams"])
def test_tuple_gradients_match_torchdiffeq(method):
    """(z, logp) with a nonlinear module: our outputs and gradients (w.r.t. z0, logp0 and
    the parameters) in every gradient mode agree with torchdiffeq's backprop and adjoint."""
    td = pytest.importorskip("torchdiffeq")
    z0, l0 = _cnf_state()
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    options = {"step_size": 0.05} if method == "implicit_adams" else None

    rtol = 1e-8 if method == "bosh3" else 1e-10

    def run(solver, **kw):
        func, _ = _cnf_pair()
        z, l = z0.clone().requires_grad_(), l0.clone().requires_grad_()
        zs, ls = solver(func, (z, l), t, method=method, rtol=rtol, atol=rtol * 1e-2, options=options, **kw)
        loss = (zs[-1] ** 2).sum() + ls[-1].sum() + 0.3 * zs[1].sum()
        return (zs, ls), torch.autograd.grad(loss, (z, l, func.A, func.c))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchdiffeq's Adams: unused rtol/atol
        reference = run(td.odeint)
        references = [reference, run(td.odeint_adjoint)]
    modes = ["backprop", "adjoint"] + (["checkpoint"] if method != "implicit_adams" else [])
    tol = 1e-8 if method == "dopri5" else 1e-5  # bosh3: torchdiffeq's interpolant errs ~1e-6 here
    for mode in modes:
        outs, grads = run(odeint, gradient=mode)
        for x, y in zip(outs, reference[0]):
            torch.testing.assert_close(x, y, rtol=0, atol=tol)
        for ref in references:
            for g, r in zip(grads, ref[1]):
                torch.testing.assert_close(g, r, rtol=0, atol=20 * tol)


def test_complex_matches_torchdiffeq_backprop():
    """y' = i w y in complex128: fixed-step values equal torchdiffeq's to round-off;
    adaptive values and complex gradients (every mode) equal torchdiffeq's backprop to
    tolerance (torchdiffeq's own adjoint cannot take complex states)."""
    td = pytest.importorskip("torchdiffeq")
    y0 = torch.tensor([1.0 + 0.5j, -0.3 + 0.2j], dtype=torch.complex128)
    t = torch.tensor([0.0, 0.7, 2.0], dtype=F64)
    a = odeint(Rotation(), y0, t, method="midpoint", options={"step_size": 0.1})
    b = td.odeint(Rotation(), y0, t, method="midpoint", options={"step_size": 0.1})
    torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)

    def run(solver, **kw):
        func = Rotation()
        y = y0.clone().requires_grad_()
        ys = solver(func, y, t, rtol=1e-10, atol=1e-12, **kw)
        return ys, torch.autograd.grad(_complex_loss(ys), (y, func.w))

    ref_ys, ref_grads = run(td.odeint)
    for mode in ("backprop", "adjoint", "checkpoint"):
        ys, grads = run(odeint, gradient=mode)
        torch.testing.assert_close(ys, ref_ys, rtol=0, atol=1e-8)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=0, atol=1e-7)
