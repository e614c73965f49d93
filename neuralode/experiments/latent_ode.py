"""Latent ODE VAE on irregularly sampled spirals, against an RNN decoder (the paper's Section 5).

Data (:mod:`neuralode.experiments.spirals`): 1000 noisy 2-D Archimedean spirals, half
clockwise, each observed at its own irregular times in a window ``[0, W]`` and in the
continuation ``(W, 2W]``; 20% are held out. Training batches are per-sample random
sub-sequences of the window's observations (times of shape ``(T, batch, 1)``).

Model (a variational autoencoder over trajectories): a GRU run backwards in time over
the observations and the gaps between their times gives the mean and log-variance of a
latent initial state ``z0`` (``q(z0 | x)``); a sample ``z0 = mu + sigma eps`` is carried
forward by the latent dynamics ``dz/dt = f(z)`` (an ELU MLP) with ``neuralode.odeint``
(continuous adjoint by default, ``--gradient``) to every observation time, and a linear map (an MLP with
``--readout-hidden``) takes each ``z(t_i)`` to a 2-D observation; the linear readout
extrapolated better in our runs: the dynamics then has to carry the spiral itself. The
loss is the negative ELBO, per spiral

    -ELBO = sum_i -log N(x_i; dec(z(t_i)), noise^2 I) + KL(q(z0 | x) || N(0, I)),

with the data's known noise std, minimised with Adam (learning rate decaying exponentially
to a tenth over the training). The baseline keeps the encoder and
the likelihood and replaces the ODE by an autoregressive GRU decoder that steps from one
observation time to the next, fed the time difference and its previous output, read out
by an MLP (its better choice in our runs).

Evaluation on held-out spirals, from a seed sub-sequence of each window (posterior mean
``z0``): reconstruction MSE in the window and extrapolation MSE on ``(W, 2W]``, both
against the noise-free spirals. Writes ``latent_ode_reconstruction.png`` (held-out
spirals), ``latent_ode_homotopy.png`` (decoding ``z0 = (1 - a) z_cw + a z_ccw``),
``latent_ode_training.png`` (ELBO and test errors through training) and ``latent_ode.json``.

Speed (measured on a shared 2-core CPU): the latent ODE is solved with classic RK4, steps
of at most 0.5, and the continuous adjoint; per iteration that is as fast as backprop
through the steps and faster than dopri5. With an adaptive ``--method`` each sample steps
on its own (its own step size and accept/reject); ``--shared-steps`` steps the batch with
one step size in a normalized time that restarts at every per-sample observation time,
for comparison. ``--quick --skip-rnn``, one thread, per iteration: RK4 45 ms (168 / 168
evaluations of ``f`` forward / backward); dopri5 55 ms per-sample (50 / 215) and 66 ms
shared (152 / 245), with the same reconstruction and extrapolation MSE within the spread
between seeds; the per-sample solve is further from a tight dopri5 (max 0.10 to 0.15
against 0.01, the JSON's ``solver_error_vs_reference``). ``--threads`` defaults to 1 here:
two threads were never faster for these small tensors and many times slower while another
process held a core.

Run: ``python -m neuralode.experiments latent-ode [--quick] [--iters N] [--method M [--shared-steps]] [--out DIR]``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import List, Optional

import numpy as np
import torch
from torch import Tensor, nn

import neuralode

from . import common
from .spirals import SpiralData, make_spirals, sample_batch, seed_sequences, spiral_position, split

NAME = "latent-ode"
LOG_2PI = math.log(2 * math.pi)
#: The solver, chosen by measurement: classic RK4 with steps of at most 0.5 time units (the
#: spirals turn one radian per unit; most gaps between observations are shorter, so mostly
#: one step per gap). Its distance to a tight dopri5 is checked after training (the JSON's
#: ``solver_error_vs_reference``).
METHOD, MAX_STEP, RTOL, ATOL = "rk4_classic", 0.5, 1e-3, 1e-4
#: name -> (default, quick) of the sizes that --quick changes.
SIZES = {"iters": (10000, 4000), "batch": (100, 50)}
#: The learning rate decays exponentially to this fraction of --lr over the training.
LR_FINAL_FRACTION = 0.1


# ----------------------------------------------------------------------------- models


class RecognitionGRU(nn.Module):
    """``q(z0 | x)``: a GRU read backwards in time, last observation first.

    Step ``k`` (from ``T - 1`` down to ``0``) reads ``[x_k, t_{k+1} - t_k]`` (the gap to the
    observation read before it, 0 for the last), so the final hidden state summarises the
    whole sub-sequence as seen from its first time ``t_0``; a linear layer maps it to the mean
    and log-variance of the ``latent``-dimensional ``z0`` at ``t_0``.
    """

    def __init__(self, latent: int, hidden: int, obs_dim: int = 2):
        super().__init__()
        self.gru = nn.GRU(obs_dim + 1, hidden)
        self.out = nn.Linear(hidden, 2 * latent)

    def forward(self, obs: Tensor, times: Tensor) -> tuple:
        """``(mean, logvar)``, each ``(batch, latent)``, from ``obs (T, batch, 2)`` and
        ``times (T, batch, 1)``."""
        gaps = torch.cat([times[1:] - times[:-1], torch.zeros_like(times[:1])])
        _, h = self.gru(torch.cat([obs, gaps], dim=-1).flip(0))
        mean, logvar = self.out(h[0]).chunk(2, dim=-1)
        return mean, logvar


def mlp(sizes: List[int], activation=nn.ELU) -> nn.Sequential:
    """Linear layers of the given widths with ``activation`` between them (none after the last)."""
    layers: List[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(activation())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def readout(n_in: int, hidden: int, obs_dim: int) -> nn.Module:
    """The map to an observation: a ReLU MLP ``n_in -> hidden -> obs_dim``, or linear when ``hidden`` is 0."""
    return mlp([n_in, hidden, obs_dim] if hidden else [n_in, obs_dim], activation=nn.ReLU)


class LatentDynamics(nn.Module):
    """``dz/dt = f(z)``: an autonomous ELU MLP ``latent -> hidden -> hidden -> latent``."""

    def __init__(self, latent: int, hidden: int):
        super().__init__()
        self.net = mlp([latent, hidden, hidden, latent])

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        """``f(z)`` for the state ``z`` (batch, latent); ``t`` is ignored (autonomous dynamics)."""
        return self.net(z)


@dataclass
class Solver:
    """How the latent ODE is solved: ``method`` (fixed-step methods take steps of at most
    ``max_step``, adaptive ones keep ``rtol``/``atol``) and the ``gradient`` mode.

    ``per_sample`` (adaptive methods, per-sample times): each sample steps on its own (its
    own step size and accept/reject, the library's default) or, when False, the batch steps
    with one shared step size in a normalized time that restarts at every observation
    (``options={"per_sample": False}``). Fixed-step methods have no error control: their
    steps are the same either way."""

    method: str = METHOD
    max_step: float = MAX_STEP
    rtol: float = RTOL
    atol: float = ATOL
    gradient: str = "adjoint"
    per_sample: bool = True

    @property
    def steps(self) -> str:
        """How the steps are chosen: ``"fixed"``, ``"per-sample"`` or ``"shared"``."""
        if self.method in neuralode.FIXED_STEP_METHODS:
            return "fixed"
        return "per-sample" if self.per_sample else "shared"

    def kwargs(self, per_sample_times: bool = True) -> dict:
        """The keyword arguments of ``neuralode.odeint`` for this solver, for per-sample
        times ``(T, batch, 1)`` or (``per_sample_times`` False) shared times ``(T,)``."""
        if self.method in neuralode.FIXED_STEP_METHODS:
            return {"method": self.method, "options": {"max_step": self.max_step}}
        kwargs = {"method": self.method, "rtol": self.rtol, "atol": self.atol}
        if per_sample_times and not self.per_sample:
            kwargs["options"] = {**kwargs.get("options", {}), "per_sample": False}
        return kwargs


#: The solver the training solver is checked against after training.
REFERENCE = Solver("dopri5", rtol=1e-6, atol=1e-8, gradient="backprop")


class ODEDecoder(nn.Module):
    """``p(x | z0)``: ``z(t_i)`` from ``dz/dt = f(z)``, ``z(t_0) = z0``, then ``x_i = g(z(t_i))``.

    Works for any times after ``t_0``: the model is continuous in time. Counts the work of
    every solve in ``stats``.
    """

    def __init__(self, latent: int, hidden: int, readout_hidden: int, solver: Solver, obs_dim: int = 2):
        super().__init__()
        self.dynamics = LatentDynamics(latent, hidden)
        self.readout = readout(latent, readout_hidden, obs_dim)
        self.solver = solver
        self.stats = neuralode.SolverStats()

    def latent_path(self, z0: Tensor, times: Tensor) -> Tensor:
        """``z`` at ``times``: per-sample ``(T, batch, 1)`` (shifted to start at 0) or shared ``(T,)``."""
        times = times - times[:1]
        if times.shape[0] == 1:
            return z0.unsqueeze(0)
        return neuralode.odeint(self.dynamics, z0, times, gradient=self.solver.gradient, stats=self.stats,
                                **self.solver.kwargs(per_sample_times=times.dim() == 3))

    def forward(self, z0: Tensor, times: Tensor) -> Tensor:
        """Predicted observations ``(T, batch, 2)`` at ``times``."""
        return self.readout(self.latent_path(z0, times))


class RNNDecoder(nn.Module):
    """The baseline ``p(x | z0)``: an autoregressive GRU over the observation times.

    ``h_0 = tanh(A z0)``, ``x_0 = g(h_0)``; then ``h_i = GRU([x_{i-1}, t_i - t_{i-1}], h_{i-1})``,
    ``x_i = g(h_i)``: each step is fed the time difference and its own previous output, so it
    can run past the observed window exactly as at training time.
    """

    def __init__(self, latent: int, hidden: int, readout_hidden: int, obs_dim: int = 2):
        super().__init__()
        self.init = nn.Linear(latent, hidden)
        self.cell = nn.GRUCell(obs_dim + 1, hidden)
        self.readout = readout(hidden, readout_hidden, obs_dim)

    def forward(self, z0: Tensor, times: Tensor) -> Tensor:
        """Predicted observations ``(T, batch, 2)`` at per-sample ``times (T, batch, 1)``."""
        h = torch.tanh(self.init(z0))
        x = self.readout(h)
        out = [x]
        for gap in times[1:] - times[:-1]:
            h = self.cell(torch.cat([x, gap], dim=-1), h)
            x = self.readout(h)
            out.append(x)
        return torch.stack(out)


class LatentVAE(nn.Module):
    """Encoder ``q(z0 | x)`` and a decoder ``p(x | z0)`` (ODE or RNN), trained on the ELBO."""

    def __init__(self, encoder: RecognitionGRU, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, obs: Tensor, times: Tensor, predict_times: Optional[Tensor] = None, sample: bool = True):
        """``(prediction, mean, logvar)``: encode ``obs`` at ``times``, draw
        ``z0 = mean + exp(logvar / 2) eps`` (or take the mean when ``sample`` is False) and
        decode at ``predict_times`` (default ``times``; they must start at ``times[0]``)."""
        mean, logvar = self.encoder(obs, times)
        z0 = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if sample else mean
        return self.decoder(z0, times if predict_times is None else predict_times), mean, logvar


def negative_elbo(pred: Tensor, obs: Tensor, mean: Tensor, logvar: Tensor, noise: float) -> tuple:
    """``(-ELBO, -log p(x | z0), KL)``, each averaged over the batch (summed over time,
    coordinates and latent dimensions).

    ``-log p = sum 0.5 ((x - pred) / noise)^2 + log noise + 0.5 log 2 pi`` and
    ``KL(N(mean, e^logvar) || N(0, 1)) = 0.5 sum (e^logvar + mean^2 - 1 - logvar)``.
    """
    nll = (0.5 * ((obs - pred) / noise) ** 2 + math.log(noise) + 0.5 * LOG_2PI).sum(dim=(0, 2))
    kl = 0.5 * (logvar.exp() + mean**2 - 1.0 - logvar).sum(dim=-1)
    nll, kl = nll.mean(), kl.mean()
    return nll + kl, nll, kl


# ----------------------------------------------------------------------------- training and evaluation


@dataclass
class Evaluation:
    """Errors on held-out spirals (mean over points and coordinates of the squared error to
    the noise-free spiral): ``seed_mse`` at the seed's times, ``window_mse`` at all the
    window's times (only a continuous-time decoder predicts between them; None otherwise),
    ``extrapolation_mse`` on ``(W, 2W]`` and ``extrapolation_median``, the median over spirals
    of each spiral's extrapolation MSE (the mean is dominated by the few spirals a model loses
    track of); ``nfe``: evaluations of the latent dynamics in the ODE decoder's solve (None for
    the RNN)."""

    seed_mse: float
    extrapolation_mse: float
    extrapolation_median: float
    window_mse: Optional[float] = None
    nfe: Optional[int] = None


@torch.no_grad()
def evaluate(model: LatentVAE, data: SpiralData, seed: tuple, device: torch.device) -> Evaluation:
    """Encode each spiral's seed sub-sequence ``seed = (obs, times)`` (it starts at the
    window's first observation), take the posterior mean ``z0`` and predict the seed's times
    and the continuation's times (and, for the ODE decoder, every time of the window)."""
    model.eval()
    obs, times = (x.to(device) for x in seed)
    future_t = data.times[:, data.n_obs:].T.unsqueeze(-1).to(device)
    future_true = data.true[:, data.n_obs:].transpose(0, 1).to(device)
    seed_true_index = _seed_index(data, seed[1])
    seed_true = data.true[torch.arange(len(data))[:, None], seed_true_index].transpose(0, 1).to(device)
    window_mse = nfe = None
    if isinstance(model.decoder, ODEDecoder):
        # One solve through every time: the window's (a superset of the seed's) and the future's,
        # counted apart from the training solves.
        all_t = data.times.T.unsqueeze(-1).to(device)
        training_stats, model.decoder.stats = model.decoder.stats, neuralode.SolverStats()
        try:
            pred, _, _ = model(obs, times, predict_times=all_t, sample=False)
            nfe = model.decoder.stats.nfe_forward
        finally:
            model.decoder.stats = training_stats
        window, future = pred[: data.n_obs], pred[data.n_obs:]
        seed_pred = window[seed_true_index.T.to(device), torch.arange(len(data), device=device)]
        window_mse = _mse(window, data.true[:, : data.n_obs].transpose(0, 1).to(device))
    else:
        pred, _, _ = model(obs, times, predict_times=torch.cat([times, future_t]), sample=False)
        seed_pred, future = pred[: times.shape[0]], pred[times.shape[0]:]
    model.train()
    per_spiral = ((future - future_true) ** 2).mean(dim=(0, 2))
    return Evaluation(_mse(seed_pred, seed_true), float(per_spiral.mean()), float(per_spiral.median()), window_mse, nfe)


