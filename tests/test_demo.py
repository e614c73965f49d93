"""The demo runs end to end in a few iterations: the loss falls and its outputs are written."""

import json
import os

import torch

from neuralode import demo


def test_demo_smoke(tmp_path):
    summary = demo.main(["--iters", "40", "--out", str(tmp_path)])
    assert os.path.getsize(tmp_path / "spiral_linear.png") > 0
    saved = json.loads((tmp_path / "spiral_linear.json").read_text())
    assert saved["max_abs_error"] == summary["max_abs_error"]
    assert summary["last_losses_mean"] < summary["first_loss"]
    start_error = (torch.tensor(summary["start_matrix"]) - torch.tensor(demo.TRUE_W)).abs().max().item()
    assert summary["max_abs_error"] < start_error
