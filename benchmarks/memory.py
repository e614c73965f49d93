"""Peak memory of one forward + backward of the paper's MNIST ODE block.

The block is ``neuralode.dynamics.ConvODEF(64)`` (two 3x3 convolutions with time as
an extra channel, BatchNorm in eval mode so that every gradient mode differentiates
the same function), the state ``z0 ~ N(0, 1)`` of shape ``(batch, 64, 6, 6)`` float32
(the 6x6 feature maps of the paper's MNIST down-sampling), ``t = [0, 1]``, loss
``sum(z(1)^2)``, gradients w.r.t. ``z0`` and the block's parameters. One point is
one solver setting in one gradient mode:

* fixed-step ``rk4`` with 10, 30, 100, 300, 1000 steps (``options={"step_size": 1/n}``;
  neuralode's ``rk4_classic`` against torchdiffeq's ``rk4``, the 3/8 rule) in the modes
  ``neuralode backprop``, ``neuralode adjoint``, ``torchdiffeq odeint``, ``torchdiffeq odeint_adjoint``;
* ``dopri5`` at ``rtol = atol`` = 1e-1 ... 1e-5, the same modes and ``neuralode
  checkpoint``; its "steps" are the accepted steps of the forward solve.

Batches 32 and 128. ``--quick``: batch 32, rk4 steps 10, 30, 100, 1000, dopri5
tolerances 1e-1 and 1e-3. ``run(tiny=True)`` (smoke tests): ``ConvODEF(4)``, state
``(2, 4, 6, 6)``, rk4 steps 2 and 4, dopri5 at 1e-1, every mode, a few seconds.

How the peak is measured. CPU: every point runs in a process of its own (so
nothing cached by an earlier point is reused), forked from a server process that
imported the libraries and ran nothing else (so the imports are paid once), with
glibc's mmap threshold pinned at 64 KiB (``MALLOC_MMAP_THRESHOLD_``) so that every
tensor of 64 KiB or more gets its own mapping and goes back to the OS when freed:
resident memory then follows the live tensors. The point's process builds the
block and the inputs, runs one untimed warm-up forward + backward at the smallest
setting (one rk4 step; dopri5 at 1e-1), then hands malloc's free pages back to the
OS (``malloc_trim``), reads its resident memory (``/proc/self/statm``) as the baseline and runs the
measured forward + backward while a thread samples the resident memory every
millisecond. The peak is the largest resident memory during the call, taken from
``getrusage(RUSAGE_SELF).ru_maxrss`` when the call raised the lifetime high-water
mark (exact), else from the samples, minus the baseline. Each run first checks the
method: allocating a 100 MiB tensor inside the measured call, and 100 MiB as 341
tensors of 300 KiB (about the size of a batch-32 state), must read as ~100 MiB
(``result["validation"]``). CUDA: ``torch.cuda.reset_peak_memory_stats()`` and
``max_memory_allocated()`` minus the bytes allocated before the call, in process.

A point whose peak, predicted linearly in the steps from the smaller settings of
the same mode (dopri5: steps from the flat-memory mode of the same library at the
same tolerance), exceeds the budget (default 6 GiB) is not run and is recorded with
``"skipped"``; a CPU point that passes the budget while running is stopped and
recorded likewise.

CPU points run in one torch thread (memory does not depend on it; run time on a
busy machine does), two at a time (``--workers``), a point starting only while the
predicted peaks of the running points and its own fit in the budget together.

Run::

    python -m benchmarks.memory [--quick] [--device cpu|cuda] [--out DIR] [--budget-gib G]
                                [--threads N] [--workers W]

It prints a markdown section and writes ``DIR/memory_<device>.json`` and
``DIR/memory_<device>.png`` (default ``DIR``: ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import posixpath
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Dict, List, Optional

import torch
from torch import nn

from .common import CountedODEF, fmt_ratio, solver_kwargs
from .timing import machine_info

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")

MiB = 1024.0**2
GiB = 1024.0**3
DEFAULT_BUDGET_GIB = 6.0
#: Intra-op threads of the CPU points. Memory does not depend on it, run time does:
#: with more threads than free cores (a busy machine) the many small ops of a
#: solve spend most of their time waiting for each other.
DEFAULT_THREADS = 1
#: CPU points measured at the same time, each in its own process (one a core).
DEFAULT_WORKERS = 2

SPATIAL = 6  # 6x6 feature maps: the paper's MNIST down-sampling
T_END = 1.0

RK4_MODES = ("neuralode backprop", "neuralode adjoint", "torchdiffeq odeint", "torchdiffeq odeint_adjoint")
DOPRI5_MODES = (
    "neuralode backprop",
    "neuralode adjoint",
    "neuralode checkpoint",
    "torchdiffeq odeint",
    "torchdiffeq odeint_adjoint",
)
#: Every mode, in the order of tables and legends.
MODES = DOPRI5_MODES
#: Modes whose memory does not grow with the steps: run first at each dopri5
#: tolerance, they give the step count from which the others are predicted.
FLAT_MODE = {"neuralode": "neuralode adjoint", "torchdiffeq": "torchdiffeq odeint_adjoint"}

CONFIGS = {
    "full": {
        "batches": (32, 128),
        "dim": 64,
        "rk4_steps": (10, 30, 100, 300, 1000),
        "dopri5_tols": (1e-1, 1e-2, 1e-3, 1e-4, 1e-5),
    },
    "quick": {"batches": (32,), "dim": 64, "rk4_steps": (10, 30, 100, 1000), "dopri5_tols": (1e-1, 1e-3)},
    "tiny": {"batches": (2,), "dim": 4, "rk4_steps": (2, 4), "dopri5_tols": (1e-1,)},
}

POINT_TIMEOUT_S = 1800
RESULT_TAG = "MEMORY_POINT_RESULT "
ABORT_RC = 3
VALIDATION_BYTES = 100 * 1024 * 1024


# --------------------------------------------------------------------------- one point


def _make_call(spec: dict, block: nn.Module, z0: torch.Tensor, t: torch.Tensor, steps, tol):
    """A function running one forward + backward of ``spec``'s mode; returns the counters."""
    mode, solver = spec["mode"], spec["solver"]
    if solver == "rk4":
        # The series' neuralode side is the classic RK4 (what was measured); torchdiffeq's
        # rk4 is the 3/8 rule (neuralode's "rk4" now too): four evaluations a step either way.
        method = "rk4_classic" if mode.startswith("neuralode") else "rk4"
        kwargs = solver_kwargs({"method": method, "step": T_END / steps})
    else:
        kwargs = solver_kwargs({"method": "dopri5", "rtol": tol, "atol": tol})
    if mode.startswith("neuralode"):
        import neuralode

        gradient = mode.split()[1]

        def call():
            stats = neuralode.SolverStats()
            ys = neuralode.odeint(block, z0, t, gradient=gradient, stats=stats, **kwargs)
            loss = ys[-1].pow(2).sum()
            loss.backward()
            return {
                "nfe_forward": stats.nfe_forward,
                "nfe_backward": stats.nfe_backward,
                "steps_forward": stats.steps_accepted,
                "steps_rejected": stats.steps_rejected,
                "steps_backward": stats.steps_accepted_backward if gradient != "backprop" else None,
                "loss": float(loss.detach()),
            }

        return call

    import torchdiffeq

    fn = torchdiffeq.odeint_adjoint if mode == "torchdiffeq odeint_adjoint" else torchdiffeq.odeint
    func = CountedODEF(block)

    def call():
        func.reset_counters()
        ys = fn(func, z0, t, **kwargs)
        nfe_forward, accepted = func.nfe, func.steps["accepted"]
        loss = ys[-1].pow(2).sum()
        loss.backward()
        if solver == "rk4":  # fixed grid: no accept callbacks, four evaluations a step
            steps_forward = nfe_forward // 4
            steps_backward = (func.nfe - nfe_forward) // 4 if mode.endswith("adjoint") else None
        else:
            steps_forward = accepted
            steps_backward = func.steps["accepted_adjoint"] if mode.endswith("adjoint") else None
        return {
            "nfe_forward": nfe_forward,
            "nfe_backward": func.nfe - nfe_forward,
            "steps_forward": steps_forward,
            "steps_rejected": None,
            "steps_backward": steps_backward,
            "loss": float(loss.detach()),
        }

    return call


