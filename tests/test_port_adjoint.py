"""The adjoint: any adjoint_method with any method, the options rule, the parameters
found by default (modules, bound methods, functools.partial, nn.DataParallel replicas),
the Adams methods and scipy_solver under gradient="adjoint", callable and semi- norms.

Gradients are checked against closed forms (y' = A y: y(t) = exp(tA) y0, differentiated
by autograd through torch.linalg.matrix_exp) and, when torchdiffeq 0.2.5 is installed,
side by side with its odeint_adjoint.
"""

import functools
import warnings

import pytest
import torch
from torch import nn

from neuralode import SolverStats, odeint, odeint_adjoint

F64 = torch.float64
A0 = [[-0.4, 1.2], [-1.0, 0.1]]
T_OBS = [0.0, 0.7, 1.6]


class Linear(nn.Module):
    """y' = y A^T (rows of y are samples)."""

    def __init__(self, dtype=F64):
        super().__init__()
        self.A = nn.Parameter(torch.tensor(A0, dtype=dtype))

    def forward(self, t, y):
        return y @ self.A.T


def _loss(ys):
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=ys.dtype)
    return (ys[-1] ** 2).sum() + (ys[1] * w).sum()


def _closed_form_gradients(y0):
    A = torch.tensor(A0, dtype=F64, requires_grad=True)
    y = y0.detach().clone().requires_grad_()
    ys = torch.stack([y @ torch.linalg.matrix_exp(ti * A).T for ti in T_OBS])
    return torch.autograd.grad(_loss(ys), (y, A))


def _y0():
    return torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=F64)


# How accurately each method (at the settings below) gets these gradients.
ADAPTIVE = {"dopri5": 1e-7, "tsit5": 1e-7, "bosh3": 1e-5, "dopri8": 1e-7, "fehlberg2": 1e-3}
FIXED = {"rk4": 1e-7, "heun3": 1e-4, "midpoint": 1e-3, "euler": 5e-2}
PYTHON = {"implicit_adams": 1e-6, "scipy_solver": 1e-6}


def _forward_kwargs(method):
    if method in ADAPTIVE:
        return {"rtol": 1e-9 if method != "fehlberg2" else 1e-7, "atol": 1e-11}
    if method in FIXED:
        return {"options": {"step_size": 0.01 if method != "euler" else 0.002}}
    if method == "scipy_solver":
        return {"rtol": 1e-10, "atol": 1e-12, "options": {"solver": "DOP853"}}
    return {"options": {"step_size": 0.01}, "rtol": 1e-9, "atol": 1e-11}


def _adjoint_kwargs(method):
    if method in ADAPTIVE:
        return {"adjoint_options": {}, "adjoint_rtol": 1e-9 if method != "fehlberg2" else 1e-7,
                "adjoint_atol": 1e-11}
    return {"adjoint_options": {"step_size": 0.01 if method != "euler" else 0.002}}


@pytest.mark.parametrize("adjoint_method", list(ADAPTIVE) + list(FIXED))
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4", "midpoint", "implicit_adams", "scipy_solver"])
def test_any_adjoint_method_with_any_method(method, adjoint_method):
    """Every pairing of a forward method (adaptive, fixed-step, Adams, scipy) with an
    engine adjoint method (adaptive or fixed-step): dL/dy0 and dL/dA equal the closed
    form's to the accuracy of the coarser of the two."""
    if method == "scipy_solver":
        pytest.importorskip("scipy")
    func = Linear()
    y0 = _y0().requires_grad_()
    ys = odeint_adjoint(func, y0, torch.tensor(T_OBS, dtype=F64), method=method, adjoint_method=adjoint_method,
                        **_forward_kwargs(method), **_adjoint_kwargs(adjoint_method))
    got = torch.autograd.grad(_loss(ys), (y0, func.A))
    bound = max({**ADAPTIVE, **FIXED, **PYTHON}[m] for m in (method, adjoint_method))
    for g, e in zip(got, _closed_form_gradients(y0)):
        torch.testing.assert_close(g, e, rtol=0, atol=bound * 50)


