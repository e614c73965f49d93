"""MNIST classification: ODE-Net against RK-Net, ResNet and an MLP (the paper's Table 1).

The models (:mod:`neuralode.experiments.mnist_models`) share the paper tutorial's
down-sampling and head, only the middle differs: an ODE block ``ConvODEF(64)`` from
t = 0 to 1 differentiated with the continuous adjoint (ODE-Net) or by backpropagating
through the solver (RK-Net), 6 residual blocks (ResNet), or nothing but a
``784-300-10`` MLP. Each is trained with Adam on the same examples in the same order
(same seed, batch size and epochs) and cross-entropy loss, and compared on

* the accuracy on the 10,000 test images (BatchNorm in eval mode) after training, and
  during training on the first ``--curve-images`` test images every ``--eval-every``
  iterations (the curve of the plot);
* the number of parameters;
* the peak training memory of one training step. On CUDA: ``torch.cuda.max_memory_allocated``
  over the step (data, parameters, gradients, Adam state, activations, workspaces). On CPU
  there is no allocator counter, so the table gives the *activation + parameter memory*:
  the bytes of the tensors autograd saves for backward during the step's forward
  (:class:`SavedTensorMeter`: ``torch.autograd.graph.saved_tensors_hooks`` sees every
  saved tensor, also those a custom autograd Function keeps with
  ``ctx.save_for_backward``; each distinct storage counted once, parameters left out),
  plus parameters, gradients and Adam's two moments (4 x the parameter bytes). This is
  the part of memory that depends on the gradient method: RK-Net's saved tensors grow
  with the solver's steps, ODE-Net's (the adjoint keeps only the block's input and
  output) do not;
* training seconds per epoch (evaluations excluded) and the ODE block's function
  evaluations (NFE) per iteration, forward and backward (``neuralode.SolverStats``;
  RK-Net's backward evaluates no f: autograd replays the forward's operations).

Solver and sizes. The solver of both ODE models is RK4: on a 2-core CPU the down-sampling
costs as much as a few evaluations, dopri5 at rtol = atol = 1e-3 takes ~27 evaluations and
Euler with steps of 0.05 20, so RK4 with 2 steps trained ~3x faster per iteration than
either (measured at batch 64, one thread). ``--quick`` takes 2 steps (8 forward
evaluations); the full configuration 4 (16): with 2 steps of 0.5 the continuous adjoint's
gradient is 23% off the exact gradient of the discrete forward that RK-Net follows (the
forward is far from the ODE it approximates), and 5 epochs trained ODE-Net to 98.34%
against RK-Net's 99.06%; with 4 steps the gap is 7%. Options ``--method``, ``--rtol``,
``--atol``, ``--max-step`` change it. Normalization inside f (``--ode-norm``): the full
configuration uses GroupNorm, as the paper's ODE-Net does; ``--quick`` the tutorial's
BatchNorm. BatchNorm's running statistics average the states of every solver stage, from
t = 0 to 1, and eval mode applies that one average at every t: with it, 5 epochs left
ODE-Net at 98.75% and RK-Net at 98.97%, their test accuracy jumping between epochs and
falling in the last one while their training loss tracked ResNet's. Full configuration: 5 epochs of the 60,000 training
images, batch 128, Adam with lr 1e-3 decayed to 0 on a cosine over the run
(``--schedule``; aiming at >= 99% for ODE-Net). ``--quick``: 1 epoch of the 60,000
training images, batch 64, constant lr (aiming at >= 97% for ODE-Net in under 10 minutes
for all four models on a 2-core CPU; 2 epochs of a 20,000-image subset gave ODE-Net only
97.3%). On CPU one intra-op thread is used unless
``--threads`` says otherwise: on a shared 2-core machine two threads made a training
step ~30x slower when another process held a core.

Data: ``--data-dir DIR`` with the four standard MNIST IDX files, raw or gzipped
(:mod:`neuralode.data.mnist`); ``--download`` fetches missing ones first (online only).

Many processes: ``torchrun --nproc_per_node=N -m neuralode.experiments mnist ...``
trains with DDP (:mod:`neuralode.experiments.distributed`; gloo on CPU, NCCL on CUDA);
each rank trains on its shard of every global batch of ``--batch-size`` examples and
evaluates a shard of the test set; only rank 0 prints and writes. BatchNorm normalizes
with each rank's shard statistics (plain DDP; SyncBatchNorm would add collectives to
every evaluation of f, whose number differs between ranks with an adaptive solver).

Writes ``mnist.json`` (the table, every model's figures and curves), ``mnist_training.png``
(test accuracy and training loss against iteration) and ``mnist_nfe.png`` (NFE per
iteration, memory per model).

Run: ``python -m neuralode.experiments mnist --data-dir DIR [--quick] [--models ode-net,mlp]``.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralode.data import MNISTDownloadError, MNISTFormatError, MNISTNotFoundError, download_mnist, mnist_tensors

from . import common, distributed
from .distributed import DistContext
from .mnist_models import DEFAULT_SOLVER, MODELS, build_model

NAME = "mnist"
LABELS = {"mlp": "MLP", "resnet": "ResNet", "rk-net": "RK-Net", "ode-net": "ODE-Net"}


@dataclass(frozen=True)
class Config:
    """Sizes of a run: epochs over ``train_subset`` training images (None: all) in
    batches of ``batch_size``; test accuracy on ``curve_images`` test images every
    ``eval_every`` iterations, and on the whole test set after every epoch."""

    epochs: int
    batch_size: int
    lr: float
    train_subset: Optional[int]
    eval_every: int
    curve_images: int
    width: int = 64
    hidden: int = 300
    test_batch: int = 500
    schedule: str = "constant"
    # The ODE block's fixed step (rk4_classic): 0.25 (4 steps) in the full configuration,
    # where the adjoint's gradient is 7% off the exact gradient of the discrete forward
    # (23% with 0.5, which trained ODE-Net to 98.34% against RK-Net's 99.06%).
    ode_max_step: float = 0.5
    # The normalization inside the ODE block's f (ConvODEF): "group" in the full
    # configuration. BatchNorm's running statistics average the states of every solver
    # stage (t = 0 .. 1) into one mean and variance that eval mode then applies at every
    # t: with them ODE-Net's and RK-Net's test accuracy jumped between epochs and fell in
    # the last one (98.75% and 98.97%) while their training loss tracked ResNet's.
    ode_norm: str = "batch"


#: Learning-rate schedules: the rate times lr_factor(schedule, iteration, total).
SCHEDULES = ("constant", "cosine")
FULL = Config(epochs=5, batch_size=128, lr=1e-3, train_subset=None, eval_every=100, curve_images=2000,
              schedule="cosine", ode_max_step=0.25, ode_norm="group")
QUICK = Config(epochs=1, batch_size=64, lr=1e-3, train_subset=None, eval_every=100, curve_images=1000)


def lr_factor(schedule: str, iteration: int, total: int) -> float:
    """The learning rate of ``iteration`` (0-based, of ``total``) as a fraction of the base
    rate: 1 throughout (``"constant"``), or the cosine decay
    ``(1 + cos(pi * iteration / total)) / 2`` from 1 to 0 (``"cosine"``: large steps early,
    small ones to settle at the end, so that the last epoch's test accuracy is not that of
    a point still bouncing around the minimum)."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(iteration, total) / max(total, 1)))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