def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _page_size()


_LIBC = None


def _malloc_trim() -> None:
    """Hands the free pages of malloc's heaps back to the OS (glibc), so that memory
    freed before a measured call counts again when the call reuses it."""
    global _LIBC
    try:
        if _LIBC is None:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _maxrss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class _RssMeter:
    """Peak resident memory of a call, relative to the resident memory before it."""

    def __init__(self, hard_cap_bytes: Optional[float] = None, interval_s: float = 1e-3):
        self.hard_cap = hard_cap_bytes
        self.interval = interval_s

    def _sample(self):
        while not self._stop.is_set():
            rss = _rss_bytes()
            if rss > self._max:
                self._max = rss
                if self.hard_cap is not None and rss - self.baseline > self.hard_cap:
                    sys.stdout.flush()
                    sys.stderr.write(
                        f"memory point stopped: resident memory {(rss - self.baseline) / MiB:.1f} MiB above "
                        f"the baseline passed the budget {self.hard_cap / MiB:.1f} MiB\n"
                    )
                    sys.stderr.flush()
                    os._exit(ABORT_RC)
            self._samples += 1
            time.sleep(self.interval)

    def measure(self, fn):
        gc.collect()
        _malloc_trim()
        self.baseline = _rss_bytes()
        maxrss_before = _maxrss_bytes()
        self._max = self.baseline
        self._samples = 0
        self._stop = threading.Event()
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            out = fn()
        finally:
            self._stop.set()
            thread.join()
        maxrss_after = _maxrss_bytes()
        sampled = max(self._max, _rss_bytes())
        if maxrss_after > maxrss_before:  # the call set the lifetime high-water mark: exact
            peak, method = max(maxrss_after, sampled), "ru_maxrss"
        else:
            peak, method = sampled, "sampled"
        gc.collect()
        return out, {
            "peak_bytes": max(peak - self.baseline, 0),
            "baseline_bytes": self.baseline,
            "retained_bytes": _rss_bytes() - self.baseline,
            "peak_method": method,
            "rss_samples": self._samples,
        }


