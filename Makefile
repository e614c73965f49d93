# Build and run neuralode in a local virtual environment (.venv).
#
#   make test        build the extension and run the test suite (PYTEST_ARGS="..." passes options)
#   make demo        build and run the demo
#   make bench       build and run the benchmarks
#   make cuda-build  build with the CUDA kernels (needs a CUDA build of torch and a CUDA toolkit)
#   make dist-check  build the sdist, a wheel from it, and smoke-test that wheel in a fresh environment
#   make clean       remove build outputs (keeps .venv); `make distclean` removes .venv as well
#
# torch is never installed behind your back: if the `python3` you run make with already has torch,
# .venv is created with --system-site-packages and uses it; otherwise TORCH_SPEC is installed.

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
# Pinned: an unpinned torch would make pip pick the multi-GB CUDA build. Where that pin does not
# resolve to a CPU wheel, add e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
TORCH_SPEC     ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# numpy: the runtime dependency; pytest, hypothesis: the tests; torchdiffeq and scipy: the tests'
# side-by-side comparisons and scipy_solver (the `test` extra); ninja, setuptools: the build; tqdm and
# matplotlib: the `experiments` extra of pyproject.toml, which `make demo`, the experiments and
# the benchmarks need (installed here because the install below uses --no-deps).
# build: `make dist-check`'s source distribution.
DEPS        := numpy pytest hypothesis "torchdiffeq==0.2.5" scipy ninja tqdm matplotlib "setuptools>=77" build
PYTEST_ARGS ?=
# CUDA toolkit and architectures for `make cuda-build` (9.0 = H100/H200).
CUDA_HOME   ?= /usr/local/cuda
TORCH_CUDA_ARCH_LIST ?= 9.0

# Stamp files (inside .venv, so removing .venv resets them).
VENV_STAMP  := $(VENV)/.stamp-venv
DEPS_STAMP  := $(VENV)/.stamp-deps
BUILD_STAMP := $(VENV)/.stamp-build

# Rebuild when a source, header or source directory (file added/removed) changes, or when the
# compiled module is missing.
CSRC := $(shell find csrc \( -type d -o -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) 2>/dev/null)
EXT_SO := $(wildcard neuralode/_C*.so)
# Build commands see the venv's tools (ninja) on PATH.
BUILD_ENV := PATH="$(abspath $(VENV))/bin:$$PATH"
# -v shows the compiler output and setup.py's line on whether CUDA sources are compiled.
INSTALL := $(PIP) install --no-build-isolation --no-deps -v -e .

.PHONY: venv test demo bench cuda-build dist-check clean distclean FORCE

# venv (internal): virtual environment with torch and the dependencies, extension built.
venv: $(BUILD_STAMP)

# test: run the test suite.
test: venv
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

# demo: run the demo.
demo: venv
	$(PY) -m neuralode.demo

# bench: run the benchmarks (quick configurations) and regenerate benchmarks/RESULTS.md.
# MNIST_DIR=<dir with the MNIST IDX files> (environment or make variable): the nfe suite trains on it.
bench: venv
	$(PY) -m benchmarks --quick $(if $(MNIST_DIR),--data-dir "$(MNIST_DIR)")

# cuda-build: build with the CUDA kernels, failing loudly when that is impossible (CPU-only torch,
# no toolkit). Meant for a machine whose python3 has a CUDA build of torch.
cuda-build: | $(VENV_STAMP)
	NEURALODE_CUDA=1 CUDA_HOME="$(CUDA_HOME)" TORCH_CUDA_ARCH_LIST="$(TORCH_CUDA_ARCH_LIST)" \
		$(BUILD_ENV) $(INSTALL)
	touch $(BUILD_STAMP)

