"""Solver overhead: what a solve costs beyond the evaluations of its dynamics.

For each problem we measure, in one process and interleaved round by round:

* the unit costs: ``t_f``, one evaluation of f (no autograd graph, as in the forward
  solve of the adjoint), and ``t_vjp``, one f + vector-Jacobian product (f on a state
  leaf, then ``torch.autograd.grad`` w.r.t. the state and every parameter: what the
  adjoint's backward solve does per evaluation); per call, the median over rounds of a
  block of as many consecutive calls as the adjoint's NFE (the median of single calls
  is recorded too), after warm-up;
* the solves with ``neuralode.SolverStats``: the adjoint (``odeint_adjoint``), backprop
  (``odeint``) and the checkpointed adjoint, each timed from outside (the forward call,
  then ``loss.backward()``) and from inside (the stats' ``solve_seconds_*`` and
  ``f_seconds_*``), with the NFE of both passes.

Overhead ratios (1.0: the solve costs exactly its evaluations of f; goal < 1.15 on CPU):

* forward: ``solve time / (NFE_fwd x t_f)``;
* backward: ``backward time / (NFE_bwd x t_vjp)`` (the issue's formula; one of the
  backward evaluations of the adjoint is a plain f, the first-step search, so the
  "strict" ratio uses ``t_f + (NFE_bwd - 1) x t_vjp`` instead);
* backprop: ``(forward + backward time) / (NFE_fwd x (t_f + t_vjp))``.

Each ratio is given with the wall-clock time of the Python call (what a user pays) and
with the stats' solve time (the C++ loop alone). When a ratio is above the goal we
profile that pass (``torch.profiler``) and compare the time of every op in the solve
with NFE times its time in isolated calls of f (or f + VJP): what is left is where the
overhead goes.

Problems:

* ``P1``: speed.py's P1 (batch 512 of 2-D states, MLP 2-64-64-2 ELU, t = [0, 5]),
  dopri5, rtol 1e-5, atol 1e-6, float32, loss ``mean(z(5)^2)``.
* ``MNIST block``: ``neuralode.dynamics.ConvODEF(64)`` in eval mode (BatchNorm with its
  running statistics), state ``(32, 64, 6, 6) ~ N(0, 1)``, t = [0, 1], dopri5,
  rtol = atol = 1e-3, float32, loss ``mean(z(1)^2)``.

Run::

    python -m benchmarks.overhead [--quick] [--tiny] [--device cpu|cuda] [--out DIR]

It prints the markdown and writes ``DIR/overhead_<device>.json`` (``--tiny``:
``overhead_<device>_tiny.json``, a small MLP and conv block for smoke tests).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

import neuralode
from neuralode.dynamics import ConvODEF

from . import speed
from .timing import machine_info, sync

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")

#: The issue's goal for the forward and backward ratios on CPU.
GOAL = 1.15
MODES = ("adjoint", "backprop", "checkpoint")

#: Rounds of each configuration. Every round times one block of f calls (as many as the
#: adjoint's forward NFE) and one block of f + VJP calls (its backward NFE), each call
#: timed alone as well, then one forward + backward of every mode.
ROUNDS = {
    "full": {"P1": 200, "MNIST block": 60},
    "quick": {"P1": 50, "MNIST block": 15},
    "tiny": {"P1": 3, "MNIST block": 3},
}
WARMUP = 3
#: Solves of the profiled pass (and unit calls: this many solves' worth of NFE).
PROFILE_SOLVES = {"full": 10, "quick": 5, "tiny": 1}
#: At most this many profiled passes per problem (None: every pass above the goal).
PROFILE_MAX = {"full": None, "quick": None, "tiny": 1}
PROFILE_TOP = 8


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- problems


@dataclass
class Case:
    """One problem of the suite: its dynamics, state, times, loss and solver settings."""
    name: str
    module: nn.Module  # what is passed to odeint (f(t, z) callable or an ODEF module)
    fn: Callable[[Tensor, Tensor], Tensor]  # the same dynamics as f(t, z), as the solver calls it
    params: List[Tensor]
    y0: Tensor
    t: Tensor
    rtol: float
    atol: float
    description: dict


def build_case(name: str, device: str, tiny: bool = False) -> Case:
    """The problem called ``name`` (P1, the MNIST block, or their tiny versions) on ``device``."""
    if name == "P1":
        # speed.py's problem builder; P1 itself, or its small variant for smoke tests.
        prob = speed.build_problem(speed.TINY_PROBLEM if tiny else "P1", device, {})
        func = prob.func
        desc = dict(prob.description)
        desc.update({"method": "dopri5", "rtol": speed.RTOL, "atol": speed.ATOL, "dtype": "float32"})
        return Case(name, func, func, list(func.parameters()), prob.y0, prob.t, speed.RTOL, speed.ATOL, desc)
    if name == "MNIST block":
        dim, batch = (8, 4) if tiny else (64, 32)
        torch.manual_seed(0)
        block = ConvODEF(dim).eval().to(device)
        gen = torch.Generator().manual_seed(0)
        y0 = torch.randn(batch, dim, 6, 6, generator=gen).to(device)
        t = torch.tensor([0.0, 1.0], device=device)
        desc = {
            "name": name,
            "summary": f"neuralode.dynamics.ConvODEF({dim}) in eval mode, state ({batch}, {dim}, 6, 6), "
            "t = [0, 1], loss mean(z(1)^2)",
            "model": f"ConvODEF({dim}), torch.manual_seed(0) init, eval mode (BatchNorm running statistics)",
            "state": [batch, dim, 6, 6],
            "y0": "N(0, 1), torch.Generator seed 0",
            "times": [0.0, 1.0],
            "method": "dopri5",
            "rtol": 1e-3,
            "atol": 1e-3,
            "dtype": "float32",
        }
        return Case(name, block, lambda t, z: block(z, t), list(block.parameters()), y0, t, 1e-3, 1e-3, desc)
    raise ValueError(f"unknown problem {name!r}")


# --------------------------------------------------------------------------- measurement


def _unit_calls(case: Case):
    """f (no graph) and f + VJP w.r.t. the state and every parameter."""
    t0 = case.t[0]
    w = torch.randn(case.y0.shape, generator=torch.Generator().manual_seed(2)).to(case.y0)

    def f_call():
        with torch.no_grad():
            case.fn(t0, case.y0)

    def vjp_call():
        with torch.enable_grad():
            z = case.y0.detach().requires_grad_(True)
            out = case.fn(t0, z)
            torch.autograd.grad(out, [z] + case.params, w, allow_unused=True)

    return f_call, vjp_call


def _solve(case: Case, mode: str):
    """One forward + backward: (ys, loss) -> timed phases. Returns a function that runs
    them and gives (wall forward s, wall backward s, stats)."""
    kwargs = dict(method="dopri5", rtol=case.rtol, atol=case.atol)
    device = case.y0.device.type

    def once(stats: Optional[neuralode.SolverStats]):
        case.module.zero_grad(set_to_none=True)
        extra = {} if stats is None else {"stats": stats}
        sync(device)
        start = time.perf_counter()
        if mode == "adjoint":
            ys = neuralode.odeint_adjoint(case.module, case.y0, case.t, **kwargs, **extra)
        else:
            ys = neuralode.odeint(case.module, case.y0, case.t, gradient=mode, **kwargs, **extra)
        sync(device)
        mid = time.perf_counter()
        ys[-1].pow(2).mean().backward()
        sync(device)
        return mid - start, time.perf_counter() - mid

    return once


def _timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def _measure(case: Case, rounds: int) -> dict:
    device = case.y0.device.type
    f_call, vjp_call = _unit_calls(case)
    solves = {mode: _solve(case, mode) for mode in MODES}
    probe = neuralode.SolverStats()
    solves["adjoint"](probe)
    # Blocks of unit calls as long as the adjoint's passes: a solve's time is a sum of NFE
    # calls, so it is compared with the median of such sums (on a loaded machine the
    # median of single calls would miss the stalls that a sum of many calls catches).
    n_f, n_vjp = max(1, probe.nfe_forward), max(1, probe.nfe_backward)
    for _ in range(WARMUP):
        f_call()
        vjp_call()
        for once in solves.values():
            once(None)

    single = {"f": [], "f_vjp": []}
    block = {"f": [], "f_vjp": []}
    per_mode = {mode: defaultdict(list) for mode in MODES}
    counters = {}
    for _ in range(rounds):
        for key, call, n in (("f", f_call, n_f), ("f_vjp", vjp_call, n_vjp)):
            times = [_timed(call, device) for _ in range(n)]
            single[key] += times
            block[key].append(sum(times) / n)
        for mode, once in solves.items():
            stats = neuralode.SolverStats()
            fwd, bwd = once(stats)
            rec = per_mode[mode]
            rec["wall_forward"].append(fwd)
            rec["wall_backward"].append(bwd)
            for key in ("solve_seconds_forward", "solve_seconds_backward", "f_seconds_forward", "f_seconds_backward"):
                rec[key].append(getattr(stats, key))
            count = {
                k: getattr(stats, k)
                for k in ("nfe_forward", "nfe_backward", "steps_accepted", "steps_rejected",
                          "steps_accepted_backward", "steps_rejected_backward")
            }
            if counters.setdefault(mode, count) != count:
                counters[mode]["varies"] = True  # should not happen: the solves are deterministic
    t_f = statistics.median(block["f"])
    t_vjp = statistics.median(block["f_vjp"])

    modes = {}
    for mode in MODES:
        rec = per_mode[mode]
        med = {k: statistics.median(v) for k, v in rec.items()}
        total = [a + b for a, b in zip(rec["wall_forward"], rec["wall_backward"])]
        c = counters[mode]
        nf, nb = c["nfe_forward"], c["nfe_backward"]
        ratios = {}
        if mode == "backprop":
            ideal = nf * (t_f + t_vjp)
            ratios["total"] = statistics.median(total) / ideal
        else:
            ratios["forward"] = med["wall_forward"] / (nf * t_f)
            ratios["forward_solverstats"] = med["solve_seconds_forward"] / (nf * t_f)
            ratios["backward"] = med["wall_backward"] / (nb * t_vjp)
            ratios["backward_solverstats"] = med["solve_seconds_backward"] / (nb * t_vjp)
            ratios["backward_strict"] = med["wall_backward"] / (t_f + (nb - 1) * t_vjp)
        split = {
            "f_seconds_forward": med["f_seconds_forward"],
            "solve_seconds_forward": med["solve_seconds_forward"],
            "solver_own_seconds_forward": med["solve_seconds_forward"] - med["f_seconds_forward"],
            "f_per_eval_forward": med["f_seconds_forward"] / nf if nf else None,
            "f_seconds_backward": med["f_seconds_backward"],
            "solve_seconds_backward": med["solve_seconds_backward"],
            "solver_own_seconds_backward": med["solve_seconds_backward"] - med["f_seconds_backward"],
            "f_per_eval_backward": med["f_seconds_backward"] / nb if nb else None,
        }
        modes[mode] = {
            **c,
            "wall_forward_seconds": med["wall_forward"],
            "wall_backward_seconds": med["wall_backward"],
            "wall_total_seconds": statistics.median(total),
            "solverstats_median": split,
            "ratios": ratios,
            "samples": len(rec["wall_forward"]),
        }
    return {
        "unit_seconds": {
            "f": t_f,
            "f_vjp": t_vjp,
            "definition": "median over rounds of (one block of consecutive calls) / (calls in the block)",
            "block_calls": {"f": n_f, "f_vjp": n_vjp},
            "blocks": rounds,
            "f_single_median": statistics.median(single["f"]),
            "f_vjp_single_median": statistics.median(single["f_vjp"]),
            "single_calls": {"f": len(single["f"]), "f_vjp": len(single["f_vjp"])},
            "f_single_p10_p90": _spread(single["f"]),
            "f_vjp_single_p10_p90": _spread(single["f_vjp"]),
        },
        "modes": modes,
    }


def _spread(xs: List[float]) -> List[float]:
    q = statistics.quantiles(xs, n=10) if len(xs) >= 2 else [xs[0]] * 9
    return [q[0], q[-1]]


# --------------------------------------------------------------------------- profiling


def _op_self_us(prof) -> Dict[str, float]:
    return {e.key: e.self_cpu_time_total for e in prof.key_averages()}


def _profile_pass(case: Case, mode: str, phase: str, nfe: int, solves: int) -> dict:
    """Where the time of one pass goes beyond NFE isolated unit calls, per op (us per solve)."""
    from torch.profiler import ProfilerActivity, profile

    once_kwargs = dict(method="dopri5", rtol=case.rtol, atol=case.atol)
    f_call, vjp_call = _unit_calls(case)
    unit_call = f_call if phase == "forward" else vjp_call

    def forward():
        case.module.zero_grad(set_to_none=True)
        if mode == "adjoint":
            return neuralode.odeint_adjoint(case.module, case.y0, case.t, **once_kwargs)
        return neuralode.odeint(case.module, case.y0, case.t, gradient=mode, **once_kwargs)

    solve_ops: Dict[str, float] = defaultdict(float)
    activities = [ProfilerActivity.CPU]
    for _ in range(solves):
        if phase == "forward":
            with profile(activities=activities) as prof:
                forward()
        else:
            loss = forward()[-1].pow(2).mean()
            with profile(activities=activities) as prof:
                loss.backward()
        for k, v in _op_self_us(prof).items():
            solve_ops[k] += v / solves
    calls = max(1, nfe) * solves
    with profile(activities=activities) as prof:
        for _ in range(calls):
            unit_call()
    unit_ops = {k: v / calls for k, v in _op_self_us(prof).items()}

    extra = {k: solve_ops.get(k, 0.0) - nfe * unit_ops.get(k, 0.0) for k in set(solve_ops) | set(unit_ops)}
    top = sorted(((k, v) for k, v in extra.items() if v > 0), key=lambda kv: -kv[1])[:PROFILE_TOP]

    # The Python around the C++ loop (argument checks, autograd.Function): cProfile of
    # the same calls, neuralode's own Python functions that do not contain the solve.
    import cProfile
    import pstats

    prof_py = cProfile.Profile()
    for _ in range(solves):
        if phase == "forward":
            prof_py.enable()
            forward()
            prof_py.disable()
        else:
            loss = forward()[-1].pow(2).mean()
            prof_py.enable()
            loss.backward()
            prof_py.disable()
    stats = pstats.Stats(prof_py).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    package = os.path.dirname(os.path.abspath(neuralode.__file__))
    total = sum(v[2] for v in stats.values())
    python_side = []
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in stats.items():
        in_f = os.path.basename(filename) == "dynamics.py" or func == "<lambda>"  # f itself, its adapter
        if os.path.abspath(filename).startswith(package) and not in_f and cumtime < 0.5 * total:
            python_side.append({"function": f"neuralode/{os.path.relpath(filename, package)}:{line}({func})",
                                "cumulative_us": 1e6 * cumtime / solves, "calls_per_solve": ncalls / solves})
    python_side.sort(key=lambda e: -e["cumulative_us"])
    return {
        "python_functions_us": python_side[:PROFILE_TOP],
        "mode": mode,
        "phase": phase,
        "solves_profiled": solves,
        "profiled_solve_us": sum(solve_ops.values()),
        "profiled_nfe_units_us": nfe * sum(unit_ops.values()),
        "top_extra_ops_us": [
            {"op": k, "extra_us": v, "solve_us": solve_ops.get(k, 0.0), "units_us": nfe * unit_ops.get(k, 0.0)}
            for k, v in top
        ],
        "note": "self CPU time per solve under torch.profiler (inflated by the profiler itself); "
        "units_us: NFE times the op's time in one isolated unit call; python_functions_us: cumulative "
        "time per solve under cProfile of neuralode's Python functions that do not contain the solve",
    }


# --------------------------------------------------------------------------- run


def run(
    quick: bool = False,
    device: str = "cpu",
    out_dir: str = RESULTS_DIR,
    tiny: bool = False,
    cases=("P1", "MNIST block"),
    threads: Optional[int] = None,
    **kw,
) -> dict:
    """Measures every case; writes ``out_dir/overhead_<device>.json`` (``tiny``:
    ``overhead_<device>_tiny.json``) and returns the result. ``threads``: torch's
    intra-op threads for the run (default: as set; ``tiny``: 1, since tiny ops on a
    loaded machine are far slower with more), restored after."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda: torch sees no CUDA device")
    config = "tiny" if tiny else "quick" if quick else "full"
    before = torch.get_num_threads()
    if threads is None and tiny:
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
    load_start = _load()
    try:
        result = _run(config, device, cases, threads)
    finally:
        torch.set_num_threads(before)
    result["machine"]["load_average_1min"] = {"start": load_start, "end": _load()}
    result["machine"]["cpu_count"] = os.cpu_count()
    os.makedirs(out_dir, exist_ok=True)
    with open(json_path(out_dir, device, tiny), "w") as fh:
        json.dump(result, fh, indent=2)
    return result


