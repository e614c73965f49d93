"""torchdiffeq 0.2.5's method and step-placement options, with its meaning.

Side by side with torchdiffeq (those tests skip without it): the fixed-step methods with
step_size / grid_constructor / neither x interp linear / cubic x perturb on / off x
increasing / decreasing t give the same values to round-off on the same grid; the adaptive
knots step_t and jump_t, min_step and max_num_steps accept, reject and raise as torchdiffeq
does, with the same step counts and evaluations where the algorithm is the same (bosh3:
torchdiffeq's dopri5 estimates its error with Shampine's embedded weights, neuralode's
with Dormand and Prince's, so only its values are compared); options a method does not
take are warned about with torchdiffeq's message.

Standalone (closed forms, no torchdiffeq): the rules themselves, and every new option
with gradient="adjoint" and "checkpoint" against backprop or a closed form.
"""

import math
import warnings

import pytest
import torch
from torch import nn

import neuralode

F64 = torch.float64
#: torchdiffeq's fixed-step methods (rk4 is its 3/8 rule; rk4_classic is neuralode's own).
TDQ_FIXED = ["euler", "midpoint", "rk4", "heun2", "heun3"]


def _tdq():
    return pytest.importorskip("torchdiffeq")


class Counted(nn.Module):
    """f(t, y) with a count of its evaluations and the times it saw."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.nfe, self.times = 0, []

    def forward(self, t, y):
        self.nfe += 1
        self.times.append(t.item())
        return self.fn(t, y)


class CountedSteps(Counted):
    """Also torchdiffeq's accept/reject callbacks counted (its adaptive solvers call them)."""

    def __init__(self, fn):
        super().__init__(fn)
        self.accepted, self.rejected = 0, 0

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt):
        self.rejected += 1


def smooth(t, y):
    """Nonlinear and time-dependent: every stage's time and state matter."""
    return torch.stack([y[..., 1], -y[..., 0] + 0.3 * torch.sin(2 * t) * y[..., 0] ** 2], -1)


def _ours(fn, y0, t, **kw):
    f, stats = Counted(fn), neuralode.SolverStats()
    ys = neuralode.odeint(f, y0, t, stats=stats, **kw)
    return ys, f, stats


def _theirs(fn, y0, t, **kw):
    method = kw.get("method")
    f = Counted(fn) if method in TDQ_FIXED else CountedSteps(fn)
    ys = _tdq().odeint(f, y0, t, **kw)
    return ys, f


def power_grid(func, y0, t):
    """A non-uniform grid from t[0] to t[-1] (denser at the start); torchdiffeq calls it
    with increasing times only (-t for decreasing t), as neuralode does."""
    s = torch.linspace(0.0, 1.0, 14, dtype=t.dtype) ** 1.5
    return torch.cat([t[:1], t[0] + (t[-1] - t[0]) * s[1:-1], t[-1:]])


# ---------------------------------------------------------------- fixed grids, side by side

GRIDS = {"step_size": {"step_size": 0.13}, "grid_constructor": {"grid_constructor": power_grid}, "neither": {}}
TIMES = {
    "increasing": [0.0, 0.37, 0.8, 1.55],
    "decreasing": [1.2, 0.9, 0.31, -0.4],
}


@pytest.mark.parametrize("direction", list(TIMES))
@pytest.mark.parametrize("perturb", [False, True], ids=["plain", "perturb"])
@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("method", TDQ_FIXED)
def test_fixed_grid_matches_torchdiffeq(method, grid, interp, perturb, direction):
    y0 = torch.tensor([[0.8, -0.3], [0.1, 0.5]], dtype=F64)
    t = torch.tensor(TIMES[direction], dtype=F64)
    options = {**GRIDS[grid], "interp": interp, "perturb": perturb}
    theirs, g = _theirs(smooth, y0, t, method=method, options=dict(options))
    ours, f, stats = _ours(smooth, y0, t, method=method, options=dict(options))
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-13), (ours - theirs).abs().max()
    # The same grid: f sampled at the same times. (torchdiffeq's cubic evaluates f at the
    # end of a step once per observation the step serves, neuralode once per step and not
    # at all for the last observation, which ends the last step.)
    ours_at, theirs_at = (set(round(x, 12) for x in c.times) for c in (f, g))
    if interp == "linear":
        assert ours_at == theirs_at
        assert f.nfe == g.nfe == stats.nfe_forward
    else:
        assert ours_at <= theirs_at and theirs_at - ours_at <= {round(t[-1].item(), 12)}
        assert f.nfe <= g.nfe


