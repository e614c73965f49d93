"""Smoke tests of the benchmark suites: each runs in its tiny configuration into one
temporary results directory, its JSON has the expected fields and finite numbers, and
the report generator writes a RESULTS.md with every suite's section from them."""

import importlib
import importlib.util
import json
import math

import pytest
import torch

from benchmarks import memory, nfe, overhead, report, speed, spiral_reference


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _load(path):
    with open(path) as fh:
        return json.load(fh)


def _has_interface_fields(result: dict, suite: str) -> None:
    assert result["suite"] == suite
    for key in ("machine", "date", "command"):
        assert result[key], key
    assert result["machine"]["torch"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny problems in one thread: on a loaded 2-core machine, 2 threads make the tiny
    ops of these runs several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_results")


@pytest.fixture(scope="module")
def overhead_result(results_dir):
    overhead.run(tiny=True, out_dir=str(results_dir))
    return _load(overhead.json_path(str(results_dir), "cpu", tiny=True))


@pytest.fixture(scope="module")
def speed_results(results_dir):
    speed.run(tiny=True, out_dir=str(results_dir))
    return {name: _load(results_dir / f"speed_{name}_cpu.json") for name in speed.TINY_PROBLEMS}


@pytest.fixture(scope="module")
def speed_result(speed_results):
    return speed_results[speed.TINY_PROBLEM]


@pytest.fixture(scope="module")
def memory_result(results_dir):
    memory.run(tiny=True, out_dir=str(results_dir), verbose=False)
    return _load(results_dir / "memory_cpu_tiny.json")


@pytest.fixture(scope="module")
def nfe_result(results_dir):
    nfe.run(tiny=True, out_dir=str(results_dir), progress=False)
    return _load(results_dir / "nfe_cpu.json")


@pytest.fixture(scope="module")
def reference_result(results_dir):
    spiral_reference.run(tiny=True, out_dir=str(results_dir))
    return _load(results_dir / "spiral_reference_cpu.json")


def test_overhead_tiny(overhead_result):
    r = overhead_result
    _has_interface_fields(r, "overhead")
    assert r["config"] == "tiny"
    assert set(r["cases"]) == {"P1", "MNIST block"}
    for name, case in r["cases"].items():
        assert case["unit_seconds"]["f"] > 0 and case["unit_seconds"]["f_vjp"] > 0, name
        for mode in overhead.MODES:
            m = case["modes"][mode]
            assert m["nfe_forward"] > 0, (name, mode)
            assert m["steps_accepted"] > 0, (name, mode)
            for key in ("wall_forward_seconds", "wall_backward_seconds", "wall_total_seconds"):
                assert _finite(m[key]) and m[key] > 0, (name, mode, key)
            for key, value in m["solverstats_median"].items():
                assert value is None or _finite(value), (name, mode, key)
            assert m["ratios"] and all(_finite(v) and v > 0 for v in m["ratios"].values()), (name, mode)
        for mode in ("adjoint", "checkpoint"):
            assert case["modes"][mode]["nfe_backward"] > 0
            assert set(case["modes"][mode]["ratios"]) >= {"forward", "backward"}
        assert "total" in case["modes"]["backprop"]["ratios"]
        # The tiny dynamics are far too cheap to hide the solver: every pass is above the
        # goal, so the first one is profiled.
        for p in case["profiles"]:
            assert p["top_extra_ops_us"], name
            assert all(_finite(o["extra_us"]) for o in p["top_extra_ops_us"])
    text = overhead.markdown(r)
    assert "P1" in text and "MNIST block" in text and "ratio (wall)" in text


def test_speed_tiny(speed_result):
    r = speed_result
    _has_interface_fields(r, "speed")
    assert r["problem"]["name"] == speed.TINY_PROBLEM
    for name in ("neuralode adjoint", "neuralode backprop", "neuralode checkpoint"):
        c = r["candidates"][name]
        assert c["available"], c.get("error")
    for name, c in r["candidates"].items():
        if not c["available"]:
            assert c["error"].startswith("not available"), name
            continue
        assert _finite(c["median_seconds"]) and c["median_seconds"] > 0, name
        assert c["nfe_forward"] > 0 and _finite(c["loss"]), name
    for label, v in r["ratios_peer_over_neuralode"].items():
        assert (isinstance(v, str) and v.startswith("not available")) or (_finite(v) and v > 0), label
    assert "| neuralode adjoint |" in speed.markdown(r)
    # The reference runs Euler only: said so, not hidden.
    assert r["candidates"]["reference adjoint"]["error"].startswith("not available")


def test_speed_tiny_fixed_step(speed_results):
    r = speed_results[speed.TINY_FIXED_PROBLEM]
    _has_interface_fields(r, "speed")
    assert r["solver"]["method"] == "euler" and r["solver"]["step"] == speed.FIXED_STEP
    c = r["candidates"]
    for name in ("neuralode adjoint", "neuralode backprop", "reference adjoint"):
        assert c[name]["available"], c[name].get("error")
        assert _finite(c[name]["median_seconds"]) and c[name]["median_seconds"] > 0, name
    # 4 intervals of 0.25 -> 5 Euler steps each, for every candidate.
    steps = r["problem"]["euler_steps"]
    assert steps == 20
    for name in ("neuralode adjoint", "neuralode backprop", "reference adjoint"):
        assert c[name]["nfe_forward"] == steps, name
    # The fused adjoint computes the reference's algorithm: the same loss and gradient.
    ours, ref = c["neuralode adjoint"], c["reference adjoint"]
    assert abs(ours["loss"] - ref["loss"]) <= 1e-6 * abs(ref["loss"])
    if c.get("torchdiffeq backprop", {}).get("available"):
        assert abs(ours["grad_max_rel_diff"] - ref["grad_max_rel_diff"]) < 1e-4
    assert _finite(r["ratios_peer_over_neuralode"]["reference adjoint / neuralode adjoint"])
    # Checkpointing replays the fixed steps: the same solve, and the exact gradient of it.
    ck, bp = c["neuralode checkpoint"], c["neuralode backprop"]
    assert ck["available"], ck.get("error")
    assert ck["nfe_forward"] == steps and ck["nfe_backward"] == steps
    assert abs(ck["loss"] - bp["loss"]) <= 1e-12 * abs(bp["loss"])
    assert abs(ck["grad_max_rel_diff"] - bp["grad_max_rel_diff"]) < 1e-5
    assert "spiral-tiny" in speed.markdown(r) and "euler, fixed step 0.05" in speed.markdown(r)


def test_speed_tiny_cnf(speed_results):
    """The CNF problem (tuple state (z, logp), Hutchinson trace): every neuralode mode and
    both torchdiffeq candidates run, torchode says why it cannot, the adjoint ratio is a
    number, and all candidates agree on the loss and the first weight's gradient."""
    r = speed_results[speed.TINY_CNF_PROBLEM]
    _has_interface_fields(r, "speed")
    assert r["problem"]["name"] == speed.TINY_CNF_PROBLEM and r["solver"]["method"] == "dopri5"
    c = r["candidates"]
    for name in ("neuralode adjoint", "neuralode backprop", "neuralode checkpoint"):
        assert c[name]["available"], c[name].get("error")
        assert _finite(c[name]["median_seconds"]) and c[name]["median_seconds"] > 0, name
        assert c[name]["nfe_forward"] > 0 and _finite(c[name]["loss"]), name
    assert c["neuralode adjoint"]["nfe_backward"] > 0
    # torchode, where installed, solves one tensor state: the reason is said (without it,
    # its absence is).
    torchode_reason = ("torchode solves one tensor state, not a tuple" if importlib.util.find_spec("torchode")
                       else "No module named 'torchode'")
    assert not c["torchode AutoDiffAdjoint"]["available"]
    assert torchode_reason in c["torchode AutoDiffAdjoint"]["error"]
    label = "torchdiffeq odeint_adjoint / neuralode adjoint"
    if c["torchdiffeq adjoint"]["available"]:
        assert _finite(r["ratios_peer_over_neuralode"][label])
        # float32, rtol 1e-5: the same loss and gradient to the tolerance's level.
        for name, cand in c.items():
            if cand["available"]:
                assert cand["loss_rel_diff"] < 1e-4, name
                assert cand["grad_max_rel_diff"] < 1e-2, name
    else:
        assert r["ratios_peer_over_neuralode"][label].startswith("not available")
    assert "CNF-tiny" in speed.markdown(r)


def test_speed_tiny_event(speed_results):
    """The event problem (odeint_event, loss through the event time): every neuralode mode
    and both torchdiffeq interfaces run and find the event after several steps, torchode and
    the reference say why they cannot, and all candidates agree on the event time, the
    loss and the first weight's gradient."""
    r = speed_results[speed.TINY_EVENT_PROBLEM]
    _has_interface_fields(r, "speed")
    assert r["problem"]["name"] == speed.TINY_EVENT_PROBLEM and r["solver"]["method"] == "dopri5"
    c = r["candidates"]
    for name in ("neuralode adjoint", "neuralode backprop", "neuralode checkpoint"):
        assert c[name]["available"], c[name].get("error")
        assert _finite(c[name]["median_seconds"]) and c[name]["median_seconds"] > 0, name
        assert c[name]["nfe_forward"] > 0 and _finite(c[name]["loss"]), name
        # The event comes after several steps, not at the first one.
        assert c[name]["steps_forward"]["accepted"] >= 3, name
        assert _finite(c[name]["event_t"]) and c[name]["event_t"] > 0, name
        assert c[name]["event_fn_evals"]["forward"] > 0, name
    for name in ("neuralode adjoint", "neuralode checkpoint"):
        assert c[name]["nfe_backward"] > 0, name
    torchode_reason = ("torchode has no events" if importlib.util.find_spec("torchode")
                       else "No module named 'torchode'")
    assert not c["torchode AutoDiffAdjoint"]["available"]
    assert torchode_reason in c["torchode AutoDiffAdjoint"]["error"]
    assert "no events" in c["reference adjoint"]["error"]
    if c["torchdiffeq backprop"]["available"]:
        for label in ("torchdiffeq odeint_adjoint / neuralode adjoint", "torchdiffeq odeint / neuralode backprop",
                      "torchdiffeq odeint / neuralode checkpoint"):
            assert _finite(r["ratios_peer_over_neuralode"][label]), label
        # float32, rtol 1e-5: the same event, loss and gradient to the tolerance's level.
        for name, cand in c.items():
            if cand["available"]:
                assert cand["event_t_abs_diff"] < 1e-3, name
                assert cand["loss_rel_diff"] < 1e-4, name
                assert cand["grad_max_rel_diff"] < 1e-2, name
    text = speed.markdown(r)
    assert "event-tiny" in text and "| event_t |" in text


def _check_per_sample_problem(r: dict, name: str) -> dict:
    """The checks both per-sample problems share: their candidates, finite numbers, per-sample
    modes that are not supported yet reported with the library's reason, the per-sample
    counts and errors against the tight solve, and the ratio rows. Returns the candidates."""
    _has_interface_fields(r, "speed")
    assert r["problem"]["name"] == name and r["solver"]["method"] == "dopri5"
    c = r["candidates"]
    assert tuple(c) == speed.PER_SAMPLE_CANDIDATES
    for cand_name in ("neuralode per-sample backprop", "neuralode shared backprop", "neuralode shared adjoint"):
        assert c[cand_name]["available"], c[cand_name].get("error")
    assert c["neuralode shared adjoint"]["nfe_backward"] > 0
    for mode in ("adjoint", "checkpoint"):
        cand = c[f"neuralode per-sample {mode}"]
        # Being written: until then the library's ValueError is the reason.
        assert cand["available"] or ("not available: ValueError" in cand["error"] and "per_sample" in cand["error"])
    assert r["tight_reference"]["solver"].startswith("neuralode shared mode")
    for cand_name, cand in c.items():
        if not cand["available"]:
            assert cand["error"].startswith("not available"), cand_name
            continue
        assert _finite(cand["median_seconds"]) and cand["median_seconds"] > 0, cand_name
        assert cand["nfe_forward"] > 0 and _finite(cand["loss"]), cand_name
        counts, acc = cand["per_sample"], cand["accuracy"]
        assert counts["accepted_max"] >= counts["accepted_mean"] > 0, cand_name
        assert counts["iterations"] >= counts["accepted_max"], cand_name
        assert counts["f_evals_max"] > 0, cand_name
        for key in ("worst_sample_max_abs_err", "median_sample_max_abs_err", "max_err_over_tolerance", "grad_rel_err"):
            assert _finite(acc[key]), (cand_name, key)
        assert 0 <= acc["worst_sample"] < r["problem"]["batch"], cand_name
    # The per-sample solve agrees with the shared one: the same loss and, sample by sample,
    # the tight solution to a loose tolerance (both solve to rtol 1e-5..1e-6).
    ps, sh = c["neuralode per-sample backprop"], c["neuralode shared backprop"]
    assert abs(ps["loss"] - sh["loss"]) <= 1e-4 * abs(sh["loss"])
    for cand in (ps, sh):
        assert cand["accuracy"]["worst_sample_max_abs_err"] < 1e-2
        assert cand["accuracy"]["grad_rel_err"] < 1e-2
    # Each sample steps on its own: on average fewer steps than the batch's shared step size takes.
    assert ps["per_sample"]["accepted_mean"] < sh["per_sample"]["accepted_max"]
    labels = [label for label, _, _ in speed.PER_SAMPLE_RATIOS]
    assert list(r["ratios_peer_over_neuralode"]) == labels
    for label, v in r["ratios_peer_over_neuralode"].items():
        assert (isinstance(v, str) and v.startswith("not available")) or (_finite(v) and v > 0), label
    assert _finite(r["ratios_peer_over_neuralode"]["neuralode shared backprop / neuralode per-sample backprop"])
    if importlib.util.find_spec("torchode"):
        for cand_name in ("torchode AutoDiffAdjoint", "torchode BacksolveAdjoint"):
            assert c[cand_name]["available"], c[cand_name].get("error")
            # torchode steps per sample too: its per-sample counts agree with neuralode's loosely.
            assert c[cand_name]["per_sample"]["accepted_max"] <= 2 * ps["per_sample"]["accepted_max"]
        assert _finite(r["ratios_peer_over_neuralode"]["torchode AutoDiffAdjoint / neuralode per-sample backprop"])
    text = speed.markdown(r)
    assert name in text and "| f evals per sample max / mean |" in text
    return c


def test_speed_tiny_irregular(speed_results):
    """The irregular problem (per-sample times (T, batch, 1)): neuralode's per-sample and shared
    modes, torchode's per-sample solvers and torchdiffeq on the union of the times run; the
    per-sample solve agrees with the shared one; the candidates that cannot say why."""
    r = speed_results[speed.TINY_IRREGULAR_PROBLEM]
    c = _check_per_sample_problem(r, speed.TINY_IRREGULAR_PROBLEM)
    # Random times per sample: torchode's joint adjoint needs shared ones, torchdiffeq's adjoint
    # would restart at every time of the union.
    if importlib.util.find_spec("torchode"):
        assert "same times" in c["torchode JointBacksolveAdjoint"]["error"]
    if importlib.util.find_spec("torchdiffeq"):
        assert c["torchdiffeq backprop"]["available"], c["torchdiffeq backprop"].get("error")
        assert "union" in c["torchdiffeq adjoint"]["error"]
        assert c["neuralode per-sample backprop"]["solution_max_abs_diff"] < 1e-2


def test_speed_tiny_vdp(speed_results):
    """The Van der Pol problem (a learnable mu per sample, float64, shared times): every peer that
    is installed runs, and the per-sample solve meets the tolerance sample by sample to a loose
    factor and has dL/dmu close to the tight solve's."""
    r = speed_results[speed.TINY_VDP_PROBLEM]
    assert r["solver"]["dtype"] == "float64" and r["solver"]["rtol"] == 1e-6
    c = _check_per_sample_problem(r, speed.TINY_VDP_PROBLEM)
    assert r["cross_check"]["gradient_parameter"].startswith("first parameter (mu")
    ps = c["neuralode per-sample backprop"]
    assert ps["accuracy"]["grad_rel_err"] < 1e-3
    # A global error of a few local tolerances, not orders of magnitude more.
    assert ps["accuracy"]["max_err_over_tolerance"] < 1e3
    if importlib.util.find_spec("torchode"):
        assert c["torchode JointBacksolveAdjoint"]["available"], c["torchode JointBacksolveAdjoint"].get("error")
    if importlib.util.find_spec("torchdiffeq"):
        for name in ("torchdiffeq backprop", "torchdiffeq adjoint"):
            assert c[name]["available"], c[name].get("error")
    assert "float64" in speed.markdown(r)


def test_memory_tiny(memory_result):
    r = memory_result
    _has_interface_fields(r, "memory")
    assert r["points"]
    measured = 0
    for p in r["points"]:
        if "skipped" in p:
            continue
        assert _finite(p["peak_bytes"]), p
        measured += 1
    assert measured > 0


def test_nfe_two_runs_share_one_section(nfe_result):
    import copy

    quick = copy.deepcopy(nfe_result)
    quick["setup"].update(tiny=False, quick=True)
    full = copy.deepcopy(nfe_result)
    full["setup"].update(tiny=False, quick=False)
    text = nfe.markdown_many([full, quick])
    assert text.count("## Function evaluations") == 1
    assert text.index("### Quick configuration") < text.index("### Full configuration")


def test_nfe_tiny(nfe_result):
    r = nfe_result
    _has_interface_fields(r, "nfe")
    assert r["tolerance_sweep"]
    for entry in r["tolerance_sweep"]:
        assert entry["nfe_forward"] > 0, entry
        assert _finite(entry["forward_seconds"]), entry
    assert r["training"]
    for entry in r["training"]:
        assert entry["nfe_forward"] > 0, entry


def test_reference_tiny(reference_result):
    r = reference_result
    _has_interface_fields(r, "reference")
    assert all(_finite(v) and v > 0 for v in r["median_seconds"].values())
    assert _finite(r["speedup_neuralode_over_reference"])


def test_report(results_dir, overhead_result, speed_result, memory_result, nfe_result, reference_result):
    path = results_dir / "RESULTS.md"
    text = report.write_results_md(str(results_dir), str(path))
    assert path.read_text() == text
    for _, module, _ in report.SUITES:
        assert f"`benchmarks/{module}.py`" in text or module in text
    assert "No results yet" not in text and "could not be generated" not in text
    # One section per suite, and the header names every JSON file.
    for heading in ("## Speed against", "## Solver overhead", "## Memory", "## Function evaluations",
                    "## Fused adjoint against the reference"):
        assert heading in text, heading
    for name in ("overhead_cpu_tiny.json", f"speed_{speed.TINY_PROBLEM}_cpu.json", "memory_cpu_tiny.json",
                 "nfe_cpu.json", "spiral_reference_cpu.json"):
        assert name in text, name
    # The hand-written notes are kept.
    assert "libstdc++" in text


def test_main_keeps_going_after_a_failing_suite(tmp_path, monkeypatch, capsys):
    cli = importlib.import_module("benchmarks.__main__")
    ran = []

    def fake_run_suite(name, quick, device, out_dir, data_dir=None):
        ran.append((name, quick, data_dir))
        if name == "memory":
            raise RuntimeError("boom")
        return {}

    monkeypatch.setattr(cli, "run_suite", fake_run_suite)
    status = cli.main(["--quick", "--out", str(tmp_path), "--data-dir", str(tmp_path)])
    assert status == 1
    assert [n for n, _, _ in ran] == list(cli.SUITES)
    assert all(q for _, q, _ in ran) and all(d == str(tmp_path) for _, _, d in ran)
    out = capsys.readouterr().out
    assert "FAILED: RuntimeError: boom" in out
    text = (tmp_path / "RESULTS.md").read_text()
    assert "memory FAILED (RuntimeError: boom)" in text
    assert "No results yet" in text
