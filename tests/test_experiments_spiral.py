"""The spiral experiments and the experiments' command line: a few iterations each, the
loss falls, the outputs are written, bad options give clear errors."""

import json

import pytest
import torch

from neuralode.experiments import EXPERIMENTS, spiral_linear, spiral_nonlinear
from neuralode.experiments.__main__ import main as experiments_main
from neuralode.experiments.spiral_fit import sample_batch
from json_checks import finite_numbers


def test_spiral_linear_smoke(tmp_path):
    summary = spiral_linear.main(["--iters", "60", "--snapshots", "3", "--out", str(tmp_path), "--no-progress"])
    for name in ("spiral_linear.png", "spiral_linear_snapshots.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "spiral_linear.json").read_text())
    assert saved["max_abs_error"] == summary["max_abs_error"] and finite_numbers(saved)
    assert saved["snapshot_iterations"] == [0, 30, 60]
    assert summary["last_losses_mean"] < summary["first_loss"]
    start_error = (torch.tensor(summary["start_matrix"]) - torch.tensor(spiral_linear.TRUE_W)).abs().max().item()
    assert summary["max_abs_error"] < start_error
    assert summary["nfe_forward_per_iteration"] > 0 and summary["nfe_backward_per_iteration"] > 0


@pytest.mark.parametrize("time_dependent", [False, True])
def test_spiral_nonlinear_smoke(tmp_path, time_dependent):
    argv = ["--iters", "40", "--hidden", "16", "--snapshots", "2", "--out", str(tmp_path), "--no-progress"]
    summary = spiral_nonlinear.main(argv + (["--time-dependent"] if time_dependent else []))
    for name in ("spiral_nonlinear.png", "spiral_nonlinear_snapshots.png", "spiral_nonlinear.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "spiral_nonlinear.json").read_text())
    assert finite_numbers(saved)
    assert ("time_invariant=False" in saved["model"]) == time_dependent
    assert summary["last_losses_mean"] < summary["first_loss"]
    assert summary["trajectory_error_after"]["rmse"] < summary["trajectory_error_before"]["rmse"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--iters", "0"], "--iters must be at least 1"),
        (["--points", "1"], "--points must be at least 2"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--hidden", "0"], "--hidden must be at least 1"),
    ],
)
def test_spiral_bad_options(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        spiral_nonlinear.main(argv + ["--out", str(tmp_path)])
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_device_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="torch sees no CUDA device"):
        spiral_linear.main(["--iters", "1", "--device", "cuda", "--out", str(tmp_path)])


def test_sample_batch_rejects_windows_too_short():
    times = torch.linspace(0, 10, 20)
    obs = torch.zeros(20, 2)
    import numpy as np

    with pytest.raises(ValueError, match="points=15"):
        sample_batch(times, obs, batch=2, points=15, rng=np.random.default_rng(0))


def test_command_line_lists_and_rejects(capsys):
    assert experiments_main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in out
    assert experiments_main(["no-such-experiment"]) == 2
    assert "unknown experiment 'no-such-experiment'" in capsys.readouterr().err