@pytest.mark.parametrize("method", TDQ_FIXED)
@pytest.mark.parametrize("direction", list(TIMES))
def test_perturb_samples_each_step_from_inside(method, direction):
    """f is 0 on the grid points k/8 and 1 between them (the grid times and their sums are
    exact, so that torchdiffeq's t0 + dt and t1 are the same number): with perturb each
    step sees f from inside itself, without it the grid point's own value; torchdiffeq's
    values both ways, float64 and float32 (nextafter in the state's dtype)."""
    for dtype in (F64, torch.float32):
        def stairs(t, y):
            # 0 on the grid points k/8, 1 between them (on either side).
            s = 8 * t.to(y.dtype)
            return (torch.ceil(s) - torch.floor(s)) * (1 + 0 * y) - 0.5 * y

        y0 = torch.tensor([1.0, -2.0], dtype=dtype)
        t = torch.tensor([0.0, 0.3, 1.0] if direction == "increasing" else [1.0, 0.6, 0.0], dtype=dtype)
        for perturb in (False, True):
            options = {"step_size": 0.125, "perturb": perturb}
            theirs, _ = _theirs(stairs, y0, t, method=method, options=dict(options))
            ours, _, _ = _ours(stairs, y0, t, method=method, options=dict(options))
            tol = 1e-12 if dtype == F64 else 1e-5
            assert torch.allclose(ours, theirs, rtol=tol, atol=tol), (dtype, perturb, (ours - theirs).abs().max())
        plain = _ours(stairs, y0, t, method=method, options={"step_size": 0.125})[0]
        perturbed = _ours(stairs, y0, t, method=method, options={"step_size": 0.125, "perturb": True})[0]
        assert (plain - perturbed).abs().max() > 0.01  # the option changes which side f is seen from


# ---------------------------------------------------------------- fixed grids, standalone


