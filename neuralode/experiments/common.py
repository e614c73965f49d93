"""What every experiment shares: its command line, output folder, device, progress
bars, JSON and figures, and the end-of-run summary."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
from datetime import datetime, timezone
from typing import Iterable, Optional

import torch


def experiment_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The options every experiment takes: ``--quick``, ``--device``, ``--out``, ``--seed``,
    ``--threads``, ``--no-progress``. Experiments add their own."""
    parser = argparse.ArgumentParser(prog=f"python -m neuralode.experiments {name}", description=description)
    parser.add_argument("--quick", action="store_true", help="the configuration sized for a 2-core CPU")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--out", default=None, help=f"folder for plots and JSON (default runs/{name})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU (default %(default)s; None: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def resolve_device(device: str) -> torch.device:
    """``torch.device(device)``, with a clear error when it cannot be used here."""
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise SystemExit(f"--device {device!r}: not a device ({err}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {device}: torch sees no CUDA device here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SystemExit(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type != "cpu":
        raise SystemExit(f"--device {device}: only cpu and cuda are supported")
    return dev


def setup(args, name: str) -> tuple:
    """Seeds, threads, device and output folder from the common options: ``(device, out_dir)``."""
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    out_dir = args.out or os.path.join("runs", name)
    os.makedirs(out_dir, exist_ok=True)
    return device, out_dir


#: How to install what ``require_extra`` imports (pyproject.toml's ``experiments`` extra).
EXTRA_INSTALL = "pip install --no-build-isolation -e .[experiments]"


def require_extra(module: str):
    """``module`` (tqdm, matplotlib or one of their submodules), imported on first use: the
    library itself does not need them. Without it, an ImportError that names the install
    command of the ``experiments`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise ImportError(
            f"neuralode's experiments, demo and benchmarks need {package}: {EXTRA_INSTALL} (or pip install {package})"
        ) from err


def progress(iterable: Iterable, desc: str, total: Optional[int] = None, disable: bool = False, unit: str = "it"):
    """A tqdm progress bar on stderr (stdout keeps the summary clean)."""
    tqdm = require_extra("tqdm").tqdm
    return tqdm(iterable, desc=desc, total=total, disable=disable, unit=unit, file=sys.stderr, dynamic_ncols=True)


def pyplot():
    """matplotlib's pyplot with the file-only backend (no display needed)."""
    require_extra("matplotlib").use("Agg")
    return require_extra("matplotlib.pyplot")


def run_info(device: torch.device, argv) -> dict:
    """Where and how the run happened, for the JSON."""
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "argv": list(argv) if argv is not None else sys.argv[1:],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _plain(x):
    if isinstance(x, torch.Tensor):
        return x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def write_json(path: str, obj: dict) -> str:
    """Writes ``obj`` (tensors become numbers or lists) as indented JSON; returns the path."""
    with open(path, "w") as fh:
        json.dump(_plain(obj), fh, indent=2)
    return path


def print_summary(title: str, rows: dict, files: Iterable[str] = ()) -> None:
    """The end-of-run summary: a title, ``key: value`` lines and the files written."""
    print(f"\n== {title}")
    width = max((len(k) for k in rows), default=0)
    for key, value in rows.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        print(f"  {key:<{width}}  {value}")
    for path in files:
        print(f"  wrote {path}")
