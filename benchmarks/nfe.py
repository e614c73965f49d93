"""The paper's Figure 3: function evaluations (NFE) of the MNIST ODE-Net.

Chen et al. (2018), Figure 3, "Statistics of a trained ODE-Net": (a) the forward NFE
grows as the tolerance tightens, (b) the forward time grows with the forward NFE,
(c) the adjoint's backward NFE is about half the forward NFE, (d) the forward NFE
grows during training. This suite measures the four on neuralode's solver.

The model is the paper tutorial's MNIST classifier:

* down-sampling ``Conv2d(1, 64, 3, 1)``, ``BatchNorm2d(64)``, ReLU,
  ``Conv2d(64, 64, 4, 2, 1)``, BN, ReLU, ``Conv2d(64, 64, 4, 2, 1)``: ``(B, 64, 6, 6)``;
* the ODE block ``neuralode.dynamics.ConvODEF(64)`` solved from t = 0 to 1 with
  dopri5 through ``neuralode.odeint`` (rtol = atol = the tolerance), the ODEF passed
  as it is;
* the head: ``BatchNorm2d(64)``, adaptive average pooling, ``Linear(64, 10)`` (the
  tutorial's, without a ReLU after the norm); cross-entropy loss.

Procedure (the panels use ``neuralode.SolverStats``):

1. (d) With ``data_dir``: train from a seeded initialization with Adam (lr 1e-3,
   batch 32, shuffled MNIST training set) through the continuous adjoint (the paper's
   gradient, full error norm) at rtol = atol = ``TRAIN_TOL``, recording every
   iteration's forward NFE, backward NFE and loss (tqdm shows the progress), then the
   accuracy on test images (BatchNorm in eval mode). Without ``data_dir`` this panel
   is skipped (``result["skipped"]["training"]`` says why), except with ``tiny`` where
   it trains on random images.
2. (a)-(c) On the (trained, else freshly initialized) model and one fixed batch (the
   first test images, else seeded random images and labels): the down-sampled state
   ``z0`` is computed once; for each tolerance the forward solve alone is timed under
   ``no_grad`` (tolerance after tolerance within each repeat, median of the repeats
   after a warm-up: panel b) and its NFE counted (panel a, which also shows the NFE
   of the model at initialization on the same batch); one forward + backward with
   ``gradient="adjoint"`` and the full norm, and one with
   ``adjoint_options={"norm": "seminorm"}``, give the backward NFE (panel c). The
   numerical error of ``z(1)`` is measured against a float64 dopri5 solve at 1e-3
   times the tightest tolerance (at least 1e-8). BatchNorm uses batch statistics
   (training mode) in every solve: the dynamics the model was trained with.

Sizes: default 9 tolerances (1e-1 to 1e-5, half decades), 3000 training iterations,
15 timing repeats, accuracy on the 10,000 test images; ``--quick``: 5 tolerances
(decades), 400 iterations, 10 repeats, 2,000 test images (about 1.5 minutes on one
core); ``--tiny``: a smoke test (width 8, batch 4, 2 tolerances, 3 iterations on
random images, a few seconds). On CPU the run uses one intra-op thread unless
``--threads`` says otherwise (see ``DEFAULT_THREADS``).

Run::

    python -m benchmarks.nfe [--quick] [--tiny] [--device cpu|cuda] [--out DIR]
                             [--data-dir MNIST_DIR] [--iters N] [--train-tol TOL]
                             [--threads N] [--seed N]

It writes ``DIR/nfe_<device>.json`` and ``DIR/nfe_<device>.png`` (the 2x2 figure;
default ``DIR``: ``benchmarks/results``) and prints a markdown section
(:func:`markdown`). ``MNIST_DIR`` holds the four standard IDX files, raw or ``.gz``
(see ``neuralode.data.mnist``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import neuralode
from neuralode.data import MNISTFormatError, MNISTNotFoundError, mnist_tensors
from neuralode.dynamics import ConvODEF
from neuralode.experiments.common import pyplot, require_extra
from neuralode.experiments.mnist_models import downsampling

from .timing import interleaved, machine_info, sync

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(BENCH_DIR, "results")

METHOD = "dopri5"
TRAIN_TOL = 1e-3
LR = 1e-3
BATCH = 32
#: Tolerances of the sweep (rtol = atol), loosest first.
TOLS_FULL = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
TOLS_QUICK = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
TOLS_TINY = (1e-1, 1e-3)
ITERS_FULL = 3000
ITERS_QUICK = 400
ITERS_TINY = 3
REPEATS_FULL = 15
REPEATS_QUICK = 10
REPEATS_TINY = 1
TEST_IMAGES_FULL = 10000
TEST_IMAGES_QUICK = 2000
#: The reference z(1) of the numerical error: float64 dopri5 at rtol = atol =
#: max(REF_TOL_FACTOR * the tightest tolerance, REF_TOL_MIN). (The ReLUs make f only
#: piecewise smooth: dopri8 needs far more evaluations than dopri5 here.)
REF_METHOD, REF_TOL_FACTOR, REF_TOL_MIN = "dopri5", 1e-3, 1e-8
#: Intra-op threads on CPU. One: the work per evaluation is small (batch 32 of
#: 64 x 6 x 6), and on a busy 2-core machine two OpenMP threads made each solve up to
#: 80x slower (0.05 s -> 4 s) when another process held a core.
DEFAULT_THREADS = 1


# --------------------------------------------------------------------------- model


class ODENetMNIST(nn.Module):
    """The paper tutorial's MNIST ODE-Net with ``width`` channels (64 in the paper).

    The down-sampling is the mnist experiment's; the solve is dopri5 at a given
    tolerance with the ODEF passed as it is, and the head is the tutorial's (no ReLU
    after its norm), as this suite's results were measured with.
    """

    def __init__(self, width: int = 64):
        super().__init__()
        w = width
        self.downsampling = downsampling(w)
        self.odef = ConvODEF(w)
        self.head = nn.Sequential(nn.BatchNorm2d(w), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(w, 10))

    def solve(self, z0: Tensor, tol: float, gradient: str = "backprop", norm: str = "full", stats=None) -> Tensor:
        """``z(1)`` of the ODE block from ``z0`` (dopri5, rtol = atol = ``tol``)."""
        t = torch.tensor([0.0, 1.0], dtype=z0.dtype, device=z0.device)
        kwargs = {"adjoint_options": {"norm": norm}} if gradient == "adjoint" else {}
        ys = neuralode.odeint(self.odef, z0, t, method=METHOD, rtol=tol, atol=tol, gradient=gradient, stats=stats, **kwargs)
        return ys[-1]

    def forward(self, x: Tensor, tol: float = TRAIN_TOL, gradient: str = "adjoint", stats=None) -> Tensor:
        return self.head(self.solve(self.downsampling(x), tol, gradient, stats=stats))


# --------------------------------------------------------------------------- helpers


def _rank(xs: List[float]) -> np.ndarray:
    order = np.argsort(np.asarray(xs), kind="stable")
    ranks = np.empty(len(xs))
    ranks[order] = np.arange(len(xs))
    return ranks


def _spearman(xs: List[float], ys: List[float]) -> Optional[float]:
    if len(xs) < 2:
        return None
    rx, ry = _rank(xs), _rank(ys)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _command(quick: bool, tiny: bool, device: str, data_dir, iters, out_dir, train_tol=None) -> str:
    parts = ["python -m benchmarks.nfe"]
    if quick:
        parts.append("--quick")
    if tiny:
        parts.append("--tiny")
    parts.append(f"--device {device}")
    if data_dir is not None:
        parts.append("--data-dir MNIST_DIR")  # the location is the caller's, not part of the result
    if iters is not None:
        parts.append(f"--iters {iters}")
    if train_tol is not None:
        parts.append(f"--train-tol {train_tol:g}")
    if os.path.abspath(out_dir) != os.path.abspath(RESULTS_DIR):
        parts.append("--out OUT")
    return " ".join(parts)


def _plot_path_for_result(png: str) -> str:
    """The figure's path as recorded: relative to ``benchmarks/`` when it lies below it."""
    rel = os.path.relpath(os.path.abspath(png), BENCH_DIR)
    return png if rel.startswith("..") else rel.replace(os.sep, "/")


