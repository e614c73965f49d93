"""torchdiffeq's rules for the times: the dtype f sees, mixed precisions of t and y0,
t on another device, and gradients w.r.t. t in every method and gradient mode.

The closed form used throughout: y' = -k y + sin t with y(t0) = y0, whose sensitivities
to the observation times are

    dL/dt_i = <dL/dy_i, f(t_i, y_i)>             (i > 0)
    dL/dt_0 = -<a(t_0), f(t_0, y_0)>,  a(t_0) = sum_{i>0} exp(-k (t_i - t_0)) dL/dy_i.

Side by side with torchdiffeq 0.2.5 when it is installed.
"""

import warnings

import pytest
import torch
from torch import nn

import neuralode
from neuralode import odeint

F64 = torch.float64
ADAPTIVE = ("dopri5", "tsit5", "bosh3", "dopri8", "adaptive_heun", "fehlberg2")
TOLS = {"dopri5": 1e-10, "tsit5": 1e-10, "dopri8": 1e-10, "bosh3": 1e-9, "adaptive_heun": 1e-7, "fehlberg2": 1e-7}
# The dL/dt error those tolerances allow on the closed form (dopri8 serves observations
# from a 4th-order interpolant over its long steps, as torchdiffeq's: ~1e-7 here).
BOUNDS = {"dopri5": 1e-8, "tsit5": 1e-8, "dopri8": 2e-6, "bosh3": 1e-7, "adaptive_heun": 2e-6, "fehlberg2": 2e-4}


class Forced(nn.Module):
    """y' = -k y + sin t (k one rate per component)."""

    def __init__(self, dtype=F64):
        super().__init__()
        self.k = nn.Parameter(torch.tensor([0.7, 1.3], dtype=dtype))

    def forward(self, t, y):
        return -self.k * y + torch.sin(t)


def _exact(k, y0, t0, t):
    """The solution of y' = -k y + sin t at the times t."""
    t = t.reshape(-1, 1)
    decay = torch.exp(-k * (t - t0))
    particular = (k * torch.sin(t) - torch.cos(t)) / (k ** 2 + 1)
    start = (k * torch.sin(t0) - torch.cos(t0)) / (k ** 2 + 1)
    return decay * (y0 - start) + particular


def _expected_time_gradient(k, y0, t, g):
    """dL/dt for L = sum(g * y(t)) from the closed form (module docstring)."""
    ys = _exact(k, y0, t[0], t)
    fs = -k * ys + torch.sin(t).reshape(-1, 1)
    grad = (g * fs).sum(-1)
    a0 = (torch.exp(-k * (t[1:] - t[0]).reshape(-1, 1)) * g[1:]).sum(0)
    grad[0] = -(a0 * fs[0]).sum()
    return grad


def _weights(T, dtype=F64):
    return torch.randn(T, 2, generator=torch.Generator().manual_seed(3), dtype=dtype)


# ---------------------------------------------------------------------------
# The dtype f sees; mixed precisions
# ---------------------------------------------------------------------------

STATE_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
REAL_OF = {torch.float32: torch.float32, torch.float64: F64, torch.complex64: torch.float32,
           torch.complex128: F64}
METHOD_OPTIONS = {"dopri5": None, "rk4": {"step_size": 0.1}, "implicit_adams": {"step_size": 0.1},
                  "scipy_solver": {"solver": "RK45"}}


def _recording(log):
    def f(t, y):
        log.add((t.dtype, y.dtype))
        return -y
    return f


