#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU and a CUDA build of torch (no internet needed):
#   1. build neuralode._C with the CUDA kernels, in place;
#   2. run the test suite (the CUDA tests compare CUDA with CPU on the same inputs);
#   3. run the GPU benchmarks, --device cuda: the fused adjoint against the reference; the
#      speed suite (P1, P2, the MNIST block, the Euler spiral, the CNF, the event problem, the
#      irregular-times and Van der Pol per-sample problems, against the peers that are installed)
#      and the memory suite, both --quick;
#   4. with MNIST_DIR set (a folder with the four MNIST IDX files, carried to the machine):
#      the mnist experiment's full ODE-Net run (5 epochs, batch 128) on the GPU;
#   5. print a short table last.
# Usage: [MNIST_DIR=DIR] bash benchmarks/gpu_check.sh [RESULTS_DIR]   (default benchmarks/results)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${1:-benchmarks/results}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"

echo "== build with CUDA"
start=$(date +%s)
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} \
  MAX_JOBS=${MAX_JOBS:-16} NEURALODE_CUDA=1 \
  $PY -m pip install --no-build-isolation --no-deps -q -e . 2>&1 | grep -v -E "^\s*$|DEPRECATION|notice" || true
$PY -c "import neuralode, torch; from neuralode._ops import stage_combine; \
stage_combine(torch.zeros(1, device='cuda'), [], [], None); print('CUDA kernels registered')"
echo "build: $(( $(date +%s) - start )) s"

echo "== tests"
# One pytest run per file, each logged in full: a crash in one file does not hide the others.
tests_failed=0
for f in tests/test_*.py; do
  name=$(basename "$f" .py)
  # The nvcc compile check is redundant here: the build above compiled every .cu file.
  [ "$name" = test_cuda_compile ] && continue
  log="$RESULTS/pytest_$name.log"
  if $PY -X faulthandler -m pytest -q -p no:cacheprovider "$f" > "$log" 2>&1; then
    echo "$name: $(tail -n 1 "$log")"
  else
    tests_failed=1
    echo "$name: FAILED, see $log"
    grep -n -E "Fatal Python error|^E |FAILED|File \"[^\"]*/(tests|neuralode)/" "$log" | head -n 30 || true
  fi
done

echo "== benchmark"
$PY -m benchmarks.spiral_reference --device cuda --repeats 20 --out "$RESULTS"
$PY -m benchmarks.spiral_reference --device cuda --repeats 20 --batch 4096 --points 12 --out "$RESULTS/large"
$PY -m benchmarks.spiral_reference --device cpu --repeats 20 --out "$RESULTS/cpu-on-gpu-machine"
# Every speed problem (peers that are not installed there are reported as such).
$PY -m benchmarks.speed --problem all --device cuda --quick --out "$RESULTS" || echo "speed benchmark failed"
# Peak memory per gradient mode (torch.cuda.max_memory_allocated), rk4 steps and dopri5 tolerances.
$PY -m benchmarks.memory --quick --device cuda --out "$RESULTS" || echo "memory benchmark failed"

if [ -n "${MNIST_DIR:-}" ]; then
  echo "== mnist experiment, ODE-Net, full configuration, cuda"
  $PY -m neuralode.experiments mnist --device cuda --models ode-net --data-dir "$MNIST_DIR" \
    --no-progress --out "$RESULTS/mnist_cuda" || echo "mnist experiment failed"
fi

echo "== summary"
[ "$tests_failed" = 0 ] && echo "tests: all passed" || echo "tests: FAILURES (logs in $RESULTS)"
$PY - "$RESULTS" <<'PYEOF'
import json, sys, os
root = sys.argv[1]
rows = []
for sub in ("", "large", "cpu-on-gpu-machine"):
    d = os.path.join(root, sub)
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if name.startswith("spiral_reference_") and name.endswith(".json"):
            r = json.load(open(os.path.join(d, name)))
            m = r["median_seconds"]
            rows.append((r["machine"].get("gpu", r["machine"]["processor"]), r["machine"]["device"], r["problem"]["batch"],
                         m["reference"] * 1e3, m["neuralode"] * 1e3, r["speedup_neuralode_over_reference"]))
print(f"{'device':<28}{'where':<6}{'batch':>6}{'reference ms':>14}{'neuralode ms':>14}{'ratio':>8}")
for g, dev, b, ref, fu, ratio in rows:
    print(f"{g[:27]:<28}{dev:<6}{b:>6}{ref:>14.2f}{fu:>14.2f}{ratio:>7.2f}x")
print()
for name in sorted(os.listdir(root)):
    if name.startswith("speed_") and name.endswith("_cuda.json"):
        r = json.load(open(os.path.join(root, name)))
        for label, v in r["ratios_peer_over_neuralode"].items():
            if not isinstance(v, str):
                print(f"speed {r['problem']['name']:<7} {label:<52} {v:6.2f}x")
path = os.path.join(root, "memory_cuda.json")
if os.path.exists(path):
    s = json.load(open(path))["summary"]
    print(f"memory: adjoint peak at {s['adjoint_flat_steps'][1]} / {s['adjoint_flat_steps'][0]} rk4 steps "
          f"{s['adjoint_flat_ratio']:.2f}x, backprop {s['backprop_growth_ratio']:.1f}x (batch {s['batch']})")
PYEOF