def test_grid_constructor_grid_is_where_the_steps_go():
    """Euler on dy/dt = 1 + 0 y is exact on any grid, and f sees exactly the grid points."""
    f = Counted(lambda t, y: torch.ones_like(y))
    grid = torch.tensor([0.0, 0.1, 0.15, 0.6, 1.0], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ys = neuralode.odeint(f, torch.zeros(1, dtype=F64), t, method="euler",
                          options={"grid_constructor": lambda func, y0, tt: grid})
    assert f.times == grid[:-1].tolist()
    assert torch.allclose(ys[:, 0], t, rtol=0, atol=1e-15)


def test_grid_constructor_receives_func_y0_and_negated_decreasing_times():
    seen = {}

    def constructor(func, y0, tt):
        seen["t"], seen["y0"], seen["f"] = tt.clone(), y0, func(tt[0], y0)
        return tt

    y0 = torch.tensor([2.0], dtype=F64)
    f = lambda t, y: t * y
    neuralode.odeint(f, y0, torch.tensor([1.0, 0.5, 0.0], dtype=F64), method="euler",
                     options={"grid_constructor": constructor})
    assert seen["t"].tolist() == [-1.0, -0.5, -0.0]
    assert seen["y0"] is not None and torch.equal(seen["y0"], y0)
    # the dynamics in s = -t: -f(-s, y) at s = -1: -(1 * 2)
    assert seen["f"].tolist() == [-2.0]


@pytest.mark.parametrize("grid,match", [
    (lambda f, y0, t: torch.stack([t[0], t[-1] + 0.5]), "must start at t\\[0\\] and end at t\\[-1\\]"),
    (lambda f, y0, t: torch.stack([t[0], t[-1], t[0], t[-1]]), "must be strictly increasing"),
    (lambda f, y0, t: t.reshape(-1, 1), "finite 1-D grid"),
])
def test_grid_constructor_bad_grid(grid, match):
    with pytest.raises(ValueError, match=match):
        neuralode.odeint(lambda t, y: -y, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                         method="rk4", options={"grid_constructor": grid})


def test_grid_constructor_returning_no_tensor():
    with pytest.raises(TypeError, match="'grid_constructor' must return a torch.Tensor, got list"):
        neuralode.odeint(lambda t, y: -y, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                         method="rk4", options={"grid_constructor": lambda f, y0, t: [0.0, 1.0]})


@pytest.mark.parametrize("options,match", [
    ({"step_size": 0.1, "grid_constructor": power_grid}, "'step_size' and 'grid_constructor' are mutually exclusive"),
    ({"grid_constructor": power_grid, "max_step": 0.1}, "either 'grid_constructor' or 'max_step'"),
    ({"grid_constructor": 3}, "'grid_constructor' must be callable"),
    ({"interp": "quadratic"}, "'interp' must be 'linear' or 'cubic'"),
    ({"perturb": "yes"}, "'perturb' must be True or False"),
])
def test_bad_fixed_options(options, match):
    with pytest.raises(ValueError, match=match):
        neuralode.odeint(lambda t, y: -y, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                         method="midpoint", options=options)


def test_grid_constructor_needs_1d_times():
    t = torch.tensor([[0.0, 0.1], [0.5, 0.7]], dtype=F64).unsqueeze(-1)
    with pytest.raises(ValueError, match="'grid_constructor' needs 1-D times"):
        neuralode.odeint(lambda t, y: -y, torch.ones(2, 1, dtype=F64), t, method="euler",
                         options={"grid_constructor": power_grid})


def test_none_means_unset_as_in_torchdiffeq():
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    a = neuralode.odeint(lambda t, y: -y, y0, t, method="rk4", options={"step_size": None, "grid_constructor": None})
    b = neuralode.odeint(lambda t, y: -y, y0, t, method="rk4")
    assert torch.equal(a, b)
    a = neuralode.odeint(lambda t, y: -y, y0, t, options={"first_step": None, "step_t": None, "jump_t": None})
    assert torch.equal(a, neuralode.odeint(lambda t, y: -y, y0, t))


def test_cubic_interpolation_is_4th_order_between_grid_points():
    """Observations between the points of a coarse grid: cubic Hermite errs O(h^4), linear
    O(h^2) (the closed form of the harmonic oscillator)."""
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    osc = lambda t, y: torch.stack([y[1], -y[0]])
    t = torch.tensor([0.0, 0.31, 0.77, 1.4], dtype=F64)
    exact = torch.stack([torch.cos(t), -torch.sin(t)], -1)
    err = {}
    for interp in ("linear", "cubic"):
        err[interp] = [(neuralode.odeint(osc, y0, t, method="rk4", options={"step_size": h, "interp": interp})
                        - exact).abs().max().item() for h in (0.1, 0.05)]
    assert 3 < err["linear"][0] / err["linear"][1] < 8
    assert err["cubic"][0] / err["cubic"][1] > 12
    assert err["cubic"][1] < err["linear"][1] / 50


# ---------------------------------------------------------------- adaptive knots, side by side


def _same_values(method, ours, theirs):
    """Within the solve's tolerance of torchdiffeq's. bosh3's observations between steps
    differ more: torchdiffeq interpolates a quartic through a 2nd-order midpoint estimate,
    neuralode the cubic Hermite through the step's ends."""
    tol = 3e-4 if method == "bosh3" else 2e-5
    assert torch.allclose(ours, theirs, rtol=tol, atol=tol * 0.1), (ours - theirs).abs().max()


def _same_steps(f, stats, g):
    """The same steps as torchdiffeq: counts, evaluations and the times f was sampled at
    (to round-off: torchdiffeq samples every c = 1 stage one unit in the last place early,
    and its clock rounds differently)."""
    assert (stats.steps_accepted, stats.steps_rejected, stats.nfe_forward) == (g.accepted, g.rejected, g.nfe)
    assert max(abs(a - b) for a, b in zip(f.times, g.times)) < 1e-10


def jumpy(t, y):
    """f jumps at t = 1 (from -y to -3 y + 2)."""
    return torch.where(t < 1.0, -y, -3 * y + 2)


def kinked(t, y):
    """f is continuous with a kink at t = 1."""
    return -y * (1 + (t - 1).clamp_min(0) * 4)


@pytest.mark.parametrize("fn", [jumpy, kinked], ids=["jump", "kink"])
@pytest.mark.parametrize("knots", ["step_t", "jump_t"])
@pytest.mark.parametrize("method", ["bosh3", "dopri5"])
def test_knots_match_torchdiffeq(method, knots, fn):
    """Steps land on the knot; after a jump_t knot f is evaluated again just past it, after
    a step_t knot the landing step's last stage is reused. bosh3 takes torchdiffeq's very
    steps: the same accepted and rejected counts, evaluations, and times f is sampled at."""
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    t = torch.tensor([0.0, 0.7, 1.6, 2.5], dtype=F64)
    kw = dict(method=method, rtol=1e-6, atol=1e-8, options={knots: torch.tensor([1.0], dtype=F64)})
    theirs, g = _theirs(fn, y0, t, **kw)
    ours, f, stats = _ours(fn, y0, t, **kw)
    _same_values(method, ours, theirs)
    assert math.nextafter(1.0, 0.0) in f.times  # the landing step's last stages, before the knot
    if method == "bosh3":
        _same_steps(f, stats, g)
    if knots == "jump_t":
        assert math.nextafter(1.0, 2.0) in f.times  # f past the jump, evaluated again
    else:
        assert math.nextafter(1.0, 2.0) not in f.times and 1.0 not in f.times  # reused


def test_knots_decreasing_times_match_torchdiffeq():
    """Decreasing times: torchdiffeq negates t and the knots (tensors); the values and, for
    bosh3, the counts agree."""
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    t = torch.tensor([2.5, 1.6, 0.7, 0.0], dtype=F64)
    for knots in ("step_t", "jump_t"):
        kw = dict(method="bosh3", rtol=1e-6, atol=1e-8, options={knots: torch.tensor([1.0, 2.0], dtype=F64)})
        theirs, g = _theirs(jumpy, y0, t, **kw)
        ours, f, stats = _ours(jumpy, y0, t, **kw)
        _same_values("bosh3", ours, theirs)
        _same_steps(f, stats, g)


SHARED = {"step_t": [0.5, 1.0], "jump_t": [1.0]}


def test_step_t_and_jump_t_sharing_a_time():
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64)
    with pytest.raises(ValueError, match="'step_t' and 'jump_t' must not have any repeated elements"):
        neuralode.odeint(jumpy, y0, t, options=SHARED)
    with pytest.raises(ValueError, match="repeated elements"):
        neuralode.odeint(jumpy, y0, t, options={"jump_t": [1.0, 1.0]})
    # Knots behind t[0] are dropped first (torchdiffeq's rule): no clash.
    neuralode.odeint(jumpy, y0, t, options={"step_t": [-1.0, 0.5], "jump_t": [-1.0]})