@pytest.mark.parametrize("method", list(METHOD_OPTIONS))
@pytest.mark.parametrize("t_dtype", [torch.float32, F64])
@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
def test_f_receives_times_in_the_states_real_dtype(state_dtype, t_dtype, method):
    """Whatever t's precision, f is called with times in the state's real dtype and
    states of the state's dtype, and the output has the state's dtype (torchdiffeq's rule:
    the user's layers see one dtype)."""
    if method == "scipy_solver":
        pytest.importorskip("scipy")
    seen = set()
    y0 = torch.tensor([1.0, 2.0], dtype=state_dtype)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=t_dtype)
    ys = odeint(_recording(seen), y0, t, method=method, options=METHOD_OPTIONS[method])
    assert seen == {(REAL_OF[state_dtype], state_dtype)}
    assert ys.dtype == state_dtype
    torch.testing.assert_close(ys[-1], y0 * torch.exp(torch.tensor(-1.0)).to(state_dtype),
                               rtol=1e-4 if method != "rk4" else 1e-3, atol=0)


@pytest.mark.parametrize("method", ["dopri5", "rk4", "implicit_adams"])
@pytest.mark.parametrize("state_dtype", STATE_DTYPES[::2])
def test_f_dtypes_as_torchdiffeq(state_dtype, method):
    """The (t, y) dtypes f receives are torchdiffeq's, for a float64 t and a float32 or
    complex64 state, and the outputs agree."""
    td = pytest.importorskip("torchdiffeq")
    ours, theirs = set(), set()
    y0 = torch.tensor([1.0, 2.0], dtype=state_dtype)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    a = odeint(_recording(ours), y0, t, method=method, options=METHOD_OPTIONS[method])
    b = td.odeint(_recording(theirs), y0, t, method=method, options=METHOD_OPTIONS[method])
    assert ours == theirs
    assert a.dtype == b.dtype
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["dopri5", "euler", "implicit_adams"])
def test_float64_times_resolve_what_float32_cannot(method):
    """float64 times with a float32 state: the solver's clock is float64, so two
    observations 1e-12 apart (the same float32 number) are distinct times; f still
    receives float32 times, and the output is float32 and accurate to single precision."""
    t = torch.tensor([0.0, 0.5, 0.5 + 1e-12, 1.0], dtype=F64)
    assert t[1].float() == t[2].float()
    y0 = torch.tensor([1.0, -2.0])
    seen = set()
    options = {"step_size": 1e-3} if method != "dopri5" else None
    ys = odeint(_recording(seen), y0, t, method=method, options=options, rtol=1e-6, atol=1e-8)
    assert ys.dtype == torch.float32 and seen == {(torch.float32, torch.float32)}
    exact = (y0.double() * torch.exp(-t).reshape(-1, 1)).float()
    tol = 1e-3 if method == "euler" else 1e-5
    torch.testing.assert_close(ys, exact, rtol=0, atol=tol)
    with pytest.raises(ValueError, match="strictly increasing"):
        odeint(_recording(set()), y0, t.float(), method=method, options=options)


@pytest.mark.parametrize("method,options", [("dopri5", None), ("bosh3", {"max_step": 0.1}),
                                            ("rk4", {"step_size": 0.1}), ("midpoint", None),
                                            ("implicit_adams", {"step_size": 0.1})])
def test_float32_times_with_float64_state_are_promoted(method, options):
    """float32 times with a float64 state are promoted to float64 first: bitwise the solve
    with t.double(); the gradient w.r.t. the float32 t comes back float32."""
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t32 = torch.tensor([0.0, 0.3, 1.1], dtype=torch.float32, requires_grad=True)
    ys = odeint(Forced(), y0, t32, method=method, options=options, rtol=1e-6, atol=1e-8)
    ref = odeint(Forced(), y0, t32.detach().double(), method=method, options=options, rtol=1e-6, atol=1e-8)
    assert ys.dtype == F64
    assert torch.equal(ys.detach(), ref)
    (g,) = torch.autograd.grad(ys.sum(), t32)
    assert g.dtype == torch.float32 and bool(torch.isfinite(g).all())


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4"])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.complex64])
def test_float64_times_requiring_grad_keep_the_states_dtype(state_dtype, method, gradient):
    """float64 times that require grad with a float32 (or complex64) state: the output
    keeps the state's dtype in every mode (the gradient's extra terms must not promote
    it), dL/dt is float64 and equals the float64 solve's to single precision."""
    y0 = torch.tensor([1.0, -0.5], dtype=state_dtype)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64, requires_grad=True)
    options = {"step_size": 0.01} if method == "rk4" else None
    kw = {"adjoint_params": ()} if gradient != "backprop" else {}
    f = lambda t, y: -y * (1 + 0.5 * torch.cos(t))
    ys = odeint(f, y0, t, method=method, options=options, gradient=gradient, rtol=1e-6, atol=1e-8, **kw)
    assert ys.dtype == state_dtype
    (g,) = torch.autograd.grad(ys.real.sum() if ys.is_complex() else ys.sum(), t)
    assert g.dtype == F64
    t64 = t.detach().clone().requires_grad_()
    y64 = y0.to(torch.complex128 if state_dtype.is_complex else F64)
    ys64 = odeint(f, y64, t64, method=method, options=options, gradient=gradient, rtol=1e-10, atol=1e-12, **kw)
    (g64,) = torch.autograd.grad(ys64.real.sum() if ys64.is_complex() else ys64.sum(), t64)
    torch.testing.assert_close(g, g64, rtol=0, atol=1e-4)


