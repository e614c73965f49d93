"""The paper-tutorial Neural ODE algorithm in plain PyTorch: the oracle.

This module keeps the algorithm of the tutorial re-implementation of Chen et
al., "Neural Ordinary Differential Equations" (NeurIPS 2018) as it was written:
a fixed-step Euler solver and the augmented adjoint as a
``torch.autograd.Function``. The fused path (``neuralode.odeint``) must match
it; tests compare outputs and gradients on the same problems.

Maths. For ``dz/dt = f(z, t; theta)`` and a loss ``L(z(t_0), ..., z(t_N))`` the
adjoint ``a(t) = dL/dz(t)`` obeys ``da/dt = -a . df/dz``; together with
``dL/dtheta`` and ``dL/dt`` it is the augmented system

    d/dt [z, a, a_theta, a_t] = [f, -a . df/dz, -a . df/dtheta, -a . df/dt]

solved backwards from ``t_N`` to ``t_0``, with ``a += dL/dz(t_i)`` at every
observation time (Algorithm 1 of the paper).

It is faithful to the tutorial except for three slips of its usual completion,
fixed here:

1. Time gradients. The completion returns the running time adjoint for every
   observation time and uses a stale ``f`` at ``t_0``. Here, as in Algorithm 1
   and torchdiffeq, ``dL/dt_i = dL/dz(t_i) . f(z(t_i), t_i)`` for every i >= 1;
   ``dL/dt_0`` is the running time adjoint, which starts at 0 at ``t_N``, drops
   by that direct term at every observation time i >= 1 and is integrated with
   ``d a_t/dt = -a . df/dt``. With per-sample times each sample has its own.
2. Per-sample times and the batch. ``forward_with_grad`` spreads the batch-summed
   ``a . df/dt`` over the batch (divides by the batch size) only when the time
   is shared by the batch; with per-sample times ``(batch, 1)`` each sample's
   product is its own.
3. Per-sample steps and the parameter adjoint. With per-sample times each
   sample has its own Euler step h. The completion sums the parameter product
   over the batch, spreads it evenly and scales it by each sample's h, i.e. it
   uses the mean step. Here each Euler step of the augmented system takes one
   vector-Jacobian product with the cotangent ``h * a`` (per sample), which
   gives ``h * a . df/dz``, ``h * a . df/dt`` and the exact
   ``sum_b h_b a_b . df_b/dtheta`` without per-sample parameter copies.

Times are either 1-D ``(T,)`` (shared by the batch, ``t[i]`` passed to f as a
0-d tensor) or per-sample ``(T, batch, 1)`` (``t[i]`` of shape ``(batch, 1)``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .odef import ODEF

__all__ = ["H_MAX", "ode_solve", "ODEF", "ODEAdjoint", "NeuralODE"]

#: The tutorial's largest Euler step.
H_MAX = 0.05


def n_euler_steps(t0: Tensor, t1: Tensor, h_max: float = H_MAX) -> int:
    """``n = ceil(max |t1 - t0| / h_max)``: steps of the interval (max over samples)."""
    return math.ceil((abs(t1 - t0) / h_max).max().item())


def ode_solve(z0: Tensor, t0: Tensor, t1: Tensor, f, h_max: float = H_MAX) -> Tensor:
    """Euler from ``t0`` to ``t1``: ``z <- z + h f(z, t)``, ``t <- t + h``, n times.

    ``n = ceil(max |t1 - t0| / h_max)`` and ``h = (t1 - t0) / n``; with per-sample
    times every sample takes the same n steps of its own size h.
    """
    n_steps = n_euler_steps(t0, t1, h_max)
    h = (t1 - t0) / n_steps if n_steps > 0 else t1 - t0
    t = t0
    z = z0
    for _ in range(n_steps):
        z = z + h * f(z, t)
        t = t + h
    return z


class ODEAdjoint(torch.autograd.Function):
    """``z(t_i)`` for every observation time, differentiated with the augmented adjoint."""

    @staticmethod
    def forward(ctx, z0, t, flat_parameters, func):
        assert isinstance(func, ODEF)
        bs, *z_shape = z0.size()
        time_len = t.size(0)

        with torch.no_grad():
            z = torch.zeros(time_len, bs, *z_shape).to(z0)
            z[0] = z0
            for i_t in range(time_len - 1):
                z0 = ode_solve(z0, t[i_t], t[i_t + 1], func)
                z[i_t + 1] = z0

        ctx.func = func
        ctx.save_for_backward(t, z.clone(), flat_parameters)
        return z

    @staticmethod
    def backward(ctx, dLdz):
        """dLdz shape: (time_len, batch_size, *z_shape)."""
        func = ctx.func
        t, z, flat_parameters = ctx.saved_tensors
        time_len, bs, *z_shape = z.size()
        n_dim = int(np.prod(z_shape))
        n_params = flat_parameters.size(0)
        per_sample = t.dim() == 3

        def augmented_euler_increment(aug_z, t_i, h):
            """``h * d/dt [z, a, a_theta, a_t]`` at (aug_z, t_i), through one VJP with cotangent h*a."""
            z_i, a = aug_z[:, :n_dim], aug_z[:, n_dim : 2 * n_dim]
            z_i = z_i.view(bs, *z_shape)
            a = a.view(bs, *z_shape)
            h_rows = h.reshape(bs, *([1] * len(z_shape))) if h.dim() > 0 else h
            with torch.set_grad_enabled(True):
                t_i = t_i.detach().requires_grad_(True)
                z_i = z_i.detach().requires_grad_(True)
                func_eval, ha_dfdz, ha_dfdp, ha_dfdt = func.forward_with_grad(z_i, t_i, grad_outputs=h_rows * a)
            return torch.cat(
                (
                    (h_rows * func_eval).reshape(bs, n_dim),
                    -ha_dfdz.reshape(bs, n_dim),
                    -ha_dfdp,
                    -ha_dfdt,
                ),
                dim=1,
            ).detach()

        def augmented_solve(aug_z, t0, t1):
            """Euler on the augmented system from t0 to t1, with ode_solve's step rule."""
            n_steps = n_euler_steps(t0, t1)
            h = (t1 - t0) / n_steps if n_steps > 0 else t1 - t0
            t_k = t0
            for _ in range(n_steps):
                aug_z = aug_z + augmented_euler_increment(aug_z, t_k, h)
                t_k = t_k + h
            return aug_z

        dLdz = dLdz.view(time_len, bs, n_dim)
        with torch.no_grad():
            adj_z = torch.zeros(bs, n_dim).to(dLdz)
            adj_p = torch.zeros(bs, n_params).to(dLdz)
            adj_t = torch.zeros(time_len, bs, 1).to(dLdz)  # the direct terms dL/dt_i, i >= 1
            running_t = torch.zeros(bs, 1).to(dLdz)  # the running time adjoint

            for i_t in range(time_len - 1, 0, -1):
                z_i = z[i_t]
                t_i = t[i_t]
                f_i = func(z_i, t_i).view(bs, n_dim)

                dLdz_i = dLdz[i_t]
                direct = torch.sum(dLdz_i * f_i, dim=1, keepdim=True)
                adj_t[i_t] = direct
                running_t = running_t - direct
                adj_z += dLdz_i

                aug_z = torch.cat((z_i.view(bs, n_dim), adj_z, torch.zeros(bs, n_params).to(z), running_t), dim=-1)
                aug_ans = augmented_solve(aug_z, t_i, t[i_t - 1])

                adj_z[:] = aug_ans[:, n_dim : 2 * n_dim]
                adj_p[:] += aug_ans[:, 2 * n_dim : 2 * n_dim + n_params]
                running_t = aug_ans[:, 2 * n_dim + n_params :]

                del aug_z, aug_ans

            adj_t[0] = running_t
            adj_z += dLdz[0]

        if per_sample:
            grad_t = adj_t.to(t)
        else:
            grad_t = adj_t.sum(dim=(1, 2)).to(t)
        return adj_z.view(bs, *z_shape), grad_t, adj_p.sum(0), None


class NeuralODE(nn.Module):
    """``z(t)`` of ``dz/dt = func(z, t)`` from ``z0``, with the adjoint for gradients."""

    def __init__(self, func: ODEF):
        super().__init__()
        assert isinstance(func, ODEF)
        self.func = func

    def forward(self, z0: Tensor, t: Tensor = Tensor([0.0, 1.0]), return_whole_sequence: bool = False) -> Tensor:
        t = t.to(z0)
        z = ODEAdjoint.apply(z0, t, self.func.flatten_parameters(), self.func)
        if return_whole_sequence:
            return z
        else:
            return z[-1]