def test_step_t_and_jump_t_sharing_a_time_torchdiffeq_raises_too():
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64)
    with pytest.raises(ValueError, match="must not have any repeated elements"):
        _theirs(jumpy, y0, t, options={k: torch.tensor(v, dtype=F64) for k, v in SHARED.items()})


# ---------------------------------------------------------------- min_step, max_num_steps


@pytest.mark.parametrize("min_step", [1e-3, 0.05])
def test_min_step_clamps_and_accepts_like_torchdiffeq(min_step):
    """f jumps at t = 1 with no knot: the steps shrink to min_step there and a step of
    min_step is accepted whatever its error. bosh3: torchdiffeq's counts."""
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    t = torch.tensor([0.0, 0.7, 1.6, 2.5], dtype=F64)
    kw = dict(method="bosh3", rtol=1e-8, atol=1e-10, options={"min_step": min_step})
    theirs, g = _theirs(jumpy, y0, t, **kw)
    ours, f, stats = _ours(jumpy, y0, t, **kw)
    _same_steps(f, stats, g)
    _same_values("bosh3", ours, theirs)


def test_min_step_accepts_a_step_over_the_tolerance():
    """Standalone: every step is clamped to min_step = 0.25 and accepted, though rtol=1e-12
    would reject it: exactly 4 steps over [0, 1]."""
    stats = neuralode.SolverStats()
    neuralode.odeint(lambda t, y: -y, torch.ones(3, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                     rtol=1e-12, atol=1e-12, options={"min_step": 0.25, "first_step": 0.25}, stats=stats)
    assert (stats.steps_accepted, stats.steps_rejected) == (4, 0)


@pytest.mark.parametrize("method", ["bosh3", "dopri5"])
def test_max_num_steps_counts_per_output_interval_like_torchdiffeq(method):
    """torchdiffeq counts the steps taken towards each output time: with many outputs a
    budget far below the total suffices. neuralode raises exactly when torchdiffeq does."""
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    osc = lambda t, y: torch.stack([y[1], -y[0]])
    t = torch.linspace(0.0, 6.0, 13, dtype=F64)
    first_pass = total = None
    for m in range(1, 30):
        kw = dict(method=method, rtol=1e-5, atol=1e-5, options={"max_num_steps": m})
        try:
            _theirs(osc, y0, t, **kw)
            tdq_ok = True
        except AssertionError as e:
            assert "max_num_steps exceeded" in str(e)
            tdq_ok = False
        try:
            _, _, stats = _ours(osc, y0, t, **kw)
            ours_ok = True
            if first_pass is None:
                first_pass, total = m, stats.steps_accepted + stats.steps_rejected
        except ValueError as e:
            assert f"max_num_steps={m} exceeded" in str(e) and "options['max_num_steps']" in str(e)
            ours_ok = False
        assert ours_ok == tdq_ok, m
        if first_pass is not None and m > first_pass + 2:
            break
    assert first_pass is not None and total > 2 * first_pass  # a budget far below the total


def test_max_num_steps_error_names_the_option():
    with pytest.raises(ValueError, match="max_num_steps=3 exceeded at t=.*raise options\\['max_num_steps'\\]"):
        neuralode.odeint(lambda t, y: -10 * y, torch.ones(2, dtype=F64), torch.tensor([0.0, 5.0], dtype=F64),
                         options={"max_num_steps": 3})


def test_dtype_option_is_accepted_and_changes_nothing():
    y0, t = torch.ones(2, dtype=torch.float32), torch.tensor([0.0, 0.5, 1.0])
    a = neuralode.odeint(smooth, y0, t)
    for dtype in (torch.float32, torch.float64):
        assert torch.equal(neuralode.odeint(smooth, y0, t, options={"dtype": dtype}), a)
    with pytest.raises(ValueError, match="'dtype' \\(the time dtype\\) must be torch.float32 or torch.float64"):
        neuralode.odeint(smooth, y0, t, options={"dtype": torch.int32})


# ---------------------------------------------------------------- unknown options warn


UNKNOWN = [
    ("dopri5", {"step_size": 0.1}, "Dopri5Solver"),
    ("bosh3", {"grid_constructor": None, "perturb": True}, "Bosh3Solver"),
    ("rk4", {"step_t": [0.5]}, "RK4"),
    ("euler", {"stepsize": 0.1}, "Euler"),
    ("adaptive_heun", {"interp": "cubic"}, "AdaptiveHeunSolver"),
    ("fehlberg2", {"min_stepp": 0.1}, "Fehlberg2"),
]


@pytest.mark.parametrize("method,options,solver", UNKNOWN)
def test_unknown_options_warn(method, options, solver):
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.warns(UserWarning) as record:
        ys = neuralode.odeint(lambda t, y: -y, y0, t, method=method, options=dict(options))
    assert [str(w.message) for w in record] == [f"{solver}: Unexpected arguments {options}"]
    plain = neuralode.odeint(lambda t, y: -y, y0, t, method=method)
    assert torch.equal(ys, plain)  # ignored


@pytest.mark.parametrize("method,options,solver", UNKNOWN)
def test_unknown_options_warn_as_torchdiffeq_does(method, options, solver):
    """torchdiffeq's own warning for the same call has the same text."""
    tdq = _tdq()
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        tdq.odeint(lambda t, y: -y, y0, t, method=method, options=dict(options))
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        neuralode.odeint(lambda t, y: -y, y0, t, method=method, options=dict(options))
    assert [str(w.message) for w in ours] == [f"{solver}: Unexpected arguments {options}"]
    assert str(ours[0].message) in [str(w.message) for w in theirs]


def test_a_torchdiffeq_warning_filter_silences_ours():
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="Dopri5Solver: Unexpected arguments")
        neuralode.odeint(lambda t, y: -y, y0, t, options={"step_size": 0.1})


