"""Build script for the neuralode._C extension.

Install torch first, then build against it without build isolation:

    pip install --no-build-isolation -e .

Environment switches:
    NEURALODE_CUDA=auto  (default) compile csrc/cuda/*.cu when torch is a CUDA build AND a CUDA
                         toolkit (nvcc) is found; otherwise build the CPU extension only.
    NEURALODE_CUDA=1     require the CUDA build; fail with the reason when it is impossible.
    NEURALODE_CUDA=0     CPU-only build.
    CUDA_HOME            CUDA toolkit root (default: /usr/local/cuda when it exists, else
                         derived from the nvcc on PATH).
    TORCH_CUDA_ARCH_LIST GPU architectures to compile for (default: the visible GPU; with no
                         GPU visible this script uses 9.0).
    NEURALODE_DEBUG=1    a debug build: debug information kept (-g). Default: a release build,
                         compiled with -g0 and linked with --strip-debug (Python's own CFLAGS
                         carry -g, which made a 30+ MB library).

Each build writes neuralode/_build_info.py: the torch and CUDA versions it was compiled
against, whether the CUDA kernels were compiled and for which architectures. `import
neuralode` compares it with the running torch (a clear ImportError instead of an undefined
symbol after a torch upgrade); `python -m neuralode` prints it.
"""

import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")
DEFAULT_ARCH_LIST = "9.0"


def info(msg):
    print(f"neuralode setup: {msg}", flush=True)


def fail(msg):
    # SystemExit with a string prints it to stderr and exits with status 1: no traceback.
    sys.exit(f"\nneuralode setup: error: {msg}\n")


try:
    import torch
except ImportError as exc:
    fail(
        f"PyTorch is not importable from this Python ({sys.executable}): {exc}.\n"
        "neuralode compiles a C++ extension against the torch installed in your environment,\n"
        "so install torch first (the CPU or CUDA build you want to use, see pytorch.org),\n"
        "then build WITHOUT build isolation:\n"
        "    pip install --no-build-isolation -e ."
    )


def sources(pattern):
    """Sorted source files matching `pattern` (relative to the project root)."""
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def cuda_mode():
    value = os.environ.get("NEURALODE_CUDA", "auto").strip().lower()
    modes = {
        "0": "0", "off": "0", "no": "0", "false": "0",
        "": "auto", "auto": "auto",
        "1": "1", "on": "1", "yes": "1", "true": "1",
    }
    if value not in modes:
        fail(f"NEURALODE_CUDA={value!r} is not one of 0, auto, 1")
    return modes[value]


def find_cuda_home():
    """Return (cuda_home, None) for a usable toolkit, or (None, reason)."""
    explicit = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if explicit:
        home, origin = explicit, "CUDA_HOME/CUDA_PATH"
    elif os.path.isfile("/usr/local/cuda/bin/nvcc"):
        # Checked before PATH: an `nvcc` on PATH may be a wrapper script (e.g. /usr/local/bin/nvcc),
        # from which torch would guess CUDA_HOME=/usr/local and then fail to link -lcudart.
        home, origin = "/usr/local/cuda", "default location"
    else:
        nvcc = shutil.which("nvcc")
        if nvcc is None:
            return None, "no CUDA toolkit found (CUDA_HOME unset, no /usr/local/cuda, no nvcc on PATH)"
        home, origin = os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), f"nvcc at {nvcc}"
    if not os.path.isfile(os.path.join(home, "bin", "nvcc")):
        return None, f"CUDA toolkit {home} (from {origin}) has no bin/nvcc"
    if not os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")):
        return None, (f"CUDA toolkit {home} (from {origin}) has no include/cuda_runtime.h; "
                      "set CUDA_HOME to the toolkit root")
    return home, None


def decide_cuda(mode, cu_sources):
    """Return (build_cuda, cuda_home, reason_if_not)."""
    if mode == "0":
        return False, None, "NEURALODE_CUDA=0"
    if not cu_sources:
        reason = "no csrc/cuda/*.cu sources"
    elif torch.version.cuda is None:
        reason = f"torch {torch.__version__} is a CPU-only build, torch.version.cuda is None"
    else:
        home, reason = find_cuda_home()
        if home is not None:
            return True, home, None
    if mode == "1":
        fail(f"NEURALODE_CUDA=1 but a CUDA build is impossible: {reason}.")
    return False, None, reason