#: Intra-op threads on CPU unless --threads is given (see the module docstring).
DEFAULT_CPU_THREADS = 1


# --------------------------------------------------------------------------- memory


class SavedTensorMeter:
    """Counts the bytes autograd saves for backward while the context is open.

    ``torch.autograd.graph.saved_tensors_hooks`` calls the pack hook for every tensor
    an autograd node saves (built-in ops, C++ ops with autograd formulas, and custom
    ``autograd.Function``\\ s through ``ctx.save_for_backward``). The meter keeps a weak
    reference to each; when the context closes it sums the sizes of the distinct
    storages of those still alive (so views and tensors saved twice count once), less
    the storages of ``exclude`` (the parameters, counted separately). That is the
    activation memory the backward pass needs. Counting at the end, over live tensors
    only, matters: a tensor saved by a graph that was dropped during the forward is
    freed, and its address may be reused by a later tensor, so keys taken at pack time
    would merge or double-count storages depending on the allocator.
    """

    def __init__(self, exclude: Iterable[Tensor] = ()):
        self._exclude = {self._key(t) for t in exclude}
        self._saved: List[weakref.ref] = []
        self._hooks = None
        self._bytes: Optional[int] = None

    @staticmethod
    def _key(t: Tensor) -> tuple:
        return (str(t.device), t.untyped_storage().data_ptr())

    def _pack(self, t: Tensor) -> Tensor:
        if t.layout == torch.strided and t.device.type != "meta":
            self._saved.append(weakref.ref(t))
        return t

    def _count(self) -> int:
        storages: Dict[tuple, int] = {}
        for ref in self._saved:
            t = ref()
            if t is None:
                continue
            key = self._key(t)
            if key[1] != 0 and key not in self._exclude:
                storages[key] = t.untyped_storage().nbytes()
        return sum(storages.values())

    @property
    def bytes(self) -> int:
        """Distinct saved bytes: when the context closed, or so far while it is open."""
        return self._count() if self._bytes is None else self._bytes

    def __enter__(self) -> "SavedTensorMeter":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._bytes = self._count()


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def memory_label(device: torch.device) -> str:
    """What :func:`train_model`'s memory figure is on ``device`` (the table's column)."""
    if device.type == "cuda":
        return "peak CUDA memory allocated, training step"
    return "activation + parameter memory, CPU"


