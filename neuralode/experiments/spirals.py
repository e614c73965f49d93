"""Noisy 2-D Archimedean spirals observed at irregular times: the latent-ODE data set.

Spiral ``i`` turns at unit angular speed from a random start angle ``theta0_i``:
``theta(t) = theta0_i + t`` and radius ``r(t) = a + b theta(t)`` (an Archimedean spiral,
growing outwards). A counter-clockwise spiral is ``(r cos theta, r sin theta)``, a
clockwise one its mirror image ``(r cos theta, -r sin theta)``. Exactly half of the
spirals are clockwise. Each spiral is observed, with Gaussian noise of a known std, at
``n_obs`` irregular times in the window ``[0, window]`` and at ``n_future`` irregular
times in ``(window, 2 window]``, the continuation that the models must extrapolate.
The irregular times are sorted random subsets of a fine uniform grid, so every spiral
has its own strictly increasing times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class SpiralData:
    """A set of spirals, all tensors indexed by spiral first.

    Attributes:
        times: ``(n, n_obs + n_future)`` observation times, strictly increasing per spiral;
            the first ``n_obs`` lie in ``[0, window]``, the rest in ``(window, 2 window]``.
        true: ``(n, n_obs + n_future, 2)`` noise-free positions at those times.
        obs: ``(n, n_obs + n_future, 2)`` the positions plus N(0, noise^2) noise.
        clockwise: ``(n,)`` bool, the direction of each spiral.
        theta0: ``(n,)`` start angle of each spiral (for drawing the true curve).
        n_obs: observations in the window (what the models may see).
        window, noise, a, b: the window length, noise std and spiral constants.
    """

    times: Tensor
    true: Tensor
    obs: Tensor
    clockwise: Tensor
    theta0: Tensor
    n_obs: int
    window: float
    noise: float
    a: float
    b: float

    def __len__(self) -> int:
        return self.times.shape[0]

    def subset(self, index: Tensor) -> "SpiralData":
        """The spirals at ``index`` (a LongTensor), with the same constants."""
        return replace(
            self, times=self.times[index], true=self.true[index], obs=self.obs[index],
            clockwise=self.clockwise[index], theta0=self.theta0[index],
        )


def spiral_position(theta0: Tensor, t: Tensor, clockwise: Tensor, a: float, b: float) -> Tensor:
    """Positions ``(..., 2)`` at times ``t`` (``(n, k)``) of spirals with start angles
    ``theta0`` and directions ``clockwise`` (``(n,)``): ``theta = theta0 + t``,
    ``r = a + b theta``, ``(r cos theta, +-r sin theta)``."""
    theta = theta0[:, None] + t
    r = a + b * theta
    sign = torch.where(clockwise, -1.0, 1.0).to(t.dtype)[:, None]
    return torch.stack([r * torch.cos(theta), sign * r * torch.sin(theta)], dim=-1)


def make_spirals(
    n_spirals: int = 1000,
    n_obs: int = 50,
    n_future: int = 25,
    *,
    window: float = 4.0,
    noise: float = 0.1,
    grid: int = 400,
    a: float = 0.5,
    b: float = 0.3,
    theta_max: float = 4 * math.pi,
    seed: int = 0,
) -> SpiralData:
    """``n_spirals`` random spirals (``n_spirals // 2`` clockwise, in random order), start
    angles uniform in ``[0, theta_max]``, each observed at ``n_obs`` irregular times in
    ``[0, window]`` and ``n_future`` in ``(window, 2 window]`` drawn without replacement from
    a uniform grid of ``2 (grid // 2) + 1`` points over ``[0, 2 window]``, with observation
    noise of std ``noise``."""
    if n_spirals < 2:
        raise ValueError(f"n_spirals must be at least 2 (one of each direction), got {n_spirals}")
    if n_obs < 1 or n_future < 1:
        raise ValueError(f"n_obs and n_future must be at least 1, got {n_obs} and {n_future}")
    if not window > 0 or not noise >= 0:
        raise ValueError(f"window must be positive and noise non-negative, got {window} and {noise}")
    half = grid // 2
    if n_obs > half + 1 or n_future > half:
        raise ValueError(
            f"n_obs={n_obs} and n_future={n_future} must fit in the grid's halves "
            f"({half + 1} and {half} points); raise grid to at least {2 * max(n_obs, n_future)}"
        )
    rng = np.random.default_rng(seed)
    clockwise = np.zeros(n_spirals, dtype=bool)
    clockwise[: n_spirals // 2] = True
    rng.shuffle(clockwise)
    theta0 = rng.uniform(0.0, theta_max, size=n_spirals)
    # grid[0:half] lies in [0, window), grid[half] = window, grid[half+1:] in (window, 2 window]:
    # the window's observations come from grid[: half + 1], the future's from grid[half + 1 :].
    fine = np.linspace(0.0, 2 * window, 2 * half + 1)
    index = np.empty((n_spirals, n_obs + n_future), dtype=np.int64)
    for i in range(n_spirals):
        index[i, :n_obs] = np.sort(rng.choice(half + 1, size=n_obs, replace=False))
        index[i, n_obs:] = half + 1 + np.sort(rng.choice(half, size=n_future, replace=False))
    times = torch.from_numpy(fine[index]).float()
    cw, th0 = torch.from_numpy(clockwise), torch.from_numpy(theta0).float()
    true = spiral_position(th0, times, cw, a, b)
    obs = true + noise * torch.from_numpy(rng.standard_normal(true.shape)).float()
    return SpiralData(times, true, obs, cw, th0, n_obs, float(window), float(noise), float(a), float(b))


def split(data: SpiralData, test_fraction: float, seed: int = 0) -> tuple:
    """``(train, test)``: a random ``test_fraction`` of each direction's spirals held out
    (stratified, so both sets hold both directions when each direction has two spirals)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for members in (torch.nonzero(data.clockwise).flatten(), torch.nonzero(~data.clockwise).flatten()):
        members = members[torch.randperm(len(members), generator=g)]
        n_test = min(max(1, round(test_fraction * len(members))), len(members) - 1) if len(members) > 1 else 0
        test.append(members[:n_test])
        train.append(members[n_test:])
    return data.subset(torch.cat(train)), data.subset(torch.cat(test))


def _gather(data: SpiralData, rows: np.ndarray, index: np.ndarray) -> tuple:
    """Observations ``(points, batch, 2)`` and times ``(points, batch, 1)`` of spirals
    ``rows`` at observation indices ``index`` (``(batch, points)``)."""
    rows_t, index_t = torch.from_numpy(rows)[:, None], torch.from_numpy(index)
    obs = data.obs[rows_t, index_t].transpose(0, 1).contiguous()
    times = data.times[rows_t, index_t].transpose(0, 1).unsqueeze(-1).contiguous()
    return obs, times


def sample_batch(data: SpiralData, batch: int, points: int, rng: np.random.Generator) -> tuple:
    """A training batch: ``batch`` distinct random spirals, each seen through its own
    random sub-sequence of ``points`` of its window's observations (sorted, so the
    per-sample times increase). Returns observations ``(points, batch, 2)`` and times
    ``(points, batch, 1)``."""
    if not 1 <= batch <= len(data):
        raise ValueError(f"batch must be in [1, {len(data)}] (the number of spirals), got {batch}")
    if not 2 <= points <= data.n_obs:
        raise ValueError(f"points must be in [2, {data.n_obs}] (the observations per window), got {points}")
    rows = rng.choice(len(data), size=batch, replace=False)
    index = np.sort(np.stack([rng.choice(data.n_obs, size=points, replace=False) for _ in rows]), axis=1)
    return _gather(data, rows, index)


def seed_sequences(data: SpiralData, points: int, seed: int = 0) -> tuple:
    """The evaluation input: for every spiral its first observation and ``points - 1``
    random others of its window (fixed by ``seed``). Starting every seed at the window's
    first observation lets a model that runs forward from it predict every later time.
    Returns observations ``(points, n, 2)`` and times ``(points, n, 1)``."""
    if not 2 <= points <= data.n_obs:
        raise ValueError(f"points must be in [2, {data.n_obs}] (the observations per window), got {points}")
    rng = np.random.default_rng(seed)
    rest = np.stack([1 + np.sort(rng.choice(data.n_obs - 1, size=points - 1, replace=False)) for _ in range(len(data))])
    index = np.concatenate([np.zeros((len(data), 1), dtype=np.int64), rest], axis=1)
    return _gather(data, np.arange(len(data)), index)