def _load() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _run(config: str, device: str, cases, threads: Optional[int]) -> dict:
    tiny = config == "tiny"
    flags = {"tiny": " --tiny", "quick": " --quick", "full": ""}[config]
    if threads is not None and not tiny:
        flags += f" --threads {threads}"
    command = f"python -m benchmarks.overhead{flags} --device {device}"
    results = {}
    for name in cases:
        case = build_case(name, device, tiny)
        rounds = ROUNDS[config][name]
        res = _measure(case, rounds)
        res["problem"] = case.description
        res["rounds"], res["warmup"] = rounds, WARMUP
        over = {}
        for mode in ("adjoint", "checkpoint"):
            for phase in ("forward", "backward"):
                over[f"{mode} {phase}"] = res["modes"][mode]["ratios"][phase]
        res["goal_met"] = {k: v < GOAL for k, v in over.items()}
        res["profiles"] = []
        if device == "cpu":
            above = [key for key, value in over.items() if value >= GOAL]
            for key in above[: PROFILE_MAX[config]]:
                mode, phase = key.split()
                nfe = res["modes"][mode][f"nfe_{phase}"]
                res["profiles"].append(_profile_pass(case, mode, phase, nfe, PROFILE_SOLVES[config]))
        results[name] = res
    machine = machine_info(device)
    machine["cpu"] = _cpu_model()
    result = {
        "suite": "overhead",
        "goal": GOAL,
        "config": config,
        "cases": results,
        "machine": machine,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }
    return result


