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


# ------------------------------------------------------------------ release packaging


def test_version_is_written_once():
    from neuralode import _version

    assert neuralode.__version__ == _version.__version__
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        pyproject = tomllib.load(fh)
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"]["attr"] == "neuralode._version.__version__"
    assert pyproject["project"]["license"] == "MIT"
    with open(os.path.join(REPO, "LICENSE")) as fh:
        assert fh.readline().strip() == "MIT License"


def test_a_torch_other_than_the_build_s_is_refused_with_the_rebuild_command():
    """The build record of another torch (as after `pip install -U torch`): a sentence naming
    both versions and the rebuild command, before the extension is loaded."""
    proc = _run(
        """
        import types
        import torch
        sys.modules["neuralode._build_info"] = types.SimpleNamespace(
            TORCH_VERSION="2.0.0+cpu", CUDA_VERSION=None, CUDA_KERNELS=False, CUDA_ARCHS=None, DEBUG=False)
        try:
            import neuralode
        except ImportError as err:
            print(err)
            assert "neuralode._C" not in sys.modules, "loaded the extension before the check"
        else:
            raise AssertionError("imported")
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import torch

    message = proc.stdout
    assert "built against torch 2.0.0+cpu" in message and f"runs torch {torch.__version__}" in message, message
    assert "pip install --no-build-isolation --no-deps -e ." in message, message


def test_cuda_version_mismatch_and_load_failure_are_named():
    from neuralode import _extension

    with pytest.raises(ImportError, match="built for CUDA 12.1, but this environment's torch uses CUDA None"):
        _extension.check_versions("2.13.0", "12.1", "2.13.0", None)
    _extension.check_versions("2.13.0", None, "2.13.0", "13.0")  # no CUDA kernels: any CUDA
    proc = _run(
        """
        sys.modules["neuralode._C"] = None  # as if the library could not be loaded
        try:
            import neuralode
        except ImportError as err:
            print(err)
        """
    )
    assert "neuralode._C could not be loaded" in proc.stdout and "pip install --no-build-isolation" in proc.stdout, (
        proc.stdout + proc.stderr)


def test_build_record_matches_the_running_torch():
    import torch
    from neuralode import _extension

    info = _extension.build_info()
    if info is None:
        pytest.skip("the extension was built without a build record (not by this setup.py)")
    assert info.TORCH_VERSION == torch.__version__
    assert isinstance(info.CUDA_KERNELS, bool) and isinstance(info.DEBUG, bool)


def test_release_build_has_no_debug_information():
    from neuralode import _C, _extension

    info = _extension.build_info()
    if info is None or info.DEBUG:
        pytest.skip("a debug build (NEURALODE_DEBUG=1) or one without a build record")
    with open(_C.__file__, "rb") as fh:
        data = fh.read()
    assert b".debug_info" not in data, "DWARF sections in a release build"
    assert len(data) < 12 * 2**20, f"{len(data) / 2**20:.1f} MiB"


def test_show_config_and_python_m_neuralode():
    import io

    import torch

    buf = io.StringIO()
    cfg = neuralode.show_config(file=buf)
    assert cfg["neuralode"] == neuralode.__version__ and cfg["torch"] == torch.__version__
    assert "CPU" in cfg["compiled backends"] and cfg["threads"] == torch.get_num_threads()
    if cfg["built against CUDA"] is None:
        assert cfg["compiled backends"] == ["CPU"], cfg
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "neuralode"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for key in ("neuralode", "torch", "built against torch", "compiled backends", "threads"):
        assert re.search(rf"^{re.escape(key)}\s{{2,}}\S", proc.stdout, re.M), (key, proc.stdout)


def test_source_distribution_holds_every_build_input(tmp_path):
    """Every C++/CUDA source and header the build reads is in the sdist; the build record of
    the machine that made it is not (each build writes its own)."""
    import importlib.util
    import tarfile

    spec = importlib.util.find_spec("build")
    if spec is None or spec.origin is None:  # not installed (a build/ folder is a namespace package)
        pytest.skip("the `build` package (make installs it) is not installed")

    proc = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path), REPO],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = tmp_path.glob("neuralode-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = []
    for root, _, files in os.walk(os.path.join(REPO, "csrc")):
        for name in files:
            if name.endswith((".h", ".cuh", ".cpp", ".cu")):
                needed.append(os.path.relpath(os.path.join(root, name), REPO))
    assert needed and not [n for n in needed if n not in names], sorted(set(needed) - names)
    assert {"setup.py", "pyproject.toml", "LICENSE", "README.md", "neuralode/__init__.py",
            "neuralode/_version.py"} <= names
    assert "neuralode/_build_info.py" not in names
    assert not [n for n in names if n.endswith((".so", ".o", ".pyc"))]