cpp_sources = sources("csrc/*.cpp") + sources("csrc/cpu/*.cpp")
cu_sources = sources("csrc/cuda/*.cu")
if not cpp_sources:
    fail(f"no C++ sources found under {CSRC}")

build_cuda, cuda_home, why_not = decide_cuda(cuda_mode(), cu_sources)

if build_cuda:
    # torch.utils.cpp_extension reads CUDA_HOME when it is imported: set it first.
    os.environ.setdefault("CUDA_HOME", cuda_home)
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # Without a visible GPU cpp_extension cannot pick an architecture by itself.
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
        info(f"no GPU visible and TORCH_CUDA_ARCH_LIST unset: using TORCH_CUDA_ARCH_LIST={DEFAULT_ARCH_LIST}")

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

debug = os.environ.get("NEURALODE_DEBUG", "0").strip().lower() in ("1", "on", "yes", "true")
# -fvisibility=hidden: the module exports only its init function (pybind11's advice; it also
# keeps the classes it binds from being more visible than pybind11's own types).
# Release: -g0 after Python's CFLAGS (which carry -g) drops the debug information.
cxx_flags = ["-O3", "-fopenmp", "-fvisibility=hidden"] + (["-g"] if debug else ["-g0"])
nvcc_flags = ["-O3", "--expt-relaxed-constexpr"] + (["-g", "-lineinfo"] if debug else [])
common = dict(
    include_dirs=[CSRC],
    # -fopenmp at link time too, so that at::parallel_for really runs in parallel.
    # -lstdc++ explicitly: some Python builds link extensions with -static-libstdc++; a
    # second, static copy of libstdc++ inside the extension breaks (or crashes) number
    # formatting in C++ error messages. Naming the shared library first makes the linker
    # resolve libstdc++ from it even then.
    # Release: --strip-debug also drops what the objects of a CUDA build still carry.
    extra_link_args=["-fopenmp", "-lstdc++"] + ([] if debug else ["-Wl,--strip-debug"]),
)
info(f"{'debug' if debug else 'release'} build (NEURALODE_DEBUG={'1' if debug else '0'})")


def write_build_info(cuda_kernels):
    """neuralode/_build_info.py: what this build is compiled against (read at import).
    Rewritten only when it changes, so that an unchanged build touches nothing."""
    arch = (os.environ.get("TORCH_CUDA_ARCH_LIST") or "the visible GPU's") if cuda_kernels else None
    text = (
        '"""Written by setup.py when neuralode._C was built; not in version control."""\n\n'
        f"TORCH_VERSION = {torch.__version__!r}\n"
        f"CUDA_VERSION = {torch.version.cuda!r}\n"
        f"CUDA_KERNELS = {bool(cuda_kernels)!r}\n"
        f"CUDA_ARCHS = {arch!r}\n"
        f"DEBUG = {debug!r}\n"
    )
    path = os.path.join(ROOT, "neuralode", "_build_info.py")
    try:
        with open(path) as fh:
            if fh.read() == text:
                return
    except OSError:
        pass
    with open(path, "w") as fh:
        fh.write(text)


write_build_info(build_cuda)

if build_cuda:
    info(f"compiling CUDA sources ({len(cu_sources)} .cu file(s), CUDA_HOME={os.environ['CUDA_HOME']}, "
         f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '<visible GPU>')})")
    ext = CUDAExtension(
        "neuralode._C",
        cpp_sources + cu_sources,
        extra_compile_args={
            "cxx": cxx_flags + ["-DNEURALODE_WITH_CUDA"],
            "nvcc": nvcc_flags + ["-DNEURALODE_WITH_CUDA"],
        },
        **common,
    )
else:
    info(f"NOT compiling CUDA sources, CPU-only build: {why_not}")
    ext = CppExtension(
        "neuralode._C",
        cpp_sources,
        extra_compile_args={"cxx": cxx_flags},
        **common,
    )


class BuildExt(BuildExtension.with_options(use_ninja=True)):
    """ninja build that keeps its object files in build/temp, also for `pip install -e .`.

    (pip's editable build would otherwise compile in a fresh temporary directory every time,
    so ninja could never skip the sources that did not change.)
    """

    def finalize_options(self):
        super().finalize_options()
        self.build_temp = os.path.join(ROOT, "build", "temp")


setup(
    # Name, version, dependencies and packages are declared in pyproject.toml.
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExt},
)