# --------------------------------------------------------------------------- training (d)


def _batches(n: int, batch: int, gen: torch.Generator):
    """Endless shuffled index batches over ``n`` examples (a new permutation each epoch)."""
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1, batch):
            yield perm[i : i + batch]


def train(model, images: Tensor, labels: Tensor, iters: int, batch: int, tol: float, device: str, seed: int, progress=True):
    """Adam training through the adjoint; one record per iteration."""
    tqdm = require_extra("tqdm").tqdm

    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(seed)
    batches = _batches(images.shape[0], batch, gen)
    records = []
    model.train()
    bar = tqdm(range(1, iters + 1), desc="nfe: training", unit="it", disable=not progress, file=sys.stderr)
    for it in bar:
        idx = next(batches)
        x, y = images[idx].to(device), labels[idx].to(device)
        stats = neuralode.SolverStats()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(x, tol=tol, gradient="adjoint", stats=stats)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        sync(device)
        seconds = time.perf_counter() - start
        acc = float((logits.argmax(1) == y).float().mean())
        records.append(
            {
                "iteration": it,
                "nfe_forward": stats.nfe_forward,
                "nfe_backward": stats.nfe_backward,
                "loss": float(loss.detach()),
                "batch_accuracy": acc,
                "seconds": seconds,
            }
        )
        bar.set_postfix(nfe=stats.nfe_forward, nfe_bwd=stats.nfe_backward, loss=f"{records[-1]['loss']:.3f}")
    bar.close()
    return records


