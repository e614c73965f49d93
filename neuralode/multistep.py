"""Adams linear multistep solvers on a fixed grid, in plain PyTorch.

These methods keep a history of past derivatives, so they do not fit the fused
Runge-Kutta engine; they are written here with ordinary tensor operations and
are differentiable by autograd (w.r.t. ``y0``, the parameters of ``func`` and
the times ``t``). The semantics are torchdiffeq 0.2.5's ``explicit_adams``,
``implicit_adams`` and ``fixed_adams`` (the last is another name for the
second).

Maths. On a grid ``s_0, s_1, ...`` with step ``h = s_{n+1} - s_n`` and
``f_n = f(s_n, y_n)``, the q-step Adams-Bashforth formula (explicit, order q) is

    y_{n+1} = y_n + h * sum_{j=0}^{q-1} beta_{q,j} f_{n-j},

    beta_{q,j} = (-1)^j / (j! (q-1-j)!) * int_0^1 prod_{i=0..q-1, i != j} (u + i) du,

the integral over ``[s_n, s_{n+1}]`` of the polynomial interpolating the last q
derivatives. The Adams-Moulton formula with p points (implicit, order p) adds
the unknown ``f_{n+1}``:

    y_{n+1} = y_n + h * (alpha_{p,0} f(s_{n+1}, y_{n+1}) + sum_{j=1}^{p-1} alpha_{p,j} f_{n+1-j}),

    alpha_{p,j} = (-1)^j / (j! (p-1-j)!) * int_0^1 prod_{i=0..p-1, i != j} (u - 1 + i) du.

The coefficients are computed here exactly, in rational arithmetic.

Every step evaluates ``f_n`` once and pushes it onto the history, which holds
at most ``max_order - 1`` derivatives (newest first). With q stored derivatives:

* q < 3 (warm-up): one Runge-Kutta step of order 4 (Kutta's 3/8 rule, reusing
  ``f_n`` as its first stage);
* otherwise ``explicit_adams`` takes the q-step Adams-Bashforth step, so its
  order grows to ``max_order - 1``;
* ``implicit_adams`` predicts with that step and corrects with the (q+1)-point
  Adams-Moulton formula (order up to ``max_order``) by fixed-point iteration:
  ``dy <- h alpha_{q+1,0} f(s_{n+1}, y_n + dy) + h sum_{j>=1} alpha_{q+1,j} f_{n+1-j}``
  at most ``max_iters`` times, stopping when successive increments agree,
  ``max_i |dy_i - dy'_i| / (atol_i + rtol_i max(|dy_i|, |dy'_i|)) < 1``. If they
  never agree a warning is issued and the oldest derivative is dropped from the
  history (one order less while it builds up again). The corrected value's
  derivative is evaluated afresh at the start of the next step (PECE).

The coefficients assume equally spaced history; like torchdiffeq the formulas
are applied with the current step on any grid, so on a non-uniform grid (e.g.
``grid = t`` with uneven ``t``, or the shorter last step of a ``step_size``
grid) the steps lose accuracy.

High-order Adams-Bashforth formulas have small stability regions: at the
default ``max_order=12`` ``explicit_adams`` ends up on the 11-step formula,
which is unstable on ``y' = -y`` already for ``h > ~0.005``; a lower
``max_order`` (4-6) suits problems with decaying modes.

Decreasing ``t`` is solved in ``s = -t`` with ``g(s, y) = -f(-s, y)``: the same
arithmetic as torchdiffeq, hence the same values.
"""

from __future__ import annotations

import collections
import math
import numbers
import warnings
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["MULTISTEP_METHODS", "MULTISTEP_OPTIONS", "MAX_ORDER", "solve_multistep",
           "adams_bashforth_coefficients", "adams_moulton_coefficients"]

