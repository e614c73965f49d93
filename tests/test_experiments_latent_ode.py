"""The latent-ODE experiment: its spiral data, its ELBO, a tiny end-to-end run and its option checks."""

import json
import math

import numpy as np
import pytest
import torch

import neuralode
from neuralode.experiments import latent_ode
from neuralode.experiments.spirals import make_spirals, sample_batch, seed_sequences, split

TINY = ["--spirals", "40", "--obs", "8", "--future", "4", "--points", "6", "--batch", "16",
        "--ode-hidden", "16", "--encoder-hidden", "12", "--rnn-hidden", "12", "--rnn-readout-hidden", "12",
        "--no-progress"]


@pytest.fixture(autouse=True)
def keep_threads():
    """The experiment sets torch's thread count (--threads); give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_spirals_half_clockwise_with_increasing_per_sample_times():
    data = make_spirals(30, 10, 5, window=3.0, grid=40, seed=3)
    assert int(data.clockwise.sum()) == 15
    steps = data.times[:, 1:] - data.times[:, :-1]
    assert bool((steps > 0).all())
    assert bool((data.times[:, :10] <= 3.0).all()) and bool((data.times[:, 10:] > 3.0).all())
    # The label matches the geometry: the angular momentum x dy - y dx of consecutive true
    # positions is negative for clockwise spirals and positive for counter-clockwise ones.
    x, y = data.true[..., 0], data.true[..., 1]
    turn = x[:, :-1] * y[:, 1:] - y[:, :-1] * x[:, 1:]
    assert bool((turn[data.clockwise] < 0).all()) and bool((turn[~data.clockwise] > 0).all())

    train, test = split(data, 0.2, seed=0)
    assert len(train) == 24 and len(test) == 6
    obs, times = sample_batch(train, 7, 4, np.random.default_rng(0))
    assert obs.shape == (4, 7, 2) and times.shape == (4, 7, 1)
    assert bool((times[1:] > times[:-1]).all())
    assert not bool((times == times[:, :1]).all())  # every sample has its own times
    seed_obs, seed_times = seed_sequences(test, 4)
    assert seed_times.shape == (4, 6, 1)
    assert torch.equal(seed_times[0, :, 0], test.times[:, 0])  # seeds start at the window's first observation
    assert bool((seed_times[1:] > seed_times[:-1]).all())


def test_negative_elbo_matches_torch_distributions():
    torch.manual_seed(0)
    pred, obs = torch.randn(5, 3, 2), torch.randn(5, 3, 2)
    mean, logvar = torch.randn(3, 4), torch.randn(3, 4)
    loss, nll, kl = latent_ode.negative_elbo(pred, obs, mean, logvar, noise=0.3)
    dist = torch.distributions
    want_nll = -dist.Normal(pred, 0.3).log_prob(obs).sum(dim=(0, 2)).mean()
    want_kl = dist.kl_divergence(dist.Normal(mean, (0.5 * logvar).exp()), dist.Normal(0.0, 1.0)).sum(-1).mean()
    assert torch.allclose(nll, want_nll, rtol=1e-5) and torch.allclose(kl, want_kl, rtol=1e-5)
    assert torch.allclose(loss, want_nll + want_kl, rtol=1e-5)


def test_latent_ode_smoke(tmp_path):
    summary = latent_ode.main(TINY + ["--iters", "40", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "latent_ode.json").read_text())
    for name in ("reconstruction", "homotopy", "training"):
        assert (tmp_path / f"latent_ode_{name}.png").stat().st_size > 0
    for key in ("reconstruction_mse_ode", "extrapolation_mse_ode", "extrapolation_mse_rnn", "seed_mse_rnn",
                "solver_error_vs_reference"):
        assert math.isfinite(saved[key]) and saved[key] == pytest.approx(summary[key])
    assert saved["nfe_per_iteration"]["forward"] > 0 and saved["nfe_per_iteration"]["backward"] > 0
    assert saved["steps"] == "fixed"  # rk4_classic, the default: no error control
    for label, history in saved["history"].items():
        elbo = history["elbo"]
        assert len(elbo) == 40 and all(math.isfinite(v) for v in elbo)
        # The ELBO rises: the loss of the last iterations is below that of the first.
        assert np.mean(elbo[-5:]) > np.mean(elbo[:5]), label


@pytest.mark.parametrize("shared", [False, True])
def test_shared_steps_flag_reaches_every_per_sample_solve_and_is_recorded(tmp_path, monkeypatch, shared):
    calls = []
    odeint = neuralode.odeint

    def spy(func, y0, t, **kwargs):
        calls.append((t.dim(), kwargs.get("options")))
        return odeint(func, y0, t, **kwargs)

    monkeypatch.setattr(neuralode, "odeint", spy)
    argv = TINY + ["--iters", "4", "--skip-rnn", "--method", "dopri5", "--out", str(tmp_path)]
    summary = latent_ode.main(argv + (["--shared-steps"] if shared else []))
    saved = json.loads((tmp_path / "latent_ode.json").read_text())
    want = "shared" if shared else "per-sample"
    assert saved["steps"] == summary["steps"] == want and saved["reference_solver"]["steps"] == want
    assert saved["config"]["shared_steps"] is shared
    assert saved["nfe_per_iteration"]["forward"] > 0 and saved["nfe_per_iteration"]["backward"] > 0
    per_sample_calls = [options for dim, options in calls if dim == 3]
    assert per_sample_calls and any(dim == 1 for dim, _ in calls)  # the homotopy plot solves on shared times
    # Shared steps: every per-sample solve asks for them; per-sample steps: the library's default.
    assert all(options == ({"per_sample": False} if shared else None) for options in per_sample_calls)
    assert all(options is None for dim, options in calls if dim == 1)


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--latent-dim", "0"], "--latent-dim"),
        (["--batch", "-3"], "--batch"),
        (["--spirals", "2"], "--spirals"),
        (["--points", "1"], "--points"),
        (["--points", "9"], "--points"),
        (["--noise", "0"], "--noise"),
        (["--readout-hidden", "-1"], "--readout-hidden"),
        (["--batch", "100"], "--batch"),
        (["--gradient", "checkpoint"], "--gradient"),
        (["--shared-steps"], "--shared-steps"),  # the default rk4_classic has no step control
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_options_are_named(tmp_path, capsys, args, flag):
    with pytest.raises(SystemExit) as exc:
        latent_ode.main(TINY + ["--iters", "1", "--out", str(tmp_path)] + args)
    message = f"{exc.value.code} {capsys.readouterr().err}"
    assert flag in message