def json_path(out_dir: str, device: str, tiny: bool = False) -> str:
    """Where the suite's JSON for ``device`` goes in ``out_dir``."""
    return os.path.join(out_dir, f"overhead_{device.split(':')[0]}{'_tiny' if tiny else ''}.json")


# --------------------------------------------------------------------------- markdown


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f}"


def _ratio(v: float, goal: bool = True) -> str:
    text = f"{v:.2f}"
    return f"**{text}**" if goal and v >= GOAL else text


def markdown(result: dict) -> str:
    """The RESULTS.md section of one overhead result: summary, tables per problem, where the time goes."""
    m = result["machine"]
    cpu = f" ({m['cpu']})" if m.get("cpu") else ""
    gpu = f" ({m['gpu']})" if m.get("gpu") else ""
    lines = [
        "How much a solve costs beyond the evaluations of its dynamics. Overhead ratio 1.0: the "
        "solve costs exactly NFE x the unit cost of f measured alone; the issue's goal is < "
        f"{result['goal']:g} on CPU (ratios at or above it in bold). forward = solve time / (NFE_fwd x t_f); "
        "backward = backward time / (NFE_bwd x t_vjp), with t_f one evaluation of f without a "
        "graph and t_vjp one f + `torch.autograd.grad` w.r.t. the state and every parameter "
        "(per call, medians over rounds of blocks of NFE consecutive calls); backprop: (forward + backward) / (NFE_fwd x (t_f + t_vjp)). "
        "`wall`: the Python call (`odeint`, then `loss.backward()`), what a user pays; "
        "`stats`: `SolverStats.solve_seconds_*`, the C++ loop alone. Unit calls and solves are "
        "interleaved round by round in one process.",
        "",
        f"{m['device']}{gpu}{cpu}, threads: {m['threads']}, torch {m['torch']}, {result['date'][:10]}, "
        f"configuration `{result['config']}`. Command: `{result['command']}`."
        + (f" JSON: `{result['_path']}`." if result.get("_path") else ""),
    ]
    load = m.get("load_average_1min") or {}
    cores = m.get("cpu_count")
    if load.get("start") is not None and cores:
        # The end value includes this run's own threads.
        others = max(load["start"], (load.get("end") or 0.0) - m.get("threads", 1))
        lines[-1] += f" Load average (1 min) at start / end: {load['start']:.1f} / {load['end']:.1f} on {cores} cores."
        if others > 0.5 * cores:
            lines[-1] += (
                " **The machine was busy with other work during this run: the ratios are noisy; rerun on a "
                "quiet machine before reading them closely.**"
            )
    lines += [
        "",
        f"Summary, the adjoint (`odeint_adjoint`), ratio wall / stats, goal < {result['goal']:g}:",
        "",
        "| problem | forward | backward | goal met (wall) |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, c in result["cases"].items():
        r = c["modes"]["adjoint"]["ratios"]
        met = [ph for ph in ("forward", "backward") if r[ph] < result["goal"]]
        lines.append(
            f"| {name} | {_ratio(r['forward'])} / {r['forward_solverstats']:.2f} | "
            f"{_ratio(r['backward'])} / {r['backward_solverstats']:.2f} | "
            f"{' and '.join(met) if met else 'neither'} |"
        )
    for name, c in result["cases"].items():
        u = c["unit_seconds"]
        lines += [
            "",
            f"**{name}**: {c['problem']['summary']}; dopri5, rtol {c['problem']['rtol']:g}, "
            f"atol {c['problem']['atol']:g}, float32. t_f = {u['f'] * 1e3:.3f} ms, t_vjp = "
            f"{u['f_vjp'] * 1e3:.3f} ms: medians over {u['blocks']} rounds of a block of "
            f"{u['block_calls']['f']} (f) or {u['block_calls']['f_vjp']} (f + VJP) consecutive calls, per call "
            f"(median of single calls: {u['f_single_median'] * 1e3:.3f} and {u['f_vjp_single_median'] * 1e3:.3f} ms).",
            "",
            "| mode | pass | NFE | wall ms | stats ms | ideal ms | ratio (wall) | ratio (stats) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for mode in ("adjoint", "checkpoint"):
            r = c["modes"][mode]
            s = r["solverstats_median"]
            lines.append(
                f"| {mode} | forward | {r['nfe_forward']} | {_ms(r['wall_forward_seconds'])} | "
                f"{_ms(s['solve_seconds_forward'])} | {_ms(r['nfe_forward'] * u['f'])} | "
                f"{_ratio(r['ratios']['forward'])} | {_ratio(r['ratios']['forward_solverstats'])} |"
            )
            lines.append(
                f"| {mode} | backward | {r['nfe_backward']} | {_ms(r['wall_backward_seconds'])} | "
                f"{_ms(s['solve_seconds_backward'])} | {_ms(r['nfe_backward'] * u['f_vjp'])} | "
                f"{_ratio(r['ratios']['backward'])} | {_ratio(r['ratios']['backward_solverstats'])} |"
            )
        r = c["modes"]["backprop"]
        lines.append(
            f"| backprop | forward + backward | {r['nfe_forward']} | {_ms(r['wall_total_seconds'])} | - | "
            f"{_ms(r['nfe_forward'] * (u['f'] + u['f_vjp']))} | {_ratio(r['ratios']['total'], goal=False)} | - |"
        )
        a = c["modes"]["adjoint"]
        lines += [
            "",
            f"Strict backward ratio of the adjoint (one of its {a['nfe_backward']} backward evaluations is "
            f"a plain f, the first-step search): {a['ratios']['backward_strict']:.2f}. The backprop row is "
            "indicative only: its forward records the graph of f, and its backward does not evaluate f "
            "again while t_vjp includes one evaluation, so it can fall below 1.",
            "",
            "SolverStats' own split (medians; solver = solve - f; per eval: f seconds / NFE, against "
            "t_f or t_vjp measured alone; the checkpoint's backward times only its replayed evaluations "
            "of f as f, the backward through each replayed step counts as solver time):",
            "",
            "| mode | pass | solve ms | f ms | solver ms | f share | f per eval, in solve / alone (ms) | steps |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for mode in MODES:
            r = c["modes"][mode]
            s = r["solverstats_median"]
            for phase, unit, steps in (
                ("forward", u["f"], f"{r['steps_accepted']}+{r['steps_rejected']}r"),
                ("backward", u["f_vjp"], f"{r['steps_accepted_backward']}+{r['steps_rejected_backward']}r"),
            ):
                solve = s[f"solve_seconds_{phase}"]
                if solve <= 0:
                    continue  # backprop's backward is autograd's, not a solve
                f_s = s[f"f_seconds_{phase}"]
                per = s[f"f_per_eval_{phase}"]
                lines.append(
                    f"| {mode} | {phase} | {_ms(solve)} | {_ms(f_s)} | {_ms(solve - f_s)} | "
                    f"{100 * f_s / solve:.0f}% | {per * 1e3:.3f} / {unit * 1e3:.3f} | {steps} |"
                )
        if c["profiles"]:
            lines += ["", "Where the time goes (ratios at or above the goal, `torch.profiler`):", ""]
            for p in c["profiles"]:
                r = c["modes"][p["mode"]]
                phase = p["phase"]
                s = r["solverstats_median"]
                nfe = r[f"nfe_{phase}"]
                unit = u["f"] if phase == "forward" else u["f_vjp"]
                wall = r[f"wall_{phase}_seconds"]
                solve = s[f"solve_seconds_{phase}"]
                f_s = s[f"f_seconds_{phase}"]
                ideal = nfe * unit
                tops = ", ".join(
                    f"`{o['op']}` +{o['extra_us'] / 1e3:.2f} ms" for o in p["top_extra_ops_us"][:5]
                )
                py = ", ".join(
                    f"`{e['function'].split('(')[-1].rstrip(')')}` {e['cumulative_us'] / 1e3:.2f} ms"
                    for e in p.get("python_functions_us", [])[:4]
                )
                if p["mode"] == "checkpoint" and phase == "backward":
                    f_text = (
                        f"The replayed evaluations of f (stats) {_ms(f_s)} ms; autograd through each replayed "
                        "step and the solver's own work (stats: solve - f)"
                    )
                else:
                    f_text = (
                        f"f inside the solve (stats) {_ms(f_s)} ms, {f_s / ideal:.2f}x its isolated cost; "
                        "the solver's own work (stats: solve - f)"
                    )
                lines.append(
                    f"- {p['mode']} {phase}: {_ms(wall)} ms against {_ms(ideal)} ms for {nfe} isolated calls "
                    f"(excess {_ms(wall - ideal)} ms). {f_text} "
                    f"{_ms(solve - f_s)} ms ({1e6 * (solve - f_s) / max(1, _steps(r, phase)):.0f} us per step); "
                    f"the Python call around the C++ loop {_ms(wall - solve)} ms. Ops whose time in the solve "
                    f"exceeds NFE x their time in one isolated call (per solve, under the profiler): "
                    f"{tops or 'none'}. neuralode's Python around the loop (cProfile, cumulative per solve): "
                    f"{py or 'none'}."
                )
            lines += [
                "",
                "(Profiler attribution: the self time of the `_...Solve` / `_...SolveBackward` autograd "
                "nodes is the C++ loop's own glue plus the Python code of f, its `nn.Module` calls, which "
                "isolated calls attribute to no op; `f per eval` above is the cleaner comparison of f "
                "inside and outside the solve.)",
            ]
    return "\n".join(lines)


def _steps(r: dict, phase: str) -> int:
    if phase == "forward":
        return r["steps_accepted"] + r["steps_rejected"]
    return r["steps_accepted_backward"] + r["steps_rejected_backward"]


def main(argv=None):
    """The command line of the overhead suite (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (same problem sizes)")
    parser.add_argument("--tiny", action="store_true", help="small problems, 3 rounds: a smoke test")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", default=RESULTS_DIR)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    result = run(quick=args.quick, device=args.device, out_dir=args.out, tiny=args.tiny, threads=args.threads)
    print(markdown(result))
    print(f"\nwritten {os.path.relpath(json_path(args.out, args.device, args.tiny))}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