MULTISTEP_METHODS = ("explicit_adams", "implicit_adams", "fixed_adams")
#: The options :func:`solve_multistep` reads; the caller warns about any other key.
MULTISTEP_OPTIONS = ("step_size", "grid_constructor", "interp", "perturb", "max_order", "max_iters")

#: Largest ``max_order`` (torchdiffeq's limit: its coefficient tables stop there).
MAX_ORDER = 12
#: Smallest ``max_order``: the history must hold at least the current derivative.
_MIN_MAX_ORDER = 2
#: Below this ``max_order`` only warm-up (RK4) steps are ever taken.
_ADAMS_MIN_ORDER = 4
#: Fewer stored derivatives than this: the step is a warm-up RK4 step.
_WARMUP_HISTORY = 3
_DEFAULT_MAX_ITERS = 4
_INTERPOLATIONS = ("linear", "cubic")
_IMPLICIT = {"explicit_adams": False, "implicit_adams": True, "fixed_adams": True}

# Directions of a perturbed evaluation time (see _Dynamics).
_EXACT, _AFTER, _BEFORE = 0, 1, -1


# ---------------------------------------------------------------------------
# Coefficients
# ---------------------------------------------------------------------------

def _poly_mul_linear(poly: list, c: Fraction) -> list:
    """``poly(u) * (u + c)`` for coefficients listed from the constant term up."""
    out = [Fraction(0)] * (len(poly) + 1)
    for k, a in enumerate(poly):
        out[k] += a * c
        out[k + 1] += a
    return out


def _lagrange_integrals(points: int, shift: int) -> tuple:
    """``int_0^1 l_j(u) du`` for the Lagrange basis on the nodes ``u = -shift - i``, i < points.

    With ``u = (s - s_n) / h`` the node ``i`` is the time ``s_n - (shift + i) h``; the
    basis polynomial is ``l_j(u) = prod_{i != j} (u + shift + i) / (i - j)`` and
    ``prod_{i != j} (i - j) = (-1)^j j! (points-1-j)!``. Exact rationals.
    """
    weights = []
    for j in range(points):
        poly = [Fraction(1)]
        for i in range(points):
            if i != j:
                poly = _poly_mul_linear(poly, Fraction(shift + i))
        integral = sum(a / (k + 1) for k, a in enumerate(poly))
        denominator = (-1) ** j * math.factorial(j) * math.factorial(points - 1 - j)
        weights.append(integral / denominator)
    return tuple(weights)


@lru_cache(maxsize=None)
def adams_bashforth_coefficients(steps: int) -> tuple:
    """``beta_{q,j}``, j < q = ``steps``: ``y_{n+1} = y_n + h sum_j beta_j f_{n-j}`` (order q).

    Exact :class:`fractions.Fraction` values; they sum to 1 and integrate every
    polynomial of degree < q exactly.
    """
    if steps < 1:
        raise ValueError(f"an Adams-Bashforth formula needs at least one step, got {steps}")
    return _lagrange_integrals(steps, 0)


@lru_cache(maxsize=None)
def adams_moulton_coefficients(points: int) -> tuple:
    """``alpha_{p,j}``, j < p = ``points``: ``y_{n+1} = y_n + h sum_j alpha_j f_{n+1-j}`` (order p).

    ``alpha_0`` multiplies the unknown ``f(s_{n+1}, y_{n+1})``. Exact fractions.
    """
    if points < 1:
        raise ValueError(f"an Adams-Moulton formula needs at least one point, got {points}")
    return _lagrange_integrals(points, -1)


@lru_cache(maxsize=None)
def _as_floats(weights: tuple) -> tuple:
    # Fraction -> float is correctly rounded, so these are the nearest doubles.
    return tuple(float(w) for w in weights)


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Options:
    step_size: object
    grid_constructor: Optional[Callable]
    interp: str
    perturb: bool
    max_order: int
    max_iters: int


