"""Packaging: the library runs with torch and numpy alone. tqdm and matplotlib are the
`experiments` extra (progress bars and figures of the experiments, the demo and the
benchmarks), never imported by ``import neuralode`` or a solve, and asked for by name,
with the install command, where they are needed."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

import neuralode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(neuralode.__file__)))
EXTRAS = ("tqdm", "matplotlib")

# Makes tqdm and matplotlib unimportable, as if they were not installed.
BLOCK = "import sys\nfor name in ('tqdm', 'matplotlib'):\n    sys.modules[name] = None\n"


def _run(script: str) -> subprocess.CompletedProcess:
    """``script`` after BLOCK in a fresh interpreter that imports this checkout's neuralode."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(script)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def test_solve_and_adjoint_without_tqdm_and_matplotlib():
    proc = _run(
        """
        import math
        import torch
        import neuralode

        y0 = torch.ones(2, 3, requires_grad=True)
        ys = neuralode.odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0]), gradient="adjoint")
        assert ys.shape == (2, 2, 3), ys.shape
        assert (ys[-1] - math.exp(-1)).abs().max().item() < 1e-5, ys[-1]
        ys[-1].sum().backward()
        assert (y0.grad - math.exp(-1)).abs().max().item() < 1e-5, y0.grad  # d y(1) / d y0 = exp(-1)
        # The experiments and the demo import without them too (they load them on first use).
        import neuralode.demo
        from neuralode.experiments import latent_ode, mnist, spiral_linear, spiral_nonlinear
        assert sys.modules["tqdm"] is None and sys.modules["matplotlib"] is None
        print("ok")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_experiments_name_the_missing_extra():
    proc = _run(
        """
        from neuralode.experiments import common

        for name, use in (("tqdm", lambda: common.progress(range(3), desc="x")), ("matplotlib", common.pyplot)):
            try:
                use()
            except ImportError as err:
                print(name, "|", err)
            else:
                raise AssertionError(name + " was imported although blocked")
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split(" | ")[0] for line in lines] == list(EXTRAS), lines
    for line in lines:
        name, message = line.split(" | ", 1)
        assert f"need {name}" in message and "-e .[experiments]" in message, message


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower()


def test_pyproject_dependencies():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)["project"]
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    assert "numpy" in runtime, runtime
    # torch is deliberately unlisted (see pyproject.toml); tqdm and matplotlib are an extra.
    assert not runtime & {"torch", *EXTRAS}, runtime
    extras = project["optional-dependencies"]
    assert {_requirement_name(r) for r in extras["experiments"]} >= set(EXTRAS)
    assert {"bench", "test"} <= set(extras)