@pytest.mark.parametrize("adjoint_method,order", [("euler", 1), ("midpoint", 2), ("heun3", 3)])
def test_fixed_step_adjoint_of_an_adaptive_forward_converges_at_its_order(adjoint_method, order):
    """An accurate adaptive forward with a fixed-step adjoint: the gradient's error falls
    by 2^order when the adjoint's step halves (the backward solve really uses that grid)."""
    errors = []
    for step in (0.02, 0.01):
        func = Linear()
        y0 = _y0().requires_grad_()
        ys = odeint(func, y0, torch.tensor(T_OBS, dtype=F64), rtol=1e-11, atol=1e-13, gradient="adjoint",
                    adjoint_method=adjoint_method, adjoint_options={"step_size": step})
        got = torch.autograd.grad(_loss(ys), (y0, func.A))
        errors.append(max((g - e).abs().max().item() for g, e in zip(got, _closed_form_gradients(y0))))
    assert errors[0] / errors[1] == pytest.approx(2 ** order, rel=0.25)


# ---------------------------------------------------------------------------
# The options rule
# ---------------------------------------------------------------------------

def _run(method, options, adjoint_method, adjoint_options=None):
    func = Linear()
    y0 = _y0().requires_grad_()
    ys = odeint_adjoint(func, y0, torch.tensor(T_OBS, dtype=F64), method=method, options=options,
                        adjoint_method=adjoint_method, adjoint_options=adjoint_options)
    return torch.autograd.grad(_loss(ys), (y0, func.A))


@pytest.mark.parametrize("method,options,adjoint_method", [
    ("dopri5", {"max_step": 0.5}, "rk4"),
    ("rk4", {"step_size": 0.05}, "dopri5"),
])
def test_adjoint_of_another_kind_needs_adjoint_options_when_options_are_given(method, options, adjoint_method):
    """torchdiffeq's rule: when the adjoint method is of another kind than the forward's
    and options were given, they cannot be carried over: adjoint_options is required.
    Without options, or with adjoint_options, the solve runs."""
    with pytest.raises(ValueError, match="adjoint_options"):
        _run(method, options, adjoint_method)
    with_options = _run(method, options, adjoint_method, adjoint_options={})
    without = _run(method, None, adjoint_method)
    assert all(bool(torch.isfinite(g).all()) for g in with_options + without)


def test_adjoint_options_rule_as_torchdiffeq():
    """The same refusal from torchdiffeq for the same call."""
    td = pytest.importorskip("torchdiffeq")
    with pytest.raises(ValueError, match="adjoint_options"):
        td.odeint_adjoint(Linear(), _y0(), torch.tensor(T_OBS, dtype=F64), method="dopri5",
                          options={"max_step": 0.5}, adjoint_method="rk4")


def test_adjoint_inherits_the_forwards_options_of_the_same_kind():
    """Without adjoint_options the backward solve takes the forward's options (a fixed
    method's step_size): the gradient is that of an explicit adjoint_options with them,
    and differs from one-step-per-interval."""
    inherited = _run("midpoint", {"step_size": 0.05}, None)
    explicit = _run("midpoint", {"step_size": 0.05}, "midpoint", adjoint_options={"step_size": 0.05})
    coarse = _run("midpoint", {"step_size": 0.05}, "midpoint", adjoint_options={})
    for a, b, c in zip(inherited, explicit, coarse):
        assert torch.equal(a, b)
        assert not torch.allclose(a, c, rtol=0, atol=1e-6)


@pytest.mark.parametrize("norm", ["seminorm", "full", "callable"])
def test_fixed_step_methods_take_and_ignore_a_norm(norm):
    """A fixed grid has no error norm: options['norm'] and adjoint_options['norm'] (a
    callable or "seminorm") are taken and ignored, as torchdiffeq's fixed-grid solvers do:
    the gradients are bitwise those without."""
    value = (lambda q: 0.0) if norm == "callable" else norm
    forward_options = {"step_size": 0.05, "norm": value} if norm == "callable" else {"step_size": 0.05}
    got = _run("rk4", forward_options, "rk4", adjoint_options={"step_size": 0.05, "norm": value})
    plain = _run("rk4", {"step_size": 0.05}, "rk4", adjoint_options={"step_size": 0.05})
    for a, b in zip(got, plain):
        assert torch.equal(a, b)