@torch.no_grad()
def solver_error(model: LatentVAE, data: SpiralData, seed: tuple, device: torch.device, reference: Solver) -> float:
    """How far the ODE decoder's solver is from a ``reference`` solver (tight tolerances) on
    the held-out predictions: ``max |x_solver - x_reference|`` over every time of every spiral.
    Small against the errors to the data means the solver's steps are fine enough."""
    obs, times = (x.to(device) for x in seed)
    all_t = data.times.T.unsqueeze(-1).to(device)
    decoder = model.decoder
    mean, _ = model.encoder(obs, times)
    solver, stats = decoder.solver, decoder.stats
    try:
        decoder.stats = neuralode.SolverStats()
        pred = decoder(mean, all_t)
        decoder.solver = reference
        exact = decoder(mean, all_t)
    finally:
        decoder.solver, decoder.stats = solver, stats
    return float((pred - exact).abs().max())


def _seed_index(data: SpiralData, seed_times: Tensor) -> Tensor:
    """Where each seed time sits among its spiral's window times: ``(n, points)``."""
    window = data.times[:, : data.n_obs]
    index = torch.searchsorted(window.contiguous(), seed_times[..., 0].T.contiguous())
    return index.clamp_max(data.n_obs - 1)


def _mse(pred: Tensor, true: Tensor) -> float:
    return float(((pred - true) ** 2).mean())


