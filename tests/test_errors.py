"""Bad input gets a clear error that names the argument and what to change."""

import numpy as np
import pytest
import torch
from torch import nn

import neuralode


def f(t, z):
    return -z


def y0():
    return torch.randn(3, 2)


T = torch.tensor([0.0, 0.5, 1.0])


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_good_call_works(gradient):
    ys = neuralode.odeint(f, y0(), T, method="rk4_classic", gradient=gradient)
    assert ys.shape == (3, 3, 2)


def test_y0_not_tensor():
    with pytest.raises(TypeError, match=r"y0\[0\] must be a torch.Tensor or a tuple of tensors, got float"):
        neuralode.odeint(f, [1.0, 2.0], T)
    with pytest.raises(TypeError, match="y0 must be a torch.Tensor or a tuple of tensors, got ndarray"):
        neuralode.odeint(f, np.ones(3), T)


def test_y0_integer_dtype():
    with pytest.raises(TypeError, match="y0 must be float32, float64, complex64 or complex128, got torch.int64"):
        neuralode.odeint(f, torch.ones(3, 2, dtype=torch.int64), T)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_y0_non_finite(bad):
    z = y0()
    z[1, 0] = bad
    with pytest.raises(ValueError, match="y0 contains NaN or Inf"):
        neuralode.odeint(f, z, T)


def test_t_integer_dtype():
    with pytest.raises(TypeError, match="t must be a floating-point tensor"):
        neuralode.odeint(f, y0(), torch.tensor([0, 1, 2]))


def test_t_less_precise_than_state_is_promoted():
    # torchdiffeq's rule: the times are promoted to the state's precision (float32 times
    # are exact in float64), so the result is the float64-times solve.
    z = y0().double()
    torch.testing.assert_close(neuralode.odeint(f, z, T), neuralode.odeint(f, z, T.double()), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_t_non_finite(bad):
    with pytest.raises(ValueError, match="t contains NaN or Inf"):
        neuralode.odeint(f, y0(), torch.tensor([0.0, bad, 1.0]))


@pytest.mark.parametrize("times", [[0.0, 1.0, 0.5], [0.0, 0.0, 1.0], [1.0, 0.5, 0.7]])
def test_t_not_monotonic(times):
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        neuralode.odeint(f, y0(), torch.tensor(times))


def test_per_sample_t_not_monotonic_for_one_sample():
    t = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, -0.5], [1.0, 1.0, 1.0]]).unsqueeze(-1)
    with pytest.raises(ValueError, match="for every sample"):
        neuralode.odeint(f, y0(), t)


@pytest.mark.parametrize("shape", [(3, 4, 1), (3, 3), (3, 3, 2), (2, 3, 1, 1)])
def test_t_bad_shape(shape):
    with pytest.raises(ValueError, match=r"t must have shape \(T,\) or \(T, 3, 1\)"):
        neuralode.odeint(f, y0(), torch.rand(shape).cumsum(0))


def test_t_on_other_device():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    with pytest.warns(UserWarning, match="t is not on the same device as y0. Coercing to y0.device."):
        ys = neuralode.odeint(f, y0().cuda(), T)
    assert ys.device.type == "cuda"


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'rk45'; choose one of euler, midpoint, rk4, rk4_classic, heun2, heun3, bosh3, dopri5, tsit5, dopri8, adaptive_heun, fehlberg2, explicit_adams, implicit_adams, fixed_adams, scipy_solver"):
        neuralode.odeint(f, y0(), T, method="rk45")


def test_unknown_option_warns_and_is_ignored():
    """torchdiffeq's rule: a warning naming the solver class, then the option is ignored."""
    y = y0()
    with pytest.warns(UserWarning, match="RK4Classic: Unexpected arguments \\{'stepsize': 0.1\\}"):
        ys = neuralode.odeint(f, y, T, method="rk4_classic", options={"stepsize": 0.1})
    assert torch.equal(ys, neuralode.odeint(f, y, T, method="rk4_classic"))


@pytest.mark.parametrize("options", [{"step_size": 0.0}, {"max_step": -1.0}, {"step_size": float("nan")}])
def test_non_positive_step(options):
    with pytest.raises(ValueError, match="must be a positive"):
        neuralode.odeint(f, y0(), T, method="euler", options=options)


def test_both_step_rules():
    with pytest.raises(ValueError, match="either 'step_size' or 'max_step'"):
        neuralode.odeint(f, y0(), T, method="rk4_classic", options={"step_size": 0.1, "max_step": 0.1})


def test_too_many_steps():
    with pytest.raises(ValueError, match="max_num_steps"):
        neuralode.odeint(f, y0(), T, method="euler", options={"max_step": 1e-3, "max_num_steps": 100})
    with pytest.raises(ValueError, match="max_num_steps"):
        neuralode.odeint(f, y0(), T, method="euler", options={"step_size": 1e-3, "max_num_steps": 100})


def test_step_size_with_per_sample_times():
    t = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.6, 0.7]]).unsqueeze(-1)
    with pytest.raises(ValueError, match="'step_size' needs 1-D times"):
        neuralode.odeint(f, y0(), t, method="rk4_classic", options={"step_size": 0.1})


def test_unknown_gradient_mode():
    with pytest.raises(ValueError, match="gradient must be one of 'backprop', 'adjoint'"):
        neuralode.odeint(f, y0(), T, gradient="adjont")


def test_negative_tolerance():
    with pytest.raises(ValueError, match="rtol must be a finite non-negative number"):
        neuralode.odeint(f, y0(), T, rtol=-1.0)


def test_func_not_callable():
    with pytest.raises(TypeError, match="func must be callable"):
        neuralode.odeint(42, y0(), T)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_func_wrong_shape(gradient):
    with pytest.raises(ValueError, match=r"func returned a tensor of shape \[3, 1\] but the state has shape \[3, 2\]"):
        neuralode.odeint(lambda t, z: z[:, :1], y0(), T, gradient=gradient)


def test_func_wrong_dtype():
    with pytest.raises(ValueError, match="func returned Double but the state is Float"):
        neuralode.odeint(lambda t, z: z.double(), y0(), T)


def test_func_returns_non_tensor():
    with pytest.raises(TypeError, match="func must return a torch.Tensor, got list"):
        neuralode.odeint(lambda t, z: [1.0], y0(), T)


def test_func_raising_propagates():
    def boom(t, z):
        raise KeyError("inside f")

    with pytest.raises(KeyError, match="inside f"):
        neuralode.odeint(boom, y0(), T)


def test_wrong_shape_in_adjoint_backward_is_reported():
    """f that changes behaviour in the backward pass (VJP) still gets a clear error."""

    class Flaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))
            self.calls = 0

        def forward(self, t, z):
            self.calls += 1  # rk4_classic, one step: the forward pass makes 4 calls
            return z * self.w if self.calls <= 4 else (z * self.w)[:, :1]

    z = y0().requires_grad_(True)
    ys = neuralode.odeint_adjoint(Flaky(), z, torch.tensor([0.0, 1.0]), method="rk4_classic")
    with pytest.raises(ValueError, match="func returned a tensor of shape"):
        ys.sum().backward()


def test_adjoint_method_outside_the_engine():
    """The adjoint runs on the Runge-Kutta engine: an Adams or scipy adjoint_method is refused
    with the list of what it can be."""
    with pytest.raises(ValueError, match="adjoint_method: the adjoint runs on the Runge-Kutta engine, not 'explicit_adams'"):
        neuralode.odeint_adjoint(f, y0(), T, method="rk4", adjoint_method="explicit_adams")