def test_times_on_another_device_are_moved_with_torchdiffeqs_warning():
    """t on the CPU with a CUDA state: moved to the state's device with torchdiffeq's
    warning, and the same result as t on the device."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    y0 = torch.tensor([1.0, 2.0], device="cuda")
    t = torch.tensor([0.0, 0.5, 1.0])
    with pytest.warns(UserWarning, match="t is not on the same device as y0. Coercing to y0.device."):
        ys = odeint(lambda t, y: -y, y0, t)
    assert ys.device == y0.device
    torch.testing.assert_close(ys, odeint(lambda t, y: -y, y0, t.cuda()))


# ---------------------------------------------------------------------------
# dL/dt: closed forms
# ---------------------------------------------------------------------------

def _time_gradient(method, gradient, t_values, options=None, tol=1e-10):
    func = Forced()
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor(t_values, dtype=F64, requires_grad=True)
    ys = odeint(func, y0, t, method=method, rtol=tol, atol=tol * 1e-2, options=options, gradient=gradient)
    g = _weights(len(t_values))
    (grad,) = torch.autograd.grad((ys * g).sum(), t)
    expected = _expected_time_gradient(func.k.detach(), y0, t.detach(), g)
    return grad, expected


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method", ADAPTIVE)
def test_time_gradient_adaptive_closed_form(method, gradient):
    """Adaptive methods, every gradient mode: dL/dt_i and dL/dt_0 equal the closed form
    (observations between steps included)."""
    grad, expected = _time_gradient(method, gradient, [0.0, 0.5, 1.3, 2.0], tol=TOLS[method])
    torch.testing.assert_close(grad, expected, rtol=0, atol=BOUNDS[method])


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method,bound", [("midpoint", 1e-3), ("heun3", 1e-5), ("rk4", 1e-7)])
def test_time_gradient_fixed_step_closed_form(method, bound, gradient):
    """Fixed-step methods whose steps end on the observations (max_step subdivision), every
    gradient mode: dL/dt converges to the closed form at the method's order."""
    grad, expected = _time_gradient(method, gradient, [0.0, 0.5, 1.3, 2.0], options={"max_step": 0.01})
    torch.testing.assert_close(grad, expected, rtol=0, atol=bound)


@pytest.mark.parametrize("method", ["implicit_adams", "fixed_adams", "explicit_adams", "scipy_solver"])
def test_time_gradient_python_methods_adjoint_closed_form(method):
    """The Adams methods and scipy_solver with gradient='adjoint': dL/dt from the engine's
    adjoint after the Python forward equals the closed form."""
    if method == "scipy_solver":
        pytest.importorskip("scipy")
        options = {"solver": "DOP853"}
    else:
        options = {"step_size": 0.01 if method != "explicit_adams" else 0.002}
    t_values = [0.0, 0.5, 1.3, 2.0] if method != "explicit_adams" else [0.0, 0.2, 0.45]
    grad, expected = _time_gradient(method, "adjoint", t_values, options=options)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method,options", [("dopri5", None), ("rk4", {"max_step": 0.01})])