# --------------------------------------------------------------------------- training


@dataclass
class ModelResult:
    """One model's figures (see the module docstring)."""

    name: str
    params: int = 0
    memory_bytes: int = 0
    saved_bytes: int = 0
    test_accuracy: float = float("nan")
    epoch_accuracy: List[float] = field(default_factory=list)
    seconds_per_epoch: List[float] = field(default_factory=list)
    losses: List[float] = field(default_factory=list)
    curve: List[tuple] = field(default_factory=list)
    nfe_forward: List[int] = field(default_factory=list)
    nfe_backward: List[int] = field(default_factory=list)
    final_lr: float = float("nan")  # the learning rate of the last iteration (the schedule's end)

    def as_dict(self) -> dict:
        """The JSON form, with the means of the per-iteration NFE."""
        out = dict(self.__dict__)
        out["label"] = LABELS.get(self.name, self.name)
        out["mean_seconds_per_epoch"] = float(np.mean(self.seconds_per_epoch)) if self.seconds_per_epoch else None
        is_ode = self.name in ("ode-net", "rk-net")
        out["nfe_forward_mean"] = float(np.mean(self.nfe_forward)) if is_ode and self.nfe_forward else None
        backward = self.name == "ode-net"  # RK-Net's backward replays the forward's ops: no f evaluations
        out["nfe_backward_mean"] = float(np.mean(self.nfe_backward)) if backward and self.nfe_backward else None
        return out


def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch: int, device: torch.device, ctx: DistContext) -> float:
    """Accuracy of ``model`` (eval mode, no gradients) on ``(x, y)``; with several
    ranks each classifies a contiguous share with rank 0's BatchNorm statistics and
    the correct counts are summed."""
    distributed.broadcast_buffers(model, ctx)
    n = x.shape[0]
    lo, hi = n * ctx.rank // ctx.world_size, n * (ctx.rank + 1) // ctx.world_size
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for i in range(lo, hi, batch):
            xb, yb = x[i : min(i + batch, hi)].to(device), y[i : min(i + batch, hi)].to(device)
            correct += (model(xb).argmax(dim=1) == yb).sum()
    model.train(was_training)
    return distributed.all_reduce_sum(correct, ctx).item() / n


def ode_stats(model: nn.Module):
    """The ODE block's ``SolverStats`` of ``model`` (or its DDP-wrapped module), else None."""
    inner = getattr(model, "module", model)
    block = getattr(inner, "block", None)
    return getattr(block, "stats", None)