@torch.no_grad()
def test_accuracy(model, images: Tensor, labels: Tensor, tol: float, device: str, batch: int = 500) -> float:
    """Fraction of ``images`` classified as ``labels`` (BatchNorm in eval mode, dopri5 at ``tol``)."""
    model.eval()
    correct = 0
    for i in range(0, images.shape[0], batch):
        x, y = images[i : i + batch].to(device), labels[i : i + batch].to(device)
        correct += int((model(x, tol=tol, gradient="backprop").argmax(1) == y).sum())
    model.train()
    return correct / images.shape[0]


# --------------------------------------------------------------------------- sweep (a)-(c)


@torch.no_grad()
def forward_nfe(model, x: Tensor, tols) -> Dict[float, int]:
    """Forward NFE of the ODE block for each tolerance on the batch ``x`` (no timing)."""
    model.train()
    z0 = model.downsampling(x)
    out = {}
    for tol in tols:
        stats = neuralode.SolverStats()
        model.solve(z0, tol, stats=stats)
        out[tol] = stats.nfe_forward
    return out


def tolerance_sweep(model, x: Tensor, y: Tensor, tols, repeats: int, device: str):
    """Panels (a)-(c): per tolerance, the forward NFE and time, the error of z(1), and the backward NFE with the full norm and the seminorm."""
    model.train()
    with torch.no_grad():
        z0 = model.downsampling(x).detach()
    # Reference z(1): float64 at a tight tolerance (a copy, so that the model's
    # BatchNorm statistics are not touched by it).
    ref_tol = max(REF_TOL_FACTOR * min(tols), REF_TOL_MIN)
    ref_odef = copy.deepcopy(model.odef).double()
    with torch.no_grad():
        t64 = torch.tensor([0.0, 1.0], dtype=torch.float64, device=z0.device)
        ref_stats = neuralode.SolverStats()
        z_ref = neuralode.odeint(ref_odef, z0.double(), t64, method=REF_METHOD, rtol=ref_tol, atol=ref_tol, stats=ref_stats)[-1]
    ref_scale = float(z_ref.abs().max())

    # Panel (b): the forward solves alone, tolerance after tolerance within each repeat
    # (so that the drifts of a shared machine hit all tolerances alike).
    def forward_only(tol):
        def call():
            with torch.no_grad():
                model.solve(z0, tol)

        return call

    times = interleaved({tol: forward_only(tol) for tol in tols}, repeats=repeats, warmup=1, device=device)

    rows = []
    for tol in tols:
        stats = neuralode.SolverStats()
        with torch.no_grad():
            z1 = model.solve(z0, tol, stats=stats)
        err = (z1.double() - z_ref).abs().max().item()
        err_rel = float((z1.double() - z_ref).norm() / z_ref.norm())
        secs = times[tol]

        row = {
            "tol": tol,
            "nfe_forward": stats.nfe_forward,
            "forward_seconds": statistics.median(secs),
            "forward_seconds_all": secs,
            "steps_accepted": stats.steps_accepted,
            "steps_rejected": stats.steps_rejected,
            "f_seconds_forward": stats.f_seconds_forward,
            "solve_seconds_forward": stats.solve_seconds_forward,
            "numerical_error_max_abs": err,
            "numerical_error_rel_l2": err_rel,
        }
        for norm in ("full", "seminorm"):
            model.zero_grad(set_to_none=True)
            st = neuralode.SolverStats()
            start = time.perf_counter()
            z1 = model.solve(z0, tol, gradient="adjoint", norm=norm, stats=st)
            loss = F.cross_entropy(model.head(z1), y)
            loss.backward()
            sync(device)
            key = "full" if norm == "full" else "seminorm"
            row[f"nfe_backward_{key}"] = st.nfe_backward
            row[f"steps_backward_{key}"] = {"accepted": st.steps_accepted_backward, "rejected": st.steps_rejected_backward}
            row[f"nfe_forward_adjoint_{key}"] = st.nfe_forward
            row[f"forward_backward_seconds_{key}"] = time.perf_counter() - start
            row[f"backward_over_forward_{key}"] = st.nfe_backward / st.nfe_forward if st.nfe_forward else None
        model.zero_grad(set_to_none=True)
        rows.append(row)
    return rows, {"method": REF_METHOD, "tol": ref_tol, "dtype": "float64", "nfe": ref_stats.nfe_forward, "z1_abs_max": ref_scale}


