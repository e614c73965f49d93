"""``ODEF``: dynamics ``f(z, t; theta)`` in the paper's convention ``forward(z, t)``.

The base class of the paper's dynamics (:mod:`neuralode.dynamics`). ``odeint`` calls
such modules as ``f(t, z) = module(z, t)``; the paper's algorithm
(:mod:`neuralode.reference`) also uses :meth:`ODEF.forward_with_grad` and
:meth:`ODEF.flatten_parameters`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ODEF"]


def _per_sample(t: Tensor, batch_size: int) -> bool:
    return t.dim() == 2 and t.shape == (batch_size, 1)


class ODEF(nn.Module):
    """Base class of dynamics ``f(z, t; theta)`` in the paper's convention ``forward(z, t)``.

    ``z`` has shape ``(batch, *state)``; ``t`` is a 0-d tensor or per-sample
    ``(batch, 1)``.
    """

    def forward_with_grad(self, z: Tensor, t: Tensor, grad_outputs: Tensor):
        """Return ``f`` and the products with ``a = grad_outputs``.

        Returns ``(f, a . df/dz, a . df/dtheta, a . df/dt)``: ``f`` and
        ``a . df/dz`` have the shape of z; ``a . df/dtheta`` is the flat parameter
        product spread over the batch, shape ``(batch, n_params)`` (its batch sum
        is the product); ``a . df/dt`` has shape ``(batch, 1)``: per sample with
        per-sample times, else the batch total spread over the batch (slip 2 of
        the module docstring fixed). Unused inputs give zeros.
        """
        batch_size = z.shape[0]
        out = self.forward(z, t)
        a = grad_outputs
        params = tuple(self.parameters())
        adfdz, adfdt, *adfdp = torch.autograd.grad(
            (out,), (z, t) + params, grad_outputs=(a,), allow_unused=True, retain_graph=True
        )
        if adfdz is None:
            adfdz = torch.zeros_like(z)
        if params:
            adfdp = torch.cat(
                [(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(adfdp, params)]
            )
            adfdp = adfdp.unsqueeze(0).expand(batch_size, -1) / batch_size
        else:
            adfdp = z.new_zeros(batch_size, 0)
        if adfdt is None:
            adfdt = z.new_zeros(batch_size, 1)
        elif _per_sample(t, batch_size):
            adfdt = adfdt.reshape(batch_size, 1)
        else:
            adfdt = adfdt.reshape(1, 1).expand(batch_size, 1) / batch_size
        return out, adfdz, adfdp, adfdt

    def flatten_parameters(self) -> Tensor:
        """All parameters as one flat vector (``cat(p.flatten())``)."""
        flat_parameters = []
        for p in self.parameters():
            flat_parameters.append(p.flatten())
        if not flat_parameters:
            return torch.zeros(0)
        return torch.cat(flat_parameters)
