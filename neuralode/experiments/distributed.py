"""Data-parallel training with ``torch.distributed`` (DDP), started by ``torchrun``.

``torchrun --nproc_per_node=N -m neuralode.experiments <name> ...`` starts N processes
and tells each its place through the environment: ``WORLD_SIZE`` (N), ``RANK`` (0..N-1)
and ``LOCAL_RANK`` (its index on this machine), plus ``MASTER_ADDR``/``MASTER_PORT``
for the rendezvous. :func:`init` reads them and joins the process group: gloo on CPU,
NCCL on CUDA (each process on ``cuda:LOCAL_RANK``). Without them the run is one
process and every helper here is a no-op.

Every rank walks the same shuffled order of the training set; each global batch of
``B`` examples is cut into ``N`` equal contiguous shards (:func:`shard`) and rank ``r``
trains on shard ``r``. DDP averages the parameter gradients over the ranks, so the
step equals one process's step on the whole global batch whenever the loss is a mean
over independent examples (BatchNorm in training mode is the exception: each rank
normalizes with the statistics of its own shard).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["DistContext", "init", "shard", "wrap", "broadcast_buffers", "all_reduce_sum", "finish"]

_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on
    its machine, and the ``backend`` (None when the run is a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        """True when this process belongs to a process group of several ranks."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, plots and writes files."""
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"environment variable {name}={value!r} is not an integer; start the run with torchrun") from None


def init(device: torch.device) -> tuple:
    """Joins the process group when started by torchrun: ``(DistContext, device)``.

    ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` all set and ``WORLD_SIZE > 1`` mean a
    distributed run; the backend is NCCL when ``device`` is CUDA (the process then
    uses ``cuda:LOCAL_RANK``), gloo otherwise. Otherwise returns a single-process
    context and ``device`` unchanged.
    """
    present = [name for name in _ENV if name in os.environ]
    if not present:
        return DistContext(), device
    if len(present) != len(_ENV):
        missing = sorted(set(_ENV) - set(present))
        raise SystemExit(
            f"found {', '.join(present)} but not {', '.join(missing)} in the environment; "
            "start distributed runs with torchrun --nproc_per_node=N"
        )
    world, rank, local_rank = (_env_int(name) for name in _ENV)
    if world <= 1:
        return DistContext(), device
    if not 0 <= rank < world:
        raise SystemExit(f"RANK={rank} is outside 0..WORLD_SIZE-1={world - 1}")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise SystemExit(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                "use at most that many processes per node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, backend), device


def shard(batch: Tensor, ctx: DistContext) -> Tensor:
    """Rank ``ctx.rank``'s contiguous shard of a global batch (of indices or examples):
    ``batch[r * B/N : (r + 1) * B/N]``. ``B`` must be a multiple of ``N``, so that every
    rank's mean loss has the same weight in DDP's average."""
    if not ctx.enabled:
        return batch
    size = batch.shape[0]
    if size % ctx.world_size:
        raise ValueError(f"a global batch of {size} does not split evenly over {ctx.world_size} processes")
    per = size // ctx.world_size
    return batch[ctx.rank * per : (ctx.rank + 1) * per]


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when distributed, else ``model``.

    DDP broadcasts rank 0's parameters and buffers at construction and registers a
    hook on every parameter's gradient accumulation; the hooks all-reduce (average)
    the gradients in buckets during ``backward``. The adjoint's parameter gradients
    come out of a custom ``autograd.Function`` whose inputs include the parameters,
    so they are accumulated, and the hooks fire, like any other gradient.
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def broadcast_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Copies rank 0's buffers (BatchNorm's running statistics) to every rank.

    DDP broadcasts them at the start of each forward, but each rank's training forward
    (and the adjoint's evaluations of f) then updates its own copy from its shard;
    before an evaluation split over the ranks they must agree again."""
    if ctx.enabled:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def all_reduce_sum(value: Tensor, ctx: DistContext) -> Tensor:
    """The sum of ``value`` over the ranks (in place; ``value`` itself when single)."""
    if ctx.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def finish(ctx: DistContext) -> None:
    """Leaves the process group (a no-op for a single process)."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