def test_fixed_step_norm_option_as_torchdiffeq():
    """torchdiffeq takes the same call (a seminorm for a fixed-step adjoint) and our
    gradient equals its to round-off."""
    td = pytest.importorskip("torchdiffeq")
    grads = []
    for solve in (odeint_adjoint, td.odeint_adjoint):
        func = Linear()
        y0 = _y0().requires_grad_()
        ys = solve(func, y0, torch.tensor(T_OBS, dtype=F64), method="midpoint", options={"step_size": 0.1},
                   adjoint_options={"step_size": 0.1, "norm": "seminorm"})
        grads.append(torch.autograd.grad(_loss(ys), (y0, func.A)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# adjoint_params found by default
# ---------------------------------------------------------------------------

class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2).double()
        self.k = nn.Parameter(torch.tensor(0.3, dtype=F64))
        self.frozen = nn.Parameter(torch.tensor(1.5, dtype=F64), requires_grad=False)

    def forward(self, t, y):
        return torch.tanh(self.lin(y)) * self.k * self.frozen

    def dynamics(self, t, y, gain=1.0):
        return gain * self.forward(t, y)


def _grads_of_module(module, func, gradient):
    module.zero_grad()
    y0 = torch.tensor([[1.0, -0.5]], dtype=F64)
    ys = odeint(func, y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64), gradient=gradient, rtol=1e-9, atol=1e-11)
    ys.pow(2).sum().backward()
    return [p.grad.clone() if p.grad is not None else None for p in module.parameters()]


def _cpu_replica(module):
    """A replica as nn.DataParallel makes one (torch.nn.parallel.replicate, which needs
    CUDA devices): each module copied by _replicate_for_data_parallel, its parameters set
    as plain tensor attributes that are not leaves (copies of the originals)."""
    copies = {m: m._replicate_for_data_parallel() for m in module.modules()}
    for m, r in copies.items():
        for key, child in m._modules.items():
            setattr(r, key, copies[child])
        for key, p in m._parameters.items():
            setattr(r, key, p.clone() if p.requires_grad else p.detach())
    return copies[module]


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
@pytest.mark.parametrize("kind", ["bound_method", "partial_of_function", "partial_of_method", "nested_partial",
                                  "partial_keyword", "replica", "replica_method"])
def test_default_adjoint_params(kind, gradient):
    """Without adjoint_params, the parameters of the module behind func are found (and a
    frozen one left out): for a bound method, functools.partial over a function, a method
    or a partial, a module passed by keyword, and an nn.DataParallel replica (parameters
    as plain attributes). The gradients reaching the module's parameters equal backprop's."""
    module = Scaled()
    expected = _grads_of_module(module, module, "backprop")
    funcs = {
        "bound_method": lambda: module.dynamics,
        "partial_of_function": lambda: functools.partial(lambda m, t, y: m(t, y), module),
        "partial_of_method": lambda: functools.partial(module.dynamics, gain=1.0),
        "nested_partial": lambda: functools.partial(functools.partial(lambda m, g, t, y: g * m(t, y), module), 1.0),
        "partial_keyword": lambda: functools.partial(lambda t, y, m: m(t, y), m=module),
        "replica": lambda: _cpu_replica(module),
        "replica_method": lambda: _cpu_replica(module).dynamics,
    }
    got = _grads_of_module(module, funcs[kind](), gradient)
    names = [name for name, _ in module.named_parameters()]
    assert got[names.index("frozen")] is None and expected[names.index("frozen")] is None
    for g, e in zip(got, expected):
        if e is not None:
            torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-9)