def train_step(model: nn.Module, optimizer, x: Tensor, y: Tensor) -> Tensor:
    """One Adam step on the mean cross-entropy of ``model(x)`` against ``y``; the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def measured_step(model: nn.Module, optimizer, x: Tensor, y: Tensor, device: torch.device):
    """:func:`train_step` with its memory measured: ``(loss, memory_bytes, saved_bytes)``
    (see :func:`memory_label`; ``saved_bytes``: the saved activations alone, CPU)."""
    params = list(model.parameters())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        loss = train_step(model, optimizer, x, y)
        torch.cuda.synchronize(device)
        return loss, int(torch.cuda.max_memory_allocated(device)), 0
    with SavedTensorMeter(exclude=params) as meter:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
    saved = meter.bytes
    loss.backward()
    optimizer.step()
    # parameters, their gradients and Adam's exp_avg and exp_avg_sq
    return loss.detach(), saved + 4 * parameter_bytes(model), saved


def train_model(
    name: str,
    data: dict,
    cfg: Config,
    solver: dict,
    seed: int,
    device: torch.device,
    ctx: DistContext,
    show_progress: bool = True,
) -> ModelResult:
    """Trains the model ``name`` on ``data`` (``train_x``, ``train_y``, ``test_x``,
    ``test_y``) with Adam and returns its figures.

    Every model starts from ``seed`` and sees the same batches: the order of epoch
    ``e`` is a permutation drawn from ``seed + e``, cut into global batches of
    ``cfg.batch_size`` (an incomplete last batch is dropped); each rank trains on its
    shard. The first step is measured (:func:`measured_step`).
    """
    torch.manual_seed(seed)
    model = build_model(name, cfg.width, solver, cfg.hidden, cfg.ode_norm).to(device)
    result = ModelResult(name, params=sum(p.numel() for p in model.parameters()))
    net = distributed.wrap(model, ctx, device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    stats = ode_stats(model)
    train_x, train_y, test_x, test_y = data["train_x"], data["train_y"], data["test_x"], data["test_y"]
    curve_x, curve_y = test_x[: cfg.curve_images], test_y[: cfg.curve_images]
    n_batches = train_x.shape[0] // cfg.batch_size
    if n_batches < 1:
        raise SystemExit(f"--batch-size {cfg.batch_size} is larger than the {train_x.shape[0]} training images")
    total = cfg.epochs * n_batches
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(cfg.schedule, i, total))
    iteration = 0
    net.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(seed + epoch))
        bar = common.progress(
            range(n_batches), f"{LABELS[name]} epoch {epoch + 1}/{cfg.epochs}", disable=not show_progress
        )
        seconds = 0.0
        for b in bar:
            idx = distributed.shard(order[b * cfg.batch_size : (b + 1) * cfg.batch_size], ctx)
            x, y = train_x[idx].to(device), train_y[idx].to(device)
            nfe0 = (stats.nfe_forward, stats.nfe_backward) if stats is not None else (0, 0)
            start = time.perf_counter()
            if iteration == 0:
                loss, result.memory_bytes, result.saved_bytes = measured_step(net, optimizer, x, y, device)
            else:
                loss = train_step(net, optimizer, x, y)
            scheduler.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds += time.perf_counter() - start
            if stats is not None:
                result.nfe_forward.append(stats.nfe_forward - nfe0[0])
                result.nfe_backward.append(stats.nfe_backward - nfe0[1])
            # the global batch's loss: the mean of the ranks' equal-sized shard means
            loss = distributed.all_reduce_sum(loss.clone(), ctx) / ctx.world_size
            result.losses.append(loss.item())
            iteration += 1
            if iteration % cfg.eval_every == 0 or b == n_batches - 1:
                result.curve.append((iteration, evaluate(model, curve_x, curve_y, cfg.test_batch, device, ctx)))
                bar.set_postfix(loss=f"{result.losses[-1]:.3f}", acc=f"{result.curve[-1][1]:.3f}")
        bar.close()
        result.seconds_per_epoch.append(seconds)
        result.epoch_accuracy.append(evaluate(model, test_x, test_y, cfg.test_batch, device, ctx))
    result.test_accuracy = result.epoch_accuracy[-1]
    result.final_lr = cfg.lr * lr_factor(cfg.schedule, total - 1, total)
    return result


# --------------------------------------------------------------------------- data


def load_data(data_dir: Optional[str], download: bool, train_subset: Optional[int], seed: int, ctx: DistContext) -> dict:
    """The training and test tensors, with the library's clear messages as SystemExit.

    ``train_subset``: a random subset (drawn from ``seed``) of that many training images."""
    if data_dir is None:
        raise SystemExit("mnist: --data-dir DIR is required (a folder with the four MNIST IDX files, raw or .gz)")
    try:
        if download:
            if ctx.is_main:
                download_mnist(data_dir)
            if ctx.enabled:
                torch.distributed.barrier()
        train_x, train_y = mnist_tensors(data_dir, train=True)
        test_x, test_y = mnist_tensors(data_dir, train=False)
    except MNISTNotFoundError as err:
        hint = "" if download else f"\nWith network access, add --download to fetch them into {data_dir}."
        raise SystemExit(f"mnist: {err}{hint}") from None
    except MNISTFormatError as err:
        raise SystemExit(f"mnist: bad data file: {err}") from None
    except MNISTDownloadError as err:
        raise SystemExit(f"mnist: --download failed: {err}") from None
    if train_subset is not None:
        if not 1 <= train_subset <= train_x.shape[0]:
            raise SystemExit(f"--train-subset must be between 1 and {train_x.shape[0]}, got {train_subset}")
        keep = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(seed))[:train_subset]
        train_x, train_y = train_x[keep], train_y[keep]
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


# --------------------------------------------------------------------------- report


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def markdown_table(results: List[ModelResult], device: torch.device) -> str:
    """The comparison as a markdown table (one row per model)."""
    lines = [
        f"| model | test accuracy | parameters | {memory_label(device)} | seconds / epoch | NFE forward | NFE backward |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        d = r.as_dict()
        fwd = f"{d['nfe_forward_mean']:.1f}" if d["nfe_forward_mean"] is not None else "-"
        if d["nfe_backward_mean"] is not None:
            bwd = f"{d['nfe_backward_mean']:.1f}"
        else:
            bwd = "- (backprop)" if r.name == "rk-net" else "-"
        lines.append(
            f"| {d['label']} | {100 * r.test_accuracy:.2f}% | {r.params:,} | {_mib(r.memory_bytes)} | "
            f"{d['mean_seconds_per_epoch']:.1f} | {fwd} | {bwd} |"
        )
    return "\n".join(lines)


def _smooth(values: List[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    window = max(1, min(window, v.size))
    return np.convolve(v, np.ones(window) / window, mode="valid")


def plot_training(results: List[ModelResult], path: str, cfg: Config) -> str:
    """Test accuracy (curve images) and training loss (moving average) against iteration."""
    plt = common.pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in results:
        its, accs = zip(*r.curve) if r.curve else ((), ())
        ax_acc.plot(its, [100 * a for a in accs], marker="o", ms=3, label=LABELS[r.name])
        window = max(1, len(r.losses) // 50)
        smooth = _smooth(r.losses, window)
        ax_loss.plot(np.arange(smooth.size) + window, smooth, label=LABELS[r.name])
    ax_acc.set(xlabel="iteration", ylabel="test accuracy (%)", title=f"accuracy on the first {cfg.curve_images} test images")
    ax_acc.set_ylim(max(0.0, min([100 * a for r in results for _, a in r.curve] + [90.0]) - 1), 100)
    ax_loss.set(xlabel="iteration", ylabel="cross-entropy (moving average)", title="training loss", yscale="log")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_nfe(results: List[ModelResult], path: str, device: torch.device) -> str:
    """The ODE block's NFE per iteration (forward; backward for the adjoint) and the
    memory figure of every model."""
    plt = common.pyplot()
    fig, (ax_nfe, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in results:
        if r.name not in ("ode-net", "rk-net") or not r.nfe_forward:
            continue
        ax_nfe.plot(np.arange(1, len(r.nfe_forward) + 1), r.nfe_forward, label=f"{LABELS[r.name]} forward")
        if r.name == "ode-net":
            ax_nfe.plot(np.arange(1, len(r.nfe_backward) + 1), r.nfe_backward, "--", label=f"{LABELS[r.name]} backward")
    ax_nfe.set(xlabel="iteration", ylabel="function evaluations", title="NFE of the ODE block per iteration")
    ax_nfe.set_ylim(bottom=0)
    ax_nfe.grid(alpha=0.3)
    if ax_nfe.get_legend_handles_labels()[0]:
        ax_nfe.legend()
    names = [LABELS[r.name] for r in results]
    ax_mem.bar(names, [r.memory_bytes / 2**20 for r in results], color="tab:gray")
    ax_mem.set(ylabel="MiB", title=memory_label(device))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


def _solver(args, cfg: Config) -> dict:
    """The ODE block's solver from the command line (default :data:`DEFAULT_SOLVER`'s method
    with the configuration's step, ``cfg.ode_max_step``)."""
    import neuralode

    method = args.method or DEFAULT_SOLVER["method"]
    if method not in neuralode.METHODS:
        raise SystemExit(f"--method {method!r}: choose one of {', '.join(neuralode.METHODS)}")
    if method in neuralode.FIXED_STEP_METHODS:
        max_step = args.max_step if args.max_step is not None else (
            cfg.ode_max_step if method == DEFAULT_SOLVER["method"] else 0.05
        )
        if not max_step > 0:
            raise SystemExit(f"--max-step must be positive, got {max_step}")
        return {"method": method, "options": {"max_step": max_step}}
    for value, flag in ((args.rtol, "--rtol"), (args.atol, "--atol")):
        if not (value > 0 and math.isfinite(value)):
            raise SystemExit(f"{flag} must be a positive number, got {value}")
    solver = {"method": method, "rtol": args.rtol, "atol": args.atol}
    if args.max_step is not None:
        solver["options"] = {"max_step": args.max_step}
    return solver