def test_every_method_has_a_solver_name():
    assert set(neuralode.spec.SOLVER_NAMES) == set(neuralode.METHODS)


# ---------------------------------------------------------------- gradient modes x options


class Linear(nn.Module):
    """dz/dt = s(t) z A^T: closed form z(t) = z0 expm(S(t) A)^T, S = int s."""

    def __init__(self, s=lambda t: 1.0):
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[-0.3, -1.0], [0.9, -0.2]], dtype=F64))
        self.s = s

    def forward(self, t, z):
        return self.s(t) * (z @ self.A.T)


def _grads(func, z0, t, w, **kw):
    z = z0.clone().requires_grad_(True)
    tt = t.clone().requires_grad_(kw.pop("t_grad", False))
    ys = neuralode.odeint(func, z, tt, **kw)
    inputs = [z, func.A] + ([tt] if tt.requires_grad else [])
    return [ys.detach()] + list(torch.autograd.grad((ys * w).sum(), inputs))


def _closed(func, z0, t, w, S):
    """Outputs and gradients of sum(w * z(t_i)) with z(t_i) = z0 expm(S(t_i) A)^T."""
    A = func.A.detach().clone().requires_grad_(True)
    z = z0.clone().requires_grad_(True)
    ys = torch.stack([z @ torch.linalg.matrix_exp(S(ti) * A).T for ti in t.tolist()])
    return [ys.detach()] + list(torch.autograd.grad((ys * w).sum(), [z, A]))


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