def test_replica_parameters_as_torchdiffeq_finds_them():
    """The tensors found in a replica are those torchdiffeq's find_parameters finds, and
    both libraries' adjoint gradients through the replica agree."""
    td = pytest.importorskip("torchdiffeq")
    from torchdiffeq._impl.adjoint import find_parameters

    module = Scaled()
    replica = _cpu_replica(module)
    assert list(replica.parameters()) == []
    theirs = find_parameters(replica)
    grads = []
    for solve in (odeint_adjoint, td.odeint_adjoint):
        module.zero_grad()
        ys = solve(_cpu_replica(module), torch.tensor([[1.0, -0.5]], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
        ys.pow(2).sum().backward()
        grads.append([p.grad.clone() for p in module.parameters() if p.requires_grad])
    assert len(theirs) == len(grads[0]) == 3
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_captured_tensor_outside_the_found_parameters_is_refused(gradient):
    """A plain function using a tensor that requires grad: its gradient would be lost, so
    the solve refuses and names adjoint_params; given there, its gradient is right."""
    k = torch.tensor(0.5, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match="adjoint_params"):
        odeint(lambda t, y: -k * y, y0, t, gradient=gradient)
    ys = odeint(lambda t, y: -k * y, y0, t, gradient=gradient, adjoint_params=(k,), rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad(ys[-1].sum(), k)
    torch.testing.assert_close(g, -torch.exp(-k.detach()), rtol=1e-7, atol=0)


# ---------------------------------------------------------------------------
# Adams methods and scipy_solver under the adjoint
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams", "fixed_adams", "scipy_solver"])
def test_python_methods_adjoint_matches_closed_form_and_torchdiffeq(method):
    """The Adams methods and scipy_solver with gradient='adjoint' (the Python forward, the
    engine's adjoint, by default rk4 on the same grid or dopri5 at the same tolerances):
    the gradients equal the closed form's, and torchdiffeq's odeint_adjoint's to tolerance."""
    if method == "scipy_solver":
        pytest.importorskip("scipy")
        kw = {"rtol": 1e-10, "atol": 1e-12, "options": {"solver": "DOP853"}}
    else:
        # Explicit Adams of torchdiffeq's default order 12 is unstable at these steps: order 4.
        options = {"step_size": 0.005, "max_order": 4} if method == "explicit_adams" else {"step_size": 0.01}
        kw = {"options": options, "rtol": 1e-10, "atol": 1e-12}
    t = torch.tensor(T_OBS, dtype=F64)
    grads = []
    solvers = [odeint_adjoint]
    td = None
    try:
        import torchdiffeq as td
        solvers.append(td.odeint_adjoint)
    except ImportError:
        pass
    for solve in solvers:
        func = Linear()
        y0 = _y0().requires_grad_()
        with warnings.catch_warnings():
            # torchdiffeq's Adams warn of unused options, its scipy backward of min_step
            warnings.simplefilter("ignore")
            ys = solve(func, y0, t, method=method, **kw)
            grads.append(torch.autograd.grad(_loss(ys), (y0, func.A)))
    bound = 1e-5 if method == "explicit_adams" else 1e-6
    for g, e in zip(grads[0], _closed_form_gradients(_y0())):
        torch.testing.assert_close(g, e, rtol=0, atol=bound)
    if td is not None:
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=0, atol=bound)


def _adams_adjoint(options, **kw):
    func = Linear()
    y0 = _y0().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrector's convergence warning at these steps
        ys = odeint_adjoint(func, y0, torch.tensor(T_OBS, dtype=F64), method="implicit_adams", options=options, **kw)
    return torch.autograd.grad(_loss(ys), (y0, func.A))


def test_adams_options_reach_the_default_adjoint():
    """The Adams methods' own options (perturb, interp, max_order) do not stop the default
    adjoint (rk4 on the engine): it takes their step_size alone, bitwise as if given as
    adjoint_options."""
    got = _adams_adjoint({"step_size": 0.05, "perturb": True, "interp": "cubic", "max_order": 4})
    explicit = _adams_adjoint({"step_size": 0.05, "perturb": True, "interp": "cubic", "max_order": 4},
                              adjoint_method="rk4", adjoint_options={"step_size": 0.05})
    for a, b, e in zip(got, explicit, _closed_form_gradients(_y0())):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, e, rtol=0, atol=1e-5)


def test_adams_options_rule_for_the_adjoint():
    """The Adams grid (step_size or grid_constructor) is carried to the default adjoint (rk4
    on the same grid, bitwise as if given as adjoint_options); a step_size means nothing to
    an adaptive adjoint_method: refused naming adjoint_options, and run once they are
    given. Unknown adjoint options warn as torchdiffeq's do, naming the adjoint's solver."""
    grid = {"grid_constructor": lambda f, y0, t: torch.linspace(float(t[0]), float(t[-1]), 33, dtype=F64)}
    carried = _adams_adjoint(grid)
    explicit = _adams_adjoint(grid, adjoint_method="rk4", adjoint_options=dict(grid))
    for a, b in zip(carried, explicit):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="adjoint_options"):
        _adams_adjoint({"step_size": 0.05}, adjoint_method="dopri5")
    for g in _adams_adjoint({"step_size": 0.05}, adjoint_method="dopri5", adjoint_options={}):
        assert bool(torch.isfinite(g).all())
    y0 = _y0().requires_grad_()
    with pytest.warns(UserWarning, match=r"RK4: Unexpected arguments \{'bogus': 1\}"):
        odeint_adjoint(Linear(), y0, torch.tensor(T_OBS, dtype=F64), method="explicit_adams",
                       options={"step_size": 0.05, "max_order": 4}, adjoint_options={"step_size": 0.05, "bogus": 1})