def _is_real_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _parse_step_size(step_size):
    """``step_size`` as given (a number or a one-element tensor), once checked positive and finite."""
    if step_size is None:
        return None
    if isinstance(step_size, Tensor) and step_size.numel() == 1 and not step_size.dtype == torch.bool:
        value = float(step_size)
    elif _is_real_number(step_size):
        value = float(step_size)
    else:
        raise ValueError(f"options['step_size'] must be a positive number, got {step_size!r}; "
                         "pass e.g. step_size=0.1, or leave it out to step on the grid t")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"options['step_size'] must be positive and finite, got {value}; "
                         "pass e.g. step_size=0.1, or leave it out to step on the grid t")
    if isinstance(step_size, Tensor):
        return step_size.reshape(())
    return step_size


def _parse_integer(name: str, value, low: int, high: Optional[int], fix: str, allow_integral_float: bool) -> int:
    if isinstance(value, bool) or not (isinstance(value, numbers.Integral) or (
            allow_integral_float and isinstance(value, numbers.Real) and float(value).is_integer())):
        raise ValueError(f"options['{name}'] must be an integer, got {value!r}; {fix}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"options['{name}'] must be {bound}, got {value}; {fix}")
    return value


def _parse_options(options: Optional[dict]) -> _Options:
    """Check the options this module understands; any other key is ignored."""
    options = {} if options is None else options
    step_size = _parse_step_size(options.get("step_size"))
    grid_constructor = options.get("grid_constructor")
    if grid_constructor is not None and not callable(grid_constructor):
        raise ValueError(f"options['grid_constructor'] must be a callable (func, y0, t) -> grid, "
                         f"got {type(grid_constructor).__name__}")
    if step_size is not None and grid_constructor is not None:
        raise ValueError("options 'step_size' and 'grid_constructor' are mutually exclusive: pass only one")
    interp = options.get("interp", "linear")
    if interp not in _INTERPOLATIONS:
        raise ValueError(f"options['interp'] must be 'linear' or 'cubic', got {interp!r}")
    perturb = options.get("perturb", False)
    if not isinstance(perturb, bool):
        raise ValueError(f"options['perturb'] must be True or False, got {perturb!r}")
    # torchdiffeq accepts a float max_order (it calls int()); an integral float is fine here too.
    max_order = _parse_integer("max_order", options.get("max_order", MAX_ORDER), _MIN_MAX_ORDER, MAX_ORDER,
                               f"the Adams solvers support orders {_MIN_MAX_ORDER}..{MAX_ORDER}",
                               allow_integral_float=True)
    max_iters = _parse_integer("max_iters", options.get("max_iters", _DEFAULT_MAX_ITERS), 1, None,
                               "the corrector needs at least one iteration (default 4)",
                               allow_integral_float=False)
    if max_order < _ADAMS_MIN_ORDER:
        warnings.warn(f"max_order={max_order} is below {_ADAMS_MIN_ORDER}: every step is an RK4 step "
                      "(the solver reduces to rk4)", UserWarning, stacklevel=3)
    return _Options(step_size, grid_constructor, interp, perturb, max_order, max_iters)


def _check_times(t) -> None:
    if not isinstance(t, Tensor) or t.dim() != 1 or not t.is_floating_point():
        raise ValueError("t must be a 1-D floating-point tensor of times")
    if t.numel() == 0:
        raise ValueError("t must hold at least one time")
    if t.numel() > 1:
        steps = (t[1:] - t[:-1]).detach()
        if not (bool((steps > 0).all()) or bool((steps < 0).all())):
            raise ValueError("t must be strictly increasing or strictly decreasing")


def _tolerance(tol, y0: Tensor) -> Tensor:
    """rtol/atol as a tensor in y0's dtype that broadcasts against y0 (flat per-element
    tolerances are laid out like y0)."""
    tol = torch.as_tensor(tol, dtype=y0.dtype, device=y0.device).detach()
    if tol.dim() == 1 and tol.numel() == y0.numel() and tol.shape != y0.shape:
        tol = tol.reshape(y0.shape)
    return tol


# ---------------------------------------------------------------------------
# The dynamics as the solver sees them
# ---------------------------------------------------------------------------

class _Dynamics:
    """``func`` in the integration variable ``s``, with evaluation count.

    ``s = t`` for increasing t; ``s = -t`` and ``g(s, y) = -f(-s, y)`` for
    decreasing t, so that the solver always marches forwards. Times reach
    ``func`` as 0-d tensors in y's dtype. A perturbed evaluation (``perturb``
    option) moves the time, after that cast, to the adjacent float towards the
    inside of the step: ``_AFTER`` for a step's start, ``_BEFORE`` for its end,
    so a ``func`` with a jump at a grid point sees the one-sided value of the
    step it is in. The nudge carries the gradient of the unperturbed time.
    """

    def __init__(self, func: Callable, dtype: torch.dtype, reverse: bool):
        self.func = func
        self.dtype = dtype
        self.reverse = reverse
        self.nfe = 0

    def __call__(self, s: Tensor, y: Tensor, nudge: int = _EXACT) -> Tensor:
        s = s.to(self.dtype)
        if nudge != _EXACT:
            # Towards +-inf rather than s +- 1, which would not move s once |s| > 1/eps.
            target = torch.full_like(s, math.inf if nudge == _AFTER else -math.inf)
            s = s + (torch.nextafter(s.detach(), target) - s.detach())
        self.nfe += 1
        if self.reverse:
            return -self.func(-s, y)
        return self.func(s, y)

    def counted(self, t: Tensor, y: Tensor) -> Tensor:
        """``func`` itself (original time), counted: what a grid constructor receives."""
        self.nfe += 1
        return self.func(t, y)


# ---------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------

def _uniform_grid(s: Tensor, step_size) -> Tensor:
    """``s_0 + k * step_size``, k = 0, 1, ..., with the last point replaced by ``s[-1]``.

    ``k`` runs to ``ceil((s[-1] - s[0]) / step_size)``, so the last step is at most
    ``step_size`` long (and may be much shorter). Differentiable w.r.t. ``s[0]``
    (every point but the last) and ``s[-1]`` (the last).
    """
    count = int(torch.ceil((s[-1] - s[0]) / step_size + 1).item())
    head = torch.arange(0, count, dtype=s.dtype, device=s.device)[:-1] * step_size + s[0]
    return torch.cat([head, s[-1:]])


def _checked_grid(grid, t: Tensor) -> Tensor:
    """A user grid for ``t``: 1-D, floating, from t[0] to t[-1], strictly monotonic like t."""
    fix = "options['grid_constructor'] must return a 1-D floating-point tensor from t[0] to t[-1], " \
          "strictly monotonic in the direction of t"
    if not isinstance(grid, Tensor):
        raise ValueError(f"{fix}; it returned a {type(grid).__name__}")
    if grid.dim() != 1 or not grid.is_floating_point():
        raise ValueError(f"{fix}; it returned a tensor of shape {tuple(grid.shape)} and dtype {grid.dtype}")
    if grid.numel() < 2:
        raise ValueError(f"{fix}; it returned {grid.numel()} point(s)")
    values = grid.detach().tolist()
    if values[0] != float(t[0]) or values[-1] != float(t[-1]):
        raise ValueError(f"{fix}; it runs from {values[0]} to {values[-1]}, t from {float(t[0])} to {float(t[-1])}")
    sign = 1.0 if float(t[-1]) > float(t[0]) else -1.0
    if not all(sign * (b - a) > 0 for a, b in zip(values, values[1:])):
        raise ValueError(f"{fix}; it is not strictly monotonic")
    return grid


def _make_grid(opts: _Options, dyn: _Dynamics, y0: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """The step grid in the integration variable s."""
    if opts.step_size is not None:
        return _uniform_grid(s, opts.step_size)
    if opts.grid_constructor is not None:
        # The constructor sees the caller's own func, y0 and t (in t's direction).
        grid = _checked_grid(opts.grid_constructor(dyn.counted, y0, t), t)
        return -grid if dyn.reverse else grid
    return s


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------

def _combine(h: Tensor, weights: Sequence[float], derivatives, dtype: torch.dtype) -> Tensor:
    """``sum_j (h * w_j) f_j``, each ``h * w_j`` formed in float64 and then rounded to y's dtype."""
    h64 = h.to(torch.float64)
    total = None
    for w, f in zip(weights, derivatives):
        term = (h64 * w).to(dtype) * f
        total = term if total is None else total + term
    return total


def _rk4_step(dyn: _Dynamics, s0: Tensor, h: Tensor, s1: Tensor, y: Tensor, f0: Tensor, perturb: bool) -> Tensor:
    """Kutta's 3/8 rule, ``dy = h (k1 + 3 k2 + 3 k3 + k4) / 8``, with k1 = f0 given:

    k2 = f(s0 + h/3, y + h k1/3), k3 = f(s0 + 2h/3, y + h (k2 - k1/3)),
    k4 = f(s1, y + h (k1 - k2 + k3)) (at s1's inner neighbour when perturbed).

    Written out rather than taken from the engine's ``rk4`` tableau: this is the Adams
    methods' own step, in torchdiffeq's grouping of the terms, so that their solves round
    as torchdiffeq's do (the port's tests compare them to 1e-12).
    """
    hy = h.to(y.dtype)
    k1 = f0
    k2 = dyn(s0 + h * (1 / 3), y + hy * k1 * (1 / 3))
    k3 = dyn(s0 + h * (2 / 3), y + hy * (k2 - k1 * (1 / 3)))
    k4 = dyn(s1, y + hy * (k1 - k2 + k3), _BEFORE if perturb else _EXACT)
    return (k1 + 3 * (k2 + k3) + k4) * hy * 0.125


def _corrector_converged(previous: Tensor, new: Tensor, rtol: Tensor, atol: Tensor) -> bool:
    """``max_i |dy_i - dy'_i| / (atol_i + rtol_i max(|dy_i|, |dy'_i|)) < 1`` (NaN: not converged)."""
    with torch.no_grad():
        if new.numel() == 0:
            return True
        scale = atol + rtol * torch.maximum(previous.abs(), new.abs())
        return bool(((previous - new).abs() / scale).max() < 1)


class _AdamsStepper:
    """One step of the Adams solver at a time; keeps the derivative history (newest first)."""

    def __init__(self, dyn: _Dynamics, opts: _Options, implicit: bool, rtol: Tensor, atol: Tensor):
        self.dyn = dyn
        self.perturb = opts.perturb
        self.max_iters = opts.max_iters
        self.implicit = implicit
        self.rtol = rtol
        self.atol = atol
        self.history = collections.deque(maxlen=opts.max_order - 1)

    def step(self, s0: Tensor, s1: Tensor, y: Tensor):
        """``(dy, f0)`` for the step from ``s0`` to ``s1``: ``y(s1) = y + dy``, ``f0 = f(s0, y)``."""
        h = s1 - s0
        f0 = self.dyn(s0, y, _AFTER if self.perturb else _EXACT)
        self.history.appendleft(f0)
        q = len(self.history)
        if q < _WARMUP_HISTORY:
            return _rk4_step(self.dyn, s0, h, s1, y, f0, self.perturb), f0
        dy = _combine(h, _as_floats(adams_bashforth_coefficients(q)), self.history, y.dtype)
        if self.implicit:
            dy = self._correct(s1, h, y, dy, q)
        return dy, f0

    def _correct(self, s1: Tensor, h: Tensor, y: Tensor, dy: Tensor, q: int) -> Tensor:
        """Fixed-point iteration on the (q+1)-point Adams-Moulton formula from the predictor ``dy``."""
        alpha = _as_floats(adams_moulton_coefficients(q + 1))
        known = _combine(h, alpha[1:], self.history, y.dtype)
        h_alpha0 = (h.to(torch.float64) * alpha[0]).to(y.dtype)
        for _ in range(self.max_iters):
            f1 = self.dyn(s1, y + dy, _BEFORE if self.perturb else _EXACT)
            corrected = h_alpha0 * f1 + known
            converged = _corrector_converged(dy, corrected, self.rtol, self.atol)
            dy = corrected
            if converged:
                return dy
        warnings.warn("implicit_adams: the corrector's functional iteration did not converge in "
                      f"max_iters={self.max_iters} iterations; the solution may be inaccurate "
                      "(raise max_iters, loosen rtol/atol or take smaller steps)", UserWarning, stacklevel=4)
        # One order less for the next step: it is rebuilt as the history refills.
        self.history.pop()
        return dy


# ---------------------------------------------------------------------------
# Outputs between grid points
# ---------------------------------------------------------------------------

def _linear_output(s: Tensor, s0: Tensor, s1: Tensor, y0: Tensor, y1: Tensor, at_end: bool, exact_end: bool) -> Tensor:
    """``y0 + theta (y1 - y0)``, ``theta = (s - s0) / (s1 - s0)``.

    An output on the step's end (``at_end``: ``s == s1``) is ``y1`` itself. If that
    end is an inner grid point that is not the output time itself (``exact_end``
    false), the output's time derivative is still the interpolant's,
    ``(y1 - y0) / (s1 - s0)`` (the left slope), rather than 0.
    """
    theta = (s - s0) / (s1 - s0)
    if at_end:
        if exact_end:
            return y1
        # (theta - theta) is exactly 0: the value is y1 bit for bit, the gradient the interpolant's.
        return y1 + (theta - theta.detach()).to(y1.dtype) * (y1 - y0)
    return y0 + theta.to(y0.dtype) * (y1 - y0)


def _hermite_output(s: Tensor, s0: Tensor, s1: Tensor, y0: Tensor, f0: Tensor, y1: Tensor, f1: Tensor) -> Tensor:
    """The cubic Hermite interpolant of ``(y0, f0)`` at s0 and ``(y1, f1)`` at s1:

    ``p = h00 y0 + h10 H f0 + h01 y1 + h11 H f1`` with ``H = s1 - s0``, ``theta = (s - s0) / H``,
    ``h00 = (1 + 2 theta)(1 - theta)^2``, ``h10 = theta (1 - theta)^2``,
    ``h01 = theta^2 (3 - 2 theta)``, ``h11 = theta^2 (theta - 1)``.
    """
    span = s1 - s0
    theta = (s - s0) / span
    rest = 1 - theta
    dtype = y0.dtype
    h00 = ((1 + 2 * theta) * rest * rest).to(dtype)
    h10 = (theta * rest * rest * span).to(dtype)
    h01 = (theta * theta * (3 - 2 * theta)).to(dtype)
    h11 = (theta * theta * (theta - 1) * span).to(dtype)
    return h00 * y0 + h10 * f0 + h01 * y1 + h11 * f1


# ---------------------------------------------------------------------------
# The solve
# ---------------------------------------------------------------------------

def _march(stepper: _AdamsStepper, dyn: _Dynamics, grid: Tensor, s: Tensor, y0: Tensor,
           interp: str, grid_is_t: bool) -> Tensor:
    """Step over the grid; every output time ``s[j]`` is taken from the step that ends at or after it."""
    grid_values = grid.detach().tolist()
    s_values = s.detach().tolist()
    outputs = [y0]
    j = 1
    y = y0
    last = len(grid_values) - 1
    for k in range(last):
        s0, s1 = grid[k], grid[k + 1]
        dy, f0 = stepper.step(s0, s1, y)
        y1 = y + dy
        f1 = None
        while j < len(s_values) and grid_values[k + 1] >= s_values[j]:
            if interp == "linear":
                at_end = s_values[j] == grid_values[k + 1]
                exact_end = grid_is_t or k + 1 == last
                outputs.append(_linear_output(s[j], s0, s1, y, y1, at_end, exact_end))
            else:
                if f1 is None:
                    # Once per step, however many outputs the step holds.
                    f1 = dyn(s1, y1)
                outputs.append(_hermite_output(s[j], s0, s1, y, f0, y1, f1))
            j += 1
        y = y1
    return torch.stack(outputs)


def solve_multistep(method: str, func: Callable, y0: Tensor, t: Tensor, *, rtol, atol,
                    options: Optional[dict]) -> tuple:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0`` with an Adams method on a fixed grid.

    Args:
        method: ``"explicit_adams"`` (Adams-Bashforth, order up to ``max_order - 1``),
            ``"implicit_adams"`` or ``"fixed_adams"`` (Adams-Bashforth-Moulton
            predictor-corrector, order up to ``max_order``); see the module docstring
            for the formulas, the RK4 warm-up and the corrector's convergence test.
        func: ``func(t, y)`` with ``t`` a 0-d tensor in y0's dtype and ``y`` of y0's shape.
        y0: the initial state, a real float32/float64 tensor of any shape.
        t: 1-D, strictly increasing or decreasing output times (any floating dtype;
            the grid is kept in t's dtype). ``t`` may require grad.
        rtol, atol: the corrector's tolerances (numbers or tensors broadcastable to
            y0, or flat with y0's number of elements); unused by ``explicit_adams``.
        options: ``step_size`` (a uniform grid ``t[0] + k step_size`` ending at t[-1]),
            ``grid_constructor`` (``(func, y0, t) -> grid`` from t[0] to t[-1]; exclusive
            with step_size), neither (the grid is t); ``interp`` (``"linear"``, default, or
            ``"cubic"``: Hermite with f at both ends of the step, for outputs between grid
            points); ``perturb`` (default False; True evaluates f(t_n, y_n) at the float next
            to t_n towards t_{n+1}, and the last RK4 stage and the corrector at the float
            next to t_{n+1} towards t_n, in y0's dtype, so that an f with jumps at grid
            points sees the values of the step's own side); ``max_order`` (2..12, default
            12; below 4 every step is an RK4 step, with a warning); ``max_iters``
            (corrector iterations, >= 1, default 4; read but unused by explicit_adams, as in
            torchdiffeq). Other keys are ignored.

    Returns:
        ``(ys, nfe)``: ``ys`` of shape ``(len(t), *y0.shape)`` with ``ys[0] = y0``,
        differentiable by autograd w.r.t. y0, t and func's parameters; ``nfe`` the
        number of func evaluations (including any made by ``grid_constructor``).

    Raises:
        ValueError: an unknown method, bad times, or an option value out of range
        (the message names the option).
    """
    if method not in _IMPLICIT:
        raise ValueError(f"method must be one of {MULTISTEP_METHODS}, got {method!r}")
    opts = _parse_options(options)
    _check_times(t)
    if not (isinstance(y0, Tensor) and y0.is_floating_point()):
        raise ValueError("y0 must be a real floating-point tensor")
    reverse = t.numel() > 1 and bool(t[0] > t[-1])
    dyn = _Dynamics(func, y0.dtype, reverse)
    if t.numel() == 1:
        return torch.stack([y0]), 0
    s = -t if reverse else t
    grid = _make_grid(opts, dyn, y0, t, s)
    stepper = _AdamsStepper(dyn, opts, _IMPLICIT[method], _tolerance(rtol, y0), _tolerance(atol, y0))
    grid_is_t = opts.step_size is None and opts.grid_constructor is None
    ys = _march(stepper, dyn, grid, s, y0, opts.interp, grid_is_t)
    return ys, dyn.nfe