def _config(args) -> Config:
    base = QUICK if args.quick else FULL
    cfg = Config(
        epochs=args.epochs if args.epochs is not None else base.epochs,
        batch_size=args.batch_size if args.batch_size is not None else base.batch_size,
        lr=args.lr if args.lr is not None else base.lr,
        train_subset=args.train_subset if args.train_subset is not None else base.train_subset,
        eval_every=args.eval_every if args.eval_every is not None else base.eval_every,
        curve_images=args.curve_images if args.curve_images is not None else base.curve_images,
        width=args.width,
        hidden=args.hidden,
        test_batch=args.test_batch,
        schedule=args.schedule if args.schedule is not None else base.schedule,
        ode_max_step=base.ode_max_step,
        ode_norm=args.ode_norm if args.ode_norm is not None else base.ode_norm,
    )
    for value, flag in (
        (cfg.epochs, "--epochs"), (cfg.batch_size, "--batch-size"), (cfg.eval_every, "--eval-every"),
        (cfg.curve_images, "--curve-images"), (cfg.width, "--width"), (cfg.hidden, "--hidden"),
        (cfg.test_batch, "--test-batch"),
    ):
        if value < 1:
            raise SystemExit(f"{flag} must be at least 1, got {value}")
    if not cfg.lr > 0:
        raise SystemExit(f"--lr must be positive, got {cfg.lr}")
    return cfg


