"""Property-based tests (hypothesis): random shapes (0-d, N-D, batch 1, empty), dtypes,
methods, gradient modes, time layouts and lengths (1 included), tolerances and options.
Every example either matches the closed form of dz/dt = -k z, outputs and gradients, or
raises one of the documented errors; never a crash, a hang or a non-finite gradient from
finite inputs.

The example count and seed are printed in pytest's header (tests/conftest.py); set
NEURALODE_HYPOTHESIS_SEED / NEURALODE_HYPOTHESIS_EXAMPLES to change them.
"""

import os

import hypothesis
import torch
from hypothesis import strategies as st

import neuralode

SEED = int(os.environ.get("NEURALODE_HYPOTHESIS_SEED", "20261130"))
EXAMPLES = int(os.environ.get("NEURALODE_HYPOTHESIS_EXAMPLES", "3000"))
FIXED_ORDER = {"euler": 1, "midpoint": 2, "rk4": 4, "rk4_classic": 4, "heun2": 2, "heun3": 3}
#: Second-order adaptive methods take ~tol^(-1/3) steps: their tolerances stay moderate.
LOW_ORDER = ("adaptive_heun", "fehlberg2")

#: What a user may meet for these (valid and invalid) draws: the message fragments.
DOCUMENTED = (
    "'step_size' needs 1-D times",
)


@st.composite
def problems(draw):
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    method = draw(st.sampled_from(list(neuralode.METHODS)))
    gradient = draw(st.sampled_from(list(neuralode.GRADIENT_MODES)))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 3), min_size=ndim, max_size=ndim)))
    T = draw(st.integers(1, 4))
    per_sample = ndim >= 1 and draw(st.booleans())
    gaps = draw(st.lists(st.floats(0.05, 0.6), min_size=T - 1, max_size=T - 1))
    sign = draw(st.sampled_from([1.0, -1.0]))
    start = draw(st.floats(-1.0, 1.0))
    options = {}
    if method in FIXED_ORDER:
        key = draw(st.sampled_from(["max_step", "step_size"]))
        options[key] = draw(st.sampled_from([0.01, 0.02, 0.05])) if method != "euler" else 0.005
        # torchdiffeq's perturb (stages one unit in the last place inside each step) and
        # interp (between grid points; cubic errs less than linear): the same tolerance.
        if draw(st.booleans()):
            options["perturb"] = True
        if draw(st.booleans()):
            options["interp"] = "cubic"
        tol = None
    else:
        if dtype == torch.float32:
            tol = draw(st.sampled_from([1e-4, 1e-5]))
        else:
            tol = draw(st.sampled_from([1e-4, 1e-6] if method in LOW_ORDER else [1e-5, 1e-7, 1e-9]))
        if draw(st.booleans()):
            options["controller"] = "PI"
        if draw(st.booleans()):
            options["max_step"] = draw(st.sampled_from([0.1, 0.5]))
        if method == "dopri8" and not per_sample:
            options["step_t"] = "observations"  # its dense output is 4th order
    t_grad = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return dict(dtype=dtype, method=method, gradient=gradient, shape=shape, T=T, per_sample=per_sample,
                gaps=gaps, sign=sign, start=start, options=options, tol=tol, t_grad=t_grad, seed=seed)


def _times(p):
    offsets = [0.0]
    for g in p["gaps"]:
        offsets.append(offsets[-1] + g)
    t = p["start"] + p["sign"] * torch.tensor(offsets, dtype=torch.float64)
    if p["per_sample"]:
        batch = p["shape"][0]
        shift = torch.linspace(0.0, 0.3, batch, dtype=torch.float64) if batch else torch.zeros(0, dtype=torch.float64)
        scale = torch.linspace(1.0, 0.6, batch, dtype=torch.float64) if batch else torch.zeros(0, dtype=torch.float64)
        t = (p["start"] + shift[None, :] + p["sign"] * scale[None, :] * torch.tensor(offsets, dtype=torch.float64)[:, None]).unsqueeze(-1)
    return t.to(p["dtype"])


@hypothesis.seed(SEED)
@hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(problems())
def test_solve_and_gradient_match_the_closed_form_or_raise_a_documented_error(p):
    dtype = p["dtype"]
    g = torch.Generator().manual_seed(p["seed"])
    y0 = torch.randn(p["shape"], generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    k = torch.tensor(0.8, dtype=dtype, requires_grad=True)
    t = _times(p).requires_grad_(p["t_grad"])
    options = dict(p["options"])
    if options.get("step_t") == "observations":
        options["step_t"] = t.detach().flatten().tolist()
    kwargs = {"options": options, "gradient": p["gradient"], "method": p["method"]}
    if p["tol"] is not None:
        kwargs.update(rtol=p["tol"], atol=p["tol"])
    if p["gradient"] != "backprop":
        kwargs["adjoint_params"] = (k,)
    try:
        ys = neuralode.odeint(lambda tt, z: -k * z, y0, t, **kwargs)
    except ValueError as e:
        assert any(m in str(e) for m in DOCUMENTED), f"undocumented error: {e}"
        return
    assert ys.shape == (t.shape[0],) + tuple(p["shape"])
    w = torch.randn(ys.shape, generator=g, dtype=torch.float64).to(dtype)
    inputs = [y0, k] + ([t] if p["t_grad"] else [])
    grads = torch.autograd.grad((ys * w).sum(), inputs, allow_unused=True)

    # The closed form in float64: z(t_i) = y0 exp(-k (t_i - t_0)), per sample when t is.
    y0d, kd = y0.detach().double().requires_grad_(True), k.detach().double().requires_grad_(True)
    td = t.detach().double().requires_grad_(p["t_grad"])
    elapsed = td - td[0]
    if p["per_sample"]:
        elapsed = elapsed.reshape(elapsed.shape[:2] + (1,) * (y0.dim() - 1))
    else:
        elapsed = elapsed.reshape((-1,) + (1,) * y0.dim())
    exact = y0d * torch.exp(-kd * elapsed)
    exact_grads = torch.autograd.grad((exact * w.double()).sum(), [y0d, kd] + ([td] if p["t_grad"] else []),
                                      allow_unused=True)

    if p["tol"] is None:
        h = p["options"].get("max_step", p["options"].get("step_size"))
        tol = 5 * (0.8 * h) ** FIXED_ORDER[p["method"]] * 2
        if "step_size" in p["options"]:
            tol += h  # outputs between grid points are interpolated linearly (and their dL/dt)
    else:
        tol = (5000 if p["method"] == "fehlberg2" else 300) * p["tol"]  # see test_oracles.WEAK_ESTIMATE
    if dtype == torch.float32:
        tol += 3e-4
    scale = 1.0 + exact.detach().abs().max().item() if exact.numel() else 1.0
    assert (ys.detach().double() - exact.detach()).abs().max().item() <= tol * scale if ys.numel() else True
    for name, a, b in zip(("y0", "k", "t"), grads, exact_grads):
        if b is None:
            continue
        a = torch.zeros_like(b) if a is None else a.double()
        assert torch.isfinite(a).all(), name
        bscale = 1.0 + b.abs().max().item() if b.numel() else 1.0
        assert (a - b).abs().max().item() <= tol * bscale if b.numel() else True, name
