"""Demo: the paper's first experiment, recovering linear spiral dynamics.

The true dynamics is ``dz/dt = z W^T`` with ``W = [[-0.1, -1], [1, -0.1]]``. From
one noisy trajectory we fit a linear dynamics that starts from a random matrix,
with ``odeint_adjoint`` on batches of random sub-trajectories (per-sample times
``(T, batch, 1)``), and compare the learned matrix with the true one.

Run: ``python -m neuralode.demo [--iters N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import neuralode
from neuralode.dynamics import LinearODEF, SpiralFunctionExample

TRUE_W = [[-0.1, -1.0], [1.0, -0.1]]


def make_data(n_points=200, t_max=6.29 * 5, noise=0.01, seed=0):
    """One trajectory of the true spiral from (0.6, 0.3), observed at n_points times with noise."""
    g = torch.Generator().manual_seed(seed)
    z0 = torch.tensor([[0.6, 0.3]])
    times = torch.linspace(0, t_max, n_points)
    with torch.no_grad():
        true = neuralode.odeint(SpiralFunctionExample(), z0, times, method="rk4", options={"max_step": 0.01})
    obs = true + noise * torch.randn(true.shape, generator=g)
    return times, true[:, 0], obs[:, 0]


def sample_batch(times, obs, batch, points, rng, min_span=2.0, max_span=5.0):
    """``batch`` random sub-trajectories of ``points`` sorted observations each: (T, B, 2), (T, B, 1)."""
    t_np = times.numpy()
    idx = np.empty((points, batch), dtype=np.int64)
    for b in range(batch):
        t0 = rng.uniform(0, t_np[-1] - max_span)
        t1 = t0 + rng.uniform(min_span, max_span)
        window = np.nonzero((t_np >= t0) & (t_np <= t1))[0]
        idx[:, b] = np.sort(rng.choice(window, size=points, replace=False))
    idx = torch.from_numpy(idx)
    return obs[idx], times[idx].unsqueeze(-1)


def plot(times, true, learned, path, obs=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    if obs is not None:
        axes[0].scatter(obs[:, 0], obs[:, 1], s=6, c="0.6", label="noisy observations")
    axes[0].plot(true[:, 0], true[:, 1], lw=2, label="true dynamics")
    axes[0].plot(learned[:, 0], learned[:, 1], "--", lw=2, label="learned dynamics")
    axes[0].set(title="Phase plane from z0 = (0.6, 0.3)", xlabel="z1", ylabel="z2")
    axes[0].legend()
    for k, name in enumerate(("z1", "z2")):
        axes[1].plot(times, true[:, k], lw=2, label=f"true {name}")
        axes[1].plot(times, learned[:, k], "--", lw=2, label=f"learned {name}")
    axes[1].set(title="Trajectories over time", xlabel="t")
    axes[1].legend(ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=600, help="training iterations")
    parser.add_argument("--batch", type=int, default=16, help="sub-trajectories per iteration")
    parser.add_argument("--points", type=int, default=10, help="observations per sub-trajectory")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("runs", "demo"), help="folder for the plot and JSON")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    times, true, obs = make_data(seed=args.seed)
    func = LinearODEF(torch.randn(2, 2) / 2.0)
    w_start = func.lin.weight.detach().clone()
    optimizer = torch.optim.Adam(func.parameters(), lr=args.lr)

    start = time.perf_counter()
    losses = []
    bar = tqdm(range(args.iters), desc="recovering the spiral", unit="it")
    for _ in bar:
        obs_b, ts_b = sample_batch(times, obs, args.batch, args.points, rng)
        z = neuralode.odeint_adjoint(func, obs_b[0], ts_b, method="rk4", options={"max_step": 0.2})
        loss = F.mse_loss(z, obs_b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.2e}")
    elapsed = time.perf_counter() - start

    w = func.lin.weight.detach()
    error = (w - torch.tensor(TRUE_W)).abs().max().item()
    with torch.no_grad():
        learned = neuralode.odeint(func, true[:1], times, method="rk4", options={"max_step": 0.01})[:, 0]
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "spiral_linear.png")
    plot(times.numpy(), true.numpy(), learned.numpy(), png, obs=obs.numpy())
    summary = {
        "first_loss": losses[0],
        "last_losses_mean": float(np.mean(losses[-20:])),
        "true_matrix": TRUE_W,
        "start_matrix": w_start.tolist(),
        "learned_matrix": w.tolist(),
        "max_abs_error": error,
        "iterations": args.iters,
        "seconds": elapsed,
    }
    with open(os.path.join(args.out, "spiral_linear.json"), "w") as fh:
        json.dump(summary, fh, indent=2)

    np.set_printoptions(precision=4, suppress=True)
    print(f"start matrix:\n{w_start.numpy()}")
    print(f"learned matrix:\n{w.numpy()}")
    print(f"true matrix:\n{np.array(TRUE_W)}")
    print(f"max-abs error of the learned matrix: {error:.4f} ({args.iters} iterations, {elapsed:.1f} s)")
    print(f"plot: {png}")
    return summary


if __name__ == "__main__":
    main()