def test_python_methods_refuse_checkpoint_and_scipy_refuses_backprop():
    """checkpoint replays Runge-Kutta steps (not Adams'); scipy_solver has no graph for
    backprop: both refused with the alternative named."""
    t = torch.tensor(T_OBS, dtype=F64)
    with pytest.raises(ValueError, match="checkpoint"):
        odeint(Linear(), _y0(), t, method="implicit_adams", options={"step_size": 0.1}, gradient="checkpoint")
    pytest.importorskip("scipy")
    with pytest.raises(ValueError, match="adjoint"):
        odeint(Linear(), _y0().requires_grad_(), t, method="scipy_solver")


# ---------------------------------------------------------------------------
# Norms of the adjoint
# ---------------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.layouts = []

    def __call__(self, q):
        self.layouts.append(tuple(tuple(x.shape) for x in q))
        self.first = q[0]
        return max(x.abs().pow(2).mean().sqrt() for x in q)


class TupleLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor(A0, dtype=F64))
        self.b = nn.Parameter(torch.zeros(3, dtype=F64))  # unused by the dynamics

    def forward(self, t, state):
        z, logp = state
        return z @ self.A.T, -torch.trace(self.A) * torch.ones_like(logp)


@pytest.mark.parametrize("state", ["tensor", "tuple"])
def test_callable_adjoint_norm_sees_t_y_adj_y_adj_params(state):
    """adjoint_options['norm'] is called on (t, *y, *adj_y, *adj_params), the y and adj_y
    pieces laid out like y0 (t's entry 0 here: dL/dt is kept outside the state); the
    gradient equals the default norm's to tolerance."""
    t = torch.tensor(T_OBS, dtype=F64)
    if state == "tensor":
        func, y0 = Linear(), _y0()
        expected = ((), (2, 2), (2, 2), (2, 2))
    else:
        func, y0 = TupleLinear(), (_y0(), torch.zeros(2, 1, dtype=F64))
        expected = ((), (2, 2), (2, 1), (2, 2), (2, 1), (2, 2), (3,))
    norm = Recorder()
    grads = []
    for options in ({"norm": norm}, None):
        func.zero_grad()
        ys = odeint_adjoint(func, y0, t, rtol=1e-9, atol=1e-11, adjoint_options=options)
        (ys[0] if state == "tuple" else ys).pow(2).sum().backward()
        grads.append(func.A.grad.clone())
    assert norm.layouts and set(norm.layouts) == {expected}
    assert float(norm.first) == 0.0
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-6)


def test_callable_adjoint_norm_layout_as_torchdiffeq():
    """On a tuple state, torchdiffeq calls the adjoint norm on tensors of the same shapes."""
    td = pytest.importorskip("torchdiffeq")
    t = torch.tensor(T_OBS, dtype=F64)
    layouts = []
    for solve in (odeint_adjoint, td.odeint_adjoint):
        norm = Recorder()
        ys = solve(TupleLinear(), (_y0(), torch.zeros(2, 1, dtype=F64)), t, adjoint_options={"norm": norm})
        ys[0].pow(2).sum().backward()
        layouts.append(set(norm.layouts))
    assert layouts[0] == layouts[1]