# dist-check: the source distribution holds everything the build needs, and the wheel built from
# it works: installed into a fresh virtual environment (which reuses .venv's torch and numpy through
# a .pth file, without .venv's editable neuralode) and run from outside the source tree.
DIST_DIR  := dist
CHECK_DIR := build/dist-check
dist-check: venv
	rm -rf $(DIST_DIR) $(CHECK_DIR)
	$(PY) -m build --sdist --no-isolation --outdir $(DIST_DIR) .
	$(BUILD_ENV) $(PIP) wheel --no-build-isolation --no-deps --no-cache-dir --wheel-dir $(DIST_DIR) $(DIST_DIR)/neuralode-*.tar.gz
	$(PY) -m venv $(CHECK_DIR)/venv
	$(PY) -c "$$REUSE_TORCH_PTH" "$(CHECK_DIR)/venv/bin/python"
	$(CHECK_DIR)/venv/bin/python -m pip install -q --no-deps --ignore-installed $(DIST_DIR)/neuralode-*.whl
	cd $(CHECK_DIR) && venv/bin/python "$(abspath tests/installed_smoke.py)" "$(abspath .)"
	ls -l $(DIST_DIR)

# clean: remove build outputs and caches (keeps .venv and its packages).
clean:
	rm -rf build dist *.egg-info neuralode/_C*.so neuralode/_build_info.py .pytest_cache $(BUILD_STAMP)
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

# distclean: clean, and remove .venv too.
distclean: clean
	rm -rf $(VENV)

# When $(PYTHON) is itself a virtual environment, --system-site-packages does not expose its
# packages: a .pth file in .venv then points at the site-packages that holds its torch.
define OUTER_TORCH_PTH
import os, subprocess, sys, torch
site = os.path.dirname(os.path.dirname(torch.__file__))
purelib = subprocess.check_output([sys.argv[1], "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
open(os.path.join(purelib, "outer-torch.pth"), "w").write(site + "\n")
print("using the torch of", site)
endef
export OUTER_TORCH_PTH

# dist-check's fresh environment: a .pth file pointing at the site-packages that hold this
# environment's torch and numpy (.pth files found there, such as an editable install's, are not
# run: only the packages themselves become importable).
define REUSE_TORCH_PTH
import os, subprocess, sys, numpy, torch
sites = dict.fromkeys(os.path.dirname(os.path.dirname(m.__file__)) for m in (torch, numpy))
purelib = subprocess.check_output([sys.argv[1], "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
open(os.path.join(purelib, "reuse-torch.pth"), "w").write("\n".join(sites) + "\n")
print("fresh environment reuses", ", ".join(sites))
endef
export REUSE_TORCH_PTH

# .venv with a working torch: reuse the torch of $(PYTHON) if it has one, else install TORCH_SPEC.
$(VENV_STAMP):
	@if [ ! -x $(PY) ]; then \
		if $(PYTHON) -c "import torch" 2>/dev/null; then \
			echo "torch found in $(PYTHON): creating $(VENV) with --system-site-packages to use it"; \
			$(PYTHON) -m venv --system-site-packages $(VENV); \
			$(PY) -c "import torch" 2>/dev/null || $(PYTHON) -c "$$OUTER_TORCH_PTH" "$(PY)"; \
		else \
			echo "creating $(VENV)"; \
			$(PYTHON) -m venv $(VENV); \
		fi; \
	fi
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
		echo "installing $(TORCH_SPEC) into $(VENV)"; \
		$(PIP) install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"; \
	fi
	$(PY) -c "import torch; print('using torch', torch.__version__, 'CUDA', torch.version.cuda)"
	touch $@

# Python dependencies (already installed ones are skipped; the stamp skips pip altogether).
$(DEPS_STAMP): Makefile | $(VENV_STAMP)
	$(PIP) install $(DEPS)
	touch $@

# The extension, built in place against the venv's torch (NEURALODE_CUDA=0|auto|1, default auto).
$(BUILD_STAMP): setup.py pyproject.toml $(CSRC) $(if $(EXT_SO),,FORCE) | $(DEPS_STAMP)
	@echo "building neuralode._C (NEURALODE_CUDA=$${NEURALODE_CUDA:-auto}); a first build takes a few minutes, rebuilds only what changed"
	$(BUILD_ENV) $(INSTALL)
	touch $@