def test_time_gradient_decreasing_times(method, options, gradient):
    """Decreasing times (a solve backwards from t_0): the same closed form holds."""
    grad, expected = _time_gradient(method, gradient, [2.0, 1.3, 0.5, 0.0], options=options)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_time_gradient_tuple_and_complex_states(gradient):
    """dL/dt for a tuple (real, complex) state with y' = (-y, i w y): for complex outputs
    in PyTorch's convention, dL/dt_i = Re <conj(dL/dy_i), f_i>; dL/dt_0 = -(sum over
    i > 0 of the same with f at t_0 transported back), both pieces summed."""
    w = 1.5
    r0 = torch.tensor([1.0, 2.0], dtype=F64)
    c0 = torch.tensor([1.0 + 0.5j], dtype=torch.complex128)
    t = torch.tensor([0.0, 0.6, 1.5], dtype=F64, requires_grad=True)
    rs, cs = odeint(lambda t, s: (-s[0], 1j * w * s[1]), (r0, c0), t, rtol=1e-10, atol=1e-12,
                    gradient=gradient, adjoint_params=() if gradient != "backprop" else None)
    gr = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.5, 2.0]], dtype=F64)
    gc = torch.tensor([[0.0], [1.0 - 2.0j], [0.3 + 1.0j]], dtype=torch.complex128)
    loss = (rs * gr).sum() + (cs.real * gc.real + cs.imag * gc.imag).sum()  # its dL/dcs is gc
    (grad,) = torch.autograd.grad(loss, t)
    td_ = t.detach()
    r_exact = r0 * torch.exp(-td_).reshape(-1, 1)
    c_exact = c0 * torch.exp(1j * w * td_).reshape(-1, 1)
    fr, fc = -r_exact, 1j * w * c_exact
    expected = (gr * fr).sum(-1) + (gc.conj() * fc).real.sum(-1)
    # dL/dt_0: each later term transported back: real by exp(-dt) (f0 = -r0 scaled), complex
    # by the rotation, i.e. the term with f evaluated along the exact flow from t_0.
    expected[0] = -expected[1:].sum()
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method,options", [("dopri5", None), ("rk4", {"max_step": 0.01})])
def test_time_gradient_per_sample_times(method, options, gradient):
    """Per-sample times (T, batch, 1) that require grad, y' = -y, L = sum of every output:
    dL/dt_ib = -y_ib for i > 0 and dL/dt_0b = sum over i > 0 of y_ib, sample by sample."""
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    t_values = torch.tensor([[0.0, 0.5], [0.7, 1.0], [1.5, 2.2]], dtype=F64).unsqueeze(-1)
    t = t_values.clone().requires_grad_()
    kw = {"adjoint_params": ()} if gradient != "backprop" else {}
    ys = odeint(lambda t, y: -y, y0, t, method=method, options=options, gradient=gradient, rtol=1e-10,
                atol=1e-12, **kw)
    (grad,) = torch.autograd.grad(ys.sum(), t)
    exact = y0 * torch.exp(-(t_values - t_values[0]))
    expected = -exact
    expected[0] = exact[1:].sum(0)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------
# dL/dt side by side with torchdiffeq
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method,tol", [("dopri5", 1e-10), ("dopri8", 1e-9), ("bosh3", 1e-7),
                                        ("fehlberg2", 1e-5)])