def test_excluded_adjoint_params_warn_with_a_callable_norm_as_torchdiffeq():
    """An adjoint parameter that does not require grad is left out; with a callable adjoint
    norm (which would not see it) torchdiffeq warns, and so do we, with its words."""
    frozen = torch.tensor(1.0, dtype=F64)
    func = Linear()
    t = torch.tensor(T_OBS, dtype=F64)
    message = "An adjoint parameter was passed without requiring gradient"
    with pytest.warns(UserWarning, match=message):
        odeint_adjoint(func, _y0(), t, adjoint_params=(func.A, frozen), adjoint_options={"norm": Recorder()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        odeint_adjoint(func, _y0(), t, adjoint_params=(func.A, frozen))  # no callable norm: silent
    td = pytest.importorskip("torchdiffeq")
    with pytest.warns(UserWarning, match=message):
        td.odeint_adjoint(func, _y0(), t, adjoint_params=(func.A, frozen), adjoint_options={"norm": Recorder()})


def test_seminorm_on_a_tuple_state():
    """adjoint_options={'norm': 'seminorm'} on a tuple state: the parameters' adjoint is
    left out of the error control, so no more backward evaluations than the full norm,
    and the same gradient to tolerance."""
    t = torch.tensor(T_OBS, dtype=F64)
    results = {}
    for norm in ("seminorm", "full"):
        func = TupleLinear()
        stats = SolverStats()
        ys = odeint_adjoint(func, (_y0().requires_grad_(), torch.zeros(2, 1, dtype=F64)), t, rtol=1e-8,
                            atol=1e-10, adjoint_options={"norm": norm}, stats=stats)
        (ys[0].pow(2).sum() + ys[1].sum()).backward()
        results[norm] = (stats.nfe_backward, func.A.grad.clone())
    assert results["seminorm"][0] <= results["full"][0]
    torch.testing.assert_close(results["seminorm"][1], results["full"][1], rtol=0, atol=1e-6)


class ComplexRotation(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([2.0 + 0.1j, -1.0 - 0.2j], dtype=torch.complex128))

    def forward(self, t, y):
        return 1j * self.w * y


@pytest.mark.parametrize("norm", ["full", "seminorm"])
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_complex_parameter_adjoint(method, norm):
    """A complex parameter under the adjoint: its error enters the norm by modulus (no
    complex-to-real cast, no warning), and its gradient equals backprop's (PyTorch's
    complex convention) to tolerance."""
    y0 = torch.tensor([1.0 + 0.5j, -0.3 + 0.2j], dtype=torch.complex128)
    t = torch.tensor([0.0, 0.8, 2.0], dtype=F64)
    options = {"step_size": 0.01} if method == "rk4" else None
    grads = []
    for gradient in ("adjoint", "backprop"):
        func = ComplexRotation()
        kw = {"adjoint_options": {"norm": norm} if method == "dopri5" else options} if gradient == "adjoint" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ys = odeint(func, y0, t, method=method, options=options, rtol=1e-10, atol=1e-12, gradient=gradient, **kw)
            (ys[-1] * torch.tensor([1.0 - 1.0j, 0.5j], dtype=torch.complex128)).real.sum().backward()
        grads.append(func.w.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-7)


def test_fixed_step_adjoint_ignores_adjoint_tolerances():
    """torchdiffeq's rule: a fixed-step adjoint takes adjoint_rtol/adjoint_atol and ignores
    them (as a fixed-step forward ignores rtol/atol): the same gradient without them; a
    negative one is still an error naming it."""
    t = torch.tensor(T_OBS, dtype=F64)
    grads = []
    for kw in ({}, {"adjoint_rtol": 1e-3, "adjoint_atol": 1e-4}):
        func = Linear()
        y0 = _y0().requires_grad_()
        ys = odeint_adjoint(func, y0, t, method="rk4", options={"step_size": 0.05}, **kw)
        grads.append(torch.autograd.grad(_loss(ys), (y0, func.A)))
    for a, b in zip(*grads):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="adjoint_rtol must be a finite non-negative"):
        odeint_adjoint(Linear(), _y0(), t, method="rk4", adjoint_rtol=-1.0)


@pytest.mark.parametrize("method,options", [("explicit_adams", {"step_size": 0.05, "max_order": 4}),
                                            ("scipy_solver", {})])
def test_methods_outside_the_engine_refuse_captured_tensors(method, options):
    """The Adams and scipy forwards run outside the engine, so the engine's check on f's first
    evaluation is made before them: a closure over a tensor that requires grad, without
    adjoint_params, is refused (its gradient would be lost); with adjoint_params it runs."""
    if method == "scipy_solver":
        pytest.importorskip("scipy")
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    f = lambda t, y: -k * y
    t = torch.tensor(T_OBS, dtype=F64)
    with pytest.raises(ValueError, match="func uses a tensor that requires grad"):
        odeint_adjoint(f, _y0(), t, method=method, options=options)
    ys = odeint_adjoint(f, _y0(), t, method=method, options=options, adjoint_params=(k,))
    (g,) = torch.autograd.grad(ys[-1].sum(), k)
    # y(t) = y0 exp(-k t): d sum y(T) / dk = -T sum y(T)
    assert abs(g.item() - (-T_OBS[-1] * ys[-1].sum().item())) < 1e-3 * abs(g.item())