def _models(text: str) -> List[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise SystemExit(f"--models {text!r}: unknown {', '.join(unknown) or 'empty list'}; choose from {','.join(MODELS)}")
    return list(dict.fromkeys(names))


def build_parser():
    """The experiment's command line (the common options and the MNIST ones)."""
    parser = common.experiment_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder with the four MNIST IDX files (raw or .gz)")
    parser.add_argument("--download", action="store_true", help="fetch missing MNIST files into --data-dir first (online)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs (default {FULL.epochs}, quick {QUICK.epochs})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"global batch size (default {FULL.batch_size}, quick {QUICK.batch_size})")
    parser.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (default {FULL.lr})")
    parser.add_argument("--schedule", choices=SCHEDULES, default=None,
                        help=f"learning-rate schedule over all iterations (default {FULL.schedule}, quick {QUICK.schedule})")
    parser.add_argument("--train-subset", type=int, default=None,
                        help=f"train on a random subset of N images (default all, quick {QUICK.train_subset})")
    parser.add_argument("--eval-every", type=int, default=None, help="iterations between points of the accuracy curve")
    parser.add_argument("--curve-images", type=int, default=None, help="test images of the accuracy curve")
    parser.add_argument("--test-batch", type=int, default=500, help="batch size of evaluation")
    parser.add_argument("--width", type=int, default=64, help="channels of the convolutional models (paper: 64)")
    parser.add_argument("--hidden", type=int, default=300, help="hidden units of the MLP")
    parser.add_argument("--method", default=None, help=f"ODE solver (default {DEFAULT_SOLVER['method']})")
    parser.add_argument("--rtol", type=float, default=1e-3, help="adaptive solver rtol (default 1e-3)")
    parser.add_argument("--atol", type=float, default=1e-3, help="adaptive solver atol (default 1e-3)")
    parser.add_argument("--ode-norm", choices=("batch", "group"), default=None,
                        help=f"normalization inside the ODE block's f (default {FULL.ode_norm}, quick {QUICK.ode_norm})")
    parser.add_argument("--max-step", type=float, default=None,
                        help=f"largest step (fixed-step default for rk4_classic: {FULL.ode_max_step} full, {QUICK.ode_max_step} quick; 0.05 else)")
    return parser


def main(argv=None) -> dict:
    """Runs the experiment with the command-line options ``argv`` (under torchrun: one rank of
    it); returns its summary (the JSON; rank 0 writes it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data_dir is None:
        parser.error("--data-dir DIR is required: a folder with the four MNIST IDX files (raw or .gz); "
                     "add --download to fetch them into it (online)")
    names = _models(args.models)
    cfg = _config(args)
    solver = _solver(args, cfg)
    if args.threads is None and args.device.startswith("cpu"):
        args.threads = DEFAULT_CPU_THREADS
    device, out_dir = common.setup(args, NAME)
    ctx, device = distributed.init(device)
    try:
        if cfg.batch_size % ctx.world_size:
            raise SystemExit(f"--batch-size {cfg.batch_size} must be a multiple of the {ctx.world_size} processes")
        data = load_data(args.data_dir, args.download, cfg.train_subset, args.seed, ctx)
        results = [
            train_model(name, data, cfg, solver, args.seed, device, ctx, show_progress=ctx.is_main and not args.no_progress)
            for name in names
        ]
        summary = {
            "experiment": NAME,
            "config": {**cfg.__dict__, "quick": args.quick, "solver": solver, "models": names,
                       "processes": ctx.world_size, "train_images": data["train_x"].shape[0],
                       "test_images": data["test_x"].shape[0]},
            "memory_kind": memory_label(device),
            "table": markdown_table(results, device),
            "models": {r.name: r.as_dict() for r in results},
            "run": common.run_info(device, argv),
        }
        if ctx.is_main:
            files = (
                plot_training(results, os.path.join(out_dir, "mnist_training.png"), cfg),
                plot_nfe(results, os.path.join(out_dir, "mnist_nfe.png"), device),
                common.write_json(os.path.join(out_dir, "mnist.json"), summary),
            )
            print("\n" + summary["table"])
            rows = {f"{LABELS[r.name]} test accuracy": f"{100 * r.test_accuracy:.2f}%" for r in results}
            rows["processes"] = ctx.world_size
            rows["training images x epochs"] = f"{data['train_x'].shape[0]} x {cfg.epochs}"
            common.print_summary(f"{NAME}: {', '.join(LABELS[n] for n in names)}", rows, files)
    finally:
        distributed.finish(ctx)
    return summary


if __name__ == "__main__":
    main()
