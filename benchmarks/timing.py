"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List

import torch


def sync(device: str) -> None:
    """Waits for the queued CUDA work when ``device`` is a CUDA device (a timer must not stop
    before the kernels it times have run); does nothing on the CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 2, device: str = "cpu") -> List[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def interleaved(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int = 2, device: str = "cpu") -> Dict[str, List[float]]:
    """Times every candidate in turn, repeat by repeat, so drifts of a shared noisy
    machine hit all candidates alike. Returns seconds per call for each name."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    out: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            out[name].append(time.perf_counter() - start)
    return out


def median(xs: List[float]) -> float:
    """The median of ``xs``."""
    return statistics.median(xs)


def machine_info(device: str = "cpu") -> dict:
    """torch version, threads, Python, processor and device (with the GPU's name on CUDA), for the JSON files."""
    import platform

    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