class _CudaMeter:
    def __init__(self, device):
        self.device = device

    def measure(self, fn):
        gc.collect()
        torch.cuda.synchronize(self.device)
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        out = fn()
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        return out, {
            "peak_bytes": peak - base,
            "baseline_bytes": base,
            "retained_bytes": torch.cuda.memory_allocated(self.device) - base,
            "peak_method": "cuda max_memory_allocated",
        }


def _meter(device: str, hard_cap_bytes: Optional[float]):
    return _CudaMeter(torch.device(device)) if device.startswith("cuda") else _RssMeter(hard_cap_bytes)


def measure_point(spec: dict) -> dict:
    """Measures one point (in this process): the counters and the peak memory."""
    import warnings

    from neuralode.dynamics import ConvODEF

    # torchdiffeq's fixed-grid solvers ignore the step callbacks, and say so.
    warnings.filterwarnings("ignore", message=".*does not support callbacks.*")
    device = spec.get("device", "cpu")
    if spec.get("threads") and not device.startswith("cuda"):  # CUDA points run in the caller's process
        torch.set_num_threads(int(spec["threads"]))
    meter = _meter(device, spec.get("hard_cap_bytes"))

    if spec["mode"] == "validation":
        kind = spec["solver"]
        n = round(VALIDATION_BYTES / (300 * 1024))  # "tensors of 300 KiB": about a batch-32 state each

        def call():
            if kind == "one tensor":
                x = torch.ones(VALIDATION_BYTES // 4)
            else:
                x = [torch.ones(300 * 1024 // 4) for _ in range(n)]
            del x
            return {}

        call()  # warm-up
        meter.measure(lambda: {})
        _, mem = meter.measure(call)
        expected = VALIDATION_BYTES if kind == "one tensor" else n * 300 * 1024
        return {**mem, "expected_bytes": expected}

    torch.manual_seed(0)
    block = ConvODEF(spec["dim"]).to(device).eval()
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(spec["batch"], spec["dim"], SPATIAL, SPATIAL, generator=gen).to(device).requires_grad_(True)
    t = torch.tensor([0.0, T_END], device=device)

    # Warm-up at the smallest setting: lazy initialisations (thread pools, kernels'
    # scratch) are not part of the measured call.
    warm = _make_call(spec, block, z0, t, steps=1, tol=1e-1)
    warm()
    z0.grad = None
    block.zero_grad(set_to_none=True)
    del warm
    meter.measure(lambda: {})  # the meter's own first run (thread start, code pages) is not measured

    call = _make_call(spec, block, z0, t, steps=spec.get("steps"), tol=spec.get("tol"))
    start = time.perf_counter()
    counters, mem = meter.measure(call)
    seconds = time.perf_counter() - start
    return {**counters, **mem, "seconds": seconds}


class _Aborted(Exception):
    pass


def _serve() -> None:
    """The point server (``--serve``): imports the libraries once, runs no torch op
    itself, and measures every point it reads (one JSON spec a line on stdin) in a
    process forked for that point alone, so that every point starts from the same
    clean state, as a fresh interpreter would, without paying the imports each time.
    Writes one JSON line per point: ``{"rc": ..., "result": ..., "error": ...}``."""
    import select
    import signal

    import neuralode  # noqa: F401
    import neuralode.dynamics  # noqa: F401

    try:
        import torchdiffeq  # noqa: F401
    except Exception:
        pass
    gc.freeze()  # the imported objects: not traversed by the points' collections, not copied on write
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        timeout = float(spec.get("timeout_s", POINT_TIMEOUT_S))
        r_fd, w_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the point's process
            os.close(r_fd)
            try:
                msg = {"result": measure_point(spec)}
            except BaseException as err:  # reported to the suite, which goes on
                lines = str(err).strip().splitlines()
                msg = {"error": f"{type(err).__name__}: {lines[0] if lines else ''}"}
            data = json.dumps(msg).encode()
            while data:
                data = data[os.write(w_fd, data):]
            os._exit(0)
        os.close(w_fd)
        chunks, deadline, timed_out = [], time.monotonic() + timeout, False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([r_fd], [], [], left)
            if ready:
                chunk = os.read(r_fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        os.close(r_fd)
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        reply = {"rc": rc}
        if timed_out:
            reply["error"] = f"TimeoutError: the point ran past {timeout:g} s"
        elif chunks:
            try:
                reply.update(json.loads(b"".join(chunks)))
            except ValueError:
                reply["error"] = "the point's process wrote no valid result"
        else:
            reply["error"] = f"the point's process exited with {rc} and no result"
        out.write(json.dumps(reply) + "\n")
        out.flush()


class _PointRunner:
    """Runs points on CPU, each in a process of its own (see ``_serve``)."""

    def __init__(self):
        self.proc = None

    def _start(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # Every tensor of 64 KiB or more gets its own mapping, returned to the OS when
        # freed: resident memory follows the live tensors.
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.memory", "--serve"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def measure(self, spec: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError("the point server exited")
        reply = json.loads(line)
        if reply.get("rc") == ABORT_RC:
            raise _Aborted(f"resident memory passed the budget {spec['hard_cap_bytes'] / GiB:g} GiB")
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["result"]

    def close(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- the suite


def _predict(points: List[dict], target_steps: Optional[float]) -> Optional[float]:
    """Peak predicted linearly in the steps from the measured points of one series."""
    done = sorted(
        ((p["steps"], p["peak_bytes"]) for p in points if p.get("peak_bytes") is not None and p.get("steps")),
    )
    if not done or target_steps is None:
        return None
    if len(done) == 1 or done[-1][0] == done[-2][0]:
        x, y = done[-1]
        return y * max(target_steps / x, 1.0)
    (x1, y1), (x2, y2) = done[-2], done[-1]
    slope = max((y2 - y1) / (x2 - x1), 0.0)
    return max(y2 + slope * (target_steps - x2), y2)


def _dopri5_target_steps(point: dict, done: List[dict]) -> Optional[float]:
    """Forward steps of a dopri5 point: those of the same library's flat-memory mode at
    the same tolerance (same forward solve), else extrapolated as tol^(-1/5)."""
    lib = point["mode"].split()[0]
    for p in done:
        if (
            p["solver"] == "dopri5"
            and p["batch"] == point["batch"]
            and p["tol"] == point["tol"]
            and p["mode"].split()[0] == lib
            and p.get("steps")
        ):
            return p["steps"]
    same = [p for p in done if p["solver"] == "dopri5" and p["batch"] == point["batch"] and p["mode"] == point["mode"]]
    same = [p for p in same if p.get("steps")]
    if not same:
        return None
    last = min(same, key=lambda p: p["tol"])
    return last["steps"] * (last["tol"] / point["tol"]) ** 0.2


def _plan(config: dict) -> List[List[dict]]:
    """The points as series, each run in order (its predictions use its earlier points),
    the series possibly side by side: per batch, one rk4 series per mode by increasing
    steps, and one dopri5 series per library by decreasing tolerance, the library's
    flat-memory mode first at each tolerance (it gives the steps of the others)."""
    series = []
    for batch in config["batches"]:
        for mode in ("neuralode adjoint", "neuralode backprop", "torchdiffeq odeint_adjoint", "torchdiffeq odeint"):
            series.append(
                [{"solver": "rk4", "mode": mode, "batch": batch, "steps": n, "tol": None} for n in config["rk4_steps"]]
            )
        for modes in (
            ("neuralode adjoint", "neuralode checkpoint", "neuralode backprop"),
            ("torchdiffeq odeint_adjoint", "torchdiffeq odeint"),
        ):
            series.append(
                [
                    {"solver": "dopri5", "mode": mode, "batch": batch, "steps": None, "tol": tol}
                    for tol in config["dopri5_tols"]
                    for mode in modes
                ]
            )
    return series


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _sort_key(p: dict):
    return (p["batch"], p["solver"] != "rk4", MODES.index(p["mode"]), p["steps"] or 0, -(p["tol"] or 0))


def _ratio(points: List[dict], mode: str, batch: int) -> dict:
    series = sorted(
        (
            p
            for p in points
            if p["solver"] == "rk4" and p["mode"] == mode and p["batch"] == batch and p.get("peak_bytes")
        ),
        key=lambda p: p["steps"],
    )
    if len(series) < 2:
        return {"ratio": None, "steps": None, "peak_bytes": None}
    lo, hi = series[0], series[-1]
    return {
        "ratio": hi["peak_bytes"] / lo["peak_bytes"],
        "steps": [lo["steps"], hi["steps"]],
        "peak_bytes": [lo["peak_bytes"], hi["peak_bytes"]],
    }


def _summary(points: List[dict], batches) -> dict:
    per_batch = {}
    for b in batches:
        per_batch[str(b)] = {
            "neuralode adjoint": _ratio(points, "neuralode adjoint", b),
            "neuralode backprop": _ratio(points, "neuralode backprop", b),
            "torchdiffeq odeint_adjoint": _ratio(points, "torchdiffeq odeint_adjoint", b),
            "torchdiffeq odeint": _ratio(points, "torchdiffeq odeint", b),
        }
    main_batch = str(batches[0])  # batch 32: the only batch whose rk4 series all run in every config
    s = per_batch[main_batch]
    return {
        "batch": int(main_batch),
        "adjoint_flat_ratio": s["neuralode adjoint"]["ratio"],
        "adjoint_flat_steps": s["neuralode adjoint"]["steps"],
        "backprop_growth_ratio": s["neuralode backprop"]["ratio"],
        "backprop_growth_steps": s["neuralode backprop"]["steps"],
        "torchdiffeq_adjoint_flat_ratio": s["torchdiffeq odeint_adjoint"]["ratio"],
        "torchdiffeq_backprop_growth_ratio": s["torchdiffeq odeint"]["ratio"],
        "definition": "peak at the most measured rk4 steps / peak at the fewest, same mode and batch",
        "per_batch": per_batch,
    }


def _validate(device: str, threads: int, runner: "_PointRunner") -> dict:
    out = {}
    for kind in ("one tensor", "tensors of 300 KiB"):
        spec = {"solver": kind, "mode": "validation", "device": device, "threads": threads}
        try:
            r = runner.measure(spec) if device == "cpu" else measure_point(spec)
            r["measured_over_expected"] = r["peak_bytes"] / r["expected_bytes"]
        except Exception as err:  # reported, the suite still runs
            r = {"error": f"{type(err).__name__}: {err}"}
        out[kind] = r
    return out


def _label(point: dict) -> str:
    setting = f"{point['steps']} steps" if point["solver"] == "rk4" else f"tol {point['tol']:g}"
    return f"batch {point['batch']} {point['solver']} {setting} {point['mode']}"


def _run_one(plan_point, config, device, threads, budget, budget_gib, runner, done, lock) -> dict:
    """Predicts, then measures (or skips) one point; returns the point's record."""
    point = dict(plan_point)
    with lock:
        series = [
            p for p in done if (p["solver"], p["mode"], p["batch"]) == (point["solver"], point["mode"], point["batch"])
        ]
        target = point["steps"] if point["solver"] == "rk4" else _dopri5_target_steps(point, done)
    predicted = _predict(series, target)
    point["predicted_peak_bytes"] = predicted
    if predicted is not None and predicted > budget:
        point["skipped"] = (
            f"predicted peak {predicted / GiB:.1f} GiB (linear in steps from the smaller settings) "
            f"exceeds the budget {budget_gib:g} GiB"
        )
        point["peak_bytes"] = None
        return point
    spec = {**plan_point, "dim": config["dim"], "device": device, "threads": threads, "hard_cap_bytes": budget}
    try:
        if device.startswith("cuda"):
            try:
                r = measure_point(spec)
            finally:
                torch.cuda.empty_cache()
        else:
            r = runner.measure(spec)
    except _Aborted as err:
        point.update(skipped=f"stopped while running: {err}", peak_bytes=None)
    except Exception as err:
        msg = str(err).strip().splitlines()
        point.update(skipped=f"error: {type(err).__name__}: {msg[0] if msg else ''}", peak_bytes=None)
    else:
        if point["solver"] == "dopri5":
            point["steps"] = r["steps_forward"]
        point.update(
            nfe_forward=r["nfe_forward"],
            nfe_backward=r["nfe_backward"],
            peak_bytes=float(r["peak_bytes"]),
            steps_forward_counted=r["steps_forward"],
            steps_rejected=r["steps_rejected"],
            steps_backward=r["steps_backward"],
            baseline_bytes=r["baseline_bytes"],
            retained_bytes=r["retained_bytes"],
            peak_method=r["peak_method"],
            seconds=r["seconds"],
            loss=r["loss"],
        )
    return point


def _run_points(config, device, threads, budget, budget_gib, workers, log):
    """Validation, then every point: ``workers`` series side by side (CPU), a point
    starting only while the predicted peaks of the running ones and its own fit in the
    budget together (a point alone always starts)."""
    is_cuda = device.startswith("cuda")
    workers = 1 if is_cuda else max(1, int(workers))
    runners = [_PointRunner() for _ in range(workers)]
    done: List[dict] = []
    lock = threading.Condition()
    state = {"reserved": 0.0, "running": 0, "error": None}
    queue = list(_plan(config))
    try:
        validation = _validate(device, threads, runners[0])
        for kind, r in validation.items():
            if "error" in r:
                log(f"validation {kind}: {r['error']}")
            else:
                log(
                    f"validation {kind}: {r['peak_bytes'] / MiB:.1f} MiB measured for "
                    f"{r['expected_bytes'] / MiB:.1f} MiB"
                )

        def reserve(point) -> float:
            with lock:
                series = [
                    p
                    for p in done
                    if (p["solver"], p["mode"], p["batch"]) == (point["solver"], point["mode"], point["batch"])
                ]
                target = point["steps"] if point["solver"] == "rk4" else _dopri5_target_steps(point, done)
                need = min(_predict(series, target) or 0.0, budget)
                while state["running"] and state["reserved"] + need > budget:
                    lock.wait()
                state["reserved"] += need
                state["running"] += 1
                return need

        def release(need):
            with lock:
                state["reserved"] -= need
                state["running"] -= 1
                lock.notify_all()

        def worker(runner):
            try:
                while True:
                    with lock:
                        if not queue or state["error"]:
                            return
                        series = queue.pop(0)
                    for plan_point in series:
                        need = reserve(plan_point)
                        try:
                            point = _run_one(
                                plan_point, config, device, threads, budget, budget_gib, runner, done, lock
                            )
                        finally:
                            release(need)
                        with lock:
                            done.append(point)
                        if "skipped" in point:
                            log(f"{_label(point)}: {point['skipped']}")
                        else:
                            log(
                                f"{_label(point)}: {point['peak_bytes'] / MiB:.1f} MiB, steps {point['steps']}, "
                                f"NFE {point['nfe_forward']}/{point['nfe_backward']}, {point['seconds']:.1f} s"
                            )
            except BaseException as err:  # a bug: stop the others, raise it below
                with lock:
                    state["error"] = err
                    lock.notify_all()

        pool = [threading.Thread(target=worker, args=(r,), daemon=True) for r in runners]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        if state["error"] is not None:
            raise state["error"]
    finally:
        for r in runners:
            r.close()
    for p in done:
        p.setdefault("nfe_forward", None)
        p.setdefault("nfe_backward", None)
    return validation, done


def run(
    quick: bool = False,
    device: str = "cpu",
    out_dir: str = RESULTS_DIR,
    *,
    tiny: bool = False,
    budget_gib: float = DEFAULT_BUDGET_GIB,
    threads: Optional[int] = DEFAULT_THREADS,
    workers: int = DEFAULT_WORKERS,
    verbose: bool = True,
) -> dict:
    """Runs the suite; writes ``out_dir/memory_<device>.json`` and ``.png`` (``tiny``:
    ``memory_<device>_tiny.json``/``.png``) and returns the result.

    ``quick``/``tiny`` pick the smaller configurations (``CONFIGS``); ``budget_gib``:
    points predicted above it are skipped; ``threads``: torch's intra-op threads of
    the CPU points (``None``: torch's default); ``workers``: CPU points measured side by
    side (each in its own process; CUDA: one at a time)."""
    name = "tiny" if tiny else "quick" if quick else "full"
    config = CONFIGS[name]
    dev = device.split(":")[0]
    if dev == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda: torch sees no CUDA device")
    budget = budget_gib * GiB
    threads = threads or torch.get_num_threads()
    started = time.perf_counter()

    def log(msg):
        if verbose:
            print(msg, file=sys.stderr, flush=True)

    validation, done = _run_points(config, device, threads, budget, budget_gib, workers, log)
    points = sorted(done, key=_sort_key)

    state_bytes = {b: b * config["dim"] * SPATIAL * SPATIAL * 4 for b in config["batches"]}
    os.makedirs(out_dir, exist_ok=True)
    stem = f"memory_{dev}" + ("_tiny" if tiny else "")
    json_path = os.path.join(out_dir, stem + ".json")
    png_path = os.path.join(out_dir, stem + ".png")
    flags = " --quick" if quick and not tiny else ""
    command = (
        f"benchmarks.memory.run(tiny=True, device={device!r})"
        if tiny
        else f"python -m benchmarks.memory{flags} --device {device} --budget-gib {budget_gib:g} "
        f"--threads {threads} --workers {workers}"
    )
    result = {
        "suite": "memory",
        "config": name,
        "problem": {
            "block": f"neuralode.dynamics.ConvODEF({config['dim']}), eval mode (BatchNorm running statistics), "
            "torch.manual_seed(0) init",
            "state": f"(batch, {config['dim']}, {SPATIAL}, {SPATIAL}) float32, N(0, 1) (torch.Generator seed 1)",
            "state_bytes": {str(b): v for b, v in state_bytes.items()},
            "times": [0.0, T_END],
            "loss": "sum(z(1)^2), backward w.r.t. z0 and the block's parameters",
            "rk4": "options={'step_size': 1/steps}; neuralode: rk4_classic (classic RK4), torchdiffeq: rk4 (3/8 rule)",
            "dopri5": "rtol = atol = tol; steps = accepted steps of the forward solve",
            "batches": list(config["batches"]),
            "rk4_steps": list(config["rk4_steps"]),
            "dopri5_tols": list(config["dopri5_tols"]),
        },
        "measurement": (
            "CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus the bytes allocated "
            "before the call, in process"
            if dev == "cuda"
            else f"one process per point ({threads} torch thread(s), up to {workers} points side by side), forked "
            "from a server process that only imported the libraries, MALLOC_MMAP_THRESHOLD_=65536; after a "
            "warm-up forward + backward at the smallest setting (1 rk4 step; dopri5 tol 1e-1) and malloc_trim, "
            "peak resident memory during one forward + "
            "backward (getrusage ru_maxrss when the call set the high-water mark, else a 1 ms sampler of "
            "/proc/self/statm) minus the resident memory just before it"
        ),
        "budget_bytes": budget,
        "validation": validation,
        "points": points,
        "summary": _summary(points, config["batches"]),
        "plot": os.path.relpath(png_path, REPO_ROOT),
        "machine": {**machine_info(device), **({"threads": threads} if dev == "cpu" else {})},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }
    plot(result, png_path)
    result["wall_seconds"] = time.perf_counter() - started
    result = _finite(result)
    with open(json_path, "w") as fh:
        json.dump(result, fh, indent=2, allow_nan=False)
    log(f"written {os.path.relpath(json_path)} and {os.path.relpath(png_path)} in {result['wall_seconds']:.0f} s")
    return result


# --------------------------------------------------------------------------- report

_COLORS = {
    "neuralode backprop": "tab:red",
    "neuralode adjoint": "tab:blue",
    "neuralode checkpoint": "tab:green",
    "torchdiffeq odeint": "tab:orange",
    "torchdiffeq odeint_adjoint": "tab:purple",
}


def plot(result: dict, path: str) -> None:
    """Log-log peak MiB against steps, one panel per batch: rk4 lines, dopri5 markers."""
    from neuralode.experiments.common import pyplot

    plt = pyplot()

    batches = result["problem"]["batches"]
    fig, axes = plt.subplots(1, len(batches), figsize=(6.2 * len(batches), 4.6), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        pts = [p for p in result["points"] if p["batch"] == batch and p.get("peak_bytes")]
        for mode in MODES:
            rk = sorted((p for p in pts if p["mode"] == mode and p["solver"] == "rk4"), key=lambda p: p["steps"])
            if rk:
                # Peers dashed with bigger hollow markers: where two libraries need the same
                # memory (backprop), both lines stay visible.
                peer = mode.startswith("torchdiffeq")
                ax.plot(
                    [p["steps"] for p in rk],
                    [p["peak_bytes"] / MiB for p in rk],
                    "--o" if peer else "-o",
                    color=_COLORS[mode],
                    label=f"{mode} (rk4)",
                    ms=8 if peer else 4,
                    mfc="none" if peer else _COLORS[mode],
                )
            dp = [p for p in pts if p["mode"] == mode and p["solver"] == "dopri5" and p.get("steps")]
            if dp:
                ax.scatter(
                    [p["steps"] for p in dp],
                    [p["peak_bytes"] / MiB for p in dp],
                    marker="s",
                    facecolors="none",
                    edgecolors=_COLORS[mode],
                    s=40,
                    label=f"{mode} (dopri5)",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("steps (rk4: fixed; dopri5: accepted forward steps)")
        ax.set_ylabel("peak memory of forward + backward (MiB)")
        dim = result["problem"]["block"].split("(")[1].split(")")[0]
        ax.set_title(f"ConvODEF({dim}), batch {batch}, state {batch}x{dim}x{SPATIAL}x{SPATIAL}")
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    m = result["machine"]
    fig.suptitle(f"memory, {m['device']}, torch {m['torch']}", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mib(p: Optional[dict]) -> str:
    if p is None:
        return "-"
    if p.get("peak_bytes") is None:
        return "skipped" if "predicted" in p.get("skipped", "") or "stopped" in p.get("skipped", "") else "error"
    return f"{p['peak_bytes'] / MiB:.1f}"


HEADING = "## Memory (`benchmarks/memory.py`)"


def _png_link(result: dict) -> str:
    """The figure relative to the markdown: to the JSON's directory when the result was
    loaded by ``benchmarks.report`` (``_path``: the JSON relative to the markdown; the
    figure lies beside it), else relative to ``benchmarks/``."""
    if result.get("_path"):
        return posixpath.join(posixpath.dirname(result["_path"]), os.path.basename(result["plot"]))
    return os.path.relpath(os.path.join(REPO_ROOT, result["plot"]), BENCH_DIR).replace(os.sep, "/")


def markdown(result: dict, heading: bool = True) -> str:
    """A markdown section: the peaks of every point (two tables), the growth ratios, the
    method check and the figure."""
    pts = result["points"]
    batches = result["problem"]["batches"]

    def find(solver, mode, batch, steps=None, tol=None):
        for p in pts:
            if (p["solver"], p["mode"], p["batch"]) == (solver, mode, batch) and (
                (solver == "rk4" and p["steps"] == steps) or (solver == "dopri5" and p["tol"] == tol)
            ):
                return p
        return None

    m = result["machine"]
    lines = [HEADING, ""] if heading else []
    lines += [
        f"Peak memory (MiB) of one forward + backward of {result['problem']['block'].split(',')[0]} "
        f"(state {result['problem']['state'].split(' float32')[0]}, t = [0, 1], loss sum(z(1)^2)), "
        f"{m['device']}, {m['threads']} thread{'s' if m['threads'] != 1 else ''}, torch {m['torch']}. "
        + (
            "CUDA max_memory_allocated."
            if m["device"].startswith("cuda")
            else "Resident memory of a process of its own per point: the peak during the call minus the memory "
            "before it."
        )
        + f" Points predicted above {result['budget_bytes'] / GiB:g} GiB are skipped.",
        "",
        "rk4 (fixed steps):",
        "",
        "| batch | steps | " + " | ".join(RK4_MODES) + " |",
        "| ---: | ---: |" + " ---: |" * len(RK4_MODES),
    ]
    for b in batches:
        for n in result["problem"]["rk4_steps"]:
            cells = " | ".join(_mib(find("rk4", mode, b, steps=n)) for mode in RK4_MODES)
            lines.append(f"| {b} | {n} | {cells} |")
    lines += [
        "",
        "dopri5 (rtol = atol = tol; steps: accepted forward steps, neuralode / torchdiffeq; "
        "backward NFE of the adjoints, neuralode / torchdiffeq):",
        "",
        "| batch | tol | steps | adjoint NFE bwd | " + " | ".join(DOPRI5_MODES) + " |",
        "| ---: | ---: | ---: | ---: |" + " ---: |" * len(DOPRI5_MODES),
    ]
    for b in batches:
        for tol in result["problem"]["dopri5_tols"]:
            row = {mode: find("dopri5", mode, b, tol=tol) for mode in DOPRI5_MODES}

            def field(mode, key):
                p = row[mode]
                return "-" if p is None or p.get(key) is None else str(p[key])

            steps = f"{field('neuralode adjoint', 'steps')} / {field('torchdiffeq odeint_adjoint', 'steps')}"
            nfe = (
                f"{field('neuralode adjoint', 'nfe_backward')} / "
                f"{field('torchdiffeq odeint_adjoint', 'nfe_backward')}"
            )
            lines.append(
                f"| {b} | {tol:g} | {steps} | {nfe} | " + " | ".join(_mib(row[mode]) for mode in DOPRI5_MODES) + " |"
            )
    s = result["summary"]
    per = s["per_batch"]
    lines += ["", "| peak at the most / the fewest rk4 steps | " + " | ".join(f"batch {b}" for b in batches) + " |"]
    lines.append("| --- |" + " ---: |" * len(batches))
    for label, mode in (
        ("neuralode adjoint (`adjoint_flat_ratio`)", "neuralode adjoint"),
        ("neuralode backprop (`backprop_growth_ratio`)", "neuralode backprop"),
        ("torchdiffeq odeint_adjoint", "torchdiffeq odeint_adjoint"),
        ("torchdiffeq odeint", "torchdiffeq odeint"),
    ):
        ratios = [per[str(b)][mode] for b in batches]
        lines.append(f"| {label} | " + " | ".join(fmt_ratio(r["ratio"], r["steps"]) for r in ratios) + " |")
    val = result.get("validation") or {}
    checks = [
        f"{k}: {v['peak_bytes'] / MiB:.1f} MiB" for k, v in val.items() if isinstance(v, dict) and "peak_bytes" in v
    ]
    if checks:
        lines += ["", "Method check, 100 MiB allocated inside the measured call reads as " + "; ".join(checks) + "."]
    lines += ["", f"![memory]({_png_link(result)})", "", f"`{result['command']}`, {result['date']}"]
    return "\n".join(lines) + "\n"


def markdown_many(results: List[dict]) -> str:
    """One section for several results (devices, configurations): a sub-heading each."""
    parts = [HEADING]
    for r in results:
        where = f" (`{r['_path']}`)" if r.get("_path") else ""
        title = f"### {r['machine']['device']}, {r.get('config', 'full')} configuration{where}"
        parts.append(title + "\n\n" + markdown(r, heading=False))
    return "\n\n".join(p.strip() for p in parts) + "\n"


def main(argv=None):
    """The command line of the memory suite (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 32, rk4 10/30/100/1000 steps, dopri5 1e-1 and 1e-3")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", default=RESULTS_DIR)
    parser.add_argument("--budget-gib", type=float, default=DEFAULT_BUDGET_GIB, help="skip points predicted above it")
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help="torch threads of the CPU points (0: torch's default)"
    )
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="CPU points measured side by side")
    parser.add_argument("--point", help=argparse.SUPPRESS)  # internal: measure one point (JSON spec), print it
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # internal: the point server
    args = parser.parse_args(argv)
    if args.serve:
        return _serve()
    if args.point is not None:
        r = measure_point(json.loads(args.point))
        print(RESULT_TAG + json.dumps(r), flush=True)
        return r
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    result = run(
        quick=args.quick,
        device=args.device,
        out_dir=args.out,
        budget_gib=args.budget_gib,
        threads=args.threads or None,
        workers=args.workers,
    )
    print(markdown(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