Z0 = torch.tensor([[0.6, -0.4], [0.1, 0.9]], dtype=F64)
T_OBS = torch.tensor([0.0, 0.33, 0.71, 1.3], dtype=F64)
W = torch.randn(4, 2, 2, generator=torch.Generator().manual_seed(3), dtype=F64)

FIXED_OPTION_CASES = {
    "grid_constructor": {"grid_constructor": power_grid},
    "interp_cubic": {"step_size": 0.05, "interp": "cubic"},
    "perturb": {"step_size": 0.05, "perturb": True},
    "all": {"grid_constructor": power_grid, "interp": "cubic", "perturb": True},
}


@pytest.mark.parametrize("case", list(FIXED_OPTION_CASES))
def test_fixed_options_checkpoint_equals_backprop_with_time_gradients(case):
    """The discrete adjoint is the gradient of the discrete solve: backprop's, to round-off,
    dL/dt included (the grid, the perturbed stage times and the interpolation all depend on
    t)."""
    func = Linear(lambda t: 1 + 0.5 * torch.sin(3 * t))
    opts = FIXED_OPTION_CASES[case]
    ref = _grads(func, Z0, T_OBS, W, method="rk4", options=opts, t_grad=True)
    got = _grads(func, Z0, T_OBS, W, method="rk4", options=opts, gradient="checkpoint", t_grad=True)
    for name, a, b in zip(("ys", "z0", "A", "t"), got, ref):
        assert _rel(a, b) < 1e-11, name


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("case", ["grid_constructor", "interp_cubic", "perturb"])
def test_fixed_options_every_gradient_mode_matches_the_closed_form(case, gradient):
    """Observations on the grid for linear interpolation (the continuous adjoint gradients
    the ODE, not the interpolant); cubic off the grid is 4th order."""
    func = Linear()
    opts = dict(FIXED_OPTION_CASES[case])
    t = T_OBS
    if case != "interp_cubic":
        t = torch.tensor([0.0, 0.35, 0.7, 1.3], dtype=F64)
        if case == "grid_constructor":
            opts = {"grid_constructor": lambda f, y0, tt: torch.linspace(tt[0].item(), tt[-1].item(), 27, dtype=F64)}
    got = _grads(func, Z0, t, W, method="rk4", options=opts, gradient=gradient)
    exact = _closed(func, Z0, t, W, lambda ti: ti - t[0].item())
    for name, a, b in zip(("ys", "z0", "A"), got, exact):
        assert _rel(a, b) < 2e-6, name


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
@pytest.mark.parametrize("knots", ["step_t", "jump_t"])
def test_knots_every_gradient_mode_matches_the_closed_form(knots, gradient):
    """s(t) = 1 + 4 max(t - 0.5, 0) (kink at 0.5) or 1 on [0, 0.5), 3 after (jump): knots
    at 0.5 and 1.0, S(t) in closed form."""
    if knots == "step_t":
        s = lambda t: 1 + 4 * (t - 0.5).clamp_min(0)
        S = lambda t: t + 2 * max(t - 0.5, 0.0) ** 2
    else:
        s = lambda t: torch.where(t < 0.5, 1.0, 3.0).to(F64)
        S = lambda t: t + 2 * max(t - 0.5, 0.0)
    func = Linear(s)
    got = _grads(func, Z0, T_OBS, W, rtol=1e-10, atol=1e-10, options={knots: [0.5, 1.0]}, gradient=gradient)
    exact = _closed(func, Z0, T_OBS, W, S)
    for name, a, b in zip(("ys", "z0", "A"), got, exact):
        assert _rel(a, b) < 1e-7, name


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_min_step_gradients(gradient):
    """Every step clamped to min_step = 0.1 and accepted (rtol 1e-13 would refuse them):
    the checkpoint is backprop's gradient of that solve; the adjoint solve (also clamped)
    agrees with the closed form to dopri5's error at h = 0.1."""
    func = Linear()
    kw = dict(rtol=1e-13, atol=1e-13, options={"min_step": 0.1})
    got = _grads(func, Z0, T_OBS, W, gradient=gradient, **kw)
    if gradient == "checkpoint":
        ref = _grads(func, Z0, T_OBS, W, **kw)
        for name, a, b in zip(("ys", "z0", "A"), got, ref):
            assert _rel(a, b) < 1e-12, name
    exact = _closed(func, Z0, T_OBS, W, lambda ti: ti)
    for name, a, b in zip(("ys", "z0", "A"), got, exact):
        assert _rel(a, b) < 1e-6, name


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_max_num_steps_per_interval_in_gradient_modes(gradient):
    """A budget below the total but enough per output interval: the forward and the
    backward solve (which also stops at every observation) both pass."""
    func = Linear()
    t = torch.linspace(0.0, 4.0, 21, dtype=F64)
    w = torch.randn(21, 2, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    stats = neuralode.SolverStats()
    got = _grads(func, Z0, t, w, rtol=1e-9, atol=1e-9, options={"max_num_steps": 8}, gradient=gradient, stats=stats)
    assert stats.steps_accepted > 8 and (gradient == "checkpoint" or stats.steps_accepted_backward > 8)
    exact = _closed(func, Z0, t, w, lambda ti: ti)
    for name, a, b in zip(("ys", "z0", "A"), got, exact):
        assert _rel(a, b) < 1e-6, name


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_dtype_option_in_gradient_modes(gradient):
    func = Linear()
    a = _grads(func, Z0, T_OBS, W, gradient=gradient)
    b = _grads(func, Z0, T_OBS, W, gradient=gradient, options={"dtype": torch.float32})
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_fixed_options_gradcheck_backprop():
    """gradcheck through a constructed grid (affine in t[0], t[-1]), cubic output and
    perturbed stages: y0, A and t."""
    func = Linear()

    def grid(f, y0, t):
        return t[0] + (t[-1] - t[0]) * torch.tensor([0.0, 0.15, 0.4, 0.6, 0.8, 1.0], dtype=t.dtype)

    def fn(z0, A, t):
        f = lambda tt, z: (1 + 0.5 * torch.sin(3 * tt)) * (z @ A.T)
        return neuralode.odeint(f, z0, t, method="heun3",
                                options={"grid_constructor": grid, "interp": "cubic", "perturb": True})

    z0 = Z0.clone().requires_grad_(True)
    A = func.A.detach().clone().requires_grad_(True)
    t = torch.tensor([0.0, 0.33, 0.9, 1.3], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (z0, A, t), eps=1e-6, atol=1e-6, rtol=1e-5)
