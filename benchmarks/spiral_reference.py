"""Fused adjoint against ``neuralode.reference`` on the paper's spiral problem.

Both solve the same Euler steps (the reference's ``h_max = 0.05`` subdivision) for a
batch of sub-trajectories of the linear spiral with per-sample times, as in the
demo's training loop, and backpropagate an MSE loss with the adjoint. We time one
forward + backward, interleaving the two so that machine noise hits both alike, and
report medians and the speed ratio.

Run: ``python -m benchmarks.spiral_reference [--repeats N] [--quick] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone

import numpy as np
import torch
import torch.nn.functional as F

import neuralode
from neuralode import reference
from neuralode.experiments.spiral_fit import sample_batch
from neuralode.experiments.spiral_linear import make_data
from neuralode.dynamics import LinearODEF

from .timing import interleaved, machine_info, median

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")


def build_problem(batch: int, points: int, device: str, seed: int = 0):
    """The demo's spiral data as a batch of sub-trajectories with per-sample times, and a random LinearODEF."""
    torch.manual_seed(seed)
    times, _, obs = make_data(seed=seed)
    obs_b, ts_b = sample_batch(times, obs, batch, points, np.random.default_rng(seed))
    func = LinearODEF(torch.randn(2, 2) / 2.0).to(device)
    return func, obs_b.to(device), ts_b.to(device)


def forward_backward(model, func, obs, ts):
    """One forward + adjoint backward of ``model`` (zero_grad, solve, MSE, backward), as a closure."""
    def run():
        func.zero_grad(set_to_none=True)
        z = model(obs[0], ts, return_whole_sequence=True)
        F.mse_loss(z, obs).backward()

    return run


def run_benchmark(batch=16, points=10, repeats=20, device="cpu", out_dir=RESULTS_DIR, tag=""):
    """Times the reference and the fused adjoint interleaved; writes and returns the result."""
    func, obs, ts = build_problem(batch, points, device)
    candidates = {
        "reference": forward_backward(reference.NeuralODE(func), func, obs, ts),
        "neuralode": forward_backward(neuralode.NeuralODE(func), func, obs, ts),
    }
    n_steps = sum(reference.n_euler_steps(ts[i], ts[i + 1]) for i in range(ts.shape[0] - 1))
    times = interleaved(candidates, repeats=repeats, warmup=3, device=device)
    med = {name: median(v) for name, v in times.items()}
    result = {
        "benchmark": "spiral_reference",
        "suite": "reference",
        "problem": {
            "dynamics": "LinearODEF 2x2 (the paper's spiral)",
            "batch": batch,
            "observations": points,
            "euler_steps_forward": n_steps,
            "method": "euler, max_step 0.05 (reference subdivision)",
            "gradient": "adjoint",
            "loss": "mse over all observations",
        },
        "repeats": repeats,
        "median_seconds": med,
        "all_seconds": times,
        "speedup_neuralode_over_reference": med["reference"] / med["neuralode"],
        "machine": machine_info(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": f"python -m benchmarks.spiral_reference --repeats {repeats} --batch {batch} --points {points} --device {device}",
    }
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"spiral_reference_{device}{tag}.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"spiral, Euler {n_steps} steps forward, batch {batch}, {points} observations, forward+backward with the adjoint")
    print(f"{'implementation':<16}{'median ms':>12}")
    for name, s in med.items():
        print(f"{name:<16}{s * 1e3:>12.2f}")
    print(f"speed ratio neuralode / reference: {result['speedup_neuralode_over_reference']:.2f}x  ({path})")
    return result


# --------------------------------------------------------------------------- suite interface


def run(quick: bool = False, device: str = "cpu", out_dir: str = RESULTS_DIR, tiny: bool = False, **kw) -> dict:
    """The suite interface of ``python -m benchmarks``: the CLI's default measurement
    (batch 16, 10 observations, 20 repeats; ``quick``: 5; ``tiny``: 2, for smoke tests).
    Writes ``spiral_reference_<device>.json`` and returns its dict."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda: torch sees no CUDA device")
    repeats = 2 if tiny else 5 if quick else 20
    return run_benchmark(repeats=repeats, device=device, out_dir=out_dir)


def _machine_label(m: dict) -> str:
    where = m.get("gpu") if m.get("device", "").startswith("cuda") and m.get("gpu") else m.get("processor", "?")
    return f"{where}, torch {m.get('torch', '?')}, {m.get('threads', '?')} threads"


def markdown_many(results) -> str:
    """One table over several ``spiral_reference_*.json`` results (machines, batches)."""
    results = sorted(
        results,
        key=lambda r: (r["machine"].get("device", ""), r["machine"].get("threads", 0), r["problem"]["batch"]),
    )
    lines = [
        "The paper's spiral (`LinearODEF`, 2x2), a batch of random sub-trajectories with per-sample "
        "times `(T, batch, 1)` as in the demo's training loop, Euler with the reference's subdivision "
        "(`max_step = 0.05`: both take exactly the same steps), MSE over all observations, one "
        "forward + backward with the adjoint. `reference` is `neuralode.reference.NeuralODE` (the "
        "paper-tutorial algorithm in plain PyTorch), `neuralode` is `neuralode.NeuralODE` (fused "
        "kernels, loops in C++). Medians over repeats after 3 warm-up calls, the two interleaved.",
        "",
        "| machine | device | batch | Euler steps (fwd) | reference ms | neuralode ms | speed ratio | date |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        med, m = r["median_seconds"], r["machine"]
        lines.append(
            f"| {_machine_label(m)} | {m.get('device', '?')} | {r['problem']['batch']} | "
            f"{r['problem']['euler_steps_forward']} | {med['reference'] * 1e3:.2f} | {med['neuralode'] * 1e3:.2f} | "
            f"{r['speedup_neuralode_over_reference']:.2f}x | {r['date'][:10]} |"
        )
    lines += ["", "Commands:", ""]
    for r in results:
        where = f" (`{r['_path']}`)" if r.get("_path") else ""
        lines.append(f"- `{r['command']}`{where}")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The RESULTS.md section of this benchmark's results."""
    return markdown_many([result])


def main(argv=None):
    """The command line of this benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="5 repeats")
    parser.add_argument("--out", default=RESULTS_DIR)
    parser.add_argument("--tag", default="", help="suffix of the JSON file name")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else args.repeats
    return run_benchmark(args.batch, args.points, repeats, args.device, args.out, args.tag)


if __name__ == "__main__":
    main()