# --------------------------------------------------------------------------- summary, plot


def summarize(sweep: List[dict], training: List[dict]) -> dict:
    """The figures the panels claim: NFE grows as the tolerance tightens, time vs NFE rank correlation, backward/forward NFE, NFE over training."""
    nfe = [r["nfe_forward"] for r in sweep]  # loosest tolerance first
    secs = [r["forward_seconds"] for r in sweep]
    out = {
        "nfe_forward_by_tol": {f"{r['tol']:g}": r["nfe_forward"] for r in sweep},
        "nfe_grows_as_tolerance_tightens": all(b >= a for a, b in zip(nfe, nfe[1:])) and nfe[-1] > nfe[0],
        "spearman_time_vs_nfe": _spearman(nfe, secs),
        "seconds_per_nfe": [s / n for s, n in zip(secs, nfe)],
    }
    if training:
        out["nfe_forward_initial_by_tol"] = {f"{r['tol']:g}": r["nfe_forward_initial"] for r in sweep}
    for key in ("full", "seminorm"):
        ratios = [r[f"backward_over_forward_{key}"] for r in sweep]
        out[f"backward_over_forward_{key}"] = ratios
        out[f"backward_over_forward_{key}_median"] = statistics.median(ratios)
        out[f"nfe_backward_{key}_total"] = sum(r[f"nfe_backward_{key}"] for r in sweep)
    if training:
        k = max(1, min(20, len(training) // 5))
        first = [r["nfe_forward"] for r in training[:k]]
        last = [r["nfe_forward"] for r in training[-k:]]
        out["training_window"] = k
        out["training_nfe_forward_first_mean"] = statistics.mean(first)
        out["training_nfe_forward_last_mean"] = statistics.mean(last)
        out["training_nfe_forward_min"] = min(r["nfe_forward"] for r in training)
        out["training_nfe_forward_max"] = max(r["nfe_forward"] for r in training)
        out["training_nfe_grows"] = statistics.mean(last) > statistics.mean(first)
        out["training_loss_first_mean"] = statistics.mean(r["loss"] for r in training[:k])
        out["training_loss_last_mean"] = statistics.mean(r["loss"] for r in training[-k:])
    return out


def plot(result: dict, png: str) -> str:
    """The 2x2 figure; returns the path, or "not available: ..." without matplotlib."""
    try:
        plt = pyplot()
    except Exception as err:  # pragma: no cover - matplotlib is in every install that runs the benchmarks
        return f"not available: {type(err).__name__}: {err}"

    sweep, training = result["tolerance_sweep"], result["training"]
    tols = [r["tol"] for r in sweep]
    nfe = [r["nfe_forward"] for r in sweep]
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    (ax_a, ax_b), (ax_c, ax_d) = axes

    ax_a.plot(tols, nfe, "o-", color="C0", label="NFE forward" + (" (trained)" if training else ""))
    if training:
        ax_a.plot(tols, [r["nfe_forward_initial"] for r in sweep], "o:", color="gray", label="at initialization")
    ax_a.set_xscale("log")
    ax_a.invert_xaxis()
    ax_a.set_xlabel("tolerance (rtol = atol)")
    ax_a.set_ylabel("NFE forward", color="C0")
    ax_a.set_title("(a) NFE forward vs tolerance")
    ax_err = ax_a.twinx()
    errs = [max(r["numerical_error_max_abs"], 1e-16) for r in sweep]
    ax_err.plot(tols, errs, "s--", color="C1", label="error of z(1)")
    ax_err.set_yscale("log")
    ax_err.set_ylabel("max |z(1) - z_ref(1)|", color="C1")
    lines = ax_a.get_lines() + ax_err.get_lines()
    ax_a.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="center left")

    ms = [r["forward_seconds"] * 1e3 for r in sweep]
    ax_b.plot(nfe, ms, "o-")
    for n, m, tol in zip(nfe, ms, tols):
        ax_b.annotate(f"{tol:g}", (n, m), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax_b.set_xlabel("NFE forward")
    ax_b.set_ylabel("forward time (ms, median)")
    ax_b.set_title("(b) forward time vs NFE")

    full = [r["nfe_backward_full"] for r in sweep]
    semi = [r["nfe_backward_seminorm"] for r in sweep]
    ax_c.plot(nfe, full, "o", label="adjoint, full norm")
    ax_c.plot(nfe, semi, "x", markersize=9, label="adjoint, seminorm")
    lim = max(nfe + full + semi) * 1.1
    xs = np.array([0.0, lim])
    ax_c.plot(xs, xs, ":", color="gray", label="backward = forward")
    ax_c.plot(xs, xs / 2, "--", color="gray", label="backward = forward / 2")
    ax_c.set_xlim(0, lim)
    ax_c.set_ylim(0, lim)
    ax_c.set_xlabel("NFE forward")
    ax_c.set_ylabel("NFE backward")
    ax_c.set_title("(c) NFE backward vs forward")
    ax_c.legend(fontsize=8)

    if training:
        its = [r["iteration"] for r in training]
        tn = np.array([r["nfe_forward"] for r in training], dtype=float)
        ax_d.plot(its, tn, color="C0", alpha=0.35, lw=0.8, label="per iteration")
        w = max(1, min(25, len(tn) // 8))
        if w > 1:
            avg = np.convolve(tn, np.ones(w) / w, mode="valid")
            ax_d.plot(its[w - 1 :], avg, color="C0", lw=2, label=f"mean of {w}")
        ax_d.set_xlabel("training iteration")
        ax_d.set_ylabel("NFE forward")
        ax_d.legend(fontsize=8)
        setup = result.get("training_setup", {})
        ax_d.set_title(f"(d) NFE forward during training (tol {setup.get('tol', TRAIN_TOL):g})")
    else:
        ax_d.set_axis_off()
        reason = result.get("skipped", {}).get("training", "skipped")
        ax_d.text(0.5, 0.5, "(d) training skipped:\n" + reason, ha="center", va="center", wrap=True, fontsize=9)

    m = result["machine"]
    fig.suptitle(
        f"MNIST ODE-Net, {METHOD}, batch {result['setup']['batch']}, width {result['setup']['width']}; "
        f"{m['device']}, {m['threads']} thread{'' if m['threads'] == 1 else 's'}, torch {m['torch']}",
        fontsize=10,
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


# --------------------------------------------------------------------------- run


def run(
    quick: bool = False,
    device: str = "cpu",
    out_dir: str = RESULTS_DIR,
    data_dir: Optional[str] = None,
    tiny: bool = False,
    iters: Optional[int] = None,
    seed: int = 0,
    progress: bool = True,
    threads: Optional[int] = DEFAULT_THREADS,
    train_tol: Optional[float] = None,
) -> dict:
    """Measures the four panels; writes ``out_dir/nfe_<device>.json`` and ``.png``.

    ``quick``: 5 tolerances, 400 training iterations, 10 timing repeats. ``tiny``: a
    smoke test (width 8, batch 4, 2 tolerances, 3 training iterations on random
    images unless ``data_dir`` is given). ``iters`` overrides the training iterations,
    ``train_tol`` the training tolerance (default ``TRAIN_TOL``; ``tiny``: 1e-2).
    ``threads``: torch's intra-op threads during the run on CPU (restored afterwards;
    ``None``: leave torch's setting).
    """
    previous = torch.get_num_threads()
    if threads is not None and not device.startswith("cuda"):
        torch.set_num_threads(threads)
    try:
        return _run(quick, device, out_dir, data_dir, tiny, iters, seed, progress, train_tol)
    finally:
        torch.set_num_threads(previous)


def _run(quick, device, out_dir, data_dir, tiny, iters, seed, progress, train_tol) -> dict:
    start_all = time.perf_counter()
    width, batch = (8, 4) if tiny else (64, BATCH)
    tols = TOLS_TINY if tiny else TOLS_QUICK if quick else TOLS_FULL
    n_iters = iters if iters is not None else ITERS_TINY if tiny else ITERS_QUICK if quick else ITERS_FULL
    repeats = REPEATS_TINY if tiny else REPEATS_QUICK if quick else REPEATS_FULL
    n_test = 2 * batch if tiny else TEST_IMAGES_QUICK if quick else TEST_IMAGES_FULL
    command = _command(quick, tiny, device, data_dir, iters, out_dir, train_tol)
    if train_tol is None:
        train_tol = 1e-2 if tiny else TRAIN_TOL
    if not train_tol > 0:
        raise ValueError(f"train_tol must be > 0, got {train_tol}")
    if n_iters < 0:
        raise ValueError(f"iters must be >= 0, got {n_iters}")

    torch.manual_seed(seed)
    model = ODENetMNIST(width).to(device)
    skipped: Dict[str, str] = {}
    training: List[dict] = []
    training_setup: dict = {}
    data_source = "random"

    test_x = test_y = None
    if data_dir is not None:
        train_x, train_y = mnist_tensors(data_dir, train=True)
        test_x, test_y = mnist_tensors(data_dir, train=False)
        data_source = "MNIST"
    elif tiny:
        gen = torch.Generator().manual_seed(seed + 1)
        train_x = torch.randn(64, 1, 28, 28, generator=gen)
        train_y = torch.randint(0, 10, (64,), generator=gen)
    else:
        train_x = train_y = None
        skipped["training"] = "no data directory given (--data-dir with the MNIST IDX files); panel (d) needs real MNIST"

    if test_x is not None:
        x, y = test_x[:batch].to(device), test_y[:batch].to(device)
        sweep_batch = f"the first {batch} MNIST test images"
    else:
        gen = torch.Generator().manual_seed(seed + 2)
        x = torch.randn(batch, 1, 28, 28, generator=gen).to(device)
        y = torch.randint(0, 10, (batch,), generator=gen).to(device)
        sweep_batch = f"{batch} random N(0, 1) images with random labels"

    # Forward NFE of the model at initialization on the sweep batch (the buffers are
    # restored: these solves must not move the BatchNorm running statistics).
    buffers = copy.deepcopy(model.state_dict())
    nfe_initial = forward_nfe(model, x, tols)
    model.load_state_dict(buffers)

    if train_x is not None and n_iters > 0:
        t0 = time.perf_counter()
        training = train(model, train_x, train_y, n_iters, BATCH if not tiny else batch, train_tol, device, seed, progress)
        training_setup = {
            "data": "MNIST training set, shuffled" if data_dir is not None else "random N(0, 1) images, random labels",
            "iterations": n_iters,
            "batch": BATCH if not tiny else batch,
            "optimizer": f"Adam, lr {LR:g}",
            "gradient": "adjoint (full norm)",
            "method": METHOD,
            "tol": train_tol,
            "seconds": time.perf_counter() - t0,
        }
        if test_x is not None:
            training_setup["test_images"] = n_test
            training_setup["test_accuracy"] = test_accuracy(model, test_x[:n_test], test_y[:n_test], train_tol, device)
    elif train_x is not None:
        skipped["training"] = "iters = 0"

    t0 = time.perf_counter()
    sweep, reference = tolerance_sweep(model, x, y, tols, repeats, device)
    for row in sweep:
        row["nfe_forward_initial"] = nfe_initial[row["tol"]]
    sweep_seconds = time.perf_counter() - t0

    result = {
        "suite": "nfe",
        "benchmark": "nfe",
        "setup": {
            "model": f"paper-tutorial MNIST ODE-Net: down-sampling (conv 3x3 s1, BN, ReLU, conv 4x4 s2, BN, ReLU, "
            f"conv 4x4 s2) to ({batch}, {width}, 6, 6), ConvODEF({width}) on t in [0, 1], BN, avg pool, Linear({width}, 10)",
            "width": width,
            "batch": batch,
            "method": METHOD,
            "tolerances": list(tols),
            "sweep_batch": sweep_batch,
            "sweep_model": "trained (panel d)" if training else "freshly initialized (seeded)",
            "batchnorm": "training mode (batch statistics) in every solve; eval mode for the test accuracy",
            "timing": f"forward solve alone under no_grad, median of {repeats} after 1 warm-up",
            "numerical_error": f"max |z(1) - z_ref(1)|, z_ref: float64 {REF_METHOD} at rtol = atol = "
            f"{REF_TOL_FACTOR:g} x the tightest tolerance (at least {REF_TOL_MIN:g})",
            "data": data_source,
            "seed": seed,
            "quick": quick,
            "tiny": tiny,
        },
        "reference_solve": reference,
        "tolerance_sweep": sweep,
        "training": training,
        "training_setup": training_setup,
        "skipped": skipped,
        "summary": summarize(sweep, training),
        "machine": machine_info(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "sweep_seconds": sweep_seconds,
    }

    os.makedirs(out_dir, exist_ok=True)
    tag = device.split(":")[0]
    json_path = os.path.join(out_dir, f"nfe_{tag}.json")
    png_path = os.path.join(out_dir, f"nfe_{tag}.png")
    drawn = plot(result, png_path)
    result["plot"] = drawn if drawn.startswith("not available") else _plot_path_for_result(drawn)
    result["wall_seconds"] = time.perf_counter() - start_all
    with open(json_path, "w") as fh:
        json.dump(result, fh, indent=2)
    result["json"] = json_path
    return result


HEADING = "## Function evaluations of the MNIST ODE-Net, the paper's Figure 3 (`benchmarks/nfe.py`)"


def _configuration(result: dict) -> str:
    s = result["setup"]
    return "tiny" if s.get("tiny") else "quick" if s.get("quick") else "full"


def markdown_many(results: List[dict]) -> str:
    """Several runs (e.g. the quick one of ``make bench`` and a full one) under one
    heading, a subsection each, quick first."""
    order = {"tiny": 0, "quick": 1, "full": 2}
    parts = [HEADING]
    for r in sorted(results, key=lambda r: (order[_configuration(r)], r["date"])):
        parts.append(f"### {_configuration(r).capitalize()} configuration (`{r['_path']}`)" if r.get("_path")
                     else f"### {_configuration(r).capitalize()} configuration")
        parts.append(markdown(r, heading=False).strip())
    return "\n\n".join(parts) + "\n"


def markdown(result: dict, heading: bool = True) -> str:
    """A short section for RESULTS.md: setup, the sweep table, training, the figure."""
    s, m, summ = result["setup"], result["machine"], result["summary"]
    lines = ([HEADING, ""] if heading else []) + [
        f"{s['method']}, float32, batch {s['batch']}, width {s['width']}, {s['sweep_model']} model, "
        f"{s['sweep_batch']}; {m['device']}, {m['threads']} thread{'' if m['threads'] == 1 else 's'}, torch {m['torch']}, {result['date'][:10]}. "
        f"Forward time: the ODE solve alone, median of repeats. Backward: the continuous adjoint "
        f"with the full error norm and with the seminorm. Error: max |z(1) - z_ref(1)| against a float64 "
        f"{result['reference_solve']['method']} solve at {result['reference_solve']['tol']:g}. "
        f"Command: `{result['command']}`.",
    ]
    trained = bool(result["training"])
    init_head, init_rule = (" NFE fwd at init |", " ---: |") if trained else ("", "")
    lines += [
        "",
        f"| rtol = atol | NFE fwd |{init_head} fwd ms | error | NFE bwd full | NFE bwd seminorm | bwd/fwd full | bwd/fwd seminorm |",
        f"| ---: | ---: |{init_rule} ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["tolerance_sweep"]:
        init = f" {r['nfe_forward_initial']} |" if trained else ""
        lines.append(
            f"| {r['tol']:g} | {r['nfe_forward']} |{init} {r['forward_seconds'] * 1e3:.1f} | {r['numerical_error_max_abs']:.1e} | "
            f"{r['nfe_backward_full']} | {r['nfe_backward_seminorm']} | {r['backward_over_forward_full']:.2f} | "
            f"{r['backward_over_forward_seminorm']:.2f} |"
        )
    lines.append("")
    rho = summ.get("spearman_time_vs_nfe")
    lines.append(
        f"NFE grows as the tolerance tightens: {'yes' if summ['nfe_grows_as_tolerance_tightens'] else 'no'}; "
        f"rank correlation of forward time with NFE: {'-' if rho is None else f'{rho:.2f}'}; "
        f"backward / forward NFE (median over tolerances): {summ['backward_over_forward_full_median']:.2f} (full norm), "
        f"{summ['backward_over_forward_seminorm_median']:.2f} (seminorm)."
    )
    if result["training"]:
        ts = result["training_setup"]
        acc = ts.get("test_accuracy")
        lines.append("")
        lines.append(
            f"Training ({ts['data']}, {ts['iterations']} iterations, batch {ts['batch']}, {ts['optimizer']}, "
            f"{ts['gradient']}, tol {ts['tol']:g}, {ts['seconds']:.0f} s): forward NFE "
            f"{summ['training_nfe_forward_first_mean']:.1f} (mean of the first {summ['training_window']}) -> "
            f"{summ['training_nfe_forward_last_mean']:.1f} (mean of the last {summ['training_window']}), "
            f"range {summ['training_nfe_forward_min']}-{summ['training_nfe_forward_max']}; loss "
            f"{summ['training_loss_first_mean']:.3f} -> {summ['training_loss_last_mean']:.3f}"
            + (f"; test accuracy {acc:.3f} on {ts['test_images']} images." if acc is not None else ".")
        )
    elif result["skipped"].get("training"):
        lines += ["", f"Training (panel d) skipped: {result['skipped']['training']}."]
    if not str(result["plot"]).startswith("not available"):
        lines += ["", f"![nfe]({result['plot']})"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """The command line of the nfe suite (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 tolerances, 400 training iterations, 10 timing repeats")
    parser.add_argument("--tiny", action="store_true", help="smoke test: width 8, batch 4, 2 tolerances, 3 iterations")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=RESULTS_DIR)
    parser.add_argument("--data-dir", default=None, help="directory with the MNIST IDX files (raw or .gz)")
    parser.add_argument("--iters", type=int, default=None, help="training iterations (panel d)")
    parser.add_argument("--train-tol", type=float, default=None, help=f"training rtol = atol (default {TRAIN_TOL:g})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help="torch intra-op threads on CPU (0: leave torch's setting)"
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.iters is not None and args.iters < 0:
        parser.error("--iters must be >= 0")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    try:
        result = run(
            quick=args.quick, device=args.device, out_dir=args.out, data_dir=args.data_dir, tiny=args.tiny,
            iters=args.iters, seed=args.seed, threads=args.threads or None, train_tol=args.train_tol,
        )
    except (MNISTNotFoundError, MNISTFormatError) as err:
        parser.error(f"--data-dir: {err}")
    print()
    print(markdown(result))
    print(f"wall time {result['wall_seconds']:.1f} s; written {os.path.relpath(result['json'])} and the figure")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
