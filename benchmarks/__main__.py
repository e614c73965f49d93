"""``python -m benchmarks``: runs the benchmark suites, then regenerates RESULTS.md.

::

    python -m benchmarks [--suite memory|nfe|speed|overhead|reference|all] [--device cpu|cuda]
                         [--quick] [--data-dir DIR] [--out DIR] [--results-md PATH]

Suites (all by default, in this order; ``--suite`` may be repeated):

* ``memory``: peak memory of the MNIST ODE block per gradient mode (``benchmarks/memory.py``);
* ``nfe``: the paper's Figure 3 on the MNIST ODE-Net (``benchmarks/nfe.py``; its training
  panel needs ``--data-dir`` with the MNIST IDX files);
* ``speed``: P1, P2, the MNIST block, the Euler spiral, a CNF, a solve until an event, per-sample
  observation times and Van der Pol oscillators with a parameter per sample (per-sample steps)
  against torchdiffeq, torchode and ``neuralode.reference`` (``benchmarks/speed.py``);
* ``overhead``: solve time against NFE x the cost of f (``benchmarks/overhead.py``);
* ``reference``: the fused adjoint against ``neuralode.reference`` (``benchmarks/spiral_reference.py``).

Each suite writes its JSON (and figures) to ``--out`` (default ``benchmarks/results``).
A suite that fails is reported and the others still run; the exit status is 1 when one
failed. Then ``benchmarks/report.py`` rewrites the markdown from every JSON file in
``--out``: ``benchmarks/RESULTS.md`` for the default directory, else ``DIR/RESULTS.md``
(``--results-md`` overrides).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

from . import report

#: suite -> module in benchmarks/, in the order they run.
SUITES = {
    "memory": "memory",
    "nfe": "nfe",
    "speed": "speed",
    "overhead": "overhead",
    "reference": "spiral_reference",
}


def run_suite(name: str, quick: bool, device: str, out_dir: str, data_dir=None) -> dict:
    """Runs one suite's ``run`` (its quick configuration with ``quick``) into ``out_dir``; returns its result."""
    module = importlib.import_module(f"{__package__ or 'benchmarks'}.{SUITES[name]}")
    kwargs = {"data_dir": data_dir} if name == "nfe" else {}
    return module.run(quick=quick, device=device, out_dir=out_dir, **kwargs)


def main(argv=None) -> int:
    """The command line: runs the chosen suites, then rewrites RESULTS.md; 0 when every suite ran."""
    parser = argparse.ArgumentParser(description="Runs the benchmark suites, then regenerates RESULTS.md.")
    parser.add_argument(
        "--suite", action="append", choices=tuple(SUITES) + ("all",), help="suite to run (repeatable; default all)"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="each suite's quick configuration")
    parser.add_argument("--data-dir", default=None, help="MNIST IDX files for the nfe suite's training panel")
    parser.add_argument("--out", default=report.RESULTS_DIR, help="results directory (default benchmarks/results)")
    parser.add_argument("--results-md", default=None, help="markdown to write (default: see above)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        parser.error(f"--data-dir {args.data_dir!r} is not a directory")
    chosen = args.suite or ["all"]
    names = list(SUITES) if "all" in chosen else [s for s in SUITES if s in chosen]

    log = []
    for name in names:
        print(f"\n== suite {name}", flush=True)
        start = time.perf_counter()
        entry = {"suite": name, "ok": True}
        try:
            run_suite(name, args.quick, args.device, args.out, args.data_dir)
        except Exception as err:
            traceback.print_exc()
            msg = str(err).strip().splitlines()
            entry.update(ok=False, error=f"{type(err).__name__}: {msg[0] if msg else ''}".rstrip(": "))
        entry["seconds"] = time.perf_counter() - start
        log.append(entry)
        status = "done" if entry["ok"] else f"FAILED: {entry['error']}"
        print(f"== suite {name}: {status} in {entry['seconds']:.1f} s", flush=True)

    md_path = args.results_md or report.default_md_path(args.out)
    report.write_results_md(args.out, md_path, run_log=log)
    print("\n| suite | status | wall s |\n| --- | --- | ---: |")
    for e in log:
        print(f"| {e['suite']} | {'ok' if e['ok'] else 'FAILED: ' + e['error']} | {e['seconds']:.1f} |")
    print(f"\nwritten {os.path.relpath(md_path)}")
    return 0 if all(e["ok"] for e in log) else 1


if __name__ == "__main__":
    sys.exit(main())