@dataclass
class TrainResult:
    """Per-iteration ELBO (per spiral, higher is better) and its terms, test evaluations
    ``(iteration, Evaluation)`` through training, and the training seconds (without the
    evaluations)."""

    elbo: List[float] = field(default_factory=list)
    nll: List[float] = field(default_factory=list)
    kl: List[float] = field(default_factory=list)
    evaluations: List[tuple] = field(default_factory=list)
    seconds: float = 0.0


def train(
    model: LatentVAE,
    train_data: SpiralData,
    test_data: SpiralData,
    test_seed: tuple,
    *,
    iters: int,
    batch: int,
    points: int,
    lr: float,
    seed: int,
    device: torch.device,
    eval_every: int,
    desc: str,
    disable_progress: bool = False,
) -> TrainResult:
    """Adam on the negative ELBO of random per-sample sub-sequences, the learning rate
    decaying exponentially from ``lr`` to ``LR_FINAL_FRACTION * lr``; the batches depend only
    on ``seed``, so two models trained with the same seed see the same data. The test set is
    evaluated every ``eval_every`` iterations and after the last."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # the reparameterisation noise
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=LR_FINAL_FRACTION ** (1.0 / iters))
    result = TrainResult()
    bar = common.progress(range(1, iters + 1), desc=desc, disable=disable_progress)
    for it in bar:
        start = time.perf_counter()
        obs, times = (x.to(device) for x in sample_batch(train_data, batch, points, rng))
        pred, mean, logvar = model(obs, times)
        loss, nll, kl = negative_elbo(pred, obs, mean, logvar, train_data.noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        decay.step()
        value = loss.item()
        result.seconds += time.perf_counter() - start
        if not math.isfinite(value):
            raise FloatingPointError(f"{desc}: the loss became {value} at iteration {it}; lower --lr")
        result.elbo.append(-value)
        result.nll.append(nll.item())
        result.kl.append(kl.item())
        if it % eval_every == 0 or it == iters:
            ev = evaluate(model, test_data, test_seed, device)
            result.evaluations.append((it, ev))
            bar.set_postfix(elbo=f"{-value:.1f}", extrap=f"{ev.extrapolation_mse:.3f}")
    bar.close()
    return result


# ----------------------------------------------------------------------------- plots


@torch.no_grad()
def _dense_ode(model: LatentVAE, seed: tuple, t_end: float, n: int, device: torch.device) -> tuple:
    """The ODE model's trajectory from each seed's first time to ``t_end`` at ``n`` times:
    ``(times (n, batch), x (n, batch, 2))``."""
    obs, times = (x.to(device) for x in seed)
    frac = torch.linspace(0.0, 1.0, n, device=device)[:, None, None]
    dense = times[:1] + frac * (t_end - times[:1])
    pred, _, _ = model(obs, times, predict_times=dense, sample=False)
    return dense[..., 0].cpu(), pred.cpu()


@torch.no_grad()
def plot_reconstructions(ode: LatentVAE, rnn: LatentVAE, data: SpiralData, seed: tuple, path: str,
                         device: torch.device, n_show: int = 8) -> str:
    """Held-out spirals in the phase plane: the true spiral (window solid, continuation
    dotted), the seed observations, the latent ODE's reconstruction (solid) and
    extrapolation (dashed), and the RNN decoder's prediction at the seed and future times."""
    plt = common.pyplot()
    # The first n_show / 2 spirals of each direction.
    cw = torch.nonzero(data.clockwise).flatten()[: n_show // 2]
    ccw = torch.nonzero(~data.clockwise).flatten()[: n_show - len(cw)]
    rows = torch.cat([cw, ccw])
    sub = data.subset(rows)
    sub_seed = (seed[0][:, rows], seed[1][:, rows])
    w = data.window
    dense_t, ode_x = _dense_ode(ode, sub_seed, 2 * w, 300, device)
    future_t = sub.times[:, sub.n_obs:].T.unsqueeze(-1)
    rnn_t = torch.cat([sub_seed[1], future_t])
    rnn_x, _, _ = rnn(sub_seed[0].to(device), sub_seed[1].to(device), predict_times=rnn_t.to(device), sample=False)
    rnn_x = rnn_x.cpu()
    n_seed = sub_seed[1].shape[0]
    fine = torch.linspace(0.0, 2 * w, 400).expand(len(sub), -1)
    true = spiral_position(sub.theta0, fine, sub.clockwise, sub.a, sub.b)
    cols = min(4, len(sub))
    n_rows = math.ceil(len(sub) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.4 * cols, 3.4 * n_rows), squeeze=False)
    for ax in axes.flat[len(sub):]:
        ax.axis("off")
    in_window = fine[0] <= w
    for k, ax in enumerate(axes.flat[: len(sub)]):
        ax.plot(true[k, in_window, 0], true[k, in_window, 1], c="0.55", lw=1.2, label="true spiral")
        ax.plot(true[k, ~in_window, 0], true[k, ~in_window, 1], c="0.55", lw=1.2, ls=":")
        ax.scatter(sub_seed[0][:, k, 0], sub_seed[0][:, k, 1], s=9, c="k", zorder=3, label="seed observations")
        inside = dense_t[:, k] <= w
        ax.plot(ode_x[inside, k, 0], ode_x[inside, k, 1], c="C0", lw=1.6, label="latent ODE")
        ax.plot(ode_x[~inside, k, 0], ode_x[~inside, k, 1], c="C0", lw=1.6, ls="--", label="latent ODE extrapolation")
        ax.plot(rnn_x[n_seed - 1:, k, 0], rnn_x[n_seed - 1:, k, 1], c="C3", lw=1.2, ls="--", marker=".", ms=3,
                label="RNN extrapolation")
        lim = float(true[k].abs().max()) * 1.3
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[],
               title="clockwise" if bool(sub.clockwise[k]) else "counter-clockwise")
    axes.flat[0].legend(loc="lower left", fontsize=6)
    fig.suptitle(f"Held-out spirals: seen in [0, {w:g}], extrapolated to {2 * w:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_homotopy(ode: LatentVAE, data: SpiralData, seed: tuple, path: str, device: torch.device,
                  n_panels: int = 10) -> tuple:
    """Decodes ``z0 = (1 - a) z_cw + a z_ccw`` for ``n_panels`` values of ``a`` in [0, 1], where
    ``z_cw``, ``z_ccw`` are the posterior means of the first clockwise and counter-clockwise
    held-out spirals; one small panel per ``a``. Returns the path and the ``a`` values."""
    plt = common.pyplot()
    i_cw = int(torch.nonzero(data.clockwise).flatten()[0])
    i_ccw = int(torch.nonzero(~data.clockwise).flatten()[0])
    rows = torch.tensor([i_cw, i_ccw])
    mean, _ = ode.encoder(seed[0][:, rows].to(device), seed[1][:, rows].to(device))
    alphas = torch.linspace(0.0, 1.0, n_panels, device=device)
    z0 = (1 - alphas)[:, None] * mean[0] + alphas[:, None] * mean[1]
    t = torch.linspace(0.0, 2 * data.window, 200, device=device)
    x = ode.decoder(z0, t).cpu()
    cols = min(5, n_panels)
    n_rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(2.3 * cols, 2.4 * n_rows), squeeze=False)
    lim = float(x.abs().max()) * 1.1
    for ax in axes.flat[n_panels:]:
        ax.axis("off")
    for k, ax in enumerate(axes.flat[:n_panels]):
        ax.scatter(x[:, k, 0], x[:, k, 1], c=t.cpu(), cmap="viridis", s=2)
        ax.scatter(x[:1, k, 0], x[:1, k, 1], c="r", s=12, zorder=3)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[], title=f"a = {float(alphas[k]):.2f}")
    fig.suptitle("Latent homotopy z0 = (1-a) z_cw + a z_ccw (red: start; colour: time)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, alphas.cpu().tolist()


def plot_training(results: dict, path: str) -> str:
    """ELBO per iteration (moving average) and the test errors through training, per model."""
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for k, (label, res) in enumerate(results.items()):
        elbo = np.asarray(res.elbo)
        width = max(1, len(elbo) // 50)
        smooth = np.convolve(elbo, np.ones(width) / width, mode="valid")
        axes[0].plot(np.arange(width, len(elbo) + 1), smooth, c=f"C{k}", label=label)
        its = [it for it, _ in res.evaluations]
        axes[1].semilogy(its, [ev.extrapolation_mse for _, ev in res.evaluations], c=f"C{k}", marker=".",
                         label=f"{label}: extrapolation")
        axes[1].semilogy(its, [ev.seed_mse for _, ev in res.evaluations], c=f"C{k}", ls=":",
                         label=f"{label}: reconstruction")
    # The first iterations' ELBO is far below the rest: show the part that is learning.
    tail = np.concatenate([np.asarray(r.elbo)[len(r.elbo) // 10:] for r in results.values()])
    low, high = np.percentile(tail, 1), tail.max()
    axes[0].set(title="Training ELBO per spiral (moving average)", xlabel="iteration",
                ylim=(low - 0.05 * (high - low), high + 0.05 * (high - low)))
    axes[0].legend()
    axes[1].set(title="Held-out spirals: MSE to the noise-free spiral", xlabel="iteration")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- command line


def build_parser():
    """The experiment's command line: the common options and the sizes, data, model and solver."""
    parser = common.experiment_parser(NAME, __doc__.splitlines()[0])
    add = parser.add_argument
    (iters, quick_iters), (batch, quick_batch) = SIZES["iters"], SIZES["batch"]
    add("--iters", type=int, default=None, help=f"training iterations per model (default {iters}, quick {quick_iters})")
    add("--batch", type=int, default=None, help=f"spirals per iteration (default {batch}, quick {quick_batch})")
    add("--spirals", type=int, default=1000, help="spirals generated (default 1000)")
    add("--test-fraction", type=float, default=0.2, help="share of the spirals held out (default 0.2)")
    add("--obs", type=int, default=50, help="irregular observations per spiral in the window (default 50)")
    add("--future", type=int, default=25, help="observations of the continuation to extrapolate (default 25)")
    add("--points", type=int, default=25, help="observations per training sub-sequence and per test seed (default 25)")
    add("--window", type=float, default=4.0, help="length W of the observed window, in radians of turn (default 4)")
    add("--noise", type=float, default=0.1, help="observation noise std, known to the likelihood (default 0.1)")
    add("--latent-dim", type=int, default=6, help="dimension of z0 (default 6)")
    add("--ode-hidden", type=int, default=32, help="width of the latent dynamics MLP (default 32)")
    add("--encoder-hidden", type=int, default=25, help="GRU width of the encoder (default 25)")
    add("--rnn-hidden", type=int, default=32, help="GRU width of the RNN decoder (default 32)")
    add("--readout-hidden", type=int, default=0,
        help="width of the latent ODE's z -> observation MLP; 0: linear, the measured best (default 0)")
    add("--rnn-readout-hidden", type=int, default=20,
        help="width of the RNN decoder's h -> observation MLP; 0: linear (default 20, its measured best)")
    add("--lr", type=float, default=0.01,
        help=f"Adam's starting learning rate, decaying to {LR_FINAL_FRACTION:g} of it (default 0.01)")
    add("--method", default=METHOD, choices=neuralode.METHODS, help=f"ODE solver (default {METHOD})")
    add("--max-step", type=float, default=MAX_STEP, help=f"largest step of a fixed-step method (default {MAX_STEP})")
    add("--rtol", type=float, default=RTOL, help=f"relative tolerance of an adaptive method (default {RTOL})")
    add("--atol", type=float, default=ATOL, help=f"absolute tolerance of an adaptive method (default {ATOL})")
    add("--gradient", default="adjoint", choices=neuralode.GRADIENT_MODES,
        help="how the ODE solve is differentiated (default adjoint)")
    add("--shared-steps", action="store_true",
        help="step the batch with one shared step size (normalized time) instead of per-sample steps, "
             "for comparison")
    add("--eval-every", type=int, default=None, help="test evaluation every N iterations (default iters / 20)")
    add("--skip-rnn", action="store_true", help="train the latent ODE only")
    # Measured: one thread is faster than two for these small tensors (see the module notes).
    parser.set_defaults(threads=1)
    return parser


def check_args(parser, args) -> None:
    """Every option in range, with a message that names it (argparse's ``error`` exits)."""
    for flag in ("readout_hidden", "rnn_readout_hidden"):
        value = getattr(args, flag)
        if value < 0:
            parser.error(f"--{flag.replace('_', '-')} must be at least 0 (0: a linear readout), got {value}")
    for flag in ("iters", "batch", "spirals", "obs", "future", "latent_dim", "ode_hidden", "encoder_hidden",
                 "rnn_hidden", "eval_every"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    for flag in ("window", "noise", "lr", "max_step", "rtol", "atol"):
        value = getattr(args, flag)
        if not (value > 0 and math.isfinite(value)):
            parser.error(f"--{flag.replace('_', '-')} must be a positive number, got {value}")
    if not 0 < args.test_fraction < 1:
        parser.error(f"--test-fraction must be between 0 and 1, got {args.test_fraction}")
    if args.spirals < 4:
        parser.error(f"--spirals must be at least 4 (training and test spirals of both directions), got {args.spirals}")
    if not 2 <= args.points <= args.obs:
        parser.error(f"--points must be between 2 and --obs ({args.obs}), got {args.points}")
    if args.gradient == "checkpoint" and args.method not in neuralode.ADAPTIVE_METHODS:
        parser.error(f"--gradient checkpoint needs an adaptive --method ({', '.join(neuralode.ADAPTIVE_METHODS)})")
    if args.shared_steps and args.method not in neuralode.ADAPTIVE_METHODS:
        parser.error(f"--shared-steps needs an adaptive --method ({', '.join(neuralode.ADAPTIVE_METHODS)}): "
                     f"{args.method} takes the same fixed steps either way")


def main(argv=None) -> dict:
    """Runs the experiment from the command line ``argv``: trains the latent ODE and the RNN
    decoder on the same batches, evaluates both on the held-out spirals, writes the plots and
    ``latent_ode.json``, prints the summary and returns it."""
    wall_start = time.perf_counter()
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, (default, quick) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else default)
    if args.eval_every is None:
        args.eval_every = max(1, args.iters // 20)
    check_args(parser, args)
    device, out_dir = common.setup(args, NAME)

    data = make_spirals(args.spirals, args.obs, args.future, window=args.window, noise=args.noise,
                        grid=4 * max(args.obs, args.future), seed=args.seed)
    train_data, test_data = split(data, args.test_fraction, seed=args.seed)
    if args.batch > len(train_data):
        parser.error(f"--batch ({args.batch}) is larger than the {len(train_data)} training spirals; "
                     "lower --batch or raise --spirals")
    test_seed = seed_sequences(test_data, args.points, seed=args.seed + 1)
    solver = Solver(args.method, args.max_step, args.rtol, args.atol, args.gradient,
                    per_sample=not args.shared_steps)

    def model(decoder: nn.Module) -> LatentVAE:
        torch.manual_seed(args.seed)  # the same encoder initialisation for both models
        encoder = RecognitionGRU(args.latent_dim, args.encoder_hidden)
        return LatentVAE(encoder, decoder).to(device)

    fit = dict(iters=args.iters, batch=args.batch, points=args.points, lr=args.lr, seed=args.seed, device=device,
               eval_every=args.eval_every, disable_progress=args.no_progress)
    ode = model(ODEDecoder(args.latent_dim, args.ode_hidden, args.readout_hidden, solver))
    results = {"latent ODE": train(ode, train_data, test_data, test_seed, desc="latent ODE", **fit)}
    train_stats = neuralode.SolverStats(**ode.decoder.stats.as_dict())
    rnn = None
    if not args.skip_rnn:
        rnn = model(RNNDecoder(args.latent_dim, args.rnn_hidden, args.rnn_readout_hidden))
        results["RNN decoder"] = train(rnn, train_data, test_data, test_seed, desc="RNN decoder", **fit)

    final = {label: res.evaluations[-1][1] for label, res in results.items()}
    # The reference steps as the training solver does (per-sample or shared).
    reference = replace(REFERENCE, per_sample=solver.per_sample)
    solve_error = solver_error(ode, test_data, test_seed, device, reference)
    files = []
    if rnn is not None:
        files.append(plot_reconstructions(ode, rnn, test_data, test_seed,
                                          os.path.join(out_dir, "latent_ode_reconstruction.png"), device))
    homotopy_png, alphas = plot_homotopy(ode, test_data, test_seed, os.path.join(out_dir, "latent_ode_homotopy.png"),
                                         device)
    files.append(homotopy_png)
    files.append(plot_training(results, os.path.join(out_dir, "latent_ode_training.png")))

    ode_ev = final["latent ODE"]
    rnn_ev = final.get("RNN decoder")
    summary = {
        "experiment": NAME,
        "reconstruction_mse_ode": ode_ev.window_mse,
        "seed_mse_ode": ode_ev.seed_mse,
        "extrapolation_mse_ode": ode_ev.extrapolation_mse,
        "seed_mse_rnn": rnn_ev.seed_mse if rnn_ev else None,
        "extrapolation_mse_rnn": rnn_ev.extrapolation_mse if rnn_ev else None,
        "extrapolation_median_ode": ode_ev.extrapolation_median,
        "extrapolation_median_rnn": rnn_ev.extrapolation_median if rnn_ev else None,
        "ode_beats_rnn_on_extrapolation": (ode_ev.extrapolation_mse < rnn_ev.extrapolation_mse) if rnn_ev else None,
        "train_seconds": {label: res.seconds for label, res in results.items()},
        "wall_seconds": time.perf_counter() - wall_start,
        "nfe_per_iteration": {"forward": train_stats.nfe_forward / args.iters,
                              "backward": train_stats.nfe_backward / args.iters},
        "nfe_evaluation_solve": ode_ev.nfe,
        "solver_error_vs_reference": solve_error,
        "reference_solver": {"method": reference.method, "rtol": reference.rtol, "atol": reference.atol,
                             "steps": reference.steps},
        "solver_stats_training": train_stats.as_dict(),
        "steps": solver.steps,
        "solver": {"method": solver.method, "gradient": solver.gradient, "steps": solver.steps, **solver.kwargs()},
        "parameters": {"encoder": sum(p.numel() for p in ode.encoder.parameters()),
                       "ode_decoder": sum(p.numel() for p in ode.decoder.parameters()),
                       "rnn_decoder": sum(p.numel() for p in rnn.decoder.parameters()) if rnn else None},
        "data": {"spirals": args.spirals, "train": len(train_data), "test": len(test_data), "obs": args.obs,
                 "future": args.future, "points": args.points, "window": args.window, "noise": args.noise,
                 "a": data.a, "b": data.b, "clockwise_train": int(train_data.clockwise.sum()),
                 "clockwise_test": int(test_data.clockwise.sum())},
        "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "homotopy_alphas": alphas,
        "history": {label: {"elbo": res.elbo, "nll": res.nll, "kl": res.kl,
                            "evaluations": [{"iteration": it, **vars(ev)} for it, ev in res.evaluations]}
                    for label, res in results.items()},
        "run": common.run_info(device, argv),
    }
    files.append(common.write_json(os.path.join(out_dir, "latent_ode.json"), summary))

    verdict = ""
    if rnn_ev:
        verdict = "; latent ODE beats the RNN on extrapolation" if summary["ode_beats_rnn_on_extrapolation"] \
            else "; the RNN decoder extrapolates better"
    common.print_summary(f"{NAME}: extrapolation MSE {ode_ev.extrapolation_mse:.4f}{verdict}",
                         summary_rows(summary, results), files)
    return summary


def summary_rows(summary: dict, results: dict) -> dict:
    """The end-of-run summary's lines, from the summary dict and the training results."""
    data, config, nfe = summary["data"], summary["config"], summary["nfe_per_iteration"]
    rows = {
        "spirals train / test": f"{data['train']} / {data['test']}",
        "iterations x batch": f"{config['iters']} x {config['batch']}",
        "latent ODE reconstruction MSE (window)": summary["reconstruction_mse_ode"],
        "latent ODE extrapolation MSE": summary["extrapolation_mse_ode"],
    }
    if summary["extrapolation_mse_rnn"] is not None:
        rows["RNN decoder extrapolation MSE"] = summary["extrapolation_mse_rnn"]
        rows["median per-spiral extrapolation MSE ODE / RNN"] = \
            f"{summary['extrapolation_median_ode']:.4g} / {summary['extrapolation_median_rnn']:.4g}"
        rows["seed MSE latent ODE / RNN"] = f"{summary['seed_mse_ode']:.4g} / {summary['seed_mse_rnn']:.4g}"
    rows["final ELBO per spiral"] = " / ".join(f"{label} {np.mean(res.elbo[-20:]):.1f}"
                                               for label, res in results.items())
    rows["training seconds"] = " / ".join(f"{label} {res.seconds:.1f}" for label, res in results.items())
    rows["wall seconds"] = summary["wall_seconds"]
    rows["NFE per iteration fwd / bwd"] = f"{nfe['forward']:.0f} / {nfe['backward']:.0f}"
    rows["NFE of one test-set solve"] = summary["nfe_evaluation_solve"]
    solver = summary["solver"]
    rows["solver"] = (f"{solver['method']} {solver.get('options', '')} gradient={solver['gradient']} "
                      f"steps={summary['steps']}")
    rows["solver max error vs dopri5 rtol 1e-6"] = summary["solver_error_vs_reference"]
    return rows


if __name__ == "__main__":
    main()
