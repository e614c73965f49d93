"""The bouncing-ball experiment: its data against the closed form, its gradients through
the bounces against the closed form's, a smoke run, and ``--quick`` recovering g and e."""

import json
import math

import pytest
import torch

from neuralode.experiments import bouncing_ball as bb
from json_checks import finite_numbers


def closed_form_height(t: float, g: float, e: float, h0: float, taus) -> float:
    """The ideal ball's height: ``h0 - g t^2 / 2`` until ``tau_1``, then in flight k (from
    ``tau_k``, upward speed ``e^k v1``, ``v1 = sqrt(2 g h0)``) ``e^k v1 s - g s^2 / 2``."""
    k = sum(tau < t for tau in taus)
    if k == 0:
        return h0 - 0.5 * g * t * t
    s = t - taus[k - 1]
    return e ** k * math.sqrt(2 * g * h0) * s - 0.5 * g * s * s


def test_data_matches_the_closed_form():
    data = bb.make_data(bounces=5, points=40)
    taus = bb.closed_form_bounce_times(bb.TRUE_G, bb.TRUE_E, bb.H0, 5)
    assert taus[0] == pytest.approx(math.sqrt(2 * bb.H0 / bb.TRUE_G))
    # LIFT (1e-7 m) delays the k-th bounce by a few 1e-8 s per flight (1.4e-7 s by the
    # fifth); the roots are bracketed to ~1e-10 s.
    assert data["bounce_times"].tolist() == pytest.approx(taus, abs=1e-6)
    assert len(data["times"]) == 40 and 0 < data["times"][0] and data["times"][-1] < taus[-1]
    expected = [closed_form_height(float(t), bb.TRUE_G, bb.TRUE_E, bb.H0, taus) for t in data["times"]]
    assert data["heights"].tolist() == pytest.approx(expected, abs=1e-6)


def test_bounce_time_gradients_match_the_closed_form():
    # tau_n = sqrt(2 h0 / g) (1 + 2 sum_{k=1}^{n-1} e^k): d tau_n / d log g = -tau_n / 2 and
    # d tau_n / d logit e = e (1 - e) sqrt(2 h0 / g) 2 sum_{k=1}^{n-1} k e^(k-1).
    g, e, n = 8.5, 0.7, 4
    model = bb.BouncingBall(g, e)
    times, _ = bb.simulate_bounces(model, n)
    fall = math.sqrt(2 * bb.H0 / g)
    for i, tau in enumerate(times, start=1):
        # The first fall does not involve e at all (its gradient is None, "unused").
        d_log_g, d_logit_e = torch.autograd.grad(tau, (model.log_g, model.logit_e), retain_graph=True,
                                                 allow_unused=True)
        expected_e = e * (1 - e) * fall * 2 * sum(k * e ** (k - 1) for k in range(1, i))
        assert d_log_g.item() == pytest.approx(-tau.item() / 2, rel=1e-5, abs=1e-7)
        assert (0.0 if d_logit_e is None else d_logit_e.item()) == pytest.approx(expected_e, rel=1e-5, abs=1e-7)


def test_bouncing_ball_smoke(tmp_path):
    summary = bb.main(["--iters", "3", "--bounces", "3", "--points", "12", "--out", str(tmp_path), "--no-progress"])
    assert (tmp_path / "bouncing_ball.png").stat().st_size > 0
    saved = json.loads((tmp_path / "bouncing_ball.json").read_text())
    assert finite_numbers(saved) and saved["learned"] == summary["learned"]
    assert 1 <= saved["iterations"] <= 3 and len(saved["losses"]) == saved["iterations"] + 1
    assert summary["final_loss"] < summary["first_loss"]
    start_error = abs(bb.START_G / bb.TRUE_G - 1)
    assert summary["relative_error"]["g"] < start_error


def test_quick_recovers_gravity_and_restitution(tmp_path):
    summary = bb.main(["--quick", "--out", str(tmp_path), "--no-progress"])
    assert summary["start"] == {"g": 7.0, "e": 0.6}
    assert summary["relative_error"]["g"] < 0.02 and summary["relative_error"]["e"] < 0.02
    assert summary["learned_bounce_times"] == pytest.approx(summary["observed_bounce_times"], abs=1e-3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--iters", "0"], "--iters must be at least 1"),
        (["--bounces", "0"], "--bounces must be at least 1"),
        (["--lr", "0"], "--lr must be positive"),
        (["--start-e", "1.5"], "--start-e must be between 0 and 1"),
        (["--start-g", "-1"], "--start-g must be positive"),
    ],
)
def test_bad_options(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        bb.main(argv + ["--out", str(tmp_path)])
    assert message in capsys.readouterr().err