def test_time_gradient_matches_torchdiffeq_adjoint(method, tol, gradient):
    """Adaptive methods: our dL/dt (every mode) equals torchdiffeq's odeint_adjoint's,
    whose dL/dt comes from the ODE too, to the tolerance."""
    td = pytest.importorskip("torchdiffeq")
    t_values = [0.0, 0.5, 1.3, 2.0]
    g = _weights(len(t_values))
    grads = []
    for solve, kw in ((odeint, {"gradient": gradient}), (td.odeint_adjoint, {})):
        func = Forced()
        t = torch.tensor(t_values, dtype=F64, requires_grad=True)
        ys = solve(func, torch.tensor([1.0, 2.0], dtype=F64), t, method=method, rtol=tol, atol=tol * 1e-2, **kw)
        grads.append(torch.autograd.grad((ys * g).sum(), t)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=2e3 * tol)


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint"])
@pytest.mark.parametrize("method", ["euler", "midpoint", "heun3", "implicit_adams"])
def test_fixed_grid_time_gradient_matches_torchdiffeq_backprop(method, gradient):
    """Fixed grids (step_size, observations between grid points, linearly interpolated):
    dL/dt through the discrete solve equals torchdiffeq's backprop to round-off."""
    td = pytest.importorskip("torchdiffeq")
    if method == "implicit_adams" and gradient == "checkpoint":
        pytest.skip("checkpoint replays Runge-Kutta steps only")
    t_values = [0.0, 0.51, 1.33, 2.0]
    g = _weights(len(t_values))
    grads = []
    for solve, kw in ((odeint, {"gradient": gradient}), (td.odeint, {})):
        func = Forced()
        t = torch.tensor(t_values, dtype=F64, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ys = solve(func, torch.tensor([1.0, 2.0], dtype=F64), t, method=method, options={"step_size": 0.125},
                       **kw)
        grads.append(torch.autograd.grad((ys * g).sum(), t)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("method,options", [("dopri5", None), ("bosh3", None), ("rk4", {"max_step": 0.01})])
def test_mixed_second_derivative_through_the_time_gradient(method, options, gradient):
    """d/dk (dL/dt_1) with create_graph=True: for y' = -k y, L = y(t_1),
    dL/dt_1 = -k y0 exp(-k t_1) and its derivative in k is y0 exp(-k t_1) (k t_1 - 1); the
    time gradient must keep its graph to the parameters in every mode."""
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.3], dtype=F64, requires_grad=True)
    kw = {"adjoint_params": (k,)} if gradient != "backprop" else {}
    ys = odeint(lambda t, y: -k * y, torch.tensor([2.0], dtype=F64), t, method=method, options=options,
                gradient=gradient, rtol=1e-10, atol=1e-12, **kw)
    (g_t,) = torch.autograd.grad(ys[-1].sum(), t, create_graph=True)
    (g_tk,) = torch.autograd.grad(g_t[1], k)
    decay = torch.exp(torch.tensor(-0.7 * 1.3, dtype=F64))
    torch.testing.assert_close(g_t[1].detach(), -0.7 * 2.0 * decay, rtol=1e-7, atol=0)
    torch.testing.assert_close(g_tk, 2.0 * decay * (0.7 * 1.3 - 1), rtol=1e-6, atol=0)


def test_stats_count_the_time_gradient_evaluations():
    """dL/dt of an adaptive backprop solve takes one evaluation of f per output time beyond
    the solve's own: SolverStats counts them (the calls of f are the truth)."""
    calls = []

    def f(t, y):
        calls.append(1)
        return -y

    stats = neuralode.SolverStats()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64, requires_grad=True)
    odeint(f, torch.ones(2, dtype=F64), t, stats=stats)
    assert stats.nfe_forward == len(calls)


@pytest.mark.parametrize("options", [{"step_size": 0.1}, {"max_step": 0.1}])
def test_checkpoint_time_gradient_survives_a_second_backward(options):
    """gradcheck runs two backwards (retain_graph): the fixed-step checkpoint's replay must
    not free the step times' graph to t in the first (it did: 'backward through the graph
    a second time')."""
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.73, 1.31], dtype=F64, requires_grad=True)  # observations off the grid
    f = lambda t_, y: torch.stack([y[1], -torch.sin(y[0])])  # noqa: E731
    assert torch.autograd.gradcheck(
        lambda y0_, t_: neuralode.odeint(f, y0_, t_, method="rk4", options=options, gradient="checkpoint",
                                         adjoint_params=()), (y0, t))
